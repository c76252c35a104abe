package pipeline

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Stage names of the runner's own stages; transforms and sinks are labelled
// by their Name().
const (
	StageSource     = "source"
	StageDecode     = "decode"
	StageDeadLetter = "deadletter"
	StageResolve    = "resolve"
)

// ReasonUncounted labels records a transform dropped without counting them in
// Rejections, which breaks the Transform contract; it exists so that the
// numbers still add up and the breach shows.
const ReasonUncounted = "uncounted"

// runnerMetrics are the per-stage counters. Units per stage:
//   - decode: received = messages, emitted = records, dropped = messages
//     sent to the dead letter, by reason;
//   - a transform: records in, records kept, records rejected by reason;
//   - resolve: records in, change rows out, ids rejected by reason;
//   - a sink: change rows in, change rows made durable.
type runnerMetrics struct {
	received   *prometheus.CounterVec
	emitted    *prometheus.CounterVec
	dropped    *prometheus.CounterVec
	errors     *prometheus.CounterVec
	duration   *prometheus.HistogramVec
	deadLetter *prometheus.CounterVec
	batches    *prometheus.CounterVec
	lastBatch  prometheus.Gauge

	reg        prometheus.Registerer
	registered []prometheus.Collector
}

func newRunnerMetrics() *runnerMetrics {
	const ns = "cohortsync"
	return &runnerMetrics{
		received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: "stage", Name: "received_total",
			Help: "Items a stage was given (messages, records or rows, see the stage).",
		}, []string{"stage"}),
		emitted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: "stage", Name: "emitted_total",
			Help: "Items a stage passed on.",
		}, []string{"stage"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: "stage", Name: "dropped_total",
			Help: "Items a stage did not pass on, by reason (each is counted in rejections or sent to the dead letter).",
		}, []string{"stage", "reason"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: "stage", Name: "errors_total",
			Help: "Failed stage calls; each one is retried after a backoff.",
		}, []string{"stage"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: "stage", Name: "duration_seconds",
			Help:    "Time of one stage call over a batch, failed calls included.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
		}, []string{"stage"}),
		deadLetter: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "deadletter_total",
			Help: "Messages the runner sent to the dead letter and then acked, by reason.",
		}, []string{"reason"}),
		batches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: "runner", Name: "batches_total",
			Help: "Batches settled: acked after every sink succeeded, or nacked (delivered again) when the drain deadline cut them off.",
		}, []string{"result"}),
		lastBatch: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: "runner", Name: "last_batch_timestamp_seconds",
			Help: "When the last batch was acked after every sink succeeded.",
		}),
	}
}

func (m *runnerMetrics) register(reg prometheus.Registerer) error {
	if reg == nil {
		return nil
	}
	m.reg = reg
	for _, c := range []prometheus.Collector{m.received, m.emitted, m.dropped, m.errors, m.duration, m.deadLetter, m.batches, m.lastBatch} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				err = fmt.Errorf("%w (close the previous runner first)", err)
			}
			m.unregister()
			return fmt.Errorf("pipeline: register metrics: %w", err)
		}
		m.registered = append(m.registered, c)
	}
	return nil
}

func (m *runnerMetrics) unregister() {
	for _, c := range m.registered {
		m.reg.Unregister(c)
	}
	m.registered = nil
}
