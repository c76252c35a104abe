package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cohortsync/cohortsync/config"
	"github.com/cohortsync/cohortsync/connectors/backfill"
	"github.com/cohortsync/cohortsync/internal/retry"
	"github.com/cohortsync/cohortsync/jobs/snapshot"
	"github.com/cohortsync/cohortsync/kafka"
	"github.com/cohortsync/cohortsync/pipeline"
	"github.com/cohortsync/cohortsync/service/stateofrecord"
	"github.com/cohortsync/cohortsync/sinks/parquet"
	"github.com/cohortsync/cohortsync/stores/identities"
	"github.com/cohortsync/cohortsync/transforms/decode"
	"github.com/cohortsync/cohortsync/transforms/identity"
	"github.com/cohortsync/cohortsync/transforms/retention"
)

// Stream is the running consumer side: identity directory, sinks and runner.
type Stream struct {
	dir    *identities.Directory
	record stateofrecord.Store
	sinks  []pipeline.Sink
	runner *pipeline.Runner
	dlq    *kafka.DeadLetter

	snapshots *snapshot.Snapshotter
	snapDone  chan struct{} // closed when the snapshot timer stops
	probeDone chan struct{} // closed when the state-of-record probe stops
	done      chan struct{} // closed when the runner returns
	runErr    error         // the runner's result, set before done closes
	cancel    context.CancelFunc
	drained   bool // Drain was called
}

// StreamOptions choose what differs between serve's stream and other runs of
// the same transforms and sinks.
type StreamOptions struct {
	// Source replaces the consumer group on the landing topic, for replays
	// that must leave the live group's offsets alone.
	Source pipeline.Source
	// BeforeRun, when set, is called with the state of record once the
	// sinks are open and before the first record is read: a replay reads the
	// totals it reports its effect against.
	BeforeRun func(ctx context.Context, record stateofrecord.Store) error
}

// StartStream runs the consumer side without the HTTP server, for commands
// such as backfill that work on the data directory themselves.
func StartStream(ctx context.Context, cfg config.Config, core *Core, log *slog.Logger, reg prometheus.Registerer, opts StreamOptions) (*Stream, error) {
	return startStream(ctx, cfg, core, log, reg, opts)
}

// Done is closed when the runner stops; a finite Source ends the run.
func (s *Stream) Done() <-chan struct{} { return s.done }

// Err is the runner's result once Done is closed.
func (s *Stream) Err() error {
	<-s.done
	return s.runErr
}

// Totals is what the runner has made durable: every acked batch's messages,
// change rows and drops by reason. It stays readable after Stop.
func (s *Stream) Totals() pipeline.Totals { return s.runner.Totals() }

// Record is the state of record the stream writes.
func (s *Stream) Record() stateofrecord.Store { return s.record }

// Directory is the identity directory the stream resolves with; a backfill
// counts outcomes with the same one.
func (s *Stream) Directory() *identities.Directory { return s.dir }

// Snapshots writes the Parquet member lists of changed cohorts.
func (s *Stream) Snapshots() *snapshot.Snapshotter { return s.snapshots }

// startStream opens the identity directory and the sinks (sinks first, as the
// design asks), then starts the runner on the landing topic.
func startStream(ctx context.Context, cfg config.Config, core *Core, log *slog.Logger, reg prometheus.Registerer, opts StreamOptions) (*Stream, error) {
	s := &Stream{done: make(chan struct{})}
	fail := func(err error) (*Stream, error) { return nil, errors.Join(err, s.close()) }

	// No deadline on the catch-up as a whole: a large directory takes as
	// long as it takes while it makes progress (identities.Config.CatchUpStall
	// bounds a stuck one), and ctx ends it on shutdown.
	dir, err := identities.Open(ctx, core.Kafka, cfg.IdentityDirectory(), identities.Options{Logger: log, Registerer: reg})
	if err != nil {
		return fail(fmt.Errorf("service: identity directory: %w", err))
	}
	s.dir = dir

	record, err := stateofrecord.Open(ctx, cfg, stateofrecord.Options{Logger: log, Registerer: reg, Migrate: cfg.ClickHouse.MigrateOnStart})
	if err != nil {
		return fail(fmt.Errorf("service: %w", err))
	}
	s.record = record
	s.sinks = append(s.sinks, record.Sink())
	pq, err := parquet.New(parquetConfig(cfg), parquet.Options{Logger: log, Registerer: reg})
	if err != nil {
		return fail(fmt.Errorf("service: parquet sink: %w", err))
	}
	s.sinks = append(s.sinks, pq)
	s.snapshots, err = snapshot.New(snapshot.Config{Interval: cfg.Snapshots.Interval}, record.SnapshotSource(), pq, snapshot.Options{Logger: log, Registerer: reg})
	if err != nil {
		return fail(fmt.Errorf("service: snapshots: %w", err))
	}

	dlq, err := core.Kafka.NewDeadLetter(reg, log)
	if err != nil {
		return fail(fmt.Errorf("service: dead letter: %w", err))
	}
	s.dlq = dlq
	transforms, resolver, err := importRules(cfg, dir, reg, log)
	if err != nil {
		return fail(err)
	}
	if opts.BeforeRun != nil {
		if err := opts.BeforeRun(ctx, record); err != nil {
			return fail(err)
		}
	}
	src := opts.Source
	if src == nil {
		gs, err := core.Kafka.NewGroupSource(core.Kafka.Config().Topics.Exports, cfg.Stream.GroupConfig(), reg, log)
		if err != nil {
			return fail(fmt.Errorf("service: consumer group: %w", err))
		}
		src = gs
	}
	runner, err := pipeline.NewRunner(pipeline.RunnerOptions{
		Source:       src,
		Decoder:      decode.New(),
		DecodeReason: decode.Reason,
		Transforms:   transforms,
		Resolver:     resolver,
		Sinks:        s.sinks,
		DeadLetter:   dlq,
		Logger:       log,
		Registerer:   reg,
	})
	if err != nil {
		_ = src.Close()
		return fail(fmt.Errorf("service: runner: %w", err))
	}
	s.runner = runner
	runCtx, runCancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel = runCancel
	go func() {
		s.runErr = runner.Run(runCtx)
		close(s.done)
	}()
	s.snapDone = make(chan struct{})
	go func() {
		defer close(s.snapDone)
		_ = s.snapshots.Run(runCtx)
	}()
	// The state of record is asked whether it takes writes whatever the
	// traffic: an idle stream writes nothing, so without this probe
	// cohortsync_clickhouse_up would stay 1 through a whole outage and
	// CohortsyncClickHouseDown could not fire; and a scrape must never be
	// what asks. Healthy pings only when its last answer is old (seconds),
	// so asking every second costs nothing in between.
	s.probeDone = make(chan struct{})
	go func() {
		defer close(s.probeDone)
		for retry.Sleep(runCtx, recordProbeInterval) == nil {
			_ = record.Healthy() // the sink logs the edges of an outage and sets its gauge
		}
	}()
	return s, nil
}

// recordProbeInterval is how often the stream asks the state of record
// whether it takes writes.
const recordProbeInterval = time.Second

// Healthy reports what /readyz needs from the stream side.
func (s *Stream) Healthy() error {
	if err := s.dir.Healthy(); err != nil {
		return fmt.Errorf("identity directory: %w", err)
	}
	if err := s.record.Healthy(); err != nil {
		return fmt.Errorf("%s: %w", s.record.Kind(), err)
	}
	if f := s.runner.Status().Failing; len(f) > 0 {
		return fmt.Errorf("stage %s failing since %s: %s", f[0].Stage, f[0].Since.Format(time.RFC3339), f[0].Err)
	}
	return nil
}

// Drain stops the runner (it stops fetching and finishes what is in flight)
// and leaves the sinks open, so a replay can read what it changed. The
// first call returns the runner's result, later ones nil, so that Stop
// after Drain does not report it twice.
func (s *Stream) Drain() error {
	if s.runner == nil || s.drained {
		return nil
	}
	s.drained = true
	s.cancel()
	err := s.Err()
	<-s.snapDone
	<-s.probeDone
	return err
}

// Stop drains the runner, then closes the sinks.
func (s *Stream) Stop() error {
	return errors.Join(s.Drain(), s.close())
}

func (s *Stream) close() error {
	var errs []error
	if s.runner != nil {
		errs = append(errs, s.runner.UnregisterMetrics())
	}
	for _, sink := range s.sinks {
		errs = append(errs, sink.Close())
	}
	if s.dlq != nil {
		errs = append(errs, s.dlq.Close())
	}
	if s.dir != nil {
		errs = append(errs, s.dir.Close())
	}
	return errors.Join(errs...)
}

// importRules builds the stream's transforms and identity stage (docs/ARCHITECTURE.md, Import rules);
// backfills count their outcome with the very same stages.
func importRules(cfg config.Config, dir identity.Lookups, reg prometheus.Registerer, log *slog.Logger) ([]pipeline.Transform, *identity.Resolver, error) {
	cutoff, err := cfg.Retention.CutoffTime()
	if err != nil {
		return nil, nil, fmt.Errorf("service: retention.cutoff: %w", err)
	}
	ret, err := retention.New(retention.Config{Cutoff: cutoff})
	if err != nil {
		return nil, nil, fmt.Errorf("service: retention: %w", err)
	}
	resolver, err := identity.New(identity.Options{Directory: dir, Registerer: reg, Logger: log})
	if err != nil {
		return nil, nil, fmt.Errorf("service: identity resolver: %w", err)
	}
	return []pipeline.Transform{ret}, resolver, nil
}

// BackfillDestination lands backfilled envelopes on the landing topic after
// counting them with the stream's own stages over dir.
func BackfillDestination(cfg config.Config, dir identity.Lookups, lander backfill.Lander, log *slog.Logger) (*backfill.Local, error) {
	transforms, resolver, err := importRules(cfg, dir, nil, log)
	if err != nil {
		return nil, err
	}
	return &backfill.Local{Lander: lander, Transforms: transforms, Resolver: resolver, MaxRecordBytes: cfg.Kafka.MaxMessageBytes - 4096}, nil
}
