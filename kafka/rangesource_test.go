package kafka_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	kafkago "github.com/segmentio/kafka-go"

	"github.com/cohortsync/cohortsync/kafka"
	"github.com/cohortsync/cohortsync/kafka/kafkatest"
	"github.com/cohortsync/cohortsync/pipeline"
)

// rangeT0 is the timestamp of the first record of every partition; record
// i of a partition is stamped rangeT0 + i minutes, unless a test says
// otherwise.
var rangeT0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func minute(i int) time.Time { return rangeT0.Add(time.Duration(i) * time.Minute) }

// keyPartition places a record on the partition its key names ("p<N>/…"),
// so tests know every record's partition and offset in advance.
type keyPartition struct{}

func (keyPartition) Balance(msg kafkago.Message, partitions ...int) int {
	head, _, _ := strings.Cut(string(msg.Key), "/")
	p, err := strconv.Atoi(strings.TrimPrefix(head, "p"))
	if err != nil || !slices.Contains(partitions, p) {
		return partitions[0]
	}
	return p
}

// rangeEnv is a kfake broker whose exports topic has three partitions.
type rangeEnv struct {
	client *kafka.Client
	topic  string
}

func newRangeEnv(t testing.TB, prefix string) *rangeEnv {
	t.Helper()
	client := kafkatest.NewClient(t, kafkatest.NewCluster(t), prefix)
	return &rangeEnv{client: client, topic: client.Config().Topics.Exports}
}

// produce lands perPartition records on each of parts partitions; stamp
// gives record i of partition p its timestamp. Offsets are i, as the topic
// starts empty.
func (e *rangeEnv) produce(t testing.TB, parts, perPartition int, stamp func(p, i int) time.Time) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	w := e.client.Writer(e.topic)
	w.Balancer = keyPartition{}
	defer w.Close()
	var msgs []kafkago.Message
	for i := range perPartition {
		for p := range parts {
			msgs = append(msgs, kafkago.Message{
				Key:   []byte(fmt.Sprintf("p%d/%d", p, i)),
				Value: []byte(fmt.Sprintf("value %d of partition %d", i, p)),
				Time:  stamp(p, i),
			})
		}
	}
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatalf("produce: %v", err)
	}
}

func (e *rangeEnv) open(t testing.TB, opts kafka.RangeOptions) *kafka.RangeSource {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	src, err := e.client.NewRangeSource(ctx, e.topic, opts, prometheus.NewRegistry(), testLogger(t))
	if err != nil {
		t.Fatalf("open range: %v", err)
	}
	t.Cleanup(func() { _ = src.Close() })
	return src
}

// drain reads src to the end, acking every batch, and returns the
// positions in the order they were handed out.
func drain(t *testing.T, src *kafka.RangeSource) []pipeline.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var got []pipeline.Message
	for {
		b, err := src.Next(ctx)
		if errors.Is(err, pipeline.ErrClosed) {
			return got
		}
		if err != nil {
			t.Fatalf("next: %v", err)
		}
		got = append(got, b.Messages...)
		if err := b.Ack(ctx, nil); err != nil {
			t.Fatalf("ack: %v", err)
		}
	}
}

// positions returns the sorted positions of msgs; a repeat shows twice.
func positions(msgs []pipeline.Message) []pos {
	out := make([]pos, len(msgs))
	for i, m := range msgs {
		out[i] = pos{m.Partition, m.Offset}
	}
	slices.SortFunc(out, comparePos)
	return out
}

func comparePos(a, b pos) int {
	if a.Partition != b.Partition {
		return a.Partition - b.Partition
	}
	return int(a.Offset - b.Offset)
}

// want lists offsets [from, to) of each of parts partitions, minus skip.
func want(parts int, from, to int64, skip ...pos) []pos {
	var out []pos
	for p := range parts {
		for o := from; o < to; o++ {
			if !slices.Contains(skip, pos{p, o}) {
				out = append(out, pos{p, o})
			}
		}
	}
	return out
}

func TestRangeSourceReadsExactlyTheWindow(t *testing.T) {
	t.Parallel()
	e := newRangeEnv(t, "rwin")
	// Partition 1's record 15 carries an old timestamp: it sits inside
	// the window's offsets but outside its time, and must be skipped.
	e.produce(t, 3, 40, func(p, i int) time.Time {
		if p == 1 && i == 15 {
			return minute(-60)
		}
		return minute(i)
	})
	landed := map[pos]kafkago.Message{}
	for _, m := range kafkatest.ReadAll(t, e.client, e.topic) {
		landed[pos{m.Partition, m.Offset}] = m
	}

	src := e.open(t, kafka.RangeOptions{Since: minute(10), Until: minute(30), MaxBatchMessages: 8})
	if got := src.Total(); got != 60 {
		t.Fatalf("total %d, want 60 (offsets 10..29 of 3 partitions)", got)
	}
	got := drain(t, src)
	if w := want(3, 10, 30, pos{1, 15}); !slices.Equal(positions(got), w) {
		t.Fatalf("read %v\nwant %v", positions(got), w)
	}
	if src.Skipped() != 1 {
		t.Fatalf("skipped %d, want 1", src.Skipped())
	}
	for _, m := range got {
		l := landed[pos{m.Partition, m.Offset}]
		if m.Topic != e.topic || string(m.Key) != string(l.Key) || string(m.Value) != string(l.Value) || !m.Time.Equal(l.Time) {
			t.Fatalf("message %d@%d = %q/%q at %s, landed %q/%q at %s", m.Partition, m.Offset, m.Key, m.Value, m.Time, l.Key, l.Value, l.Time)
		}
		if m.Time.Before(minute(10)) || !m.Time.Before(minute(30)) {
			t.Fatalf("message %d@%d stamped %s, outside the window", m.Partition, m.Offset, m.Time)
		}
	}
	if d := src.Done(); !maps.Equal(d, map[int]int64{0: 30, 1: 30, 2: 30}) {
		t.Fatalf("done %v, want 30 everywhere", d)
	}
	// Finished stays finished.
	if _, err := src.Next(context.Background()); !errors.Is(err, pipeline.ErrClosed) {
		t.Fatalf("next after the end: %v, want ErrClosed", err)
	}

	// No Until: the window runs to the end of the partitions.
	tail := drain(t, e.open(t, kafka.RangeOptions{Since: minute(35)}))
	if w := want(3, 35, 40); !slices.Equal(positions(tail), w) {
		t.Fatalf("open-ended range read %v, want %v", positions(tail), w)
	}
	// No Since: from the first record.
	head := drain(t, e.open(t, kafka.RangeOptions{Until: minute(3)}))
	if w := want(3, 0, 3); !slices.Equal(positions(head), w) {
		t.Fatalf("range from the start read %v, want %v", positions(head), w)
	}
	// A window after every record is empty and ends at once.
	empty := e.open(t, kafka.RangeOptions{Since: minute(100)})
	if empty.Total() != 0 {
		t.Fatalf("empty window total %d", empty.Total())
	}
	if got := drain(t, empty); len(got) != 0 {
		t.Fatalf("empty window read %v", positions(got))
	}
}

func TestRangeSourceNackRedeliversFromFirstUnacked(t *testing.T) {
	t.Parallel()
	e := newRangeEnv(t, "rnack")
	e.produce(t, 3, 30, func(_, i int) time.Time { return minute(i) })
	src := e.open(t, kafka.RangeOptions{Since: minute(0), MaxBatchMessages: 7})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// Two batches in hand at once, as the runner has: the first fails,
	// the second succeeds. The first one's records must come again.
	first, err := src.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	second, err := src.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Ack(ctx, errors.New("sink down")); err != nil {
		t.Fatal(err)
	}
	if err := second.Ack(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if err := first.Ack(ctx, nil); err == nil {
		t.Fatal("settling a batch twice must fail")
	}
	rest := drain(t, src)

	seen := map[pos]int{}
	for _, m := range rest {
		seen[pos{m.Partition, m.Offset}]++
	}
	for _, m := range first.Messages {
		if seen[pos{m.Partition, m.Offset}] == 0 {
			t.Fatalf("nacked message %d@%d was not delivered again", m.Partition, m.Offset)
		}
	}
	acked := append(slices.Clone(second.Messages), rest...)
	all := positions(acked)
	all = slices.Compact(all)
	if w := want(3, 0, 30); !slices.Equal(all, w) {
		t.Fatalf("acked %v\nwant %v", all, w)
	}
	if d := src.Done(); !maps.Equal(d, map[int]int64{0: 30, 1: 30, 2: 30}) {
		t.Fatalf("done %v, want 30 everywhere", d)
	}
}

func TestRangeSourceResumesFromCheckpoint(t *testing.T) {
	t.Parallel()
	e := newRangeEnv(t, "rresume")
	e.produce(t, 3, 50, func(_, i int) time.Time { return minute(i) })
	opts := kafka.RangeOptions{Since: minute(5), Until: minute(45), MaxBatchMessages: 6}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// The first run acks four batches, then is "interrupted" with a fifth
	// in hand that never settles.
	src := e.open(t, opts)
	var firstRun []pipeline.Message
	for range 4 {
		b, err := src.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		firstRun = append(firstRun, b.Messages...)
		if err := b.Ack(ctx, nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := src.Next(ctx); err != nil {
		t.Fatal(err)
	}
	checkpoint := src.Done()
	if err := src.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := src.Next(ctx); !errors.Is(err, pipeline.ErrClosed) {
		t.Fatalf("next after close: %v, want ErrClosed", err)
	}
	var remaining int64
	for p, off := range checkpoint {
		if off < 5 || off > 45 {
			t.Fatalf("checkpoint %v: partition %d outside the range", checkpoint, p)
		}
		remaining += 45 - off
	}

	opts.Resume = checkpoint
	resumed := e.open(t, opts)
	if resumed.Total() != remaining {
		t.Fatalf("resumed total %d, want %d", resumed.Total(), remaining)
	}
	secondRun := drain(t, resumed)

	// The first run's acked records are exactly those below the
	// checkpoint (batches were acked in order), so together the two runs
	// read every record once.
	for _, m := range firstRun {
		if m.Offset >= checkpoint[m.Partition] {
			t.Fatalf("acked %d@%d is not below the checkpoint %v", m.Partition, m.Offset, checkpoint)
		}
	}
	all := positions(append(slices.Clone(firstRun), secondRun...))
	if w := want(3, 5, 45); !slices.Equal(all, w) {
		t.Fatalf("two runs read %v\nwant %v (no gap, no repeat)", all, w)
	}
}

func TestRangeSourceCloseWakesWaitingNext(t *testing.T) {
	t.Parallel()
	e := newRangeEnv(t, "rclose")
	e.produce(t, 3, 5, func(_, i int) time.Time { return minute(i) })
	src := e.open(t, kafka.RangeOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := src.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(b.Messages) != 15 {
		t.Fatalf("first batch has %d messages, want all 15", len(b.Messages))
	}
	// Everything is handed out; Next waits for the ack, which never
	// comes, until Close.
	done := make(chan error, 1)
	go func() {
		_, err := src.Next(ctx)
		done <- err
	}()
	_ = src.Close()
	if err := <-done; !errors.Is(err, pipeline.ErrClosed) {
		t.Fatalf("next: %v, want ErrClosed", err)
	}
	// An ack after Close still counts in the checkpoint.
	if err := b.Ack(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if d := src.Done(); !maps.Equal(d, map[int]int64{0: 5, 1: 5, 2: 5}) {
		t.Fatalf("done %v", d)
	}

	// A cancelled ctx ends a waiting Next with ctx's error.
	src2 := e.open(t, kafka.RangeOptions{})
	if _, err := src2.Next(ctx); err != nil {
		t.Fatal(err)
	}
	cctx, ccancel := context.WithCancel(ctx)
	ccancel()
	if _, err := src2.Next(cctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("next with a cancelled ctx: %v", err)
	}
}

func TestRangeSourceRejectsBadOptions(t *testing.T) {
	t.Parallel()
	e := newRangeEnv(t, "rbad")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cases := map[string]struct {
		opts  kafka.RangeOptions
		topic string
		want  string
	}{
		"until before since": {kafka.RangeOptions{Since: minute(5), Until: minute(1)}, e.topic, "must be after since"},
		"unknown partition":  {kafka.RangeOptions{Resume: map[int]int64{7: 0}}, e.topic, "partition 7"},
		"negative limit":     {kafka.RangeOptions{MaxBatchMessages: -1}, e.topic, "negative"},
		"unknown topic":      {kafka.RangeOptions{}, "rbad.nosuchtopic", "nosuchtopic"},
	}
	for name, c := range cases {
		_, err := e.client.NewRangeSource(ctx, c.topic, c.opts, nil, testLogger(t))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error mentioning %q", name, err, c.want)
		}
	}
}

func TestRangeSourceDrivesRunnerToItsEnd(t *testing.T) {
	t.Parallel()
	e := newRangeEnv(t, "rrun")
	e.produce(t, 3, 60, func(_, i int) time.Time { return minute(i) })
	reg := prometheus.NewRegistry()
	log := testLogger(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	src, err := e.client.NewRangeSource(ctx, e.topic, kafka.RangeOptions{Since: minute(20), Until: minute(50), MaxBatchMessages: 10}, reg, log)
	if err != nil {
		t.Fatal(err)
	}
	// A sink that fails its first write: the runner retries it, and the
	// range must still end only after that batch is acked.
	failed := false
	sink := &recordingSink{name: "sink", before: func(context.Context, *pipeline.Output) error {
		if !failed {
			failed = true
			return errors.New("first write fails")
		}
		return nil
	}}
	r, err := pipeline.NewRunner(pipeline.RunnerOptions{
		Source:     src,
		Decoder:    fakeDecoder{},
		Resolver:   fakeResolver{},
		Sinks:      []pipeline.Sink{sink},
		DeadLetter: &memDeadLetter{},
		Registerer: reg,
		Logger:     log,
		RunnerConfig: pipeline.RunnerConfig{
			Retry: pipeline.Backoff{Initial: 10 * time.Millisecond, Max: 50 * time.Millisecond},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer r.UnregisterMetrics()
	// Run returns by itself: ctx is never cancelled before it does.
	if err := r.Run(ctx); err != nil {
		t.Fatalf("run: %v", err)
	}
	if ctx.Err() != nil {
		t.Fatal("the run ended only because the test's deadline passed")
	}
	got := sink.positions()
	slices.SortFunc(got, comparePos)
	if w := want(3, 20, 50); !slices.Equal(got, w) {
		t.Fatalf("sink got %v\nwant %v", got, w)
	}
	if d := src.Done(); !maps.Equal(d, map[int]int64{0: 50, 1: 50, 2: 50}) {
		t.Fatalf("done %v", d)
	}
}

// BenchmarkRangeSourceFullTopic reads a whole topic of 3 partitions
// through a RangeSource, acking every batch, and reports messages/s.
func BenchmarkRangeSourceFullTopic(b *testing.B) {
	const perPartition = 50_000
	e := newRangeEnv(b, "rbench")
	e.produce(b, 3, perPartition, func(_, i int) time.Time { return minute(i) })
	ctx := context.Background()
	var read int64
	b.ResetTimer()
	for b.Loop() {
		src, err := e.client.NewRangeSource(ctx, e.topic, kafka.RangeOptions{}, nil, slog.New(slog.DiscardHandler))
		if err != nil {
			b.Fatal(err)
		}
		for {
			batch, err := src.Next(ctx)
			if errors.Is(err, pipeline.ErrClosed) {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			read += int64(len(batch.Messages))
			_ = batch.Ack(ctx, nil)
		}
		_ = src.Close()
	}
	if read%(3*perPartition) != 0 {
		b.Fatalf("read %d messages, not a multiple of %d", read, 3*perPartition)
	}
	b.ReportMetric(float64(read)/b.Elapsed().Seconds(), "msgs/s")
}

// runRange runs a pipeline.Runner over a range with sink until the range
// ends or the sink cancels it, and returns the source's checkpoint.
func (e *rangeEnv) runRange(t *testing.T, ctx context.Context, opts kafka.RangeOptions, sink *recordingSink) map[int]int64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	log := testLogger(t)
	src, err := e.client.NewRangeSource(ctx, e.topic, opts, reg, log)
	if err != nil {
		t.Fatal(err)
	}
	r, err := pipeline.NewRunner(pipeline.RunnerOptions{
		Source: src, Decoder: fakeDecoder{}, Resolver: fakeResolver{},
		Sinks: []pipeline.Sink{sink}, DeadLetter: &memDeadLetter{},
		Registerer: reg, Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer r.UnregisterMetrics()
	if err := r.Run(ctx); err != nil {
		t.Fatalf("run: %v", err)
	}
	return src.Done()
}

func TestRangeSourceInterruptedRunResumes(t *testing.T) {
	t.Parallel()
	e := newRangeEnv(t, "rint")
	e.produce(t, 3, 60, func(_, i int) time.Time { return minute(i) })
	opts := kafka.RangeOptions{Since: minute(10), MaxBatchMessages: 9}

	// The first run is stopped (as by Ctrl-C) during its fourth write.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	runCtx, stop := context.WithCancel(ctx)
	writes := 0
	first := &recordingSink{name: "sink", before: func(context.Context, *pipeline.Output) error {
		if writes++; writes == 4 {
			stop()
		}
		return nil
	}}
	checkpoint := e.runRange(t, runCtx, opts, first)
	stop()
	var acked int64
	for _, off := range checkpoint {
		acked += off - 10
	}
	if acked == 0 || acked >= 150 {
		t.Fatalf("checkpoint %v: the interrupted run should have acked some, not all, records", checkpoint)
	}

	opts.Resume = checkpoint
	second := &recordingSink{name: "sink"}
	final := e.runRange(t, ctx, opts, second)
	if !maps.Equal(final, map[int]int64{0: 60, 1: 60, 2: 60}) {
		t.Fatalf("resumed run ended at %v", final)
	}
	for _, p := range second.positions() {
		if p.Offset < checkpoint[p.Partition] {
			t.Fatalf("resumed run read %v, below the checkpoint %v", p, checkpoint)
		}
	}
	// Every record is written by one run or the other; a record the first
	// run wrote after its last acked prefix may be written again, which
	// the sinks' position-named output makes harmless.
	all := slices.Compact(positions2(first.positions(), second.positions()))
	if w := want(3, 10, 60); !slices.Equal(all, w) {
		t.Fatalf("two runs wrote %v\nwant %v", all, w)
	}
}

func positions2(a, b []pos) []pos {
	out := append(slices.Clone(a), b...)
	slices.SortFunc(out, comparePos)
	return out
}
