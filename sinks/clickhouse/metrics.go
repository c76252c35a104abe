package clickhouse

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	rows     *prometheus.CounterVec
	inserts  *prometheus.CounterVec
	failures *prometheus.CounterVec
	duration *prometheus.HistogramVec
	up       prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	const ns, sub = "cohortsync", "clickhouse"
	m := &metrics{
		rows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "rows_written_total",
			Help: "Rows the server accepted, by table (a redelivered batch counts again).",
		}, []string{"table"}),
		inserts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "inserts_total",
			Help: "Batch inserts the server accepted, by table.",
		}, []string{"table"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "insert_failures_total",
			Help: "Insert attempts that failed and were retried or abandoned, by table.",
		}, []string{"table"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "insert_duration_seconds",
			Help:    "Duration of accepted batch inserts, by table.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 8),
		}, []string{"table"}),
		up: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "up",
			Help: "1 while the server takes writes, 0 during an outage.",
		}),
	}
	for _, c := range []prometheus.Collector{m.rows, m.inserts, m.failures, m.duration, m.up} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register: %w", err)
		}
	}
	return m, nil
}
