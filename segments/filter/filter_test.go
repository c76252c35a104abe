package filter

import (
	"errors"
	"strings"
	"testing"

	"github.com/cohortsync/cohortsync/segments"
)

func TestParseValid(t *testing.T) {
	t.Parallel()
	cases := []struct{ in, want string }{
		{`{"cohort":{"partner":"mixpanel","id":"a"}}`, `{"cohort":{"id":"a","partner":"mixpanel"}}`},
		{`{"cohort":{"partner":"mixpanel","name":"Churn risk"}}`, `{"cohort":{"name":"Churn risk","partner":"mixpanel"}}`},
		{`{"and":[{"cohort":{"partner":"mixpanel","id":"a"}},{"not":{"cohort":{"partner":"mixpanel","id":"b"}}}]}`,
			`{"and":[{"cohort":{"id":"a","partner":"mixpanel"}},{"not":{"cohort":{"id":"b","partner":"mixpanel"}}}]}`},
		{`{"or":[{"cohort":{"partner":"amplitude","id":"x"}}]}`, `{"or":[{"cohort":{"id":"x","partner":"amplitude"}}]}`},
		{`{"filter":"Mixpanel_Cohorts","op":"includes","value":"Churn risk"}`, `{"cohort":{"name":"Churn risk","partner":"mixpanel"}}`},
		{`{"filter":"Mixpanel_Cohorts","op":"excludes","value":"42"}`, `{"not":{"cohort":{"name":"42","partner":"mixpanel"}}}`},
	}
	for _, c := range cases {
		n, err := Parse([]byte(c.in))
		if err != nil {
			t.Errorf("Parse(%s): %v", c.in, err)
			continue
		}
		if got := n.String(); got != c.want {
			t.Errorf("Parse(%s).String() = %s, want %s", c.in, got, c.want)
		}
		// The canonical form parses to itself.
		again, err := Parse([]byte(n.String()))
		if err != nil || again.String() != n.String() {
			t.Errorf("canonical form %s does not round-trip: %v", n.String(), err)
		}
	}
}

func TestParseErrorsPointAtThePart(t *testing.T) {
	t.Parallel()
	deep := strings.Repeat(`{"not":`, MaxDepth+2) + `{"cohort":{"partner":"p","id":"a"}}` + strings.Repeat(`}`, MaxDepth+2)
	many := `{"or":[` + strings.Repeat(`{"cohort":{"partner":"p","id":"a"}},`, MaxNodes) + `{"cohort":{"partner":"p","id":"a"}}]}`
	cases := []struct{ in, path, msg string }{
		{``, "", "required"},
		{`[]`, "", "JSON object"},
		{`{}`, "", "exactly one"},
		{`{"cohort":{"partner":"p","id":"a"},"not":{}}`, "", "exactly one"},
		{`{"nor":[]}`, "", `unknown key "nor"`},
		{`{"cohort":"a"}`, "/cohort", "JSON object"},
		{`{"cohort":{"id":"a"}}`, "/cohort", `"partner" is required`},
		{`{"cohort":{"partner":"p"}}`, "/cohort", `"id" or "name"`},
		{`{"cohort":{"partner":"p","id":"a","name":"b"}}`, "/cohort", "not both"},
		{`{"cohort":{"partner":"p","id":7}}`, "/cohort/id", "must be a string"},
		{`{"cohort":{"partner":"p","id":" "}}`, "/cohort/id", "must not be empty"},
		{`{"cohort":{"partner":"p","idd":"a"}}`, "/cohort/idd", "unknown key"},
		{`{"and":[]}`, "/and", "non-empty array"},
		{`{"and":{}}`, "/and", "non-empty array"},
		{`{"and":[{"cohort":{"partner":"p","id":"a"}},{"or":[{"cohort":{"partner":"p"}}]}]}`, "/and/1/or/0/cohort", `"id" or "name"`},
		{`{"not":5}`, "/not", "JSON object"},
		{`{"filter":"Mixpanel","op":"includes","value":"a"}`, "/filter", "<Partner>_Cohorts"},
		{`{"filter":"Mixpanel_Cohorts","op":"is","value":"a"}`, "/op", `"includes" or "excludes"`},
		{`{"filter":"Mixpanel_Cohorts","op":"includes"}`, "", `"value" is required`},
		{`{"filter":"Mixpanel_Cohorts","op":"includes","value":"a","x":1}`, "/x", "unknown key"},
		{deep, strings.Repeat("/not", MaxDepth+1), "deeper"},
		{many, "/or/999", "more than"},
	}
	for _, c := range cases {
		_, err := Parse([]byte(c.in))
		var fe *segments.FilterError
		if !errors.As(err, &fe) {
			t.Errorf("Parse(%.60s) = %v, want a FilterError", c.in, err)
			continue
		}
		if fe.Path != c.path || !strings.Contains(fe.Msg, c.msg) {
			t.Errorf("Parse(%.60s): path %q msg %q, want path %q and a message with %q", c.in, fe.Path, fe.Msg, c.path, c.msg)
		}
	}
}

func TestResolve(t *testing.T) {
	t.Parallel()
	// Cohorts of partner mixpanel: ids a, b, c, d; names "Churn" (a), "Dup" (b and d), "b" (c).
	cohorts := map[string]string{"a": "Churn", "b": "Dup", "c": "b", "d": "Dup"}
	lookup := func(partner, v string) []string {
		if partner != "mixpanel" {
			return nil
		}
		var out []string
		if _, ok := cohorts[v]; ok {
			out = append(out, v)
		}
		for id, name := range cohorts {
			if name == v && id != v {
				out = append(out, id)
			}
		}
		return out
	}
	ok := []struct{ in, want string }{
		{`{"cohort":{"partner":"mixpanel","name":"Churn"}}`, `{"cohort":{"id":"a","partner":"mixpanel"}}`},
		{`{"filter":"Mixpanel_Cohorts","op":"excludes","value":"b"}`, `{"not":{"cohort":{"id":"b","partner":"mixpanel"}}}`}, // the id wins over c's name
		{`{"and":[{"cohort":{"partner":"mixpanel","id":"c"}}]}`, `{"and":[{"cohort":{"id":"c","partner":"mixpanel"}}]}`},
	}
	for _, c := range ok {
		n, err := Parse([]byte(c.in))
		if err != nil {
			t.Fatal(err)
		}
		r, err := Resolve(n, lookup)
		if err != nil || r.String() != c.want {
			t.Errorf("Resolve(%s) = %s, %v; want %s", c.in, r.String(), err, c.want)
		}
	}
	bad := []struct{ in, path, msg string }{
		{`{"cohort":{"partner":"mixpanel","id":"zz"}}`, "/cohort/id", "no cohort"},
		{`{"or":[{"cohort":{"partner":"heap","name":"Churn"}}]}`, "/or/0/cohort/name", "no cohort"},
		{`{"cohort":{"partner":"mixpanel","name":"Dup"}}`, "/cohort/name", `ambiguous: cohorts "b", "d"`},
		{`{"filter":"Mixpanel_Cohorts","op":"includes","value":"Dup"}`, "/value", "ambiguous"},
		{`{"and":[{"cohort":{"partner":"mixpanel","id":"a"}},{"filter":"Mixpanel_Cohorts","op":"excludes","value":"nope"}]}`, "/and/1/value", "no cohort"},
		{`{"not":{"filter":"Heap_Cohorts","op":"includes","value":"a"}}`, "/not/value", `partner "heap"`},
	}
	for _, c := range bad {
		n, err := Parse([]byte(c.in))
		if err != nil {
			t.Fatal(err)
		}
		_, err = Resolve(n, lookup)
		var fe *segments.FilterError
		if !errors.As(err, &fe) || fe.Path != c.path || !strings.Contains(fe.Msg, c.msg) {
			t.Errorf("Resolve(%s) = %v, want path %q with %q", c.in, err, c.path, c.msg)
		}
	}
	n, _ := Parse([]byte(`{"and":[{"cohort":{"partner":"p","id":"a"}},{"not":{"cohort":{"partner":"p","id":"a"}}},{"cohort":{"partner":"p","id":"b"}}]}`))
	if got := n.Cohorts(); len(got) != 2 || got[0].ID != "a" || got[1].ID != "b" {
		t.Errorf("Cohorts() = %+v", got)
	}
	// By name and by id: one cohort once resolved.
	n, _ = Parse([]byte(`{"or":[{"cohort":{"partner":"mixpanel","name":"Churn"}},{"filter":"Mixpanel_Cohorts","op":"excludes","value":"a"},{"cohort":{"partner":"mixpanel","id":"c"}}]}`))
	if got := n.Cohorts(); len(got) != 3 {
		t.Errorf("unresolved Cohorts() = %+v, want 3 refs", got)
	}
	r, err := Resolve(n, lookup)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Cohorts(); len(got) != 2 || got[0].ID != "a" || got[0].Name != "Churn" || got[1].ID != "c" {
		t.Errorf("resolved Cohorts() = %+v, want a (Churn) and c", got)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{`{"cohort":{"partner":"p","id":"a"}}`, `{"and":[{"not":{"cohort":{"partner":"p","name":"x"}}}]}`,
		`{"filter":"Mixpanel_Cohorts","op":"includes","value":"a"}`, `[]`, `{"or":[1]}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		n, err := Parse(in)
		if err != nil {
			var fe *segments.FilterError
			if !errors.As(err, &fe) {
				t.Fatalf("error %v is not a FilterError", err)
			}
			return
		}
		if again, err := Parse([]byte(n.String())); err != nil || again.String() != n.String() {
			t.Fatalf("canonical form %s does not round-trip: %v", n.String(), err)
		}
	})
}
