package segments_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cohortsync/cohortsync/segments"
)

// flakyEngine answers Cohorts from a list, or fails while down is set. The
// other Engine methods are never called by the collector.
type flakyEngine struct {
	segments.Engine
	mu      sync.Mutex
	down    bool
	cohorts []segments.CohortInfo
	calls   int
}

func (e *flakyEngine) Cohorts(context.Context, string, time.Time) ([]segments.CohortInfo, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.calls++
	if e.down {
		return nil, errors.New("clickhouse: connection refused")
	}
	return e.cohorts, nil
}

func TestFreshnessScrapeNeverQueriesAndSurvivesAnOutage(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	e := &flakyEngine{cohorts: []segments.CohortInfo{{Partner: "mixpanel", CohortID: "A", LastSync: now.Add(-time.Minute)}}}
	c := segments.NewFreshnessCollector(e, func() []string { return []string{"acme"} }, func() time.Time { return now }, nil)

	// A scrape serves the cache: before any refresh there is nothing, and
	// the engine is not asked.
	if n := testutil.CollectAndCount(c, "cohortsync_cohort_stale"); n != 0 || e.calls != 0 {
		t.Fatalf("before a refresh: %d gauges, %d engine calls", n, e.calls)
	}
	if err := c.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	age := `
# HELP cohortsync_cohort_last_sync_age_seconds Seconds since the cohort's last sync landed.
# TYPE cohortsync_cohort_last_sync_age_seconds gauge
cohortsync_cohort_last_sync_age_seconds{cohort_id="A",partner="mixpanel",workspace="acme"} 60
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(age), "cohortsync_cohort_last_sync_age_seconds"); err != nil {
		t.Error(err)
	}

	// The store goes down: the refresh fails and is counted, the scrape
	// still answers with the last values.
	e.mu.Lock()
	e.down = true
	e.mu.Unlock()
	if err := c.Refresh(context.Background()); err == nil {
		t.Fatal("refresh during the outage reported no error")
	}
	if err := testutil.CollectAndCompare(c, strings.NewReader(age), "cohortsync_cohort_last_sync_age_seconds"); err != nil {
		t.Errorf("during the outage: %v", err)
	}
	failures := `
# HELP cohortsync_cohort_freshness_refresh_failures_total Refreshes of the cohort freshness gauges that failed for a workspace; the gauges keep their last values.
# TYPE cohortsync_cohort_freshness_refresh_failures_total counter
cohortsync_cohort_freshness_refresh_failures_total 1
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(failures), "cohortsync_cohort_freshness_refresh_failures_total"); err != nil {
		t.Error(err)
	}
	if e.calls != 2 {
		t.Errorf("the engine was asked %d times for 2 refreshes and 4 scrapes", e.calls)
	}
}
