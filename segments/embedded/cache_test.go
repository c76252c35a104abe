package embedded_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cohortsync/cohortsync/internal/testkit"
	"github.com/cohortsync/cohortsync/pipeline"
	"github.com/cohortsync/cohortsync/schemas"
	"github.com/cohortsync/cohortsync/segments"
	"github.com/cohortsync/cohortsync/sinks/state"
)

var t0 = time.Date(2024, 11, 4, 9, 0, 0, 0, time.UTC)

type ch struct {
	cohort, user string
	add          bool
}

// write lands one record per change list at offset, received at at.
func write(t *testing.T, s *state.Store, offset int64, at time.Time, changes ...ch) {
	t.Helper()
	cb := schemas.NewChangesBuilder(nil)
	defer cb.Release()
	for pos, c := range changes {
		cb.Append(schemas.ResolvedChange{
			Workspace: "acme", Partner: "mixpanel", CohortID: c.cohort, UserID: c.user,
			IDKind: schemas.IDKindExternalID, IDValue: c.user, IsMember: c.add,
			Version: schemas.Version(offset, pos), RecordID: fmt.Sprintf("rec-%d", offset), Position: uint32(pos),
			EventTime: at, ReceivedAt: at, Offset: offset,
		})
	}
	out := &pipeline.Output{Changes: cb.NewRecordBatch(), Rejections: pipeline.NewRejections()}
	defer out.Changes.Release()
	if err := s.Write(testkit.DetachedContext(t, 30*time.Second), out); err != nil {
		t.Fatal(err)
	}
}

func members(t *testing.T, e segments.Engine, filter string) []string {
	t.Helper()
	p, err := e.Evaluate(testkit.DetachedContext(t, 30*time.Second), "acme", segments.Query{Filter: json.RawMessage(filter), Limit: 100})
	if err != nil {
		t.Fatalf("Evaluate(%s): %v", filter, err)
	}
	if p.Count != int64(len(p.Members)) {
		t.Errorf("Evaluate(%s): count %d for %d members", filter, p.Count, len(p.Members))
	}
	return p.Members
}

const (
	fA       = `{"cohort":{"partner":"mixpanel","id":"A"}}`
	fAnotB   = `{"and":[{"cohort":{"partner":"mixpanel","id":"A"}},{"not":{"cohort":{"partner":"mixpanel","id":"B"}}}]}`
	fNotA    = `{"not":{"cohort":{"partner":"mixpanel","id":"A"}}}`
	fNotAorB = `{"or":[{"not":{"cohort":{"partner":"mixpanel","id":"A"}}},{"cohort":{"partner":"mixpanel","id":"B"}}]}`
)

// Cached bitmaps and the user dictionary follow every write: a changed
// cohort, a user never seen (which renumbers everyone) and a user new to
// a cohort the filter does not name.
func TestCacheFollowsWrites(t *testing.T) {
	t.Parallel()
	s := openStore(t)
	e := newEngine(t, s)
	write(t, s, 1, t0, ch{"A", "u1", true}, ch{"A", "u2", true}, ch{"B", "u2", true}, ch{"C", "u5", false})
	steps := []struct {
		name    string
		changes []ch
		want    map[string][]string
	}{
		{"first", nil, map[string][]string{fA: {"u1", "u2"}, fAnotB: {"u1"}, fNotA: {"u5"}, fNotAorB: {"u2", "u5"}}},
		{"removal", []ch{{"A", "u1", false}}, map[string][]string{fA: {"u2"}, fAnotB: {}, fNotA: {"u1", "u5"}, fNotAorB: {"u1", "u2", "u5"}}},
		{"new user sorting first", []ch{{"A", "u0", true}}, map[string][]string{fA: {"u0", "u2"}, fAnotB: {"u0"}, fNotA: {"u1", "u5"}, fNotAorB: {"u1", "u2", "u5"}}},
		{"new user in an unnamed cohort", []ch{{"C", "u3", true}}, map[string][]string{fA: {"u0", "u2"}, fAnotB: {"u0"}, fNotA: {"u1", "u3", "u5"}, fNotAorB: {"u1", "u2", "u3", "u5"}}},
		{"known user in an unnamed cohort", []ch{{"C", "u1", true}}, map[string][]string{fNotA: {"u1", "u3", "u5"}}},
	}
	for i, st := range steps {
		if st.changes != nil {
			write(t, s, int64(10+i), t0.Add(time.Duration(i)*time.Hour), st.changes...)
		}
		for f, want := range st.want {
			if got := members(t, e, f); !slices.Equal(got, want) {
				t.Errorf("%s: %s = %q, want %q", st.name, f, got, want)
			}
		}
	}
	ans, err := e.Explain(testkit.DetachedContext(t, 30*time.Second), "acme", json.RawMessage(fAnotB), "u1", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if ans.Member || len(ans.Reasons) != 2 || ans.Reasons[0].LastChange == nil || ans.Reasons[0].LastChange.RecordID != "rec-11" ||
		ans.Reasons[0].LastChange.IsMember || !ans.Reasons[0].LastChange.ReceivedAt.Equal(t0.Add(time.Hour)) || ans.Reasons[1].LastChange != nil {
		t.Errorf("Explain(u1) = %+v", ans)
	}
}

// Queries run while batches land; the race detector watches the cache.
func TestConcurrentQueriesAndWrites(t *testing.T) {
	t.Parallel()
	s := openStore(t)
	e := newEngine(t, s)
	write(t, s, 0, t0, ch{"A", "a", true}, ch{"B", "b", true})
	var wg sync.WaitGroup
	for g := range 3 {
		wg.Go(func() {
			for range 30 {
				for _, f := range []string{fA, fAnotB, fNotA} {
					if _, err := e.Evaluate(testkit.DetachedContext(t, 30*time.Second), "acme", segments.Query{Filter: json.RawMessage(f), Limit: 5}); err != nil {
						t.Errorf("goroutine %d: %v", g, err)
						return
					}
				}
			}
		})
	}
	for i := range 20 {
		write(t, s, int64(1+i), t0.Add(time.Duration(i)*time.Minute), ch{"A", fmt.Sprintf("u%02d", i), true}, ch{"B", fmt.Sprintf("u%02d", i/2), true})
	}
	wg.Wait()
	if got := members(t, e, fAnotB); len(got) != 11 { // a and u10..u19: B holds u00..u09
		t.Errorf("A and not B after the writes: %q", got)
	}
}

func TestFreshnessCollector(t *testing.T) {
	t.Parallel()
	s := openStore(t)
	e := newEngine(t, s)
	// A: synced every 15 minutes, last 3h ago: stale. B: once, 1h ago.
	now := t0.Add(4 * time.Hour)
	for i := range 4 {
		write(t, s, int64(i), t0.Add(time.Duration(i)*15*time.Minute), ch{"A", fmt.Sprintf("u%d", i), true})
	}
	write(t, s, 10, now.Add(-time.Hour), ch{"B", "u1", true})
	c := segments.NewFreshnessCollector(e, func() []string {
		ws, err := s.Workspaces()
		if err != nil {
			t.Error(err)
		}
		return ws
	}, func() time.Time { return now }, nil)
	if err := c.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	want := `
# HELP cohortsync_cohort_last_sync_age_seconds Seconds since the cohort's last sync landed.
# TYPE cohortsync_cohort_last_sync_age_seconds gauge
cohortsync_cohort_last_sync_age_seconds{cohort_id="A",partner="mixpanel",workspace="acme"} 11700
cohortsync_cohort_last_sync_age_seconds{cohort_id="B",partner="mixpanel",workspace="acme"} 3600
# HELP cohortsync_cohort_stale 1 when a dynamically synced cohort has had no sync for twice its inferred period, else 0.
# TYPE cohortsync_cohort_stale gauge
cohortsync_cohort_stale{cohort_id="A",partner="mixpanel",workspace="acme"} 1
cohortsync_cohort_stale{cohort_id="B",partner="mixpanel",workspace="acme"} 0
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "cohortsync_cohort_last_sync_age_seconds", "cohortsync_cohort_stale"); err != nil {
		t.Error(err)
	}
}
