package segments

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// freshnessTimeout bounds the Cohorts queries of one scrape.
const freshnessTimeout = 10 * time.Second

// freshnessCollector reports each cohort's sync freshness, asked of the
// engine at every scrape, so the gauges can never lag behind the answers of
// GET /cohorts.
type freshnessCollector struct {
	engine     Engine
	workspaces func() []string
	now        func() time.Time
	stale, age *prometheus.Desc
}

// NewFreshnessCollector returns a collector of two gauges per cohort of the
// given workspaces: cohortsync_cohort_stale (1 for a dynamic cohort with no
// sync for twice its period, else 0) and cohortsync_cohort_last_sync_age_seconds
// (only for cohorts that received a change). now nil means time.Now.
func NewFreshnessCollector(e Engine, workspaces func() []string, now func() time.Time) prometheus.Collector {
	if now == nil {
		now = time.Now
	}
	labels := []string{"workspace", "partner", "cohort_id"}
	return &freshnessCollector{
		engine: e, workspaces: workspaces, now: now,
		stale: prometheus.NewDesc("cohortsync_cohort_stale",
			"1 when a dynamically synced cohort has had no sync for twice its inferred period, else 0.", labels, nil),
		age: prometheus.NewDesc("cohortsync_cohort_last_sync_age_seconds",
			"Seconds since the cohort's last sync landed.", labels, nil),
	}
}

func (c *freshnessCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.stale
	ch <- c.age
}

func (c *freshnessCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), freshnessTimeout)
	defer cancel()
	now := c.now()
	for _, ws := range c.workspaces() {
		cohorts, err := c.engine.Cohorts(ctx, ws, now)
		if err != nil {
			// A failed scrape shows as an error rather than as cohorts
			// that silently vanished.
			ch <- prometheus.NewInvalidMetric(c.stale, fmt.Errorf("cohorts of workspace %q: %w", ws, err))
			continue
		}
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
}

// send reports a gauge, or the reason it cannot be (label values that are
// not UTF-8, which an id from a partner might be).
func send(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, labels ...string) {
	m, err := prometheus.NewConstMetric(d, prometheus.GaugeValue, v, labels...)
	if err != nil {
		m = prometheus.NewInvalidMetric(d, err)
	}
	ch <- m
}
