// Package promguard keeps one collector from failing or stalling a scrape.
//
// A Prometheus registry runs every collector's Collect during a scrape and
// waits for all of them: one that blocks (a gauge whose function waits on a
// lock held across I/O, a disk that hangs) holds up the whole /metrics
// answer, and one that panics or sends an invalid metric makes the registry
// report an error, which promhttp turns into a 500 by default. Either way the
// scrape fails exactly when something is wrong, and the alerts that should
// say what is wrong have no data.
//
// A Guard wraps the collectors that run code of their own at scrape time.
// A wrapped collector that does not finish within the budget, panics or sends
// an invalid metric is left out of that scrape and counted in
// cohortsync_metrics_collector_failures_total{collector, reason}; the rest of
// the scrape answers as usual.
package promguard

import (
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Reasons a collector was left out of a scrape, as the reason label.
const (
	// ReasonTimeout: Collect did not return within the budget, or an earlier
	// Collect that overran it still runs.
	ReasonTimeout = "timeout"
	// ReasonPanic: Collect panicked.
	ReasonPanic = "panic"
	// ReasonInvalid: Collect sent a metric that does not encode (an invalid
	// label value, say); only that metric is left out.
	ReasonInvalid = "invalid"
)

var reasons = []string{ReasonTimeout, ReasonPanic, ReasonInvalid}

// Guard wraps collectors and counts their failures. It is safe for
// concurrent use.
type Guard struct {
	budget   time.Duration
	log      *slog.Logger
	failures *prometheus.CounterVec
}

// New returns a guard that gives each wrapped collector budget to finish its
// Collect. log nil discards.
func New(budget time.Duration, log *slog.Logger) *Guard {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Guard{
		budget: budget,
		log:    log,
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "cohortsync", Subsystem: "metrics", Name: "collector_failures_total",
			Help: "Collectors left out of a scrape, by collector (the first metric it describes) and reason (timeout, panic, invalid).",
		}, []string{"collector", "reason"}),
	}
}

// Describe and Collect make the guard the collector of its own failures
// counter; register it next to what it guards.
func (g *Guard) Describe(ch chan<- *prometheus.Desc) { g.failures.Describe(ch) }

func (g *Guard) Collect(ch chan<- prometheus.Metric) { g.failures.Collect(ch) }

// Wrap returns c guarded. The metric types of client_golang that only hold
// values (counters, gauges, histograms, summaries and their vectors) are
// returned as they are: their Collect reads memory under a lock of their own
// and cannot block or fail, and leaving them unwrapped means no budget can
// ever drop the gauges alerts read (cohortsync_clickhouse_up) on a loaded
// machine.
func (g *Guard) Wrap(c prometheus.Collector) prometheus.Collector {
	switch c.(type) {
	case prometheus.Counter, prometheus.Gauge, prometheus.Histogram, prometheus.Summary,
		*prometheus.CounterVec, *prometheus.GaugeVec, *prometheus.HistogramVec, *prometheus.SummaryVec,
		*guarded, *Guard:
		return c
	}
	w := &guarded{inner: c, g: g, name: collectorName(c)}
	// Every series exists from the start, so that increase() sees the
	// first failure.
	for _, r := range reasons {
		g.failures.WithLabelValues(w.name, r)
	}
	return w
}

// Registerer returns a Registerer that registers on reg what Wrap makes of
// each collector, so that components keep registering their own metrics and
// the guard applies to all of them. Unregister takes the collector as it was
// given: the registry finds a collector by what it describes, which the
// wrapper describes the same.
func (g *Guard) Registerer(reg prometheus.Registerer) prometheus.Registerer {
	return &registerer{reg: reg, g: g}
}

type registerer struct {
	reg prometheus.Registerer
	g   *Guard
}

func (r *registerer) Register(c prometheus.Collector) error {
	err := r.reg.Register(r.g.Wrap(c))
	if are, ok := err.(prometheus.AlreadyRegisteredError); ok {
		// Callers that reuse the collector already registered expect
		// their own type back, not the wrapper.
		if w, ok := are.ExistingCollector.(*guarded); ok {
			are.ExistingCollector = w.inner
		}
		are.NewCollector = c
		return are
	}
	return err
}

func (r *registerer) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

func (r *registerer) Unregister(c prometheus.Collector) bool { return r.reg.Unregister(c) }

// guarded is one wrapped collector.
type guarded struct {
	inner prometheus.Collector
	g     *Guard
	name  string
	// stuck counts the Collects of inner that a scrape gave up waiting for
	// and that still run: while there is one, the collector is skipped at
	// once instead of piling up a goroutine per scrape. Concurrent scrapes
	// (two Prometheus servers) that finish in time do not count.
	stuck atomic.Int32
}

func (c *guarded) Describe(ch chan<- *prometheus.Desc) { c.inner.Describe(ch) }

func (c *guarded) Collect(ch chan<- prometheus.Metric) {
	if c.stuck.Load() > 0 {
		c.fail(ReasonTimeout, "an earlier collection still runs")
		return
	}
	got := make(chan prometheus.Metric)
	var (
		mu                  sync.Mutex
		finished, abandoned bool
		panicked            any
	)
	go func() {
		defer close(got)
		defer func() {
			p := recover()
			mu.Lock()
			defer mu.Unlock()
			finished, panicked = true, p
			if abandoned {
				c.stuck.Add(-1)
			}
		}()
		c.inner.Collect(got)
	}()
	timer := time.NewTimer(c.g.budget)
	defer timer.Stop()
	// What the collector sends is held until it returns, so that a
	// collector is in a scrape whole or not at all.
	var out []prometheus.Metric
	for {
		select {
		case m, ok := <-got:
			if ok {
				out = append(out, m)
				continue
			}
			mu.Lock()
			p := panicked
			mu.Unlock()
			if p != nil {
				c.fail(ReasonPanic, fmt.Sprint(p))
				return
			}
			c.send(ch, out)
			return
		case <-timer.C:
			mu.Lock()
			if !finished {
				abandoned = true
				c.stuck.Add(1)
			}
			mu.Unlock()
			c.fail(ReasonTimeout, "no answer within "+c.g.budget.String())
			// Drain in the background so the late Collect can return.
			go func() {
				for range got {
				}
			}()
			return
		}
	}
}

// send forwards the metrics that encode; the others would make the registry
// fail the scrape.
func (c *guarded) send(ch chan<- prometheus.Metric, out []prometheus.Metric) {
	for _, m := range out {
		if err := check(m); err != nil {
			c.fail(ReasonInvalid, err.Error())
			continue
		}
		ch <- m
	}
}

func (c *guarded) fail(reason, detail string) {
	c.g.failures.WithLabelValues(c.name, reason).Inc()
	c.g.log.Warn("metrics collector left out of the scrape", "collector", c.name, "reason", reason, "detail", detail)
}

// check is what the registry checks of one metric on its own: that it
// encodes, with label values in UTF-8.
func check(m prometheus.Metric) error {
	var pb dto.Metric
	if err := m.Write(&pb); err != nil {
		return fmt.Errorf("encode: %w", err)
	}
	for _, lp := range pb.GetLabel() {
		if !utf8.ValidString(lp.GetValue()) {
			return fmt.Errorf("label %s: value is not UTF-8", lp.GetName())
		}
	}
	return nil
}

// collectorName is the name of the first metric c describes, which names it
// in the failures counter: a collector has no name of its own, and its
// metrics' names are what an operator looks for next.
func collectorName(c prometheus.Collector) string {
	ch := make(chan *prometheus.Desc, 1)
	go func() {
		c.Describe(ch)
		close(ch)
	}()
	var first *prometheus.Desc
	for d := range ch {
		if first == nil {
			first = d
		}
	}
	if first == nil {
		return "unknown"
	}
	return descName(first)
}

// descName reads the fully-qualified name out of a Desc, which shows it only
// in its String form: Desc{fqName: "name", help: ...}.
func descName(d *prometheus.Desc) string {
	const prefix = "Desc{fqName: "
	s, ok := strings.CutPrefix(d.String(), prefix)
	if !ok {
		return "unknown"
	}
	quoted, err := strconv.QuotedPrefix(s)
	if err != nil {
		return "unknown"
	}
	name, err := strconv.Unquote(quoted)
	if err != nil || name == "" {
		return "unknown"
	}
	return name
}
