package pipeline_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/cohortsync/cohortsync/pipeline"
	"github.com/cohortsync/cohortsync/schemas"
)

// loopSource hands out the same batch until total messages went out, then
// reports itself closed.
type loopSource struct {
	batch  []pipeline.Message
	total  int
	handed int
	acked  atomic.Int64
}

func (s *loopSource) Next(context.Context) (pipeline.Batch, error) {
	if s.handed >= s.total {
		return pipeline.Batch{}, pipeline.ErrClosed
	}
	n := min(len(s.batch), s.total-s.handed)
	s.handed += n
	return pipeline.Batch{Messages: s.batch[:n], Ack: func(context.Context, error) error {
		s.acked.Add(int64(n))
		return nil
	}}, nil
}

func (s *loopSource) Close() error { return nil }

type nopDecoder struct{}

func (nopDecoder) Decode(m pipeline.Message) (pipeline.Record, error) {
	return pipeline.Record{Partition: m.Partition, Offset: m.Offset}, nil
}

type nopTransform struct{}

func (nopTransform) Name() string { return "nop" }
func (nopTransform) Apply(_ context.Context, recs []pipeline.Record, _ *pipeline.Rejections) ([]pipeline.Record, error) {
	return recs, nil
}

// emptyResolver returns one shared empty batch, retained for each caller.
type emptyResolver struct{ rec arrow.RecordBatch }

func (r emptyResolver) Resolve(context.Context, []pipeline.Record, *pipeline.Rejections) (arrow.RecordBatch, error) {
	r.rec.Retain()
	return r.rec, nil
}

type nopSink struct{}

func (nopSink) Name() string                                  { return "nop_sink" }
func (nopSink) Write(context.Context, *pipeline.Output) error { return nil }
func (nopSink) Close() error                                  { return nil }

type nopDeadLetter struct{}

func (nopDeadLetter) Send(context.Context, pipeline.Message, string, error) error { return nil }

// BenchmarkRunnerOverhead measures what the runner itself costs per message
// (decode call, transform call, resolve call, positions, metrics, the
// hand-over between its two goroutines, ack) with stages that do nothing.
func BenchmarkRunnerOverhead(b *testing.B) {
	value := make([]byte, 218) // the size of a landed record (docs/ARCHITECTURE.md, Measured facts)
	cb := schemas.NewChangesBuilder(nil)
	empty := cb.NewRecordBatch()
	cb.Release()
	defer empty.Release()
	for _, size := range []int{100, 1000, 10000} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			batch := make([]pipeline.Message, size)
			for i := range batch {
				batch[i] = pipeline.Message{Topic: "t", Partition: i % 12, Offset: int64(i), Value: value}
			}
			src := &loopSource{batch: batch, total: b.N}
			r, err := pipeline.NewRunner(pipeline.RunnerOptions{
				Source:     src,
				Decoder:    nopDecoder{},
				Transforms: []pipeline.Transform{nopTransform{}},
				Resolver:   emptyResolver{rec: empty},
				Sinks:      []pipeline.Sink{nopSink{}},
				DeadLetter: nopDeadLetter{},
				Logger:     quietLogger(),
			})
			if err != nil {
				b.Fatal(err)
			}
			defer r.UnregisterMetrics()
			b.SetBytes(int64(len(value)))
			b.ReportAllocs()
			b.ResetTimer()
			if err := r.Run(context.Background()); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			if got := src.acked.Load(); got != int64(b.N) {
				b.Fatalf("acked %d of %d", got, b.N)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}
