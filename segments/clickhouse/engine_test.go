package clickhouse_test

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync/internal/testkit"
	"github.com/cohortsync/cohortsync/pipeline"
	"github.com/cohortsync/cohortsync/schemas"
	"github.com/cohortsync/cohortsync/segments"
	segch "github.com/cohortsync/cohortsync/segments/clickhouse"
)

const (
	ws    = "acme"
	other = "globex"
	mp    = "mixpanel"
)

func users(prefix string, from, to int) []string {
	var out []string
	for i := from; i <= to; i++ {
		out = append(out, fmt.Sprintf("%s%03d", prefix, i))
	}
	return out
}

// fixture is three overlapping cohorts synced Mixpanel-style: three dynamic
// syncs of A and B 15 minutes apart across midnight (with a re-sent sync of
// A, a redelivered batch and a record landed twice), one sync of C, and a
// cohort of the same id in another workspace.
type fixture struct {
	eng   *segch.Engine
	model *model
	t0    time.Time // first sync
	t1    time.Time // second sync
	t2    time.Time // last sync
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	sink, eng := newPair(t)
	t0 := time.Date(2026, 11, 1, 23, 40, 0, 0, time.UTC)
	t1, t2 := t0.Add(15*time.Minute), t0.Add(30*time.Minute)
	rec := func(w, cohort, id string, offset int64, at time.Time, ids []change) record {
		return record{workspace: w, partner: mp, cohort: cohort, recordID: id, offset: offset, at: at, ids: ids}
	}
	sync1 := []record{
		rec(ws, "A", "r-a1", 10, t0, adds(users("u", 1, 20)...)),
		rec(ws, "B", "r-b1", 11, t0, adds(users("u", 10, 25)...)),
		rec(ws, "C", "r-c1", 12, t0, adds("u005", "u030", "u040")),
		rec(ws, "E", "r-e1", 14, t0, adds("u050", "u005")), // no metadata landed
		rec(other, "A", "r-x1", 13, t0, adds("u001", "u099")),
	}
	sync2 := []record{
		rec(ws, "A", "r-a2", 20, t1, concat(removes("u001", "u002"), adds("u021"))),
		rec(ws, "B", "r-b2", 21, t1, concat(removes("u010"), adds("u026"))),
	}
	sync3 := []record{
		// The partner re-sends part of A's sync 1: new data, billable
		// again, but no transition.
		rec(ws, "A", "r-a3", 30, t2, concat(adds("u003", "u004"), removes("u005"))),
		rec(ws, "A", "r-a3b", 31, t2, adds("u003")),
		rec(ws, "B", "r-b3", 32, t2, concat(adds("u010"), removes("u011"), adds("u011"))),
		// A produce retry landed sync 2's record of A a second time, at a
		// later offset: applied again, billed once.
		rec(ws, "A", "r-a2", 33, t1, concat(removes("u001", "u002"), adds("u021"))),
	}
	metas := []pipeline.Record{
		cohortMeta(ws, mp, "A", "Alpha", 1, t0), cohortMeta(ws, mp, "B", "Beta", 2, t0),
		cohortMeta(ws, mp, "C", "Gamma", 3, t0), cohortMeta(ws, mp, "D", "Gamma", 4, t0),
		cohortMeta(other, mp, "A", "Alpha", 5, t0),
	}
	write(t, sink, sync1, metas)
	write(t, sink, sync2, nil)
	write(t, sink, sync2, nil) // redelivered: must not count twice
	write(t, sink, sync3, nil)
	all := slices.Concat(sync1, sync2, sync2, sync3)
	return &fixture{eng: eng, model: newModel(all), t0: t0, t1: t1, t2: t2}
}

func cohortF(id string) string {
	return fmt.Sprintf(`{"cohort":{"partner":"mixpanel","id":%q}}`, id)
}

// setOf evaluates a filter over the model: in, a per-cohort membership, and
// the workspace universe for negation.
type expr func(in func(cohort string) bool) bool

func (f *fixture) expect(e expr, asOf time.Time) []string {
	members := map[string]map[string]bool{}
	in := func(u string) func(string) bool {
		return func(c string) bool {
			if members[c] == nil {
				members[c] = f.model.members(ws, mp, c, asOf)
			}
			return members[c][u]
		}
	}
	var out []string
	for _, u := range f.model.universe(ws) {
		if e(in(u)) {
			out = append(out, u)
		}
	}
	return out
}

func TestEngine(t *testing.T) {
	t.Parallel()
	f := newFixture(t)

	aNotB := func(in func(string) bool) bool { return in("A") && !in("B") }
	cases := []struct {
		name   string
		filter string
		want   expr
		asOf   time.Time
	}{
		{"A and not B", `{"and":[` + cohortF("A") + `,{"not":` + cohortF("B") + `}]}`, aNotB, time.Time{}},
		{"A and not B, Braze form by name", `{"and":[{"filter":"Mixpanel_Cohorts","op":"includes","value":"Alpha"},{"filter":"Mixpanel_Cohorts","op":"excludes","value":"Beta"}]}`, aNotB, time.Time{}},
		{"A or C", `{"or":[` + cohortF("A") + `,` + cohortF("C") + `]}`, func(in func(string) bool) bool { return in("A") || in("C") }, time.Time{}},
		{"not A", `{"not":` + cohortF("A") + `}`, func(in func(string) bool) bool { return !in("A") }, time.Time{}},
		{"not (A or B or C)", `{"not":{"or":[` + cohortF("A") + `,` + cohortF("B") + `,` + cohortF("C") + `]}}`,
			func(in func(string) bool) bool { return !(in("A") || in("B") || in("C")) }, time.Time{}},
		{"B and A and B", `{"and":[` + cohortF("B") + `,` + cohortF("A") + `,` + cohortF("B") + `]}`, func(in func(string) bool) bool { return in("A") && in("B") }, time.Time{}},
		{"A and not B as of before the last sync", `{"and":[` + cohortF("A") + `,{"not":` + cohortF("B") + `}]}`, aNotB, f.t1.Add(time.Minute)},
		{"not A as of before the last sync", `{"not":` + cohortF("A") + `}`, func(in func(string) bool) bool { return !in("A") }, f.t1.Add(time.Minute)},
		{"E (changes, no metadata) and not C", `{"and":[{"filter":"Mixpanel_Cohorts","op":"includes","value":"E"},{"not":` + cohortF("C") + `}]}`,
			func(in func(string) bool) bool { return in("E") && !in("C") }, time.Time{}},
		{"B as of before anything", cohortF("B"), func(in func(string) bool) bool { return in("B") }, f.t0.Add(-time.Hour)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			ctx := testkit.DetachedContext(t, 60*time.Second)
			want := f.expect(c.want, c.asOf)
			if len(want) == 0 && !strings.Contains(c.name, "before anything") {
				t.Fatalf("the fixture gives %s no members: the case proves nothing", c.name)
			}
			// Count only.
			p, err := f.eng.Evaluate(ctx, ws, segments.Query{Filter: json.RawMessage(c.filter), AsOf: c.asOf})
			if err != nil {
				t.Fatalf("evaluate: %v", err)
			}
			if p.Count != int64(len(want)) || len(p.Members) != 0 || p.NextCursor != "" {
				t.Fatalf("count-only: %+v, want count %d and no members", p, len(want))
			}
			// Pages of 3: complete, in order, no overlap, no cursor on the last.
			var got []string
			cursor := ""
			for pages := 0; ; pages++ {
				if pages > len(want) {
					t.Fatalf("more pages than members")
				}
				p, err := f.eng.Evaluate(ctx, ws, segments.Query{Filter: json.RawMessage(c.filter), Limit: 3, Cursor: cursor, AsOf: c.asOf})
				if err != nil {
					t.Fatalf("page %d: %v", pages, err)
				}
				if p.Count != int64(len(want)) {
					t.Fatalf("page %d count %d, want %d", pages, p.Count, len(want))
				}
				if len(p.Members) > 3 || (p.NextCursor != "" && len(p.Members) != 3) {
					t.Fatalf("page %d: %d members, cursor %q", pages, len(p.Members), p.NextCursor)
				}
				got = append(got, p.Members...)
				if p.NextCursor == "" {
					break
				}
				cursor = p.NextCursor
			}
			if !slices.Equal(got, want) {
				t.Errorf("members\n got %v\nwant %v", got, want)
			}
			// Export gives the same list.
			var exported []string
			if err := f.eng.Export(ctx, ws, json.RawMessage(c.filter), c.asOf, func(u string) error {
				exported = append(exported, u)
				return nil
			}); err != nil {
				t.Fatalf("export: %v", err)
			}
			if !slices.Equal(exported, want) {
				t.Errorf("export\n got %v\nwant %v", exported, want)
			}
			// Per-user answers agree with the list for every user the
			// workspace knows and one it does not.
			for _, u := range append(f.model.universe(ws), "nobody") {
				a, err := f.eng.Explain(ctx, ws, json.RawMessage(c.filter), u, c.asOf)
				if err != nil {
					t.Fatalf("explain %s: %v", u, err)
				}
				if a.Member != slices.Contains(want, u) {
					t.Errorf("explain %s: member %v, want %v", u, a.Member, !a.Member)
				}
			}
		})
	}
}

func TestExplainReasons(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := testkit.DetachedContext(t, 60*time.Second)
	filter := json.RawMessage(`{"and":[{"cohort":{"partner":"mixpanel","name":"Alpha"}},{"not":` + cohortF("B") + `}]}`)
	for _, asOf := range []time.Time{{}, f.t1.Add(time.Minute)} {
		last := f.model.last(asOf)
		for _, u := range []string{"u001", "u003", "u005", "u010", "u011", "u021", "u030", "nobody"} {
			a, err := f.eng.Explain(ctx, ws, filter, u, asOf)
			if err != nil {
				t.Fatalf("explain %s: %v", u, err)
			}
			if a.UserID != u || len(a.Reasons) != 2 {
				t.Fatalf("explain %s: %+v", u, a)
			}
			inA, inB := false, false
			for i, cohort := range []string{"A", "B"} {
				r := a.Reasons[i]
				want, ok := last[userKey{ws, mp, cohort, u}]
				if r.Partner != mp || r.CohortID != cohort {
					t.Errorf("%s reason %d names %s/%s, want %s/%s", u, i, r.Partner, r.CohortID, mp, cohort)
				}
				if !ok {
					if r.InCohort || r.LastChange != nil {
						t.Errorf("%s as of %v, cohort %s: %+v, want no change", u, asOf, cohort, r)
					}
					continue
				}
				lc := r.LastChange
				if lc == nil || r.InCohort != want.IsMember || lc.IsMember != want.IsMember || lc.Version != want.Version ||
					lc.RecordID != want.RecordID || !lc.EventTime.Equal(want.EventTime) || !lc.ReceivedAt.Equal(want.ReceivedAt) {
					t.Errorf("%s as of %v, cohort %s: %+v %+v, want %+v", u, asOf, cohort, r, lc, want)
				}
				if cohort == "A" {
					inA = r.InCohort
				} else {
					inB = r.InCohort
				}
			}
			if a.Reasons[0].CohortName != "Alpha" || a.Reasons[1].CohortName != "Beta" {
				t.Errorf("%s: names %q %q", u, a.Reasons[0].CohortName, a.Reasons[1].CohortName)
			}
			if a.Member != (inA && !inB) {
				t.Errorf("%s: member %v with A=%v B=%v", u, a.Member, inA, inB)
			}
		}
	}
}

func TestFilterErrorsAndCursors(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := testkit.DetachedContext(t, 60*time.Second)
	bad := []struct{ filter, path, msg string }{
		{`{"cohort":{"partner":"mixpanel","id":"Z"}}`, "/cohort/id", "no cohort"},
		{`{"and":[` + cohortF("A") + `,{"cohort":{"partner":"mixpanel","name":"Gamma"}}]}`, "/and/1/cohort/name", `"C", "D"`},
		{`{"or":[]}`, "/or", "non-empty"},
		// Cohort A exists in the other workspace only under that id there.
		{`{"cohort":{"partner":"amplitude","id":"A"}}`, "/cohort/id", "no cohort"},
	}
	for _, c := range bad {
		_, err := f.eng.Evaluate(ctx, ws, segments.Query{Filter: json.RawMessage(c.filter), Limit: 1})
		var fe *segments.FilterError
		if !errors.As(err, &fe) || fe.Path != c.path || !strings.Contains(fe.Msg, c.msg) {
			t.Errorf("evaluate %s: %v, want a FilterError at %s with %q", c.filter, err, c.path, c.msg)
		}
	}
	// A cohort of another workspace is unknown here.
	_, err := f.eng.Evaluate(ctx, other, segments.Query{Filter: json.RawMessage(cohortF("B"))})
	var fe *segments.FilterError
	if !errors.As(err, &fe) {
		t.Errorf("cohort B in %s: %v, want a FilterError", other, err)
	}
	p, err := f.eng.Evaluate(ctx, ws, segments.Query{Filter: json.RawMessage(cohortF("A")), Limit: 2})
	if err != nil || p.NextCursor == "" {
		t.Fatalf("first page: %+v %v", p, err)
	}
	raw, err := base64.RawURLEncoding.DecodeString(p.NextCursor)
	if err != nil {
		t.Fatalf("cursor %q is not base64url: %v", p.NextCursor, err)
	}
	raw[2] ^= 1
	tampered := base64.RawURLEncoding.EncodeToString(raw)
	for _, cur := range []string{"garbage!", "AAAA", tampered} {
		if _, err := f.eng.Evaluate(ctx, ws, segments.Query{Filter: json.RawMessage(cohortF("A")), Limit: 2, Cursor: cur}); !errors.Is(err, segments.ErrBadCursor) {
			t.Errorf("cursor %q: %v, want ErrBadCursor", cur, err)
		}
	}
	if _, err := f.eng.Evaluate(ctx, ws, segments.Query{Filter: json.RawMessage(cohortF("B")), Limit: 2, Cursor: p.NextCursor}); !errors.Is(err, segments.ErrBadCursor) {
		t.Errorf("cursor of another filter: %v, want ErrBadCursor", err)
	}
	// The same filter written another way keeps its cursors.
	if _, err := f.eng.Evaluate(ctx, ws, segments.Query{Filter: json.RawMessage(`{"filter":"Mixpanel_Cohorts","op":"includes","value":"Alpha"}`), Limit: 2, Cursor: p.NextCursor}); err != nil {
		t.Errorf("cursor of the same filter by name: %v", err)
	}
	// Export stops at the callback's error and returns it.
	stop := errors.New("enough")
	n := 0
	err = f.eng.Export(ctx, ws, json.RawMessage(cohortF("A")), time.Time{}, func(string) error {
		if n++; n == 2 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || n != 2 {
		t.Errorf("export with a failing callback: %v after %d calls", err, n)
	}
}

func TestDataPoints(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := testkit.DetachedContext(t, 60*time.Second)
	day0 := f.t0.Truncate(24 * time.Hour)
	day1 := day0.AddDate(0, 0, 1)
	keys := map[segments.GroupBy]func(c schemas.ResolvedChange) segments.DataPointRow{
		segments.GroupByDay: func(c schemas.ResolvedChange) segments.DataPointRow {
			return segments.DataPointRow{Day: c.ReceivedAt.UTC().Format(time.DateOnly)}
		},
		segments.GroupByPartner: func(c schemas.ResolvedChange) segments.DataPointRow {
			return segments.DataPointRow{Partner: c.Partner}
		},
		segments.GroupByCohort: func(c schemas.ResolvedChange) segments.DataPointRow {
			return segments.DataPointRow{Partner: c.Partner, CohortID: c.CohortID}
		},
	}
	ranges := [][2]time.Time{{day0, day1}, {day1, day1}, {day0, day0}, {day0.AddDate(0, 0, -10), day0.AddDate(0, 0, -1)}}
	for g, key := range keys {
		for _, r := range ranges {
			got, err := f.eng.DataPoints(ctx, ws, r[0], r[1], g)
			if err != nil {
				t.Fatalf("data points %s %v: %v", g, r, err)
			}
			want := f.model.dataPoints(ws, r[0], r[1], key)
			if !slices.Equal(got, want) {
				t.Errorf("data points by %s from %s to %s\n got %+v\nwant %+v", g, r[0].Format(time.DateOnly), r[1].Format(time.DateOnly), got, want)
			}
			for _, row := range got {
				if row.Transitions > row.Billable {
					t.Errorf("row %+v: more transitions than billable", row)
				}
			}
		}
	}
	// The fixture must exercise what it claims: a re-sent sync that bills
	// without transitions on the second day.
	day := f.model.dataPoints(ws, day1, day1, keys[segments.GroupByDay])
	if len(day) != 1 || day[0].Billable <= day[0].Transitions {
		t.Fatalf("fixture: day 2 is %+v, want more billable than transitions", day)
	}
	if _, err := f.eng.DataPoints(ctx, ws, day0, day1, "week"); err == nil {
		t.Error("group by week: no error")
	}
}

func TestCohorts(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := testkit.DetachedContext(t, 60*time.Second)
	check := func(now time.Time, staleA bool) {
		t.Helper()
		got, err := f.eng.Cohorts(ctx, ws, now)
		if err != nil {
			t.Fatalf("cohorts: %v", err)
		}
		var ids []string
		for _, c := range got {
			ids = append(ids, c.CohortID)
		}
		if !slices.Equal(ids, []string{"A", "B", "C", "D", "E"}) {
			t.Fatalf("cohorts %v, want A B C D E", ids)
		}
		byID := map[string]segments.CohortInfo{}
		for _, c := range got {
			byID[c.CohortID] = c
		}
		for id, name := range map[string]string{"A": "Alpha", "B": "Beta", "C": "Gamma", "E": ""} {
			c := byID[id]
			if c.Name != name || c.Partner != mp || c.MemberCount != int64(len(f.model.members(ws, mp, id, time.Time{}))) {
				t.Errorf("cohort %s: %+v, want name %s and %d members", id, c, name, len(f.model.members(ws, mp, id, time.Time{})))
			}
		}
		a, c, d := byID["A"], byID["C"], byID["D"]
		if a.SyncMode != segments.SyncDynamic || a.PeriodSeconds != 15*60 || a.Stale != staleA ||
			!a.LastSync.Equal(f.t2) || a.AgeSeconds != int64(now.Sub(f.t2)/time.Second) {
			t.Errorf("A at %v: %+v, want dynamic every 900 s, stale %v, last sync %v", now, a, staleA, f.t2)
		}
		if c.SyncMode != segments.SyncOneTime || c.Stale || !c.LastSync.Equal(f.t0) {
			t.Errorf("C: %+v, want one-time, last sync %v", c, f.t0)
		}
		if d.SyncMode != segments.SyncOneTime || d.MemberCount != 0 || !d.LastSync.IsZero() {
			t.Errorf("D (metadata only): %+v", d)
		}
	}
	check(f.t2.Add(20*time.Minute), false)
	check(f.t2.Add(31*time.Minute), true)
}
