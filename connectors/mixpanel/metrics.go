package mixpanel

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	requests   *prometheus.CounterVec // by code: the HTTP status, or "error" for a transport failure
	retries    *prometheus.CounterVec // by reason: rate_limited, server_error, transport
	profiles   prometheus.Counter
	waits      *prometheus.CounterVec // by limit: hourly, concurrency
	waitedSecs *prometheus.CounterVec // by limit
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	const ns, sub = "cohortsync", "mixpanel"
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "requests_total",
			Help: "Engage API requests, by HTTP status code (\"error\": no answer).",
		}, []string{"code"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "retries_total",
			Help: "Engage API requests retried, by reason: rate_limited (429), server_error (5xx), transport.",
		}, []string{"reason"}),
		profiles: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "profiles_total",
			Help: "Cohort member profiles read from the Engage API.",
		}),
		waits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "rate_limit_waits_total",
			Help: "Requests held back by the client's own limits: hourly (queries per rolling hour) or concurrency.",
		}, []string{"limit"}),
		waitedSecs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "rate_limit_wait_seconds_total",
			Help: "Time requests were held back by the hourly query limit, as planned when the wait began.",
		}, []string{"limit"}),
	}
	for _, r := range []string{retryRateLimited, retryServerError, retryTransport} {
		m.retries.WithLabelValues(r)
	}
	for _, l := range []string{waitHourly, waitConcurrency} {
		m.waits.WithLabelValues(l)
	}
	m.waitedSecs.WithLabelValues(waitHourly)
	if reg == nil {
		return m, nil
	}
	// Several clients (one per backfill run) may share a registry: they
	// share its series too.
	var errs []error
	m.requests = register(reg, m.requests, &errs)
	m.retries = register(reg, m.retries, &errs)
	m.profiles = register(reg, m.profiles, &errs)
	m.waits = register(reg, m.waits, &errs)
	m.waitedSecs = register(reg, m.waitedSecs, &errs)
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("mixpanel: register metrics: %w", err)
	}
	return m, nil
}

func register[C prometheus.Collector](reg prometheus.Registerer, c C, errs *[]error) C {
	err := reg.Register(c)
	if err == nil {
		return c
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing
		}
	}
	*errs = append(*errs, err)
	return c
}
