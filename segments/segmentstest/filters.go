package segmentstest

import (
	"encoding/json"
	"slices"
)

// CohortKey names a cohort of a workspace.
type CohortKey struct{ Partner, ID string }

// expr is a filter written twice: as the JSON document sent to an engine,
// and as a Go predicate over a user's cohort memberships that the expected
// answers are computed with. The two are built side by side so that no
// parser stands between the corpus and its answers.
type expr struct {
	doc  any
	pred func(in func(CohortKey) bool) bool
	// refs are the cohorts named, in order of first appearance: the order
	// of an answer's reasons.
	refs []CohortKey
}

func (e expr) json() json.RawMessage {
	b, err := json.Marshal(e.doc)
	if err != nil {
		// Only maps, slices and strings of this package go in.
		return json.RawMessage(`{"invalid":"corpus filter"}`)
	}
	return b
}

func leaf(doc any, k CohortKey) expr {
	return expr{doc: doc, pred: func(in func(CohortKey) bool) bool { return in(k) }, refs: []CohortKey{k}}
}

// byID is {"cohort": {"partner": p, "id": id}}.
func byID(k CohortKey) expr {
	return leaf(map[string]any{"cohort": map[string]string{"partner": k.Partner, "id": k.ID}}, k)
}

// byName is {"cohort": {"partner": p, "name": name}}, naming cohort k.
func byName(name string, k CohortKey) expr {
	return leaf(map[string]any{"cohort": map[string]string{"partner": k.Partner, "name": name}}, k)
}

// braze is the Braze form {"filter": attr, "op": op, "value": value} that
// means "includes k" (or "excludes k" with op "excludes").
func braze(attr, op, value string, k CohortKey) expr {
	e := leaf(map[string]any{"filter": attr, "op": op, "value": value}, k)
	if op == "excludes" {
		inner := e.pred
		e.pred = func(in func(CohortKey) bool) bool { return !inner(in) }
	}
	return e
}

func not(x expr) expr {
	return expr{
		doc:  map[string]any{"not": x.doc},
		pred: func(in func(CohortKey) bool) bool { return !x.pred(in) },
		refs: x.refs,
	}
}

func and(xs ...expr) expr { return combine("and", true, xs) }

func or(xs ...expr) expr { return combine("or", false, xs) }

func combine(op string, all bool, xs []expr) expr {
	docs := make([]any, len(xs))
	var refs []CohortKey
	for i, x := range xs {
		docs[i] = x.doc
		for _, r := range x.refs {
			if !slices.Contains(refs, r) {
				refs = append(refs, r)
			}
		}
	}
	return expr{
		doc: map[string]any{op: docs},
		pred: func(in func(CohortKey) bool) bool {
			for _, x := range xs {
				if x.pred(in) != all {
					return !all
				}
			}
			return all
		},
		refs: refs,
	}
}

// raw is a document an engine must refuse; its predicate is never used.
func raw(doc string) expr {
	return expr{doc: json.RawMessage(doc), pred: func(func(CohortKey) bool) bool { return false }}
}
