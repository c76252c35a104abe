package segmentstest

import (
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync/segments"
)

// The corpus must hold the situations it claims to, or both engines could
// pass it without being tested on them.
func TestCorpusCoversItsSituations(t *testing.T) {
	t.Parallel()
	c := New()
	if !reflect.DeepEqual(c.writes, New().writes) || !reflect.DeepEqual(c.batches[3].changes, New().batches[3].changes) {
		t.Fatal("New is not deterministic")
	}
	m := c.model()
	find := func(name string) Case {
		i := slices.IndexFunc(c.Cases, func(cs Case) bool { return cs.Name == name })
		if i < 0 {
			t.Fatalf("no case %q", name)
		}
		return c.Cases[i]
	}
	now, past := m.members(find("A and not B")), m.members(find("A and not B as of before the last sync"))
	if len(now) < 20 || len(past) < 20 || slices.Equal(now, past) {
		t.Errorf("A and not B: %d members now, %d before the last sync: want both many, and different", len(now), len(past))
	}
	if a, b := m.members(find("A as of exactly a change")), m.members(find("A as of a fraction before a change")); slices.Equal(a, b) {
		t.Error("as_of at an event time and one second before give the same members")
	}
	if n := len(m.members(find("other workspace A"))); n == 0 || n == len(m.members(find("A by id"))) {
		t.Errorf("cohort 1001 has %d members in the other workspace: want some, not as many as in the first", n)
	}

	// Redeliveries, a producer retry and a re-sent sync.
	redelivered := 0
	for i, w := range c.writes {
		if slices.Contains(c.writes[:i], w) {
			redelivered++
		}
	}
	if redelivered < 2 {
		t.Errorf("%d redelivered batches, want 2", redelivered)
	}
	rids := map[string]int64{}
	retried := false
	for _, b := range c.batches {
		for _, ch := range b.changes {
			if off, ok := rids[ch.RecordID]; ok && off != ch.Offset {
				retried = true
			}
			rids[ch.RecordID] = ch.Offset
		}
	}
	if !retried {
		t.Error("no record landed at two offsets")
	}
	var resent bool
	for _, r := range m.dataPoints(DataPointCase{Workspace: mainWS, From: day1, To: day1.Add(72 * time.Hour), GroupBy: segments.GroupByCohort}) {
		if r.CohortID == cohortB.ID && r.Billable-r.Transitions > 20 {
			resent = true
		}
	}
	if !resent {
		t.Error("B's data points show no re-sent sync")
	}
	modes := map[string]string{}
	for _, ci := range m.cohorts(mainWS, c.Now) {
		modes[ci.CohortID] = string(ci.SyncMode)
		if ci.Stale {
			modes[ci.CohortID] += " stale"
		}
	}
	want := map[string]string{"1001": "dynamic", "1002": "dynamic stale", "1003": "one_time", "1004": "one_time", "1005": "one_time", "amp-7": "one_time"}
	if !reflect.DeepEqual(modes, want) {
		t.Errorf("sync modes %v, want %v", modes, want)
	}
}
