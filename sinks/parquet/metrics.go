package parquet

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Error reasons, as the errors_total label. "disk_full" is apart because it
// is the one an operator fixes by hand, and the sink keeps failing until then.
const (
	reasonDiskFull = "disk_full"
	reasonIO       = "io"
	reasonInput    = "input"
	reasonCanceled = "canceled"
)

type metrics struct {
	files    *prometheus.CounterVec
	rows     *prometheus.CounterVec
	bytes    *prometheus.CounterVec
	errors   *prometheus.CounterVec
	duration prometheus.Histogram

	reg        prometheus.Registerer
	registered []prometheus.Collector
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	const ns, sub = "cohortsync", "parquet"
	m := &metrics{
		files: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "files_written_total",
			Help: "Parquet files made durable, by table (a replay rewrites a file and counts again).",
		}, []string{"table"}),
		rows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "rows_written_total",
			Help: "Rows in the Parquet files made durable, by table.",
		}, []string{"table"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "bytes_written_total",
			Help: "Bytes of the Parquet files made durable, by table.",
		}, []string{"table"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "write_errors_total",
			Help: "Batches the Parquet sink failed to make durable, by reason.",
		}, []string{"reason"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "write_duration_seconds",
			Help:    "Time to write and sync one batch, failed ones included.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
	}
	// Every series exists from the start, so rate() works on the first increment.
	for _, t := range []string{tableChanges, tableDataPoints, tableSnapshots} {
		m.files.WithLabelValues(t)
		m.rows.WithLabelValues(t)
		m.bytes.WithLabelValues(t)
	}
	for _, r := range []string{reasonDiskFull, reasonIO, reasonInput, reasonCanceled} {
		m.errors.WithLabelValues(r)
	}
	m.reg = reg
	for _, c := range []prometheus.Collector{m.files, m.rows, m.bytes, m.errors, m.duration} {
		if err := reg.Register(c); err != nil {
			m.unregister()
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return nil, fmt.Errorf("another parquet sink is registered on the same registry: %w", err)
			}
			return nil, err
		}
		m.registered = append(m.registered, c)
	}
	return m, nil
}

// unregister lets a sink be opened again on the same registry after Close.
func (m *metrics) unregister() {
	for _, c := range m.registered {
		m.reg.Unregister(c)
	}
	m.registered = nil
}
