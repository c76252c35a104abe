package bench

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync/internal/testkit"
	"github.com/cohortsync/cohortsync/pipeline"
	"github.com/cohortsync/cohortsync/schemas"
	"github.com/cohortsync/cohortsync/stores/identities"
	"github.com/cohortsync/cohortsync/transforms/decode"
	"github.com/cohortsync/cohortsync/transforms/identity"
	"github.com/cohortsync/cohortsync/transforms/retention"
)

// The stream's workload (bench/peers): records of 50 external ids over
// 1,000 cohorts, every tenth a removal, every id a known user.
const (
	stIDsPerRecord = 50
	stCohorts      = 1000
	stBatchRecords = 1000 // kafka.DefaultGroupConfig's BatchMaxRecords
	stBatches      = 8    // distinct batches the source cycles through
)

// BenchmarkStages runs the stream's stages alone: the runner with the real
// decoder, retention filter and identity resolver over a replica of
// COHORTSYNC_BENCH_USERS users (default 1M), landed envelopes as the
// partner API writes them, and a sink that only counts the columnar rows.
// changes/cpu-s is the figure per core: the runner works on two batches at
// once, so wall-clock changes/s can exceed it on two cores.
//
//	go test -run '^$' -bench Stages -benchtime 200x ./bench/
func BenchmarkStages(b *testing.B) {
	users := testkit.EnvCount(b, "COHORTSYNC_BENCH_USERS", 1_000_000, stIDsPerRecord)
	dir := stagesDirectory(b, users)
	batches := stagesBatches(b, users)
	ret, err := retention.New(retention.Config{Cutoff: time.Date(2010, 1, 1, 0, 0, 0, 0, time.UTC)})
	if err != nil {
		b.Fatal(err)
	}
	resolver, err := identity.New(identity.Options{Directory: dir})
	if err != nil {
		b.Fatal(err)
	}
	src := &cycleSource{batches: batches}
	sink := &countSink{}
	runner, err := pipeline.NewRunner(pipeline.RunnerOptions{
		Source: src, Decoder: decode.New(), DecodeReason: decode.Reason,
		Transforms: []pipeline.Transform{ret}, Resolver: resolver,
		Sinks: []pipeline.Sink{sink}, DeadLetter: discardDeadLetter{},
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		b.Fatal(err)
	}
	src.total = b.N
	cpu0 := testkit.ProcessCPU()
	b.ResetTimer()
	if err := runner.Run(b.Context()); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	cpu := testkit.ProcessCPU() - cpu0
	changes := float64(sink.rows.Load())
	if want := float64(b.N) * stBatchRecords * stIDsPerRecord; changes != want {
		b.Fatalf("the sink saw %.0f changes, want %.0f", changes, want)
	}
	b.ReportMetric(changes/b.Elapsed().Seconds(), "changes/s")
	b.ReportMetric(changes/cpu.Seconds(), "changes/cpu-s")
	b.ReportMetric(cpu.Seconds()/(changes/1e6), "cpu-s/Mchanges")
}

func stUserID(i int) string { return fmt.Sprintf("user-%07d", i) }
func stExtID(i int) string  { return fmt.Sprintf("ext-%07d", i) }

// stagesDirectory builds the replica the way the directory's tail does, in
// transactions of 20k records.
func stagesDirectory(b *testing.B, users int) *identities.Index {
	b.Helper()
	x, err := identities.OpenIndex(filepath.Join(b.TempDir(), identities.FileName), identities.IndexOptions{Topic: "ids"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = x.Close() })
	started := time.Now()
	msgs := make([]identities.Message, 0, 20_000)
	flush := func() {
		if _, err := x.Apply(0, msgs, 0); err != nil {
			b.Fatal(err)
		}
		msgs = msgs[:0]
	}
	for i := range users {
		r := identities.Record{UserID: stUserID(i), ExternalID: stExtID(i)}
		v, err := identities.EncodeValue("acme", r)
		if err != nil {
			b.Fatal(err)
		}
		msgs = append(msgs, identities.Message{Offset: int64(i), Key: identities.MessageKey("acme", r.UserID), Value: v})
		if len(msgs) == cap(msgs) {
			flush()
		}
	}
	flush()
	b.Logf("directory of %d users built in %s", users, time.Since(started).Round(time.Millisecond))
	return x
}

// stagesBatches encodes the landed records with schemas.Encode, the
// partner API's encoder.
func stagesBatches(b *testing.B, users int) [][]pipeline.Message {
	b.Helper()
	r := rand.New(rand.NewPCG(1, 2))
	now := time.Now().UTC()
	out := make([][]pipeline.Message, stBatches)
	offset := int64(0)
	for bi := range out {
		msgs := make([]pipeline.Message, stBatchRecords)
		for i := range msgs {
			ids := make([]string, stIDsPerRecord)
			for j := range ids {
				ids[j] = stExtID(r.IntN(users))
			}
			v, err := schemas.Encode(schemas.Envelope{
				SchemaVersion: schemas.CurrentVersion, RecordID: fmt.Sprintf("rec-%d", offset),
				Workspace: "acme", Partner: "mixpanel", ReceivedAt: now, EventTime: now,
				Payload: schemas.CohortChangesPayload{
					CohortID: fmt.Sprintf("cohort-%04d", offset%stCohorts),
					Changes:  []schemas.Change{{UserIDs: ids, ShouldRemove: offset%10 == 9}},
				},
			})
			if err != nil {
				b.Fatal(err)
			}
			msgs[i] = pipeline.Message{Topic: "cohortsync.exports", Partition: int(offset % 12), Offset: offset, Value: v}
			offset++
		}
		out[bi] = msgs
	}
	return out
}

// cycleSource hands out its batches in turn until total went out.
type cycleSource struct {
	batches [][]pipeline.Message
	total   int
	handed  int
}

func (s *cycleSource) Next(context.Context) (pipeline.Batch, error) {
	if s.handed >= s.total {
		return pipeline.Batch{}, pipeline.ErrClosed
	}
	batch := s.batches[s.handed%len(s.batches)]
	s.handed++
	return pipeline.Batch{Messages: batch, Ack: func(context.Context, error) error { return nil }}, nil
}

func (s *cycleSource) Close() error { return nil }

// countSink counts the rows of the columnar batches it is given.
type countSink struct{ rows atomic.Int64 }

func (*countSink) Name() string { return "count" }
func (s *countSink) Write(_ context.Context, out *pipeline.Output) error {
	if out != nil && out.Changes != nil {
		s.rows.Add(out.Changes.NumRows())
	}
	return nil
}
func (*countSink) Close() error { return nil }

type discardDeadLetter struct{}

func (discardDeadLetter) Send(context.Context, pipeline.Message, string, error) error { return nil }
