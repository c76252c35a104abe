package segments

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cohortsync/cohortsync/internal/retry"
)

// freshnessTimeout bounds the Cohorts queries of one refresh.
const freshnessTimeout = 30 * time.Second

// FreshnessCollector reports each cohort's sync freshness from a cache that
// Run refreshes off the scrape path: a scrape never waits for a query over
// the state of record (an argMax over every member on ClickHouse), so
// /metrics answers at once under load and during an outage of the store,
// when the dashboards need it most. A refresh that fails keeps the last
// answers and is counted.
type FreshnessCollector struct {
	engine     Engine
	workspaces func() []string
	now        func() time.Time
	log        *slog.Logger
	stale, age *prometheus.Desc
	failures   prometheus.Counter

	mu     sync.Mutex
	cached map[string][]CohortInfo // by workspace, as of the last refresh that answered
}

// NewFreshnessCollector returns a collector of two gauges per cohort of the
// given workspaces: cohortsync_cohort_stale (1 for a dynamic cohort with no
// sync for twice its period, else 0) and cohortsync_cohort_last_sync_age_seconds
// (only for cohorts that received a change), plus the counter of failed
// refreshes. now nil means time.Now; log nil discards.
func NewFreshnessCollector(e Engine, workspaces func() []string, now func() time.Time, log *slog.Logger) *FreshnessCollector {
	if now == nil {
		now = time.Now
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	labels := []string{"workspace", "partner", "cohort_id"}
	return &FreshnessCollector{
		engine: e, workspaces: workspaces, now: now, log: log,
		stale: prometheus.NewDesc("cohortsync_cohort_stale",
			"1 when a dynamically synced cohort has had no sync for twice its inferred period, else 0.", labels, nil),
		age: prometheus.NewDesc("cohortsync_cohort_last_sync_age_seconds",
			"Seconds since the cohort's last sync landed.", labels, nil),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cohortsync_cohort_freshness_refresh_failures_total",
			Help: "Refreshes of the cohort freshness gauges that failed for a workspace; the gauges keep their last values.",
		}),
		cached: map[string][]CohortInfo{},
	}
}

// Refresh asks the engine for the cohorts of every workspace and replaces
// the cache of each that answered. It returns what failed.
func (c *FreshnessCollector) Refresh(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, freshnessTimeout)
	defer cancel()
	now := c.now()
	var errs []error
	fresh := map[string][]CohortInfo{}
	for _, ws := range c.workspaces() {
		cohorts, err := c.engine.Cohorts(ctx, ws, now)
		if err != nil {
			c.failures.Inc()
			errs = append(errs, fmt.Errorf("cohorts of workspace %q: %w", ws, err))
			continue
		}
		fresh[ws] = cohorts
	}
	c.mu.Lock()
	for ws, cohorts := range fresh {
		c.cached[ws] = cohorts
	}
	c.mu.Unlock()
	return errors.Join(errs...)
}

// Run refreshes every interval until ctx ends; the caller makes the first
// Refresh, so that it can bound it at start-up.
func (c *FreshnessCollector) Run(ctx context.Context, interval time.Duration) {
	for retry.Sleep(ctx, interval) == nil {
		if err := c.Refresh(ctx); err != nil && ctx.Err() == nil {
			c.log.Warn("cohort freshness refresh failed; the gauges keep their last values", "err", err)
		}
	}
}

func (c *FreshnessCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.stale
	ch <- c.age
	c.failures.Describe(ch)
}

// Collect serves the cache; the age is computed now, so it keeps growing
// between refreshes as it should.
func (c *FreshnessCollector) Collect(ch chan<- prometheus.Metric) {
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	for ws, cohorts := range c.cached {
		for _, co := range cohorts {
			stale := 0.0
			if co.Stale {
				stale = 1
			}
			send(ch, c.stale, stale, ws, co.Partner, co.CohortID)
			if !co.LastSync.IsZero() {
				send(ch, c.age, now.Sub(co.LastSync).Seconds(), ws, co.Partner, co.CohortID)
			}
		}
	}
	c.failures.Collect(ch)
}

// send reports a gauge; a label value that is not UTF-8 (an id from a
// partner might be) is skipped, since an invalid metric fails the scrape.
func send(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, labels ...string) {
	m, err := prometheus.NewConstMetric(d, prometheus.GaugeValue, v, labels...)
	if err != nil {
		return
	}
	ch <- m
}
