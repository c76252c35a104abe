package kafka_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/prometheus/client_golang/prometheus"
	kafkago "github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/cohortsync/cohortsync/kafka"
	"github.com/cohortsync/cohortsync/kafka/kafkatest"
	"github.com/cohortsync/cohortsync/pipeline"
	"github.com/cohortsync/cohortsync/schemas"
)

// pos names one landed message.
type pos struct {
	Partition int
	Offset    int64
}

func (p pos) String() string { return fmt.Sprintf("%d@%d", p.Partition, p.Offset) }

// groupEnv is a kfake broker over TCP with short group timeouts, so that
// joins and rebalances take milliseconds.
type groupEnv struct {
	client *kafka.Client
	topic  string
}

func newGroupEnv(t *testing.T, prefix string) *groupEnv {
	t.Helper()
	brokers := kafkatest.NewCluster(t, kfake.GroupMinSessionTimeout(100*time.Millisecond))
	client := kafkatest.NewClient(t, brokers, prefix)
	return &groupEnv{client: client, topic: client.Config().Topics.Exports}
}

// testLogger shows the components' logs with the test's output, and drops
// whatever is logged after the test ended.
func testLogger(t testing.TB) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return slog.New(slog.NewTextHandler(w, nil))
}

type testWriter struct {
	t    testing.TB
	mu   sync.Mutex
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}

func testGroupConfig(group string) kafka.GroupConfig {
	cfg := kafka.DefaultGroupConfig()
	cfg.GroupID = group
	cfg.BatchMaxRecords = 20
	cfg.BatchMaxBytes = 16 << 10
	cfg.BatchMaxWait = 20 * time.Millisecond
	cfg.MaxInflightBytes = 1 << 20
	cfg.SessionTimeout = time.Second
	cfg.RebalanceTimeout = 2 * time.Second
	cfg.DrainTimeout = time.Second
	return cfg
}

// produce lands n messages with values made by value(i), spread over the
// partitions by key, one record batch per message so fetch sizes are exact.
func (e *groupEnv) produce(t *testing.T, ctx context.Context, n int, value func(i int) []byte) map[pos][]byte {
	t.Helper()
	w := e.client.Writer(e.topic)
	w.BatchSize = 1
	defer w.Close()
	msgs := make([]kafkago.Message, n)
	for i := range msgs {
		msgs[i] = kafkago.Message{Key: []byte(fmt.Sprintf("key-%d", i)), Value: value(i)}
	}
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatalf("produce: %v", err)
	}
	landed := map[pos][]byte{}
	for _, m := range kafkatest.ReadAll(t, e.client, e.topic) {
		landed[pos{m.Partition, m.Offset}] = m.Value
	}
	if len(landed) < n {
		t.Fatalf("landed %d of %d", len(landed), n)
	}
	return landed
}

// committed reads the group's committed offsets; -1 means none.
func (e *groupEnv) committed(t *testing.T, ctx context.Context, group string) map[int]int64 {
	t.Helper()
	out, err := e.tryCommitted(ctx, group)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func (e *groupEnv) tryCommitted(ctx context.Context, group string) (map[int]int64, error) {
	return e.client.Committed(ctx, group, e.topic, []int{0, 1, 2})
}

func (e *groupEnv) ends(t *testing.T, ctx context.Context) map[int]int64 {
	t.Helper()
	ends, err := e.client.PartitionEnds(ctx, e.topic)
	if err != nil {
		t.Fatal(err)
	}
	return ends
}

// fakeDecoder refuses values starting with "bad".
type fakeDecoder struct{}

func (fakeDecoder) Decode(m pipeline.Message) (pipeline.Record, error) {
	if bytes.HasPrefix(m.Value, []byte("bad")) {
		return pipeline.Record{}, fmt.Errorf("decode %d@%d: not an envelope", m.Partition, m.Offset)
	}
	return pipeline.Record{Partition: m.Partition, Offset: m.Offset, Envelope: schemas.Envelope{RecordID: string(m.Value)}}, nil
}

// fakeResolver emits one change row per record, carrying its position.
type fakeResolver struct{}

func (fakeResolver) Resolve(_ context.Context, recs []pipeline.Record, _ *pipeline.Rejections) (arrow.RecordBatch, error) {
	b := schemas.NewChangesBuilder(nil)
	defer b.Release()
	for _, r := range recs {
		b.Append(schemas.ResolvedChange{RecordID: r.Envelope.RecordID, Partition: int32(r.Partition), Offset: r.Offset})
	}
	return b.NewRecordBatch(), nil
}

// recordingSink keeps the positions of every row it made durable. before,
// if set, runs first and its error fails the write.
type recordingSink struct {
	name   string
	before func(ctx context.Context, out *pipeline.Output) error

	mu     sync.Mutex
	got    []pos
	writes int
}

func (s *recordingSink) Name() string { return s.name }
func (s *recordingSink) Close() error { return nil }

func (s *recordingSink) Write(ctx context.Context, out *pipeline.Output) error {
	if s.before != nil {
		if err := s.before(ctx, out); err != nil {
			return err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.writes++
	for i := range int(out.Changes.NumRows()) {
		c := schemas.ChangeAt(out.Changes, i)
		s.got = append(s.got, pos{int(c.Partition), c.Offset})
	}
	return nil
}

func (s *recordingSink) positions() []pos {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.got)
}

// memDeadLetter is used where the dead letter is not the point of the test.
type memDeadLetter struct {
	mu  sync.Mutex
	got []pipeline.Message
}

func (d *memDeadLetter) Send(_ context.Context, m pipeline.Message, _ string, _ error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.got = append(d.got, m)
	return nil
}

type runnerHandle struct {
	src    *kafka.GroupSource
	runner *pipeline.Runner
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan error
}

func (e *groupEnv) startRunner(t *testing.T, ctx context.Context, cfg kafka.GroupConfig, drain time.Duration, dl pipeline.DeadLetter, sinks ...pipeline.Sink) *runnerHandle {
	t.Helper()
	reg := prometheus.NewRegistry()
	log := testLogger(t)
	src, err := e.client.NewGroupSource(e.topic, cfg, reg, log)
	if err != nil {
		t.Fatal(err)
	}
	if dl == nil {
		dl = &memDeadLetter{}
	}
	r, err := pipeline.NewRunner(pipeline.RunnerOptions{
		Source:       src,
		Decoder:      fakeDecoder{},
		DecodeReason: func(error) string { return "malformed" },
		Resolver:     fakeResolver{},
		Sinks:        sinks,
		DeadLetter:   dl,
		Registerer:   reg,
		Logger:       log,
		RunnerConfig: pipeline.RunnerConfig{
			DrainTimeout: drain,
			Retry:        pipeline.Backoff{Initial: 10 * time.Millisecond, Max: 50 * time.Millisecond},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	h := &runnerHandle{src: src, runner: r, reg: reg, cancel: cancel, done: make(chan error, 1)}
	go func() { h.done <- r.Run(rctx) }()
	t.Cleanup(func() {
		cancel()
		<-h.done
		_ = r.UnregisterMetrics()
	})
	return h
}

// stop cancels the runner and returns Run's result.
func (h *runnerHandle) stop(t *testing.T) error {
	t.Helper()
	h.cancel()
	select {
	case err := <-h.done:
		h.done <- err // for the cleanup
		return err
	case <-time.After(20 * time.Second):
		t.Fatal("runner did not stop")
		return nil
	}
}

func waitFor(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func metricValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue metrics
				}
			}
			// Unset kinds read as zero.
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}

func sortedPositions(ps []pos) []pos {
	out := slices.Clone(ps)
	slices.SortFunc(out, func(a, b pos) int {
		if a.Partition != b.Partition {
			return a.Partition - b.Partition
		}
		return int(a.Offset - b.Offset)
	})
	return out
}

func allPositions(landed map[pos][]byte) []pos {
	var out []pos
	for p := range landed {
		out = append(out, p)
	}
	return sortedPositions(out)
}

func TestRunnerCommitsOnlyAfterSinksSucceed(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e := newGroupEnv(t, "commit-after-sink")
	landed := e.produce(t, ctx, 30, func(i int) []byte { return []byte(fmt.Sprintf("ok-%d", i)) })

	const failures = 3
	var calls atomic.Int32
	var seenWhileFailing []map[int]int64
	sink := &recordingSink{name: "flaky"}
	sink.before = func(ctx context.Context, _ *pipeline.Output) error {
		if calls.Add(1) > failures {
			return nil
		}
		c, err := e.tryCommitted(ctx, "g-commit")
		if err != nil {
			return err
		}
		seenWhileFailing = append(seenWhileFailing, c)
		return errors.New("sink down")
	}
	cfg := testGroupConfig("g-commit")
	cfg.BatchMaxRecords = 100 // one batch holds everything that is there
	h := e.startRunner(t, ctx, cfg, 5*time.Second, nil, sink)

	ends := e.ends(t, ctx)
	waitFor(t, ctx, "every offset committed", func() bool {
		c := e.committed(t, ctx, "g-commit")
		for p, end := range ends {
			if c[p] != end {
				return false
			}
		}
		return true
	})
	if err := h.stop(t); err != nil {
		t.Fatalf("Run: %v", err)
	}

	if len(seenWhileFailing) != failures {
		t.Fatalf("sink failed %d times, want %d", len(seenWhileFailing), failures)
	}
	for i, c := range seenWhileFailing {
		for p, off := range c {
			if off != -1 {
				t.Errorf("failure %d: partition %d had committed offset %d while the sink was failing", i+1, p, off)
			}
		}
	}
	if got, want := sortedPositions(sink.positions()), allPositions(landed); !slices.Equal(got, want) {
		t.Fatalf("sink wrote %v, want each of %v exactly once", got, want)
	}
	if got := metricValue(t, h.reg, "cohortsync_stage_errors_total", map[string]string{"stage": "flaky"}); got != failures {
		t.Errorf("errors_total{stage=flaky} = %v, want %d", got, failures)
	}
	if got := metricValue(t, h.reg, "cohortsync_stage_emitted_total", map[string]string{"stage": "flaky"}); got != 30 {
		t.Errorf("emitted_total{stage=flaky} = %v, want 30", got)
	}
}

func TestRunnerCrashBetweenSinkWriteAndCommit(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e := newGroupEnv(t, "crash")
	landed := e.produce(t, ctx, 20, func(i int) []byte { return []byte(fmt.Sprintf("ok-%d", i)) })
	const group = "g-crash"

	// The first sink makes the batch durable; the second stands for the
	// process dying right after: it never returns success, so the batch is
	// never acked.
	first := &recordingSink{name: "durable"}
	written := make(chan struct{})
	var once sync.Once
	dying := &recordingSink{name: "dying"}
	dying.before = func(ctx context.Context, _ *pipeline.Output) error {
		once.Do(func() { close(written) })
		<-ctx.Done()
		return ctx.Err()
	}
	cfg := testGroupConfig(group)
	cfg.BatchMaxRecords = 100
	h := e.startRunner(t, ctx, cfg, 200*time.Millisecond, nil, first, dying)
	select {
	case <-written:
	case <-ctx.Done():
		t.Fatal("no batch reached the sinks")
	}
	err := h.stop(t)
	if !errors.Is(err, pipeline.ErrDrainTimeout) {
		t.Fatalf("Run = %v, want ErrDrainTimeout", err)
	}
	before := first.positions()
	if len(before) == 0 {
		t.Fatal("the durable sink got nothing")
	}
	for p, off := range e.committed(t, ctx, group) {
		if off != -1 {
			t.Fatalf("partition %d committed at %d although no batch was acked", p, off)
		}
	}

	// A new instance of the group gets the same records again.
	again := &recordingSink{name: "durable"}
	h2 := e.startRunner(t, ctx, testGroupConfig(group), 5*time.Second, nil, again)
	waitFor(t, ctx, "every record redelivered", func() bool { return len(again.positions()) >= len(landed) })
	if err := h2.stop(t); err != nil {
		t.Fatalf("second Run: %v", err)
	}
	got := again.positions()
	for _, p := range before {
		if !slices.Contains(got, p) {
			t.Errorf("record %s written before the crash was not delivered again", p)
		}
	}
	if s, want := sortedPositions(got), allPositions(landed); !slices.Equal(s, want) {
		t.Fatalf("after restart the sink got %v, want %v", s, want)
	}
	ends := e.ends(t, ctx)
	for p, off := range e.committed(t, ctx, group) {
		if off != ends[p] {
			t.Errorf("partition %d committed %d, want %d", p, off, ends[p])
		}
	}
}

func TestTwoRunnersSplitPartitions(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e := newGroupEnv(t, "split")
	const group = "g-split"
	a := &recordingSink{name: "sink"}
	b := &recordingSink{name: "sink"}
	ha := e.startRunner(t, ctx, testGroupConfig(group), 5*time.Second, nil, a)
	hb := e.startRunner(t, ctx, testGroupConfig(group), 5*time.Second, nil, b)
	waitFor(t, ctx, "both members own partitions", func() bool {
		sa, sb := ha.src.Stats(), hb.src.Stats()
		return sa.Partitions > 0 && sb.Partitions > 0 && sa.Partitions+sb.Partitions == 3
	})

	const n = 300
	landed := e.produce(t, ctx, n, func(i int) []byte { return []byte(fmt.Sprintf("ok-%d", i)) })
	waitFor(t, ctx, "every record processed", func() bool { return len(a.positions())+len(b.positions()) >= n })
	ends := e.ends(t, ctx)
	waitFor(t, ctx, "every offset committed", func() bool {
		c := e.committed(t, ctx, group)
		for p, end := range ends {
			if c[p] != end {
				return false
			}
		}
		return true
	})
	for _, h := range []*runnerHandle{ha, hb} {
		if err := h.stop(t); err != nil {
			t.Fatalf("Run: %v", err)
		}
	}

	pa, pb := a.positions(), b.positions()
	if len(pa) == 0 || len(pb) == 0 {
		t.Fatalf("one instance got nothing: %d and %d records", len(pa), len(pb))
	}
	partsA, partsB := map[int]bool{}, map[int]bool{}
	for _, p := range pa {
		partsA[p.Partition] = true
	}
	for _, p := range pb {
		partsB[p.Partition] = true
		if partsA[p.Partition] {
			t.Errorf("partition %d was consumed by both instances", p.Partition)
		}
	}
	if got, want := sortedPositions(append(pa, pb...)), allPositions(landed); !slices.Equal(got, want) {
		t.Fatalf("together the instances wrote %d records (%v), want each of %d exactly once", len(got), got, len(want))
	}
	t.Logf("instance A: partitions %v, %d records; instance B: partitions %v, %d records", partsA, len(pa), partsB, len(pb))
}

func TestRunnerDeadLettersCorruptMessageAndContinues(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e := newGroupEnv(t, "dlq")
	const group = "g-dlq"
	corrupt := func(i int) bool { return i%7 == 3 }
	landed := e.produce(t, ctx, 40, func(i int) []byte {
		if corrupt(i) {
			return []byte(fmt.Sprintf("bad\x00\xff-%d", i))
		}
		return []byte(fmt.Sprintf("ok-%d", i))
	})
	dl, err := e.client.NewDeadLetter(nil, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer dl.Close()
	sink := &recordingSink{name: "sink"}
	h := e.startRunner(t, ctx, testGroupConfig(group), 5*time.Second, dl, sink)

	var wantGood, wantBad []pos
	for p, v := range landed {
		if bytes.HasPrefix(v, []byte("bad")) {
			wantBad = append(wantBad, p)
		} else {
			wantGood = append(wantGood, p)
		}
	}
	ends := e.ends(t, ctx)
	waitFor(t, ctx, "every offset committed", func() bool {
		c := e.committed(t, ctx, group)
		for p, end := range ends {
			if c[p] != end {
				return false
			}
		}
		return true
	})
	if err := h.stop(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got := sortedPositions(sink.positions()); !slices.Equal(got, sortedPositions(wantGood)) {
		t.Fatalf("sink got %v, want the good records %v", got, sortedPositions(wantGood))
	}
	var dead []pos
	for _, m := range kafkatest.ReadAll(t, e.client, dl.Topic()) {
		r, err := kafka.ParseDeadLetter(m)
		if err != nil {
			t.Fatal(err)
		}
		p := pos{r.Partition, r.Offset}
		dead = append(dead, p)
		if r.Reason != "malformed" {
			t.Errorf("%s: reason %q, want malformed", p, r.Reason)
		}
		if !bytes.Equal(r.Value, landed[p]) {
			t.Errorf("%s: dead-letter value %q, want the original %q", p, r.Value, landed[p])
		}
		if r.Topic != e.topic || !strings.Contains(r.Error, "not an envelope") {
			t.Errorf("%s: topic %q error %q", p, r.Topic, r.Error)
		}
	}
	if got := sortedPositions(dead); !slices.Equal(got, sortedPositions(wantBad)) {
		t.Fatalf("dead letter holds %v, want %v", got, sortedPositions(wantBad))
	}
	if got := metricValue(t, h.reg, "cohortsync_deadletter_total", map[string]string{"reason": "malformed"}); got != float64(len(wantBad)) {
		t.Errorf("deadletter_total = %v, want %d", got, len(wantBad))
	}
	if got := metricValue(t, h.reg, "cohortsync_stage_dropped_total", map[string]string{"stage": "decode", "reason": "malformed"}); got != float64(len(wantBad)) {
		t.Errorf("dropped_total{decode,malformed} = %v, want %d", got, len(wantBad))
	}
}

func TestRunnerBackpressurePausesFetching(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e := newGroupEnv(t, "backpressure")
	const (
		n         = 150
		valueSize = 500
	)
	landed := e.produce(t, ctx, n, func(i int) []byte {
		return fmt.Appendf(nil, "ok-%d-%s", i, strings.Repeat("x", valueSize))
	})
	cfg := testGroupConfig("g-bp")
	cfg.BatchMaxRecords = 5
	cfg.BatchMaxBytes = 4 << 10
	cfg.MaxInflightBytes = 8 << 10
	limit := cfg.MaxInflightBytes + int64(cfg.BatchMaxBytes)

	var peak atomic.Int64
	var h *runnerHandle
	observe := func() {
		if h == nil {
			return
		}
		in := h.src.Stats().InflightBytes
		for {
			p := peak.Load()
			if in <= p || peak.CompareAndSwap(p, in) {
				return
			}
		}
	}
	ready := make(chan struct{})
	sink := &recordingSink{name: "slow"}
	sink.before = func(ctx context.Context, _ *pipeline.Output) error {
		<-ready
		observe()
		time.Sleep(15 * time.Millisecond)
		return nil
	}
	h = e.startRunner(t, ctx, cfg, 5*time.Second, nil, sink)
	close(ready)
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			select {
			case <-stopSampling:
				return
			case <-time.After(time.Millisecond):
				observe()
			}
		}
	}()
	waitFor(t, ctx, "every record processed", func() bool { return len(sink.positions()) >= n })
	close(stopSampling)
	<-sampled
	// The source's metrics leave the registry when it closes.
	paused := metricValue(t, h.reg, "cohortsync_consumer_fetch_paused_total", nil)
	if err := h.stop(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got := peak.Load(); got > limit || got == 0 {
		t.Fatalf("peak in-flight bytes %d, want between 1 and max_inflight_bytes + batch_max_bytes = %d", got, limit)
	}
	total := int64(0)
	for _, v := range landed {
		total += int64(len(v)) + int64(len("key-000"))
	}
	if paused == 0 {
		t.Fatalf("fetching never paused although %d bytes went through a %d-byte budget", total, cfg.MaxInflightBytes)
	}
	if got, want := sortedPositions(sink.positions()), allPositions(landed); !slices.Equal(got, want) {
		t.Fatalf("sink got %d records, want each of %d once", len(got), len(want))
	}
	t.Logf("peak in-flight %d bytes (limit %d) over %d bytes landed", peak.Load(), limit, total)
}

func TestGroupSourceRedeliversAfterNackAndAfterCloseWithoutAck(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e := newGroupEnv(t, "nack")
	const group = "g-nack"
	landed := e.produce(t, ctx, 12, func(i int) []byte { return []byte(fmt.Sprintf("ok-%d", i)) })
	cfg := testGroupConfig(group)
	cfg.BatchMaxRecords = 100
	cfg.DrainTimeout = 200 * time.Millisecond

	positionsOf := func(b pipeline.Batch) []pos {
		var out []pos
		for _, m := range b.Messages {
			out = append(out, pos{m.Partition, m.Offset})
		}
		return out
	}
	// collect reads batches until every landed record was seen once more,
	// acking each with ack.
	collect := func(src *kafka.GroupSource, ack error) []pos {
		var got []pos
		seen := map[pos]bool{}
		for len(seen) < len(landed) {
			b, err := src.Next(ctx)
			if err != nil {
				t.Fatalf("Next: %v", err)
			}
			for _, p := range positionsOf(b) {
				seen[p] = true
			}
			got = append(got, positionsOf(b)...)
			if ack != nil {
				if err := b.Ack(ctx, ack); err != nil {
					t.Fatal(err)
				}
				return got
			}
		}
		return got
	}

	src, err := e.client.NewGroupSource(e.topic, cfg, nil, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	// A failed batch comes again.
	failed := collect(src, errors.New("sink refused"))
	var again []pos
	seen := map[pos]bool{}
	for !func() bool {
		for _, p := range failed {
			if !seen[p] {
				return false
			}
		}
		return true
	}() {
		b, err := src.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range positionsOf(b) {
			seen[p] = true
			again = append(again, p)
		}
		// Not acked: the source closes with these batches unsettled.
	}
	if err := src.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := src.Next(ctx); !errors.Is(err, pipeline.ErrClosed) {
		t.Fatalf("Next after Close = %v, want ErrClosed", err)
	}
	for p, off := range e.committed(t, ctx, group) {
		if off != -1 {
			t.Fatalf("partition %d committed %d with nothing acked", p, off)
		}
	}

	// Unacked at close: a new member reads everything again and commits it.
	src2, err := e.client.NewGroupSource(e.topic, cfg, nil, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer src2.Close()
	var all []pos
	for len(all) < len(landed) {
		b, err := src2.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, positionsOf(b)...)
		if err := b.Ack(ctx, nil); err != nil {
			t.Fatalf("ack: %v", err)
		}
	}
	if got, want := sortedPositions(all), allPositions(landed); !slices.Equal(got, want) {
		t.Fatalf("second member got %v, want %v", got, want)
	}
	ends := e.ends(t, ctx)
	for p, off := range e.committed(t, ctx, group) {
		if off != ends[p] {
			t.Errorf("partition %d committed %d, want %d", p, off, ends[p])
		}
	}
	if err := (kafka.GroupConfig{}).Validate(); err == nil || !strings.Contains(err.Error(), "group_id") {
		t.Errorf("empty config validates: %v", err)
	}
}

// BenchmarkGroupSourceConsume measures the group source alone: join a new
// group and read and ack every record of a 3-partition topic holding
// 100,000 records of 218 bytes (committing after each batch).
func BenchmarkGroupSourceConsume(b *testing.B) {
	const records, valueSize = 100_000, 218
	brokers := kafkatest.NewCluster(b, kfake.GroupMinSessionTimeout(100*time.Millisecond))
	client := kafkatest.NewClient(b, brokers, "bench")
	topic := client.Config().Topics.Exports
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	w := client.Writer(topic)
	value := bytes.Repeat([]byte("v"), valueSize)
	batch := make([]kafkago.Message, 0, 1000)
	for i := range records {
		batch = append(batch, kafkago.Message{Key: fmt.Appendf(nil, "k%d", i%997), Value: value})
		if len(batch) == cap(batch) {
			if err := w.WriteMessages(ctx, batch...); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	_ = w.Close()
	var groups int // every pass needs a group with nothing committed
	for _, size := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			b.SetBytes(int64(records * valueSize))
			for range b.N {
				groups++
				cfg := testGroupConfig(fmt.Sprintf("bench-%d", groups))
				cfg.BatchMaxRecords = size
				cfg.BatchMaxBytes = 4 << 20
				cfg.MaxInflightBytes = 64 << 20
				src, err := client.NewGroupSource(topic, cfg, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
				if err != nil {
					b.Fatal(err)
				}
				for got := 0; got < records; {
					bt, err := src.Next(ctx)
					if err != nil {
						b.Fatal(err)
					}
					got += len(bt.Messages)
					if err := bt.Ack(ctx, nil); err != nil {
						b.Fatal(err)
					}
				}
				_ = src.Close()
			}
			b.ReportMetric(float64(b.N*records)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

func TestGroupSourceDropsAcksOfPartitionsLostInRebalance(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e := newGroupEnv(t, "rebalance")
	const group = "g-rebalance"
	landed := e.produce(t, ctx, 30, func(i int) []byte { return []byte(fmt.Sprintf("ok-%d", i)) })
	cfg := testGroupConfig(group)
	cfg.BatchMaxRecords = 100
	cfg.DrainTimeout = 200 * time.Millisecond

	regA := prometheus.NewRegistry()
	a, err := e.client.NewGroupSource(e.topic, cfg, regA, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	held, err := a.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(held.Messages) == 0 {
		t.Fatal("empty batch")
	}

	// A second member joins while A still holds the batch. A gets
	// DrainTimeout to ack it, does not, and its partitions are revoked.
	b, err := e.client.NewGroupSource(e.topic, cfg, nil, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	waitFor(t, ctx, "the second member owns partitions", func() bool { return b.Stats().Partitions > 0 })

	if err := held.Ack(ctx, nil); err != nil {
		t.Fatalf("late ack: %v", err)
	}
	ranges := map[int]bool{}
	for _, m := range held.Messages {
		ranges[m.Partition] = true
	}
	if got := metricValue(t, regA, "cohortsync_acks_dropped_total", nil); got != float64(len(ranges)) {
		t.Fatalf("acks_dropped_total = %v, want %d (one per partition range of the batch)", got, len(ranges))
	}
	for p, off := range e.committed(t, ctx, group) {
		if off != -1 {
			t.Fatalf("partition %d committed %d from an ack after revocation", p, off)
		}
	}

	// The records of the late batch are delivered again to whoever owns
	// their partition now.
	want := map[pos]bool{}
	for _, m := range held.Messages {
		want[pos{m.Partition, m.Offset}] = true
	}
	var mu sync.Mutex
	seen := map[pos]bool{}
	dctx, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup
	for _, src := range []*kafka.GroupSource{a, b} {
		wg.Go(func() {
			for dctx.Err() == nil {
				bt, err := src.Next(dctx)
				if err != nil {
					continue
				}
				mu.Lock()
				for _, m := range bt.Messages {
					seen[pos{m.Partition, m.Offset}] = true
				}
				mu.Unlock()
				_ = bt.Ack(ctx, nil)
			}
		})
	}
	waitFor(t, ctx, "every record delivered again", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen) == len(landed)
	})
	stop()
	wg.Wait()
	for p := range want {
		if !seen[p] {
			t.Errorf("record %s of the late batch was not delivered again", p)
		}
	}
	ends := e.ends(t, ctx)
	waitFor(t, ctx, "every offset committed", func() bool {
		c := e.committed(t, ctx, group)
		for p, end := range ends {
			if c[p] != end {
				return false
			}
		}
		return true
	})
}

func TestGroupSourceCloseCommitsBatchAckedDuringDrain(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e := newGroupEnv(t, "drain")
	const group = "g-drain"
	e.produce(t, ctx, 10, func(i int) []byte { return []byte(fmt.Sprintf("ok-%d", i)) })
	cfg := testGroupConfig(group)
	cfg.BatchMaxRecords = 100
	src, err := e.client.NewGroupSource(e.topic, cfg, nil, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	held, err := src.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	closed := make(chan struct{})
	go func() {
		_ = src.Close()
		close(closed)
	}()
	// Fetching has stopped; Close waits for the batch in hand.
	waitFor(t, ctx, "Next to report the source closed", func() bool {
		_, err := src.Next(ctx)
		return errors.Is(err, pipeline.ErrClosed)
	})
	select {
	case <-closed:
		t.Fatal("Close returned with a batch in hand")
	case <-time.After(50 * time.Millisecond):
	}
	if err := held.Ack(ctx, nil); err != nil {
		t.Fatalf("ack during drain: %v", err)
	}
	<-closed
	want := map[int]int64{}
	for _, m := range held.Messages {
		want[m.Partition] = max(want[m.Partition], m.Offset+1)
	}
	got := e.committed(t, ctx, group)
	for p, off := range want {
		if got[p] != off {
			t.Errorf("partition %d committed %d, want %d", p, got[p], off)
		}
	}
}
