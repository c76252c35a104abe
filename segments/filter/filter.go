// Package filter parses the segment filter language: JSON documents that
// combine "includes cohort" tests with not, and and or, plus the Braze form
// {"filter": "Mixpanel_Cohorts", "op": "includes"|"excludes", "value": ...}.
// Every error is a *segments.FilterError whose Path is a JSON pointer to
// the part of the document to fix.
package filter

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/cohortsync/cohortsync/segments"
)

// Op is the kind of a node.
type Op int

// The node kinds.
const (
	OpCohort Op = iota + 1
	OpNot
	OpAnd
	OpOr
)

// CohortRef names a cohort by id or by name; after Resolve, ID is set.
type CohortRef struct{ Partner, ID, Name string }

// Node is one node of a parsed filter.
type Node struct {
	Op     Op
	Cohort CohortRef // OpCohort only
	Args   []Node    // OpNot: exactly one; OpAnd, OpOr: one or more
	Path   string    // JSON pointer of this node in the document

	// byValue marks a cohort named by a Braze filter's value, which may be
	// an id or a name (Resolve prefers the id); Cohort.Name holds it.
	byValue bool
}

// Limits that keep a filter cheap to evaluate and its SQL bounded.
const (
	MaxDepth = 32
	MaxNodes = 1000
)

// bracedSuffix is how the Braze form names a partner's cohort attribute:
// Mixpanel_Cohorts, Amplitude_Cohorts, ...
const bracedSuffix = "_Cohorts"

type parser struct{ nodes int }

// Parse reads a filter document.
func Parse(raw []byte) (Node, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return Node{}, &segments.FilterError{Msg: "a filter is required"}
	}
	var p parser
	return p.node(raw, "", 0)
}

func errAt(path, format string, args ...any) error {
	return &segments.FilterError{Path: path, Msg: fmt.Sprintf(format, args...)}
}

func (p *parser) node(raw json.RawMessage, path string, depth int) (Node, error) {
	if depth > MaxDepth {
		return Node{}, errAt(path, "filter nested deeper than %d levels", MaxDepth)
	}
	if p.nodes++; p.nodes > MaxNodes {
		return Node{}, errAt(path, "filter has more than %d parts", MaxNodes)
	}
	obj, err := object(raw, path)
	if err != nil {
		return Node{}, err
	}
	if _, ok := obj["filter"]; ok {
		return p.braze(obj, path)
	}
	if len(obj) != 1 {
		keys := slices.Sorted(maps.Keys(obj))
		return Node{}, errAt(path, "want exactly one of \"cohort\", \"not\", \"and\", \"or\" (or the Braze form with \"filter\"), got %s", quoteList(keys))
	}
	var key string
	var val json.RawMessage
	for k, v := range obj {
		key, val = k, v
	}
	sub := path + "/" + key
	switch key {
	case "cohort":
		ref, err := cohortRef(val, sub)
		if err != nil {
			return Node{}, err
		}
		return Node{Op: OpCohort, Cohort: ref, Path: path}, nil
	case "not":
		arg, err := p.node(val, sub, depth+1)
		if err != nil {
			return Node{}, err
		}
		return Node{Op: OpNot, Args: []Node{arg}, Path: path}, nil
	case "and", "or":
		var items []json.RawMessage
		if err := json.Unmarshal(val, &items); err != nil || items == nil {
			return Node{}, errAt(sub, "%q must be a non-empty array of filters", key)
		}
		if len(items) == 0 {
			return Node{}, errAt(sub, "%q must be a non-empty array of filters", key)
		}
		n := Node{Op: OpAnd, Path: path}
		if key == "or" {
			n.Op = OpOr
		}
		for i, it := range items {
			arg, err := p.node(it, sub+"/"+strconv.Itoa(i), depth+1)
			if err != nil {
				return Node{}, err
			}
			n.Args = append(n.Args, arg)
		}
		return n, nil
	default:
		return Node{}, errAt(path, "unknown key %q: want \"cohort\", \"not\", \"and\" or \"or\"", key)
	}
}

// braze reads {"filter": "<Partner>_Cohorts", "op": "includes"|"excludes", "value": "<name or id>"}.
func (p *parser) braze(obj map[string]json.RawMessage, path string) (Node, error) {
	for k := range obj {
		if k != "filter" && k != "op" && k != "value" {
			return Node{}, errAt(path+"/"+k, "unknown key %q in a Braze filter: want \"filter\", \"op\", \"value\"", k)
		}
	}
	attr, err := str(obj, "filter", path)
	if err != nil {
		return Node{}, err
	}
	partner, ok := strings.CutSuffix(attr, bracedSuffix)
	if !ok || partner == "" {
		return Node{}, errAt(path+"/filter", "%q is not a cohort attribute: want <Partner>_Cohorts, such as Mixpanel_Cohorts", attr)
	}
	op, err := str(obj, "op", path)
	if err != nil {
		return Node{}, err
	}
	value, err := str(obj, "value", path)
	if err != nil {
		return Node{}, err
	}
	// The value is a name or an id: Resolve decides, preferring an id. The
	// "excludes" form is "not" around the same cohort node, which has no
	// place of its own in the document: both carry the object's path.
	n := Node{Op: OpCohort, Cohort: CohortRef{Partner: strings.ToLower(partner), Name: value}, Path: path, byValue: true}
	switch op {
	case "includes":
		return n, nil
	case "excludes":
		return Node{Op: OpNot, Args: []Node{n}, Path: path}, nil
	default:
		return Node{}, errAt(path+"/op", "op %q: want \"includes\" or \"excludes\"", op)
	}
}

func cohortRef(raw json.RawMessage, path string) (CohortRef, error) {
	obj, err := object(raw, path)
	if err != nil {
		return CohortRef{}, err
	}
	var ref CohortRef
	for k := range obj {
		if k != "partner" && k != "id" && k != "name" {
			return CohortRef{}, errAt(path+"/"+k, "unknown key %q: a cohort has \"partner\" and \"id\" or \"name\"", k)
		}
	}
	if ref.Partner, err = str(obj, "partner", path); err != nil {
		return CohortRef{}, err
	}
	_, hasID := obj["id"]
	_, hasName := obj["name"]
	switch {
	case hasID && hasName:
		return CohortRef{}, errAt(path, "give \"id\" or \"name\", not both")
	case hasID:
		ref.ID, err = str(obj, "id", path)
	case hasName:
		ref.Name, err = str(obj, "name", path)
	default:
		return CohortRef{}, errAt(path, "a cohort needs \"id\" or \"name\"")
	}
	return ref, err
}

func object(raw json.RawMessage, path string) (map[string]json.RawMessage, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
		return nil, errAt(path, "must be a JSON object")
	}
	return obj, nil
}

// str reads a required non-empty string field.
func str(obj map[string]json.RawMessage, key, path string) (string, error) {
	raw, ok := obj[key]
	if !ok {
		return "", errAt(path, "%q is required", key)
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", errAt(path+"/"+key, "%q must be a string", key)
	}
	if strings.TrimSpace(s) == "" {
		return "", errAt(path+"/"+key, "%q must not be empty", key)
	}
	return s, nil
}

// Resolve sets every cohort's ID. lookup returns the ids of the partner's
// cohorts whose id or whose name is idOrName. A cohort given by id must
// exist. A name (or a Braze value) means the cohort with that id if there
// is one (ids are what partners send; a name equal to another cohort's id is
// not worth the ambiguity), else the only cohort of that name; two cohorts
// of that name are an error naming both. Errors are *segments.FilterError at
// the part naming the cohort.
func Resolve(n Node, lookup func(partner, idOrName string) (ids []string)) (Node, error) {
	if n.Op != OpCohort {
		out := n
		out.Args = make([]Node, len(n.Args))
		for i, a := range n.Args {
			r, err := Resolve(a, lookup)
			if err != nil {
				return Node{}, err
			}
			out.Args[i] = r
		}
		return out, nil
	}
	ref := n.Cohort
	if ref.ID != "" {
		if !slices.Contains(lookup(ref.Partner, ref.ID), ref.ID) {
			return Node{}, errAt(n.Path+"/cohort/id", "no cohort %q of partner %q in this workspace", ref.ID, ref.Partner)
		}
		return n, nil
	}
	path, what := n.Path+"/cohort/name", "named"
	if n.byValue {
		path, what = n.Path+"/value", "named or with id"
	}
	ids := lookup(ref.Partner, ref.Name)
	if slices.Contains(ids, ref.Name) {
		n.Cohort.ID = ref.Name
		return n, nil
	}
	switch len(ids) {
	case 0:
		return Node{}, errAt(path, "no cohort %s %q of partner %q in this workspace", what, ref.Name, ref.Partner)
	case 1:
		n.Cohort.ID = ids[0]
		return n, nil
	default:
		sorted := slices.Clone(ids)
		sort.Strings(sorted)
		return Node{}, errAt(path, "cohort name %q is ambiguous: cohorts %s; use the id", ref.Name, quoteList(sorted))
	}
}

// Cohorts lists the distinct cohorts the filter names, in order of
// appearance. Once resolved, a cohort named both by id and by name is one
// cohort, listed as it first appears.
func (n Node) Cohorts() []CohortRef {
	var out []CohortRef
	same := func(a, b CohortRef) bool {
		if a.Partner != b.Partner {
			return false
		}
		if a.ID != "" || b.ID != "" {
			return a.ID == b.ID
		}
		return a.Name == b.Name
	}
	var walk func(Node)
	walk = func(n Node) {
		if n.Op == OpCohort {
			if !slices.ContainsFunc(out, func(r CohortRef) bool { return same(r, n.Cohort) }) {
				out = append(out, n.Cohort)
			}
			return
		}
		for _, a := range n.Args {
			walk(a)
		}
	}
	walk(n)
	return out
}

// String is the canonical compact form, for logs, cache keys and cursors.
func (n Node) String() string {
	var b strings.Builder
	n.write(&b)
	return b.String()
}

func (n Node) write(b *strings.Builder) {
	switch n.Op {
	case OpCohort:
		ref := map[string]string{"partner": n.Cohort.Partner}
		if n.Cohort.ID != "" {
			ref["id"] = n.Cohort.ID
		} else {
			ref["name"] = n.Cohort.Name
		}
		j, _ := json.Marshal(map[string]any{"cohort": ref})
		b.Write(j)
	case OpNot:
		b.WriteString(`{"not":`)
		n.Args[0].write(b)
		b.WriteString("}")
	case OpAnd, OpOr:
		if n.Op == OpAnd {
			b.WriteString(`{"and":[`)
		} else {
			b.WriteString(`{"or":[`)
		}
		for i, a := range n.Args {
			if i > 0 {
				b.WriteByte(',')
			}
			a.write(b)
		}
		b.WriteString("]}")
	}
}

func quoteList(items []string) string {
	q := make([]string, len(items))
	for i, s := range items {
		q[i] = strconv.Quote(s)
	}
	return strings.Join(q, ", ")
}
