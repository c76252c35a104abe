package segmentstest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync/segments"
)

// pageLimit is small so that every case pages through many cursors.
const pageLimit = 7

// Run asks e every question of the corpus, which must have been written to
// e's store with c.Write, and compares each answer with the one the corpus
// computes itself.
func Run(t *testing.T, e segments.Engine, c Corpus) {
	t.Helper()
	m := c.model()
	t.Run("cases", func(t *testing.T) {
		for _, cs := range c.Cases {
			t.Run(cs.Name, func(t *testing.T) {
				t.Parallel()
				ctx := testCtx(t)
				if cs.ErrPath != "" {
					checkFilterError(ctx, t, e, cs)
					return
				}
				want := m.members(cs)
				checkEvaluate(ctx, t, e, cs, want)
				checkExplain(ctx, t, e, cs, m, explainSample(m, cs, want))
			})
		}
	})
	t.Run("datapoints", func(t *testing.T) {
		for _, q := range c.DataPoints {
			t.Run(q.Name, func(t *testing.T) {
				t.Parallel()
				got, err := e.DataPoints(testCtx(t), q.Workspace, q.From, q.To, q.GroupBy)
				if err != nil {
					t.Fatalf("DataPoints: %v", err)
				}
				want := m.dataPoints(q)
				if len(got) == 0 && len(want) == 0 {
					return
				}
				if !slices.Equal(got, want) {
					t.Errorf("DataPoints(%s..%s by %s)\n got %+v\nwant %+v", q.From.Format(time.DateOnly), q.To.Format(time.DateOnly), q.GroupBy, got, want)
				}
				for _, r := range got {
					if r.Transitions > r.Billable {
						t.Errorf("row %+v: more transitions than billable assignments", r)
					}
				}
			})
		}
	})
	t.Run("cohorts", func(t *testing.T) {
		for _, ws := range []string{c.Workspace, c.OtherWorkspace, "corpus-nobody"} {
			t.Run(ws, func(t *testing.T) {
				t.Parallel()
				got, err := e.Cohorts(testCtx(t), ws, c.Now)
				if err != nil {
					t.Fatalf("Cohorts: %v", err)
				}
				want := m.cohorts(ws, c.Now)
				if len(got) != len(want) {
					t.Fatalf("Cohorts(%s): %d cohorts, want %d:\n got %+v\nwant %+v", ws, len(got), len(want), got, want)
				}
				for i := range want {
					g, w := got[i], want[i]
					if !g.LastSync.Equal(w.LastSync) {
						t.Errorf("cohort %s/%s: last sync %s, want %s", w.Partner, w.CohortID, g.LastSync, w.LastSync)
					}
					g.LastSync, w.LastSync = time.Time{}, time.Time{}
					if g != w {
						t.Errorf("cohort %s/%s\n got %+v\nwant %+v", w.Partner, w.CohortID, g, w)
					}
				}
			})
		}
	})
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func checkFilterError(ctx context.Context, t *testing.T, e segments.Engine, cs Case) {
	t.Helper()
	check := func(op string, err error) {
		t.Helper()
		var fe *segments.FilterError
		if !errors.As(err, &fe) {
			t.Errorf("%s: error %v, want a *segments.FilterError at %s", op, err, cs.ErrPath)
			return
		}
		if fe.Path != cs.ErrPath {
			t.Errorf("%s: filter error at %q (%s), want at %q", op, fe.Path, fe.Msg, cs.ErrPath)
		}
	}
	_, err := e.Evaluate(ctx, cs.Workspace, segments.Query{Filter: cs.Filter, Limit: 10, AsOf: cs.AsOf})
	check("Evaluate", err)
	err = e.Export(ctx, cs.Workspace, cs.Filter, cs.AsOf, func(string) error { return nil })
	check("Export", err)
	_, err = e.Explain(ctx, cs.Workspace, cs.Filter, "user-001", cs.AsOf)
	check("Explain", err)
}

func checkEvaluate(ctx context.Context, t *testing.T, e segments.Engine, cs Case, want []string) {
	t.Helper()
	q := segments.Query{Filter: cs.Filter, AsOf: cs.AsOf}
	p, err := e.Evaluate(ctx, cs.Workspace, q)
	if err != nil {
		t.Fatalf("Evaluate (count): %v", err)
	}
	if p.Count != int64(len(want)) || len(p.Members) != 0 || p.NextCursor != "" {
		t.Errorf("Evaluate (count): count %d, %d members, cursor %q; want count %d and no members", p.Count, len(p.Members), p.NextCursor, len(want))
	}

	// Every page, following the cursors.
	var got []string
	var second string
	q.Limit = pageLimit
	for n := 0; ; n++ {
		if n > len(want)/pageLimit+1 {
			t.Fatalf("more than %d pages for %d members", n, len(want))
		}
		p, err := e.Evaluate(ctx, cs.Workspace, q)
		if err != nil {
			t.Fatalf("Evaluate (page %d): %v", n, err)
		}
		if p.Count != int64(len(want)) {
			t.Errorf("page %d: count %d, want %d", n, p.Count, len(want))
		}
		if len(p.Members) > pageLimit {
			t.Fatalf("page %d: %d members, limit %d", n, len(p.Members), pageLimit)
		}
		got = append(got, p.Members...)
		if more := len(got) < len(want); more != (p.NextCursor != "") {
			t.Errorf("page %d: cursor %q after %d of %d members", n, p.NextCursor, len(got), len(want))
		}
		if p.NextCursor == "" {
			break
		}
		if n == 0 {
			second = p.NextCursor
		}
		q.Cursor = p.NextCursor
	}
	if !slices.Equal(got, want) && !(len(got) == 0 && len(want) == 0) {
		t.Errorf("members in pages of %d\n got %q\nwant %q", pageLimit, got, want)
	}

	// One page that holds all.
	all, err := e.Evaluate(ctx, cs.Workspace, segments.Query{Filter: cs.Filter, AsOf: cs.AsOf, Limit: len(want) + 1})
	if err != nil {
		t.Fatalf("Evaluate (one page): %v", err)
	}
	if !slices.Equal(all.Members, want) && !(len(all.Members) == 0 && len(want) == 0) || all.NextCursor != "" {
		t.Errorf("one page of %d: %d members, cursor %q; want %d members", len(want)+1, len(all.Members), all.NextCursor, len(want))
	}

	if second != "" {
		// A cursor is stable: asked again, the same page.
		a, errA := e.Evaluate(ctx, cs.Workspace, segments.Query{Filter: cs.Filter, AsOf: cs.AsOf, Limit: pageLimit, Cursor: second})
		if errA != nil || !slices.Equal(a.Members, want[pageLimit:min(2*pageLimit, len(want))]) {
			t.Errorf("second page again: %q %v, want %q", a.Members, errA, want[pageLimit:min(2*pageLimit, len(want))])
		}
		// A cursor belongs to its filter.
		other := json.RawMessage(fmt.Sprintf(`{"not":%s}`, cs.Filter))
		if _, err := e.Evaluate(ctx, cs.Workspace, segments.Query{Filter: other, AsOf: cs.AsOf, Limit: pageLimit, Cursor: second}); !errors.Is(err, segments.ErrBadCursor) {
			t.Errorf("cursor of another filter: %v, want ErrBadCursor", err)
		}
	}
	for _, bad := range []string{"garbage!", "AAAA", "eyJ1c2VyIjoidXNlci0wMDEifQ"} {
		if _, err := e.Evaluate(ctx, cs.Workspace, segments.Query{Filter: cs.Filter, AsOf: cs.AsOf, Limit: pageLimit, Cursor: bad}); !errors.Is(err, segments.ErrBadCursor) {
			t.Errorf("cursor %q: %v, want ErrBadCursor", bad, err)
		}
	}

	var exported []string
	if err := e.Export(ctx, cs.Workspace, cs.Filter, cs.AsOf, func(u string) error {
		exported = append(exported, u)
		return nil
	}); err != nil {
		t.Fatalf("Export: %v", err)
	}
	if !slices.Equal(exported, want) && !(len(exported) == 0 && len(want) == 0) {
		t.Errorf("Export\n got %q\nwant %q", exported, want)
	}
	if len(want) > 1 {
		stop := errors.New("stop")
		n := 0
		err := e.Export(ctx, cs.Workspace, cs.Filter, cs.AsOf, func(string) error {
			n++
			return stop
		})
		if !errors.Is(err, stop) || n != 1 {
			t.Errorf("Export whose callback fails: %v after %d calls, want the callback's error after 1", err, n)
		}
	}
}

// explainSample picks users to explain: members, the universe's
// non-members, a user never seen, and users of the other workspace.
func explainSample(m *model, cs Case, members []string) []string {
	var out []string
	if n := len(members); n > 0 {
		out = append(out, members[0], members[n/2], members[n-1])
	}
	var outside []string
	for _, u := range m.universe(cs.Workspace) {
		if !slices.Contains(members, u) {
			outside = append(outside, u)
		}
	}
	if n := len(outside); n > 0 {
		out = append(out, outside[0], outside[n/2], outside[n-1])
	}
	return append(out, "nobody-at-all", "globex-007", "user-059", "")
}

func checkExplain(ctx context.Context, t *testing.T, e segments.Engine, cs Case, m *model, users []string) {
	t.Helper()
	for _, u := range users {
		got, err := e.Explain(ctx, cs.Workspace, cs.Filter, u, cs.AsOf)
		if err != nil {
			t.Errorf("Explain(%q): %v", u, err)
			continue
		}
		want := m.answer(cs, u)
		if msg := diffAnswer(got, want); msg != "" {
			t.Errorf("Explain(%q): %s", u, msg)
		}
	}
}

func diffAnswer(got, want segments.Answer) string {
	if got.UserID != want.UserID || got.Member != want.Member {
		return fmt.Sprintf("user %q member %v, want %q %v", got.UserID, got.Member, want.UserID, want.Member)
	}
	if len(got.Reasons) != len(want.Reasons) {
		return fmt.Sprintf("%d reasons, want %d: %+v", len(got.Reasons), len(want.Reasons), got.Reasons)
	}
	for i, w := range want.Reasons {
		g := got.Reasons[i]
		if g.Partner != w.Partner || g.CohortID != w.CohortID || g.CohortName != w.CohortName || g.InCohort != w.InCohort {
			return fmt.Sprintf("reason %d: %s/%s %q in %v, want %s/%s %q in %v", i, g.Partner, g.CohortID, g.CohortName, g.InCohort, w.Partner, w.CohortID, w.CohortName, w.InCohort)
		}
		switch {
		case (g.LastChange == nil) != (w.LastChange == nil):
			return fmt.Sprintf("reason %d (%s): last change %+v, want %+v", i, w.CohortID, g.LastChange, w.LastChange)
		case w.LastChange == nil:
		case g.LastChange.IsMember != w.LastChange.IsMember || g.LastChange.Version != w.LastChange.Version ||
			g.LastChange.RecordID != w.LastChange.RecordID || !g.LastChange.EventTime.Equal(w.LastChange.EventTime) ||
			!g.LastChange.ReceivedAt.Equal(w.LastChange.ReceivedAt):
			return fmt.Sprintf("reason %d (%s): last change %+v, want %+v", i, w.CohortID, *g.LastChange, *w.LastChange)
		}
	}
	return ""
}
