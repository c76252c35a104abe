package config

import (
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// fileDecoder sets a Config from a parsed YAML document one setting at a
// time. go-yaml's own decoder stops describing a problem at the Go type
// ("cannot unmarshal !!int `15` into time.Duration") and has no key path;
// walking the node tree alongside the Config type lets every problem name
// its dotted path and line in the words the documentation uses, and lets a
// bad setting keep its previous value while the rest of the file still applies.
type fileDecoder struct {
	errs []error
}

func (d *fileDecoder) problem(path string, n *yaml.Node, format string, args ...any) {
	d.errs = append(d.errs, fmt.Errorf("%s: line %d: %s", path, n.Line, fmt.Sprintf(format, args...)))
}

// entryDefaulter is a map type whose entries, when the file adds one, start
// from a value other than the zero value (Partners: a named partner is enabled).
type entryDefaulter interface {
	newEntry() reflect.Value
}

func (Partners) newEntry() reflect.Value { return reflect.ValueOf(newPartner()) }

// deref follows aliases to the node they stand for, and a document to its
// content. go-yaml has already rejected alias cycles when the document was
// checked (checkDocument).
func deref(n *yaml.Node) *yaml.Node {
	for {
		switch {
		case n.Kind == yaml.AliasNode && n.Alias != nil:
			n = n.Alias
		case n.Kind == yaml.DocumentNode && len(n.Content) > 0:
			n = n.Content[0]
		default:
			return n
		}
	}
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// kindWords names what a node is, for "want ..., got ..." messages.
func kindWords(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	default:
		return "a single value"
	}
}

// decode sets v, which is addressable, from n. Whatever fails keeps the
// value v had.
func (d *fileDecoder) decode(orig *yaml.Node, v reflect.Value, path string) {
	n := deref(orig)
	t := v.Type()
	if isNull(n) {
		// As with go-yaml: an empty value leaves a setting or a section as it
		// is ("log:" keeps the log defaults) but empties a list ("brokers:"
		// selects the embedded broker).
		if t.Kind() == reflect.Slice {
			v.Set(reflect.Zero(t))
		}
		return
	}
	switch {
	case t == durationType || isScalarKind(t.Kind()):
		if n.Kind != yaml.ScalarNode {
			d.problem(path, orig, "want %s, got %s", scalarWant(t), kindWords(n))
			return
		}
		if err := setScalar(v, n); err != nil {
			d.problem(path, orig, "%v", err)
		}
	case t.Kind() == reflect.Struct:
		if n.Kind != yaml.MappingNode {
			d.problem(path, orig, "want a mapping of settings, got %s", kindWords(n))
			return
		}
		d.structMapping(n, v, path)
	case t.Kind() == reflect.Map:
		if n.Kind != yaml.MappingNode {
			d.problem(path, orig, "want a mapping of names to settings, got %s", kindWords(n))
			return
		}
		d.mapMapping(n, v, path)
	case t.Kind() == reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.problem(path, orig, "want a list, like [a, b], got %s", kindWords(n))
			return
		}
		if len(n.Content) == 0 {
			// Stored as nil, like the default and an empty env variable, so
			// that a printed configuration reads back equal.
			v.Set(reflect.Zero(t))
			return
		}
		// The list is replaced as a whole, and only if every item is good.
		out := reflect.MakeSlice(t, len(n.Content), len(n.Content))
		before := len(d.errs)
		for i, item := range n.Content {
			d.decode(item, out.Index(i), fmt.Sprintf("%s[%d]", path, i))
		}
		if len(d.errs) == before {
			v.Set(out)
		}
	default:
		d.problem(path, orig, "cannot be set from a file (a %s)", t)
	}
}

func isScalarKind(k reflect.Kind) bool {
	switch k {
	case reflect.String, reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return true
	}
	return false
}

// scalarWant says what a scalar field takes, for a value of the wrong shape.
func scalarWant(t reflect.Type) string {
	if t == durationType {
		return "a duration like 15s, 5m or 1h"
	}
	switch t.Kind() {
	case reflect.Bool:
		return "true or false"
	case reflect.String:
		return "a single value"
	default:
		return "a whole number"
	}
}

// forEachPair calls f for each key and value of the mapping n, merged
// mappings (<<) first so that the mapping's own keys override them. Of several
// merged mappings the earlier wins, as YAML specifies, so they go last to first.
func forEachPair(n *yaml.Node, merging []*yaml.Node, f func(k, v *yaml.Node)) {
	if slices.Contains(merging, n) {
		return // checkDocument has rejected this already; do not loop
	}
	merging = append(merging, n)
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].ShortTag() != "!!merge" {
			continue
		}
		src := deref(n.Content[i+1])
		switch src.Kind {
		case yaml.MappingNode:
			forEachPair(src, merging, f)
		case yaml.SequenceNode:
			for j := len(src.Content) - 1; j >= 0; j-- {
				if m := deref(src.Content[j]); m.Kind == yaml.MappingNode {
					forEachPair(m, merging, f)
				}
			}
		}
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].ShortTag() != "!!merge" {
			f(n.Content[i], n.Content[i+1])
		}
	}
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// structMapping sets the fields of the struct v from the mapping n, and
// reports every key that has no field.
func (d *fileDecoder) structMapping(n *yaml.Node, v reflect.Value, path string) {
	fields := yamlFields(v.Type())
	forEachPair(n, nil, func(k, val *yaml.Node) {
		k = deref(k)
		if k.Kind != yaml.ScalarNode {
			d.problem(path, k, "want a setting's name as key, got %s", kindWords(k))
			return
		}
		f, ok := fields[k.Value]
		if !ok {
			msg := "unknown key"
			if s := closest(k.Value, fieldNames(fields)); s != "" {
				msg += "; did you mean " + joinPath(path, s) + "?"
			}
			d.problem(joinPath(path, k.Value), k, "%s", msg)
			return
		}
		d.decode(val, v.FieldByIndex(f.index), joinPath(path, k.Value))
	})
}

func fieldNames(fields map[string]yamlField) []string {
	names := make([]string, 0, len(fields))
	for k := range fields {
		names = append(names, k)
	}
	slices.Sort(names)
	return names
}

// mapMapping merges the mapping n into the map v: an entry the file names
// is updated from its current value, so a file that configures one partner
// keeps the others, and a new entry starts from the map's default entry.
func (d *fileDecoder) mapMapping(n *yaml.Node, v reflect.Value, path string) {
	t := v.Type()
	if t.Key().Kind() != reflect.String {
		d.problem(path, n, "cannot be set from a file (a %s)", t)
		return
	}
	if v.IsNil() {
		v.Set(reflect.MakeMap(t))
	}
	forEachPair(n, nil, func(k, val *yaml.Node) {
		k = deref(k)
		if k.Kind != yaml.ScalarNode || isNull(k) {
			d.problem(path, k, "want a name as key, got %s", kindWords(k))
			return
		}
		key := reflect.ValueOf(k.Value).Convert(t.Key())
		entry := reflect.New(t.Elem()).Elem()
		if cur := v.MapIndex(key); cur.IsValid() {
			entry.Set(cur)
		} else if ed, ok := v.Interface().(entryDefaulter); ok {
			entry.Set(ed.newEntry())
		}
		d.decode(val, entry, joinPath(path, k.Value))
		v.SetMapIndex(key, entry)
	})
}

// setScalar parses the scalar node n into v by v's type. YAML decides what
// the text is (15 is a number, "15" and 15s strings); the errors say what
// was wrong in the words the documentation uses.
func setScalar(v reflect.Value, n *yaml.Node) error {
	t := v.Type()
	switch {
	case t == durationType:
		var raw any
		if err := n.Decode(&raw); err != nil {
			return notDuration(n.Value)
		}
		s, ok := raw.(string)
		if !ok {
			return notDuration(n.Value)
		}
		dur, err := time.ParseDuration(s)
		if err != nil {
			return notDuration(s)
		}
		v.SetInt(int64(dur))
	case t.Kind() == reflect.String:
		var s string
		if err := n.Decode(&s); err != nil {
			return fmt.Errorf("%s is not text", shown(n.Value))
		}
		v.SetString(s)
	case t.Kind() == reflect.Bool:
		var b bool
		if err := n.Decode(&b); err != nil {
			return fmt.Errorf("%s is not true or false", shown(n.Value))
		}
		v.SetBool(b)
	default: // integers
		var raw any
		if err := n.Decode(&raw); err != nil {
			return notWholeNumber(n.Value)
		}
		var i int64
		switch x := raw.(type) {
		case int:
			i = int64(x)
		case int64:
			i = x
		case uint64:
			return outOfRange(n.Value, t)
		case float64:
			// go-yaml would truncate 1.5 to 1; a whole 1e6 is fine.
			if x != math.Trunc(x) || math.IsInf(x, 0) || math.IsNaN(x) {
				return notWholeNumber(n.Value)
			}
			if x < math.MinInt64 || x >= math.MaxInt64 {
				return outOfRange(n.Value, t)
			}
			i = int64(x)
		default:
			return notWholeNumber(n.Value)
		}
		if v.OverflowInt(i) {
			return outOfRange(n.Value, t)
		}
		v.SetInt(i)
	}
	return nil
}

// shown quotes a value in a message unless it is a number, so that 15 and
// "15" read as what the user wrote.
func shown(s string) string {
	if _, err := strconv.ParseFloat(strings.ReplaceAll(s, "_", ""), 64); err == nil {
		return s
	}
	return strconv.Quote(s)
}

func notDuration(s string) error {
	if _, err := strconv.ParseFloat(s, 64); err == nil {
		return fmt.Errorf("%s is not a duration; write it with a unit, like 15s, 5m or 1h", s)
	}
	return fmt.Errorf("%s is not a duration like 15s, 5m or 1h", shown(s))
}

func notWholeNumber(s string) error {
	return fmt.Errorf("%s is not a whole number", shown(s))
}

func outOfRange(s string, t reflect.Type) error {
	lo, hi := int64(math.MinInt64), int64(math.MaxInt64)
	if bits := t.Bits(); bits < 64 {
		lo, hi = -1<<(bits-1), 1<<(bits-1)-1
	}
	return fmt.Errorf("%s is out of range (%d to %d)", s, lo, hi)
}

// closest returns the one candidate within a small edit distance of s, for
// a "did you mean" hint, or "" when none or several are that close.
func closest(s string, candidates []string) string {
	// Two edits catch a dropped, doubled or swapped letter; more would
	// suggest unrelated names for short ones.
	limit := 2
	if len(s) <= 4 {
		limit = 1
	}
	best, bestDist, ties := "", limit+1, 0
	for _, c := range candidates {
		switch dist := editDistance(s, c); {
		case dist < bestDist:
			best, bestDist, ties = c, dist, 0
		case dist == bestDist:
			ties++
		}
	}
	if best == "" || ties > 0 {
		return ""
	}
	return best
}

// editDistance is the Damerau–Levenshtein distance (optimal string
// alignment) of a and b, counting a swap of neighbours as one edit.
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev2 := make([]int, len(rb)+1)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(rb)]
}
