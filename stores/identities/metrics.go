package identities

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cohortsync/cohortsync/internal/promreg"
)

const metricsNamespace, metricsSubsystem = "cohortsync", "identities"

type metrics struct {
	applied        prometheus.Counter
	invalidRecords prometheus.Counter
	tailErrors     prometheus.Counter
	users          prometheus.GaugeFunc
	lag            prometheus.GaugeFunc
	syncAge        prometheus.GaugeFunc
	snapshots      *prometheus.CounterVec
	snapshotTime   prometheus.Gauge
	promreg.Registration
}

func newMetrics(d *Directory) *metrics {
	const ns, sub = metricsNamespace, metricsSubsystem
	m := &metrics{
		snapshots: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "snapshots_total",
			Help: "Snapshots of the replica written to identities.snapshot_path, by result (written, failed).",
		}, []string{"result"}),
		snapshotTime: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "snapshot_last_written_timestamp_seconds",
			Help: "Unix time of the last snapshot this instance wrote; 0 before the first.",
		}),
		applied: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "applied_records_total",
			Help: "Records of the identities topic applied to the local replica.",
		}),
		invalidRecords: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "invalid_records_total",
			Help: "Records of the identities topic that could not be applied and were skipped.",
		}),
		tailErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "tail_errors_total",
			Help: "Interruptions of a partition tail of the identities topic (each followed by a reconnect).",
		}),
		users: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "users",
			Help: "Users in the local replica of the identity directory, over all workspaces.",
		}, func() float64 { return float64(d.idx.Users()) }),
		lag: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "lag_records",
			Help: "Records of the identities topic written but not yet applied to the local replica.",
		}, func() float64 { return float64(d.Status().Lag) }),
		syncAge: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "sync_age_seconds",
			Help: "Seconds since the least recent partition tail confirmed it had read its partition to the end.",
		}, func() float64 {
			var oldest time.Time
			for _, p := range d.Status().Partitions {
				if oldest.IsZero() || p.LastSync.Before(oldest) {
					oldest = p.LastSync
				}
			}
			return time.Since(oldest).Seconds()
		}),
	}
	m.snapshots.WithLabelValues("written")
	m.snapshots.WithLabelValues("failed")
	return m
}

func (m *metrics) register(reg prometheus.Registerer) error {
	return m.Registration.Register(reg, "identity directory", m.applied, m.invalidRecords, m.tailErrors, m.users, m.lag, m.syncAge, m.snapshots, m.snapshotTime)
}

// loaderMetrics count what loads landed and refused.
type loaderMetrics struct {
	lines *prometheus.CounterVec
	promreg.Registration
}

func newLoaderMetrics() *loaderMetrics {
	m := &loaderMetrics{
		lines: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metricsNamespace, Subsystem: metricsSubsystem, Name: "load_lines_total",
			Help: "NDJSON lines of identity loads, by result: landed on the topic, or rejected as invalid.",
		}, []string{"result"}),
	}
	m.lines.WithLabelValues("landed")
	m.lines.WithLabelValues("rejected")
	return m
}

func (m *loaderMetrics) register(reg prometheus.Registerer) error {
	return m.Registration.Register(reg, "identity loader", m.lines)
}
