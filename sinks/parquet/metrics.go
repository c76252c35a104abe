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

// Why a row of a batch was not staged, as the rows_skipped_total label.
const (
	// skipRedelivered: at or below the partition's high-water mark, a
	// redelivery of offsets already staged or rolled.
	skipRedelivered = "redelivered"
	// skipAlreadyWritten: its (record_id, position) is in the trees or
	// staged already, at other offsets (a record landed again).
	skipAlreadyWritten = "already_written"
)

type metrics struct {
	files    *prometheus.CounterVec
	rows     *prometheus.CounterVec
	bytes    *prometheus.CounterVec
	errors   *prometheus.CounterVec
	duration prometheus.Histogram

	skipped     *prometheus.CounterVec
	staged      prometheus.Gauge
	stagedFiles prometheus.Counter
	stagedBytes prometheus.Counter
	rolls       prometheus.Counter
	rollErrors  prometheus.Counter

	reg        prometheus.Registerer
	registered []prometheus.Collector
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	const ns, sub = "cohortsync", "parquet"
	m := &metrics{
		files: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "files_written_total",
			Help: "Parquet files made durable in the trees and snapshots, by table (a resumed roll rewrites a file and counts again).",
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
			Help:    "Time to stage and sync one batch (and roll, when the batch fills the stage), failed ones included.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "rows_skipped_total",
			Help: "Rows of batches not staged because the trees hold them already, by reason: redelivered (offsets already durable) or already_written (the same record_id and position landed before).",
		}, []string{"reason"}),
		staged: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "staged_rows",
			Help: "Rows acknowledged and durable in the staging area, waiting for a roll into the trees.",
		}),
		stagedFiles: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "staged_files_total",
			Help: "Batches staged (one file per Kafka partition of a batch).",
		}),
		stagedBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "staged_bytes_total",
			Help: "Bytes of the staged files.",
		}),
		rolls: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "rolls_total",
			Help: "Rolls of a Kafka partition's staged rows into the trees.",
		}),
		rollErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "roll_errors_total",
			Help: "Rolls that failed; their rows stay staged and the roll is tried again.",
		}),
	}
	for _, r := range []string{skipRedelivered, skipAlreadyWritten} {
		m.skipped.WithLabelValues(r)
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
	for _, c := range []prometheus.Collector{m.files, m.rows, m.bytes, m.errors, m.duration,
		m.skipped, m.staged, m.stagedFiles, m.stagedBytes, m.rolls, m.rollErrors} {
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
