package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cohortsync/cohortsync/internal/retry"
	"github.com/cohortsync/cohortsync/schemas"
)

// ErrDrainTimeout is wrapped by Run's error when batches were still being
// processed at the drain deadline. They were nacked, so they are delivered
// again: nothing is lost, some work is repeated.
var ErrDrainTimeout = errors.New("pipeline: drain deadline passed")

// ackTimeout bounds one Ack call (a commit round trip).
const ackTimeout = 10 * time.Second

// RunnerOptions wires a Runner. Source, Decoder, Resolver, DeadLetter and at
// least one Sink are required.
type RunnerOptions struct {
	Source  Source
	Decoder Decoder
	// DecodeReason names why a message could not be decoded (the reason of
	// its dead-letter record). Nil means ReasonUndecodable for every error.
	DecodeReason func(error) string
	Transforms   []Transform
	Resolver     Resolver
	// Sinks are started by the caller before Run and closed by the caller
	// after Run returns; the runner only calls Write.
	Sinks      []Sink
	DeadLetter DeadLetter
	Logger     *slog.Logger
	// Registerer receives the runner's metrics; nil means none.
	Registerer prometheus.Registerer
	// RunnerConfig's zero fields take DefaultRunnerConfig's values.
	RunnerConfig
}

// Runner drives batches from a Source through decoding, the transforms, the
// resolver and every sink, and acks a batch only once every sink has made it
// durable. It never drops data on an error: a failing stage is retried with
// backoff while the batch stays unacked, so a crash at any point means the
// batch is delivered again.
//
// Two batches are worked on at once: while the sinks write one, the next is
// decoded, transformed and resolved. Sinks see batches in source order.
type Runner struct {
	opts   RunnerOptions
	log    *slog.Logger
	m      *runnerMetrics
	stages []string

	running atomic.Bool

	mu        sync.Mutex
	lastBatch time.Time
	batches   uint64
	failing   map[string]*StageFailure
	totals    Totals
}

// StageFailure describes a stage whose latest call failed and is being retried.
type StageFailure struct {
	Stage    string
	Since    time.Time
	Attempts int
	Err      string
}

// Status is a snapshot for health checks.
type Status struct {
	Running bool
	// LastBatch is when the last batch was acked after every sink
	// succeeded; zero before the first one.
	LastBatch time.Time
	// Batches counts the batches acked so far.
	Batches uint64
	// Source holds the source's figures (lag, in-flight bytes) when the
	// source reports them (see StatsSource); HasSource says whether it does.
	Source    SourceStats
	HasSource bool
	// Failing lists the stages being retried right now, by stage name.
	Failing []StageFailure
}

// NewRunner checks opts and registers the metrics.
func NewRunner(opts RunnerOptions) (*Runner, error) {
	var errs []error
	if opts.Source == nil {
		errs = append(errs, errors.New("source is required"))
	}
	if opts.Decoder == nil {
		errs = append(errs, errors.New("decoder is required"))
	}
	if opts.Resolver == nil {
		errs = append(errs, errors.New("resolver is required"))
	}
	if opts.DeadLetter == nil {
		errs = append(errs, errors.New("dead letter is required"))
	}
	if len(opts.Sinks) == 0 {
		errs = append(errs, errors.New("at least one sink is required"))
	}
	stages := []string{StageSource, StageDecode, StageDeadLetter, StageResolve}
	seen := map[string]bool{}
	for _, s := range stages {
		seen[s] = true
	}
	addStage := func(kind string, i int, name string) {
		switch {
		case name == "":
			errs = append(errs, fmt.Errorf("%s[%d]: Name() is empty", kind, i))
		case seen[name]:
			errs = append(errs, fmt.Errorf("%s[%d]: stage name %q is used twice", kind, i, name))
		default:
			seen[name] = true
			stages = append(stages, name)
		}
	}
	for i, t := range opts.Transforms {
		if t == nil {
			errs = append(errs, fmt.Errorf("transforms[%d]: nil", i))
			continue
		}
		addStage("transforms", i, t.Name())
	}
	for i, s := range opts.Sinks {
		if s == nil {
			errs = append(errs, fmt.Errorf("sinks[%d]: nil", i))
			continue
		}
		addStage("sinks", i, s.Name())
	}
	opts.RunnerConfig = opts.RunnerConfig.withDefaults()
	if err := opts.RunnerConfig.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("pipeline: runner: %w", err)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.DecodeReason == nil {
		opts.DecodeReason = func(error) string { return ReasonUndecodable }
	}
	m := newRunnerMetrics()
	if err := m.register(opts.Registerer); err != nil {
		return nil, err
	}
	// Touch every series so dashboards show zeros instead of gaps.
	for _, s := range stages {
		m.received.WithLabelValues(s)
		m.emitted.WithLabelValues(s)
		m.errors.WithLabelValues(s)
	}
	return &Runner{
		opts:    opts,
		log:     opts.Logger.With("component", "runner"),
		m:       m,
		stages:  stages,
		failing: map[string]*StageFailure{},
	}, nil
}

// Totals returns what the runner has made durable so far: the sum over every
// batch that all sinks acknowledged. It stays readable after Run returns.
func (r *Runner) Totals() Totals {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.totals.clone()
}

// UnregisterMetrics removes the runner's collectors so a new runner can use
// the same registry.
// It does not close the source or the sinks.
func (r *Runner) UnregisterMetrics() error {
	r.m.unregister()
	return nil
}

// Status reports progress and the stages being retried.
func (r *Runner) Status() Status {
	r.mu.Lock()
	st := Status{Running: r.running.Load(), LastBatch: r.lastBatch, Batches: r.batches}
	for _, f := range r.failing {
		st.Failing = append(st.Failing, *f)
	}
	r.mu.Unlock()
	slices.SortFunc(st.Failing, func(a, b StageFailure) int {
		if a.Stage < b.Stage {
			return -1
		}
		if a.Stage > b.Stage {
			return 1
		}
		return 0
	})
	if ss, ok := r.opts.Source.(StatsSource); ok {
		st.Source, st.HasSource = ss.Stats(), true
	}
	return st
}

// job is a batch on its way from processing to the sinks.
type job struct {
	batch Batch
	out   Output
	tally Totals // what this batch adds to the runner's Totals once acked
}

func (j *job) release() {
	if j.out.Changes != nil {
		j.out.Changes.Release()
		j.out.Changes = nil
	}
}

// Run consumes until ctx ends or the source closes. When ctx ends it closes
// the source first (no more fetching), finishes the batches it holds within
// DrainTimeout, and returns. It returns nil after a clean drain, and an error
// wrapping ErrDrainTimeout when batches had to be given up (and will be
// delivered again). It never closes the sinks.
func (r *Runner) Run(ctx context.Context) error {
	if !r.running.CompareAndSwap(false, true) {
		return errors.New("pipeline: runner is already running")
	}
	defer r.running.Store(false)

	// Stage calls outlive ctx by up to DrainTimeout, so that a cancel lets
	// the batches in hand finish instead of abandoning half-written work.
	work, stopWork := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWork()
	var drainTimer atomic.Pointer[time.Timer]
	closed := make(chan error, 1)
	stopWatch := context.AfterFunc(ctx, func() {
		drainTimer.Store(time.AfterFunc(r.opts.DrainTimeout, stopWork))
		r.log.Info("stopping: source closed, draining batches in hand", "drain_timeout", r.opts.DrainTimeout)
		// Close may wait for the batches in hand to be acked (a group
		// source commits them before leaving), so it must not block this
		// goroutine, which is the one acking them.
		go func() { closed <- r.opts.Source.Close() }()
	})
	defer func() {
		if t := drainTimer.Load(); t != nil {
			t.Stop()
		}
	}()

	jobs := make(chan *job, 1)
	var nacked atomic.Int64
	go r.produce(ctx, work, jobs, &nacked)
	for j := range jobs {
		if !r.write(ctx, work, j) {
			nacked.Add(1)
		}
	}
	if stopWatch() {
		// The source ended by itself; ctx is still live.
		closed <- r.opts.Source.Close()
	}
	closeErr := <-closed
	var errs []error
	if n := nacked.Load(); n > 0 {
		errs = append(errs, fmt.Errorf("%w: %d batches not finished, they will be delivered again", ErrDrainTimeout, n))
	}
	if closeErr != nil {
		errs = append(errs, fmt.Errorf("close source: %w", closeErr))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("pipeline: run: %w", err)
	}
	r.log.Info("stopped")
	return nil
}

// produce fetches and processes batches until ctx ends or the source closes.
// A batch it cannot finish before the drain deadline is nacked here and
// counted in nacked.
func (r *Runner) produce(ctx, work context.Context, jobs chan<- *job, nacked *atomic.Int64) {
	defer close(jobs)
	var wait time.Duration
	for ctx.Err() == nil {
		b, err := r.opts.Source.Next(ctx)
		if err != nil {
			if errors.Is(err, ErrClosed) || ctx.Err() != nil {
				return
			}
			wait = r.opts.Retry.Next(wait)
			r.m.errors.WithLabelValues(StageSource).Inc()
			r.log.WarnContext(ctx, "source failed, retrying", "err", err, "retry_in", wait)
			if retry.Sleep(ctx, wait) != nil {
				return
			}
			continue
		}
		wait = 0
		if len(b.Messages) == 0 {
			r.settle(ctx, b, nil)
			continue
		}
		j, err := r.process(work, b)
		if err != nil {
			// Only the drain deadline stops processing.
			r.settle(ctx, b, err)
			r.m.batches.WithLabelValues("nacked").Inc()
			nacked.Add(1)
			return
		}
		select {
		case jobs <- j:
		case <-work.Done():
			j.release()
			r.settle(ctx, j.batch, fmt.Errorf("%w: batch not written", ErrDrainTimeout))
			r.m.batches.WithLabelValues("nacked").Inc()
			nacked.Add(1)
			return
		}
	}
}

// process decodes, dead-letters, transforms and resolves one batch. It
// returns an error only when ctx ends (the drain deadline).
func (r *Runner) process(ctx context.Context, b Batch) (*job, error) {
	rej := NewRejections()
	tally := Totals{Batches: 1, Messages: int64(len(b.Messages))}
	positions := map[int]OffsetRange{}
	recs := make([]Record, 0, len(b.Messages))

	start := time.Now()
	r.m.received.WithLabelValues(StageDecode).Add(float64(len(b.Messages)))
	var bad int
	for i := range b.Messages {
		msg := &b.Messages[i]
		if pr, ok := positions[msg.Partition]; ok {
			pr.First, pr.Last = min(pr.First, msg.Offset), max(pr.Last, msg.Offset)
			positions[msg.Partition] = pr
		} else {
			positions[msg.Partition] = OffsetRange{First: msg.Offset, Last: msg.Offset}
		}
		rec, err := r.opts.Decoder.Decode(*msg)
		if err == nil {
			recs = append(recs, rec)
			continue
		}
		bad++
		reason := r.opts.DecodeReason(err)
		if err := r.deadLetter(ctx, *msg, reason, err); err != nil {
			return nil, err
		}
		// The record's own ids are unknown; its position names it, which
		// is stable across replays.
		rej.AddRecord(RejectionKey{
			RecordID: msg.Topic + "/" + strconv.Itoa(msg.Partition) + "@" + strconv.FormatInt(msg.Offset, 10),
			Reason:   reason,
		})
		r.m.dropped.WithLabelValues(StageDecode, reason).Inc()
		if tally.DeadLettered == nil {
			tally.DeadLettered = map[string]int64{}
		}
		tally.DeadLettered[reason]++
	}
	r.m.emitted.WithLabelValues(StageDecode).Add(float64(len(recs)))
	r.m.duration.WithLabelValues(StageDecode).Observe(time.Since(start).Seconds())
	if bad > 0 {
		r.log.WarnContext(ctx, "messages sent to the dead letter", "count", bad, "batch", len(b.Messages))
	}

	for _, t := range r.opts.Transforms {
		name := t.Name()
		var kept []Record
		var tr *Rejections
		err := r.retry(ctx, name, func(ctx context.Context) error {
			tr = NewRejections()
			out, err := t.Apply(ctx, recs, tr)
			kept = out
			return err
		})
		if err != nil {
			return nil, err
		}
		rej.merge(tr)
		r.m.received.WithLabelValues(name).Add(float64(len(recs)))
		r.m.emitted.WithLabelValues(name).Add(float64(len(kept)))
		dropped := tr.recordsByReason()
		var counted int64
		for reason, n := range dropped {
			r.m.dropped.WithLabelValues(name, reason).Add(float64(n))
			counted += n
		}
		if gone := int64(len(recs) - len(kept)); gone > counted {
			dropped[ReasonUncounted] += gone - counted
			r.m.dropped.WithLabelValues(name, ReasonUncounted).Add(float64(gone - counted))
			r.log.ErrorContext(ctx, "transform dropped records without counting them", "stage", name, "records", gone-counted)
		}
		tally.DroppedRecords = addCounts(tally.DroppedRecords, dropped)
		recs = kept
	}

	var changes arrow.RecordBatch
	var rr *Rejections
	err := r.retry(ctx, StageResolve, func(ctx context.Context) error {
		rr = NewRejections()
		out, err := r.opts.Resolver.Resolve(ctx, recs, rr)
		if err != nil {
			if out != nil {
				out.Release()
			}
			return err
		}
		changes = out
		return nil
	})
	if err != nil {
		return nil, err
	}
	if changes == nil {
		// A resolver with nothing to say may return no batch; sinks
		// still get an empty one, to record the rejections.
		cb := schemas.NewChangesBuilder(nil)
		changes = cb.NewRecordBatch()
		cb.Release()
	}
	rej.merge(rr)
	r.m.received.WithLabelValues(StageResolve).Add(float64(len(recs)))
	r.m.emitted.WithLabelValues(StageResolve).Add(float64(changes.NumRows()))
	rejectedIDs := rr.idsByReason()
	for reason, n := range rejectedIDs {
		r.m.dropped.WithLabelValues(StageResolve, reason).Add(float64(n))
	}
	tally.Changes = changes.NumRows()
	if len(rejectedIDs) > 0 {
		tally.RejectedIDs = rejectedIDs
	}

	var cohorts []Record
	for _, rec := range recs {
		switch rec.Envelope.Payload.(type) {
		case schemas.CohortPayload, *schemas.CohortPayload:
			cohorts = append(cohorts, rec)
		}
	}
	return &job{batch: b, out: Output{Changes: changes, Cohorts: cohorts, Rejections: rej, Positions: positions}, tally: tally}, nil
}

func (r *Runner) deadLetter(ctx context.Context, msg Message, reason string, cause error) error {
	err := r.retry(ctx, StageDeadLetter, func(ctx context.Context) error {
		return r.opts.DeadLetter.Send(ctx, msg, reason, cause)
	})
	if err != nil {
		return err
	}
	r.m.deadLetter.WithLabelValues(reason).Inc()
	r.log.DebugContext(ctx, "message dead-lettered", "topic", msg.Topic, "partition", msg.Partition, "offset", msg.Offset, "reason", reason)
	return nil
}

// write hands the batch to every sink, retrying each failing sink on its own
// (a sink that succeeded is not written twice), and acks once all succeeded.
// It reports whether the batch was acked.
func (r *Runner) write(ctx, work context.Context, j *job) bool {
	defer j.release()
	rows := float64(j.out.Changes.NumRows())
	errs := make([]error, len(r.opts.Sinks))
	var wg sync.WaitGroup
	for i, s := range r.opts.Sinks {
		name := s.Name()
		r.m.received.WithLabelValues(name).Add(rows)
		wg.Go(func() {
			errs[i] = r.retry(work, name, func(ctx context.Context) error { return s.Write(ctx, &j.out) })
			if errs[i] == nil {
				r.m.emitted.WithLabelValues(name).Add(rows)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		r.settle(ctx, j.batch, err)
		r.m.batches.WithLabelValues("nacked").Inc()
		return false
	}
	r.settle(ctx, j.batch, nil)
	now := time.Now()
	r.mu.Lock()
	r.lastBatch = now
	r.batches++
	r.totals.add(j.tally)
	r.mu.Unlock()
	r.m.batches.WithLabelValues("acked").Inc()
	r.m.lastBatch.Set(float64(now.UnixNano()) / 1e9)
	return true
}

// settle acks (err nil) or nacks a batch. A failed ack is logged: the data
// is durable, and the worst outcome is that the batch is delivered again.
func (r *Runner) settle(ctx context.Context, b Batch, err error) {
	if b.Ack == nil {
		return
	}
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ackTimeout)
	defer cancel()
	if aerr := b.Ack(actx, err); aerr != nil {
		r.m.errors.WithLabelValues(StageSource).Inc()
		r.log.WarnContext(ctx, "ack failed; the batch may be delivered again", "err", aerr, "nack", err != nil)
	}
	if err != nil {
		r.log.WarnContext(ctx, "batch given up, it will be delivered again", "err", err, "messages", len(b.Messages))
	}
}

// retry calls fn until it succeeds or ctx ends, with capped exponential
// backoff between calls. Each failure is logged and counted.
func (r *Runner) retry(ctx context.Context, stage string, fn func(context.Context) error) error {
	var wait time.Duration
	for attempt := 1; ; attempt++ {
		start := time.Now()
		err := fn(ctx)
		r.m.duration.WithLabelValues(stage).Observe(time.Since(start).Seconds())
		if err == nil {
			if attempt > 1 {
				r.clearFailing(stage)
				r.log.InfoContext(ctx, "stage recovered", "stage", stage, "attempts", attempt)
			}
			return nil
		}
		r.m.errors.WithLabelValues(stage).Inc()
		if ctx.Err() != nil {
			r.clearFailing(stage)
			return fmt.Errorf("%w: stage %s: %w", ErrDrainTimeout, stage, err)
		}
		wait = r.opts.Retry.Next(wait)
		r.setFailing(stage, err, attempt)
		r.log.WarnContext(ctx, "stage failed, retrying", "stage", stage, "attempt", attempt, "retry_in", wait, "err", err)
		// Jitter keeps instances that failed together from retrying together.
		if retry.Sleep(ctx, wait-time.Duration(rand.Int64N(int64(wait)/5+1))) != nil {
			r.clearFailing(stage)
			return fmt.Errorf("%w: stage %s: %w", ErrDrainTimeout, stage, err)
		}
	}
}

func (r *Runner) setFailing(stage string, err error, attempt int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f, ok := r.failing[stage]
	if !ok {
		f = &StageFailure{Stage: stage, Since: time.Now()}
		r.failing[stage] = f
	}
	f.Attempts = attempt
	f.Err = err.Error()
}

func (r *Runner) clearFailing(stage string) {
	r.mu.Lock()
	delete(r.failing, stage)
	r.mu.Unlock()
}
