package keys

import (
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Results of VerifySecret, as the verify_total label. "mismatch" and
// "unknown" are kept apart because a burst of mismatches on known key ids
// suggests guessing, while unknown ids suggest a stale or foreign secret.
const (
	resultOK        = "ok"
	resultMalformed = "malformed"
	resultUnknown   = "unknown"
	resultMismatch  = "mismatch"
	resultRevoked   = "revoked"
)

type metrics struct {
	active         prometheus.Gauge
	verify         *prometheus.CounterVec
	tailErrors     prometheus.Counter
	invalidRecords prometheus.Counter
	syncAge        prometheus.GaugeFunc

	reg        prometheus.Registerer
	registered []prometheus.Collector
}

func newMetrics(s *Store) *metrics {
	const ns, sub = "cohortsync", "keys"
	m := &metrics{
		active: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "active",
			Help: "Data import keys that are not revoked.",
		}),
		verify: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "verify_total",
			Help: "Client secret verifications by result.",
		}, []string{"result"}),
		tailErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "tail_errors_total",
			Help: "Interruptions of the keys topic tail (each followed by a reconnect).",
		}),
		invalidRecords: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "invalid_records_total",
			Help: "Records on the keys topic that could not be applied and were skipped.",
		}),
	}
	m.syncAge = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: ns, Subsystem: sub, Name: "sync_age_seconds",
		Help: "Seconds since the tail last confirmed it had read the whole keys topic.",
	}, func() float64 {
		return time.Since(s.Status().LastSync).Seconds()
	})
	// Every result series exists from the start, so rate() works on the first increment.
	for _, r := range []string{resultOK, resultMalformed, resultUnknown, resultMismatch, resultRevoked} {
		m.verify.WithLabelValues(r)
	}
	return m
}

func (m *metrics) verified(result string) { m.verify.WithLabelValues(result).Inc() }

func (m *metrics) register(reg prometheus.Registerer) error {
	if reg == nil {
		return nil
	}
	m.reg = reg
	for _, c := range []prometheus.Collector{m.active, m.verify, m.tailErrors, m.invalidRecords, m.syncAge} {
		if err := reg.Register(c); err != nil {
			m.unregister()
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return fmt.Errorf("register metrics: another key store is registered on the same registry: %w", err)
			}
			return fmt.Errorf("register metrics: %w", err)
		}
		m.registered = append(m.registered, c)
	}
	return nil
}

// unregister lets a store be re-opened on the same registry after Close.
func (m *metrics) unregister() {
	for _, c := range m.registered {
		m.reg.Unregister(c)
	}
	m.registered = nil
}
