package pipeline_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cohortsync/cohortsync/pipeline"
	"github.com/cohortsync/cohortsync/schemas"
)

// These tests drive the runner with an in-memory source, to pin its own
// logic (order of stages, retries, counting, drain). The Kafka side, with a
// real consumer group, is tested in kafka/.

// memSource hands out prepared batches, then blocks. It logs events so that
// tests can check the order of closing and acking.
type memSource struct {
	mu      sync.Mutex
	batches [][]pipeline.Message
	handed  int
	acks    []error // in ack order
	events  []string
	closed  chan struct{}
	once    sync.Once
}

func newMemSource(batches ...[]pipeline.Message) *memSource {
	return &memSource{batches: batches, closed: make(chan struct{})}
}

func (s *memSource) Next(ctx context.Context) (pipeline.Batch, error) {
	s.mu.Lock()
	if len(s.batches) > 0 {
		i := s.handed
		s.handed++
		msgs := s.batches[0]
		s.batches = s.batches[1:]
		s.events = append(s.events, fmt.Sprintf("next %d", i))
		s.mu.Unlock()
		return pipeline.Batch{Messages: msgs, Ack: func(_ context.Context, err error) error {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.acks = append(s.acks, err)
			if err != nil {
				s.events = append(s.events, fmt.Sprintf("nack %d", i))
			} else {
				s.events = append(s.events, fmt.Sprintf("ack %d", i))
			}
			return nil
		}}, nil
	}
	s.mu.Unlock()
	select {
	case <-ctx.Done():
		return pipeline.Batch{}, ctx.Err()
	case <-s.closed:
		return pipeline.Batch{}, pipeline.ErrClosed
	}
}

func (s *memSource) Close() error {
	s.once.Do(func() {
		s.mu.Lock()
		s.events = append(s.events, "close")
		s.mu.Unlock()
		close(s.closed)
	})
	return nil
}

func (s *memSource) log() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.events)
}

func (s *memSource) results() []error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.acks)
}

func msgs(partition int, first int64, values ...string) []pipeline.Message {
	out := make([]pipeline.Message, len(values))
	for i, v := range values {
		out[i] = pipeline.Message{Topic: "t", Partition: partition, Offset: first + int64(i), Key: []byte("k"), Value: []byte(v)}
	}
	return out
}

// textDecoder reads values "<workspace>/<cohort>/<year>" (a changes record
// with one user id), "cohort:<id>" (cohort metadata) and refuses the rest.
type textDecoder struct{}

var errNotText = errors.New("not a test record")

func (textDecoder) Decode(m pipeline.Message) (pipeline.Record, error) {
	v := string(m.Value)
	env := schemas.Envelope{RecordID: fmt.Sprintf("r%d-%d", m.Partition, m.Offset), Workspace: "ws", Partner: "p"}
	if id, ok := strings.CutPrefix(v, "cohort:"); ok {
		env.Payload = schemas.CohortPayload{CohortID: id, Name: id}
		return pipeline.Record{Partition: m.Partition, Offset: m.Offset, Envelope: env}, nil
	}
	var year int
	var cohort string
	parts := strings.Split(v, "/")
	if len(parts) != 3 {
		return pipeline.Record{}, fmt.Errorf("decode %d@%d: %w", m.Partition, m.Offset, errNotText)
	}
	if _, err := fmt.Sscan(parts[2], &year); err != nil {
		return pipeline.Record{}, fmt.Errorf("decode %d@%d: %w", m.Partition, m.Offset, errNotText)
	}
	cohort = parts[1]
	env.Workspace = parts[0]
	env.EventTime = time.Date(year, 1, 1, 0, 0, 0, 0, time.UTC)
	env.Payload = schemas.CohortChangesPayload{CohortID: cohort, Changes: []schemas.Change{{UserIDs: []string{"u-" + env.RecordID}}}}
	return pipeline.Record{Partition: m.Partition, Offset: m.Offset, Envelope: env}, nil
}

// yearFilter drops records before a year, counting them, and can fail its
// first calls after counting (a badly behaved transform: the runner must not
// count those twice).
type yearFilter struct {
	before int
	fail   int
	calls  int
}

func (*yearFilter) Name() string { return "retention" }

func (f *yearFilter) Apply(_ context.Context, recs []pipeline.Record, rej *pipeline.Rejections) ([]pipeline.Record, error) {
	f.calls++
	var kept []pipeline.Record
	for _, r := range recs {
		if r.Envelope.Payload != nil && !r.Envelope.EventTime.IsZero() && r.Envelope.EventTime.Year() < f.before {
			k := pipeline.RejectionKey{Workspace: r.Envelope.Workspace, RecordID: r.Envelope.RecordID, Reason: pipeline.ReasonRetention}
			rej.AddRecord(k)
			rej.AddIDs(k, 1)
			continue
		}
		kept = append(kept, r)
	}
	if f.calls <= f.fail {
		return nil, errors.New("transform unavailable")
	}
	return kept, nil
}

// rowResolver emits one row per user id of changes records.
type rowResolver struct{}

func (rowResolver) Resolve(_ context.Context, recs []pipeline.Record, _ *pipeline.Rejections) (arrow.RecordBatch, error) {
	b := schemas.NewChangesBuilder(nil)
	defer b.Release()
	for _, r := range recs {
		p, ok := r.Envelope.Payload.(schemas.CohortChangesPayload)
		if !ok {
			continue
		}
		for _, c := range p.Changes {
			for _, u := range c.UserIDs {
				b.Append(schemas.ResolvedChange{Workspace: r.Envelope.Workspace, CohortID: p.CohortID, UserID: u, RecordID: r.Envelope.RecordID, Partition: int32(r.Partition), Offset: r.Offset})
			}
		}
	}
	return b.NewRecordBatch(), nil
}

// memSink keeps what it was given; fail makes its first calls fail; delay
// slows every write (and respects ctx).
type memSink struct {
	name  string
	fail  int
	delay time.Duration
	src   *memSource

	mu      sync.Mutex
	calls   int
	users   []string
	cohorts []string
	rej     []pipeline.Rejection
	pos     []map[int]pipeline.OffsetRange
}

func (s *memSink) Name() string { return s.name }
func (s *memSink) Close() error { return nil }

func (s *memSink) Write(ctx context.Context, out *pipeline.Output) error {
	s.mu.Lock()
	s.calls++
	failing := s.calls <= s.fail
	s.mu.Unlock()
	if s.delay > 0 {
		select {
		case <-time.After(s.delay):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if failing {
		return fmt.Errorf("%s: write refused", s.name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range int(out.Changes.NumRows()) {
		s.users = append(s.users, schemas.ChangeAt(out.Changes, i).UserID)
	}
	for _, c := range out.Cohorts {
		s.cohorts = append(s.cohorts, c.Envelope.Payload.(schemas.CohortPayload).CohortID)
	}
	s.rej = append(s.rej, out.Rejections.Rows()...)
	s.pos = append(s.pos, out.Positions)
	return nil
}

type deadLetters struct {
	fail    int
	mu      sync.Mutex
	calls   int
	reasons []string
	values  [][]byte
}

func (d *deadLetters) Send(_ context.Context, m pipeline.Message, reason string, _ error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls++
	if d.calls <= d.fail {
		return errors.New("dead letter unavailable")
	}
	d.reasons = append(d.reasons, reason)
	d.values = append(d.values, m.Value)
	return nil
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func fastConfig() pipeline.RunnerConfig {
	return pipeline.RunnerConfig{DrainTimeout: 2 * time.Second, Retry: pipeline.Backoff{Initial: time.Millisecond, Max: 5 * time.Millisecond}}
}

func newTestRunner(t *testing.T, opts pipeline.RunnerOptions) (*pipeline.Runner, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	opts.Registerer = reg
	if opts.Logger == nil {
		opts.Logger = quietLogger()
	}
	if opts.Decoder == nil {
		opts.Decoder = textDecoder{}
	}
	if opts.Resolver == nil {
		opts.Resolver = rowResolver{}
	}
	if opts.RunnerConfig == (pipeline.RunnerConfig{}) {
		opts.RunnerConfig = fastConfig()
	}
	r, err := pipeline.NewRunner(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.UnregisterMetrics() })
	return r, reg
}

// runUntil runs r until cond holds, then cancels it and returns Run's error.
func runUntil(t *testing.T, r *pipeline.Runner, cond func() bool) error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	deadline := time.After(10 * time.Second)
	for !cond() {
		select {
		case err := <-done:
			cancel()
			return err
		case <-deadline:
			cancel()
			t.Fatal("condition not reached")
		case <-time.After(time.Millisecond):
		}
	}
	cancel()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
		return nil
	}
}

func TestNewRunnerReportsEveryProblem(t *testing.T) {
	t.Parallel()
	_, err := pipeline.NewRunner(pipeline.RunnerOptions{
		Transforms:   []pipeline.Transform{&yearFilter{}, &yearFilter{}},
		RunnerConfig: pipeline.RunnerConfig{DrainTimeout: -1},
	})
	if err == nil {
		t.Fatal("NewRunner accepted empty options")
	}
	for _, want := range []string{"source is required", "decoder is required", "resolver is required", "dead letter is required", "at least one sink", `"retention" is used twice`, "drain_timeout"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if err := pipeline.DefaultRunnerConfig().Validate(); err != nil {
		t.Errorf("defaults do not validate: %v", err)
	}
	bad := pipeline.RunnerConfig{DrainTimeout: time.Second, Retry: pipeline.Backoff{Initial: time.Second, Max: time.Millisecond}}
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "retry.max") {
		t.Errorf("Validate(max < initial) = %v", err)
	}
}

func TestRunnerStagesCountsAndOutput(t *testing.T) {
	t.Parallel()
	src := newMemSource(
		msgs(0, 10, "ws/c1/2024", "garbage", "ws/c1/2005", "cohort:c1"),
		msgs(1, 0, "ws/c2/2024", "\xff\xfe"),
	)
	dl := &deadLetters{fail: 1}
	filter := &yearFilter{before: 2010, fail: 2}
	sink := &memSink{name: "mem", fail: 1}
	r, reg := newTestRunner(t, pipeline.RunnerOptions{
		Source: src,
		DecodeReason: func(err error) string {
			if errors.Is(err, errNotText) {
				return "malformed"
			}
			return "other"
		},
		Transforms: []pipeline.Transform{filter},
		Sinks:      []pipeline.Sink{sink},
		DeadLetter: dl,
	})
	err := runUntil(t, r, func() bool { return len(src.results()) == 2 })
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	for i, e := range src.results() {
		if e != nil {
			t.Fatalf("batch %d nacked: %v", i, e)
		}
	}
	if want := []string{"u-r0-10", "u-r1-0"}; !slices.Equal(sink.users, want) {
		t.Errorf("sink users %v, want %v", sink.users, want)
	}
	if want := []string{"c1"}; !slices.Equal(sink.cohorts, want) {
		t.Errorf("sink cohorts %v, want %v", sink.cohorts, want)
	}
	if want := []string{"malformed", "malformed"}; !slices.Equal(dl.reasons, want) {
		t.Errorf("dead-letter reasons %v, want %v", dl.reasons, want)
	}
	if len(dl.values) != 2 || string(dl.values[0]) != "garbage" || !bytes.Equal(dl.values[1], []byte("\xff\xfe")) {
		t.Errorf("dead-letter values %q, want the original bytes", dl.values)
	}
	// Batch 1: one retention rejection (counted once despite two failed
	// attempts) and one undecodable record named by its position.
	var reasons []string
	for _, row := range sink.rej {
		reasons = append(reasons, fmt.Sprintf("%s %s ids=%d records=%d", row.Reason, row.RecordID, row.IDs, row.Records))
	}
	want := []string{"malformed t/0@11 ids=0 records=1", "retention r0-12 ids=1 records=1", "malformed t/1@1 ids=0 records=1"}
	slices.Sort(reasons)
	slices.Sort(want)
	if !slices.Equal(reasons, want) {
		t.Errorf("rejections %v, want %v", reasons, want)
	}
	if got := sink.pos[0][0]; got != (pipeline.OffsetRange{First: 10, Last: 13}) {
		t.Errorf("positions of batch 0 = %+v, want 10..13", got)
	}

	checks := []struct {
		metric string
		labels []string
		want   float64
	}{
		{"received", []string{"stage=decode"}, 6},
		{"emitted", []string{"stage=decode"}, 4},
		{"dropped", []string{"stage=decode", "reason=malformed"}, 2},
		{"received", []string{"stage=retention"}, 4},
		{"emitted", []string{"stage=retention"}, 3},
		{"dropped", []string{"stage=retention", "reason=retention"}, 1},
		{"errors", []string{"stage=retention"}, 2},
		{"errors", []string{"stage=deadletter"}, 1},
		{"received", []string{"stage=resolve"}, 3},
		{"emitted", []string{"stage=resolve"}, 2},
		{"received", []string{"stage=mem"}, 2}, // once per batch, however many attempts
		{"emitted", []string{"stage=mem"}, 2},
		{"errors", []string{"stage=mem"}, 1},
	}
	for _, c := range checks {
		name := "cohortsync_stage_" + c.metric + "_total"
		got := gathered(t, reg, name, c.labels...)
		if got != c.want {
			t.Errorf("%s%v = %v, want %v", name, c.labels, got, c.want)
		}
	}
	if got := gathered(t, reg, "cohortsync_deadletter_total", "reason=malformed"); got != 2 {
		t.Errorf("deadletter_total = %v, want 2", got)
	}
	st := r.Status()
	if st.Batches != 2 || st.LastBatch.IsZero() || len(st.Failing) != 0 || st.HasSource {
		t.Errorf("status %+v", st)
	}
	// The totals are the same outcome as a value, counted once per acked
	// batch although the transform and the sink each failed and retried.
	wantTotals := pipeline.Totals{
		Batches: 2, Messages: 6, Changes: 2,
		DeadLettered:   map[string]int64{"malformed": 2},
		DroppedRecords: map[string]int64{"retention": 1},
	}
	if got := r.Totals(); !reflect.DeepEqual(got, wantTotals) {
		t.Errorf("Totals() = %+v, want %+v", got, wantTotals)
	}
}

// gathered sums the samples of name carrying every label given as
// "name=value".
func gathered(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
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
	samples:
		for _, m := range mf.GetMetric() {
			have := map[string]bool{}
			for _, lp := range m.GetLabel() {
				have[lp.GetName()+"="+lp.GetValue()] = true
			}
			for _, l := range labels {
				if !have[l] {
					continue samples
				}
			}
			if m.Counter != nil {
				sum += m.Counter.GetValue()
			}
		}
	}
	return sum
}

func TestRunnerDrainFinishesBatchInHandAfterClosingSource(t *testing.T) {
	t.Parallel()
	src := newMemSource(msgs(0, 0, "ws/c/2024"))
	sink := &memSink{name: "slow", delay: 200 * time.Millisecond}
	r, _ := newTestRunner(t, pipeline.RunnerOptions{Source: src, Sinks: []pipeline.Sink{sink}, DeadLetter: &deadLetters{}})
	err := runUntil(t, r, func() bool {
		sink.mu.Lock()
		defer sink.mu.Unlock()
		return sink.calls > 0 // the batch is being written: cancel now
	})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got, want := src.log(), []string{"next 0", "close", "ack 0"}; !slices.Equal(got, want) {
		t.Fatalf("events %v, want %v: the source closes first, the batch in hand is still acked", got, want)
	}
}

func TestRunnerNacksWhatMissesTheDrainDeadline(t *testing.T) {
	t.Parallel()
	src := newMemSource(msgs(0, 0, "ws/c/2024"), msgs(0, 1, "ws/c/2024"))
	sink := &memSink{name: "stuck", delay: time.Hour}
	cfg := fastConfig()
	cfg.DrainTimeout = 50 * time.Millisecond
	r, reg := newTestRunner(t, pipeline.RunnerOptions{Source: src, Sinks: []pipeline.Sink{sink}, DeadLetter: &deadLetters{}, RunnerConfig: cfg})
	start := time.Now()
	// Stop only once the sink holds the first batch and the source has
	// handed out the second: on a loaded machine the second may otherwise
	// not have been fetched yet, and a batch never fetched is not nacked.
	err := runUntil(t, r, func() bool {
		src.mu.Lock()
		handed := src.handed
		src.mu.Unlock()
		sink.mu.Lock()
		defer sink.mu.Unlock()
		return sink.calls > 0 && handed == 2
	})
	if !errors.Is(err, pipeline.ErrDrainTimeout) {
		t.Fatalf("Run = %v, want ErrDrainTimeout", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatalf("drain took %s", time.Since(start))
	}
	res := src.results()
	if len(res) != 2 || res[0] == nil || res[1] == nil {
		t.Fatalf("ack results %v, want both batches nacked", res)
	}
	if got := gathered(t, reg, "cohortsync_runner_batches_total", "result=nacked"); got != 2 {
		t.Errorf("batches_total{nacked} = %v, want 2", got)
	}
	// Nothing was made durable, so nothing is in the totals.
	if got := r.Totals(); !reflect.DeepEqual(got, pipeline.Totals{}) {
		t.Errorf("Totals() = %+v after two nacked batches, want zero", got)
	}
}

func TestRunnerStatusShowsFailingSinkUntilItRecovers(t *testing.T) {
	t.Parallel()
	src := newMemSource(msgs(0, 0, "ws/c/2024"))
	sink := &memSink{name: "clickhouse", fail: 1 << 30}
	cfg := fastConfig()
	cfg.Retry = pipeline.Backoff{Initial: time.Millisecond, Max: 2 * time.Millisecond}
	r, _ := newTestRunner(t, pipeline.RunnerOptions{Source: src, Sinks: []pipeline.Sink{sink, &memSink{name: "parquet"}}, DeadLetter: &deadLetters{}, RunnerConfig: cfg})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	deadline := time.After(10 * time.Second)
	for {
		st := r.Status()
		if len(st.Failing) == 1 && st.Failing[0].Stage == "clickhouse" && st.Failing[0].Attempts >= 3 {
			break
		}
		select {
		case <-deadline:
			t.Fatalf("status never showed the failing sink: %+v", st)
		case <-time.After(time.Millisecond):
		}
	}
	if res := src.results(); len(res) != 0 {
		t.Fatalf("batch settled while a sink fails: %v", res)
	}
	sink.mu.Lock()
	sink.fail = 0
	sink.mu.Unlock()
	for len(src.results()) == 0 {
		select {
		case <-deadline:
			t.Fatal("batch not acked after recovery")
		case <-time.After(time.Millisecond):
		}
	}
	st := r.Status()
	if len(st.Failing) != 0 || st.Batches != 1 {
		t.Fatalf("status after recovery %+v", st)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
