package promguard_test

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cohortsync/cohortsync/internal/promguard"
)

// funcCollector is a collector that runs fn on each Collect.
type funcCollector struct {
	desc *prometheus.Desc
	fn   func(ch chan<- prometheus.Metric)
}

func newFunc(name string, fn func(d *prometheus.Desc, ch chan<- prometheus.Metric)) *funcCollector {
	c := &funcCollector{desc: prometheus.NewDesc(name, "test collector", []string{"k"}, nil)}
	c.fn = func(ch chan<- prometheus.Metric) { fn(c.desc, ch) }
	return c
}

func (c *funcCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }
func (c *funcCollector) Collect(ch chan<- prometheus.Metric) { c.fn(ch) }

func gauge(d *prometheus.Desc, v float64, label string) prometheus.Metric {
	return prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, label)
}

// setup returns a registry with a guard of the given budget, a plain gauge
// set to 1 that must survive every failure, and the guarded registerer.
func setup(t *testing.T, budget time.Duration) (*prometheus.Registry, *promguard.Guard, prometheus.Registerer) {
	t.Helper()
	reg := prometheus.NewRegistry()
	g := promguard.New(budget, nil)
	reg.MustRegister(g)
	greg := g.Registerer(reg)
	up := prometheus.NewGauge(prometheus.GaugeOpts{Name: "test_up", Help: "always 1"})
	up.Set(1)
	greg.MustRegister(up)
	return reg, g, greg
}

// scrape answers /metrics from reg the way the service does.
func scrape(t *testing.T, reg *prometheus.Registry) (int, string) {
	t.Helper()
	h := promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg, ErrorHandling: promhttp.ContinueOnError})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	return rec.Code, string(body)
}

func failures(t *testing.T, g *promguard.Guard, collector, reason string) float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(g)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = lp.GetValue()
			}
			if labels["collector"] == collector && labels["reason"] == reason {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no failures series for collector %q reason %q", collector, reason)
	return 0
}

func TestHungCollectorIsSkippedAndCounted(t *testing.T) {
	t.Parallel()
	reg, g, greg := setup(t, 200*time.Millisecond)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	entered := make(chan struct{}, 10)
	greg.MustRegister(newFunc("test_hung", func(d *prometheus.Desc, ch chan<- prometheus.Metric) {
		entered <- struct{}{}
		<-release // a hang that outlasts every scrape of the test
		ch <- gauge(d, 1, "x")
	}))

	for i := range 3 {
		code, body := scrape(t, reg)
		if code != http.StatusOK || !strings.Contains(body, "test_up 1") {
			t.Fatalf("scrape %d: %d\n%s", i, code, body)
		}
		if strings.Contains(body, "test_hung{") {
			t.Fatalf("scrape %d shows the hung collector's metric", i)
		}
	}
	// The first scrape waited for the budget; the later ones skipped the
	// collector, whose Collect still runs, without starting another.
	if n := len(entered); n != 1 {
		t.Errorf("the hung Collect was started %d times, want 1", n)
	}
	if got := failures(t, g, "test_hung", promguard.ReasonTimeout); got != 3 {
		t.Errorf("timeouts counted = %v, want 3", got)
	}
}

func TestCollectorBackAfterAHang(t *testing.T) {
	t.Parallel()
	reg, g, greg := setup(t, 200*time.Millisecond)
	release := make(chan struct{})
	var once sync.Once
	hang := true
	var mu sync.Mutex
	returned := make(chan struct{})
	greg.MustRegister(newFunc("test_slow_once", func(d *prometheus.Desc, ch chan<- prometheus.Metric) {
		mu.Lock()
		h := hang
		hang = false
		mu.Unlock()
		if h {
			<-release
			ch <- gauge(d, 1, "late")
			once.Do(func() { close(returned) })
			return
		}
		ch <- gauge(d, 2, "fresh")
	}))
	if _, body := scrape(t, reg); strings.Contains(body, "test_slow_once{") {
		t.Fatalf("the first scrape shows the hung collector:\n%s", body)
	}
	close(release)
	<-returned
	// The late Collect's send is drained; wait until the guard has seen it
	// return (the next Collect then runs).
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, body := scrape(t, reg)
		if strings.Contains(body, `test_slow_once{k="fresh"} 2`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the collector is not back after its hang ended:\n%s", body)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := failures(t, g, "test_slow_once", promguard.ReasonTimeout); got < 1 {
		t.Errorf("timeouts counted = %v, want at least 1", got)
	}
}

func TestPanickingCollectorIsSkippedAndCounted(t *testing.T) {
	t.Parallel()
	reg, g, greg := setup(t, 10*time.Second)
	greg.MustRegister(newFunc("test_panics", func(d *prometheus.Desc, ch chan<- prometheus.Metric) {
		ch <- gauge(d, 1, "before")
		panic("boom")
	}))
	code, body := scrape(t, reg)
	if code != http.StatusOK || !strings.Contains(body, "test_up 1") {
		t.Fatalf("scrape: %d\n%s", code, body)
	}
	if strings.Contains(body, "test_panics{") {
		t.Error("a panicking collector's metrics are in the scrape; want it left out whole")
	}
	if got := failures(t, g, "test_panics", promguard.ReasonPanic); got != 1 {
		t.Errorf("panics counted = %v, want 1", got)
	}
}

func TestInvalidMetricIsSkippedAndCounted(t *testing.T) {
	t.Parallel()
	reg, g, greg := setup(t, 10*time.Second)
	greg.MustRegister(newFunc("test_invalid", func(d *prometheus.Desc, ch chan<- prometheus.Metric) {
		ch <- gauge(d, 1, "good")
		ch <- prometheus.NewInvalidMetric(d, errors.New("cannot compute"))
	}))
	// Without the guard the same collector fails the whole scrape.
	bare := prometheus.NewRegistry()
	bare.MustRegister(newFunc("test_invalid", func(d *prometheus.Desc, ch chan<- prometheus.Metric) {
		ch <- prometheus.NewInvalidMetric(d, errors.New("cannot compute"))
	}))
	if _, err := bare.Gather(); err == nil {
		t.Fatal("an invalid metric does not fail Gather: the test proves nothing")
	}

	code, body := scrape(t, reg)
	if code != http.StatusOK || !strings.Contains(body, "test_up 1") || !strings.Contains(body, `test_invalid{k="good"} 1`) {
		t.Fatalf("scrape: %d\n%s", code, body)
	}
	if _, err := reg.Gather(); err != nil {
		t.Errorf("Gather with the guard: %v", err)
	}
	if got := failures(t, g, "test_invalid", promguard.ReasonInvalid); got != 2 {
		t.Errorf("invalid metrics counted = %v, want 2 (one per scrape and Gather)", got)
	}
}

// Two scrapes at once (two Prometheus servers) both get the collector:
// only one that overran the budget makes the next skip it.
func TestConcurrentScrapesAreNotFailures(t *testing.T) {
	t.Parallel()
	reg, g, greg := setup(t, 30*time.Second)
	var both sync.WaitGroup
	both.Add(2)
	greg.MustRegister(newFunc("test_concurrent", func(d *prometheus.Desc, ch chan<- prometheus.Metric) {
		both.Done()
		both.Wait() // returns only once both scrapes are inside Collect
		ch <- gauge(d, 1, "x")
	}))
	var wg sync.WaitGroup
	bodies := make([]string, 2)
	for i := range 2 {
		wg.Go(func() { _, bodies[i] = scrape(t, reg) })
	}
	wg.Wait()
	for i, b := range bodies {
		if !strings.Contains(b, `test_concurrent{k="x"} 1`) {
			t.Errorf("scrape %d lacks the collector:\n%s", i, b)
		}
	}
	if got := failures(t, g, "test_concurrent", promguard.ReasonTimeout); got != 0 {
		t.Errorf("timeouts counted = %v, want 0", got)
	}
}

func TestValueMetricsAreNotWrapped(t *testing.T) {
	t.Parallel()
	g := promguard.New(time.Second, nil)
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "test_total", Help: "h"})
	if g.Wrap(c) != prometheus.Collector(c) {
		t.Error("a plain counter was wrapped")
	}
	vec := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "test_vec", Help: "h"}, []string{"a"})
	if g.Wrap(vec) != prometheus.Collector(vec) {
		t.Error("a gauge vector was wrapped")
	}
	fn := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "test_func", Help: "h"}, func() float64 { return 1 })
	if g.Wrap(fn) == prometheus.Collector(fn) {
		t.Error("a gauge func, which runs code at scrape time, was not wrapped")
	}
}

func TestRegistererKeepsTheRegistryContract(t *testing.T) {
	t.Parallel()
	reg, g, greg := setup(t, time.Second)
	fn := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "test_func", Help: "h"}, func() float64 { return 7 })
	if err := greg.Register(fn); err != nil {
		t.Fatal(err)
	}
	// A second registration hands back the collector the caller made.
	err := greg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "test_func", Help: "h"}, func() float64 { return 8 }))
	var are prometheus.AlreadyRegisteredError
	if !errors.As(err, &are) || are.ExistingCollector != prometheus.Collector(fn) {
		t.Fatalf("second Register = %v (existing %T), want AlreadyRegisteredError with the first gauge func", err, are.ExistingCollector)
	}
	if got := testutil.ToFloat64(fn); got != 7 {
		t.Fatalf("gauge func = %v", got)
	}
	if _, body := scrape(t, reg); !strings.Contains(body, "test_func 7") {
		t.Fatalf("guarded gauge func missing:\n%s", body)
	}
	// Unregister with the caller's own collector takes the wrapper away.
	if !greg.Unregister(fn) {
		t.Fatal("Unregister of the gauge func found nothing")
	}
	if _, body := scrape(t, reg); strings.Contains(body, "test_func 7") {
		t.Fatalf("gauge func still there after Unregister:\n%s", body)
	}
	if err := greg.Register(fn); err != nil {
		t.Fatalf("register again after Unregister: %v", err)
	}
	// Its failure series are named after its metric.
	_ = failures(t, g, "test_func", promguard.ReasonTimeout)
}
