package partnerapi

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

const (
	metricsNamespace = "cohortsync"
	metricsSubsystem = "partnerapi"
)

type metrics struct {
	requests   *prometheus.CounterVec
	ids        *prometheus.CounterVec
	duration   *prometheus.HistogramVec
	landErrors prometheus.Counter
}

// newMetrics creates the API's metrics and registers them on reg, if any.
// partners pre-creates the per-partner series so that they read 0 rather than
// being absent before the first request, which keeps rate() queries simple.
func newMetrics(reg prometheus.Registerer, partners []string) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metricsNamespace, Subsystem: metricsSubsystem,
			Name: "requests_total",
			Help: "Requests answered, by endpoint and HTTP status code.",
		}, []string{"endpoint", "code"}),
		ids: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metricsNamespace, Subsystem: metricsSubsystem,
			Name: "ids_received_total",
			Help: "User ids, device ids and aliases in cohort changes that were landed, by partner.",
		}, []string{"partner"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: metricsNamespace, Subsystem: metricsSubsystem,
			Name:    "request_duration_seconds",
			Help:    "Time from request to response, landing included, by endpoint.",
			Buckets: prometheus.DefBuckets,
		}, []string{"endpoint"}),
		landErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: metricsNamespace, Subsystem: metricsSubsystem,
			Name: "land_errors_total",
			Help: "Requests that passed validation but could not be landed (answered 503).",
		}),
	}
	for _, p := range partners {
		m.ids.WithLabelValues(p)
	}
	if reg == nil {
		return m, nil
	}
	var errs []error
	var registered []prometheus.Collector
	for _, c := range []prometheus.Collector{m.requests, m.ids, m.duration, m.landErrors} {
		if err := reg.Register(c); err != nil {
			errs = append(errs, err)
			continue
		}
		registered = append(registered, c)
	}
	if err := errors.Join(errs...); err != nil {
		// Leave the registry as it was, so a caller that fixes the conflict
		// can try again.
		for _, c := range registered {
			reg.Unregister(c)
		}
		return nil, fmt.Errorf("register metrics: %w", err)
	}
	return m, nil
}
