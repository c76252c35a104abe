package keys

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cohortsync/cohortsync/internal/promreg"
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
	invalidRecords prometheus.Counter
	syncAge        prometheus.GaugeFunc

	promreg.Registration
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

// register lets the component be re-opened on the same registry after
// Close, which calls Unregister.
func (m *metrics) register(reg prometheus.Registerer) error {
	return m.Registration.Register(reg, "key store", m.active, m.verify, m.invalidRecords, m.syncAge)
}
