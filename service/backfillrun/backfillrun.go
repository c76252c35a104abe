// Package backfillrun runs one `cohortsync backfill`: it picks the source
// (files, a Mixpanel plan diffed against the state of record, or a time
// window of the landed topic), the destination (this data directory, a
// running server, or the Kafka of a distributed deployment), runs it through
// connectors/backfill or the stream's own transforms and sinks, and returns
// the summary as a value. The CLI only parses flags and prints the result.
package backfillrun

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cohortsync/cohortsync/config"
	"github.com/cohortsync/cohortsync/connectors/backfill"
	"github.com/cohortsync/cohortsync/connectors/files"
	"github.com/cohortsync/cohortsync/connectors/mixpanel"
	"github.com/cohortsync/cohortsync/internal/atomicfile"
	"github.com/cohortsync/cohortsync/internal/progress"
	"github.com/cohortsync/cohortsync/kafka"
	"github.com/cohortsync/cohortsync/kafka/broker"
	"github.com/cohortsync/cohortsync/pipeline"
	"github.com/cohortsync/cohortsync/schemas"
	"github.com/cohortsync/cohortsync/segments"
	"github.com/cohortsync/cohortsync/segments/api"
	"github.com/cohortsync/cohortsync/service"
	"github.com/cohortsync/cohortsync/service/stateofrecord"
	"github.com/cohortsync/cohortsync/stores/identities"
)

// Sources a backfill reads, as Options.From names them.
const (
	FromKafka    = "kafka"
	FromFile     = "file"
	FromMixpanel = "mixpanel"
)

// Options are one run's choices; the CLI fills them from its flags.
type Options struct {
	// From is FromKafka, FromFile or FromMixpanel.
	From string
	// Since and Until bound the window of a replay (RFC 3339; Until empty
	// means now).
	Since, Until string
	// Paths are the files of FromFile.
	Paths []string
	// Workspace and Partner are those of partner API bodies and of the
	// Mixpanel cohort (CSV and envelopes name their own).
	Workspace, Partner string
	// Server and Token land through a running server instead of the data
	// directory.
	Server, Token string
	DryRun        bool
	// Restart ignores the checkpoint of an interrupted run.
	Restart bool
	// Wait is how long to wait for the stream to apply what landed (0: not).
	Wait time.Duration
	// Batch is the number of records landed per batch and checkpoint.
	Batch    int
	Mixpanel MixpanelOptions

	// Stderr receives progress and the plan's one-line report.
	Stderr io.Writer
	// Logger receives warnings; ProgressLogger the progress lines when
	// Stderr is not a terminal. Nil discards.
	Logger, ProgressLogger *slog.Logger
}

// MixpanelOptions are the settings of FromMixpanel.
type MixpanelOptions struct {
	ProjectID, CohortID string
	// Region is us, eu or in; BaseURL, when set, replaces the region's URL.
	Region, BaseURL string
	// Username and Secret are the service account.
	Username, Secret string
	// IdentityProperty is the profile property holding the external id,
	// tried before $braze_external_id and $user_id.
	IdentityProperty string
}

// Validate reports every problem of o at once.
func (o Options) Validate() error {
	var errs []error
	switch o.From {
	case FromFile:
		if len(o.Paths) == 0 {
			errs = append(errs, errors.New("--from file needs at least one PATH"))
		}
	case FromKafka:
		if o.Since == "" {
			errs = append(errs, errors.New("--from kafka needs --since"))
		}
		if o.Server != "" {
			errs = append(errs, errors.New("--from kafka "+replayWhere))
		}
	case FromMixpanel:
		if o.Mixpanel.ProjectID == "" || o.Mixpanel.CohortID == "" {
			errs = append(errs, errors.New("--from mixpanel needs --project-id and --cohort-id"))
		}
	case "":
		errs = append(errs, errors.New("--from is required: kafka, file or mixpanel"))
	default:
		errs = append(errs, fmt.Errorf("--from %q: want kafka, file or mixpanel", o.From))
	}
	if o.From != FromFile && len(o.Paths) > 0 {
		errs = append(errs, fmt.Errorf("--from %s takes no PATH arguments, got %q", o.From, o.Paths))
	}
	if o.Batch < 1 || o.Batch > backfill.MaxRequestRecords {
		errs = append(errs, fmt.Errorf("--batch %d: want 1..%d", o.Batch, backfill.MaxRequestRecords))
	}
	return errors.Join(errs...)
}

// replayWhere says where a replay can run, in the one wording every
// refusal uses: it opens the sinks itself, so it cannot go through a server.
const replayWhere = "runs the transforms and sinks itself, so it cannot go through a server: on the embedded default run it while no server holds --data-dir (stop serve; it resumes where it stopped), or, with ClickHouse as the state of record, give --kafka-brokers and --clickhouse-addr and run it beside the running instances"

// UsageError is a problem with the options the caller must fix; the CLI
// answers it with its usage exit status.
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

// Result is what a run did.
type Result struct {
	Summary backfill.Summary
	// Checkpoint is the file an interrupted run resumes from.
	Checkpoint string
}

// Run runs one backfill. The Result is filled whenever the run got as far
// as a summary, also when it returns an error (an interrupted run).
func Run(ctx context.Context, cfg config.Config, opts Options) (Result, error) {
	if err := opts.Validate(); err != nil {
		return Result{}, &UsageError{err}
	}
	if opts.Stderr == nil {
		opts.Stderr = io.Discard
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.ProgressLogger == nil {
		opts.ProgressLogger = opts.Logger
	}
	b := &backfiller{opts: opts, cfg: cfg, log: opts.Logger, progLog: opts.ProgressLogger}
	err := b.run(ctx)
	return b.result, err
}

// backfiller holds one run's parts; close releases whatever was opened.
type backfiller struct {
	opts Options
	cfg  config.Config
	log  *slog.Logger
	// progLog carries the progress lines when stderr is not a terminal.
	progLog *slog.Logger

	reg     *prometheus.Registry
	core    *service.Core
	stream  *service.Stream
	dir     *identities.Directory // own replica when no in-process stream
	lander  *kafka.Lander
	closers []func() error
	result  Result
}

func (b *backfiller) close() error {
	var errs []error
	for i := len(b.closers) - 1; i >= 0; i-- {
		errs = append(errs, b.closers[i]())
	}
	return errors.Join(errs...)
}

func (b *backfiller) run(ctx context.Context) (err error) {
	defer func() { err = errors.Join(err, b.close()) }()
	b.reg = prometheus.NewRegistry()
	if b.opts.From == "kafka" {
		return b.replayKafka(ctx)
	}
	dest, err := b.destination(ctx)
	if err != nil {
		return err
	}
	var sources []backfill.Source
	var settings []string
	kind := b.opts.From
	switch b.opts.From {
	case "file":
		sources, err = fileSources(b.opts.Paths, b.fileOptions())
		settings = []string{b.opts.Workspace, b.opts.Partner}
	case "mixpanel":
		sources, settings, err = b.mixpanelPlan(ctx)
	}
	if err != nil || len(sources) == 0 {
		return err
	}
	runID := backfill.RunID(kind, settings, sources)
	checkpoint := backfill.CheckpointPath(b.cfg.DataDir, runID)
	rep := progress.New(b.opts.Stderr, progress.Options{Label: "backfill " + kind, Bytes: true, Logger: b.progLog})
	sum, runErr := backfill.Run(ctx, backfill.Options{
		Sources:      sources,
		IsBadInput:   files.IsLineError,
		Destination:  dest,
		Checkpoint:   checkpoint,
		Restart:      b.opts.Restart,
		DryRun:       b.opts.DryRun,
		BatchRecords: b.opts.Batch,
		Progress:     rep,
		Logger:       b.log,
	})
	rep.Finish()
	if runErr == nil && !b.opts.DryRun {
		runErr = b.waitApplied(ctx, sum.Landed-sum.Resumed)
	}
	b.result = Result{Summary: sum, Checkpoint: checkpoint}
	if errors.Is(runErr, backfill.ErrInterrupted) {
		return fmt.Errorf("%w\nrun the same command again to resume from %s", runErr, checkpoint)
	}
	return runErr
}

func (b *backfiller) fileOptions() files.Options {
	return files.Options{Workspace: b.opts.Workspace, Partner: b.opts.Partner, TempDir: filepath.Join(b.cfg.DataDir, "backfill", "tmp")}
}

// fileSources describes each path; a missing file is a usage error.
func fileSources(paths []string, opts files.Options) ([]backfill.Source, error) {
	srcs, err := backfill.FileSources(paths, opts)
	if err != nil {
		return nil, &UsageError{err}
	}
	return srcs, nil
}

// destination opens where records go, and the identity directory the
// counts (and a Mixpanel diff) resolve with.
func (b *backfiller) destination(ctx context.Context) (backfill.Destination, error) {
	if b.opts.Server == "" {
		viaServer, err := b.openLocal(ctx)
		if err != nil {
			return nil, err
		}
		if !viaServer {
			return b.localDestination(ctx)
		}
	}
	remote, err := backfill.NewRemote(b.opts.Server, b.opts.Token, nil)
	if err != nil {
		return nil, &UsageError{err}
	}
	if b.opts.From == "mixpanel" {
		// The diff needs the identity directory: replicate it from the
		// deployment's Kafka into this run's own data directory.
		if b.core == nil {
			if len(b.cfg.Kafka.Brokers) == 0 {
				return nil, &UsageError{errors.New("--from mixpanel with --server also needs --kafka-brokers (the server's Kafka, on the embedded default its embedded.kafka_addr) to read the identity directory, and a --data-dir of its own")}
			}
			if err := b.openCore(ctx); err != nil {
				return nil, err
			}
		}
		if err := b.openDirectory(ctx); err != nil {
			return nil, err
		}
	}
	return remote, nil
}

// localDestination lands on the data directory's own Kafka, counting with
// the stream's stages; b.core is open.
func (b *backfiller) localDestination(ctx context.Context) (backfill.Destination, error) {
	if b.core.Broker != nil && !b.opts.DryRun {
		// The data directory is ours: apply what lands in-process, as the
		// server would, on the live consumer group.
		st, err := service.StartStream(ctx, b.cfg, b.core, b.log, b.reg, service.StreamOptions{})
		if err != nil {
			return nil, err
		}
		b.stream = st
		b.closers = append(b.closers, st.Stop)
	} else if err := b.openDirectory(ctx); err != nil {
		return nil, err
	}
	dir := b.directory()
	if err := dir.WaitApplied(ctx); err != nil {
		return nil, fmt.Errorf("backfill: identity directory: %w", err)
	}
	b.lander = b.core.Kafka.NewLander(b.core.Kafka.Config().Topics.Exports)
	b.closers = append(b.closers, b.lander.Close)
	return service.BackfillDestination(b.cfg, dir, b.lander, b.log)
}

func (b *backfiller) openCore(ctx context.Context) error {
	core, err := service.OpenCore(ctx, b.cfg, b.log, b.reg)
	if err != nil {
		return err
	}
	b.core = core
	b.closers = append(b.closers, core.Close)
	return nil
}

// openLocal opens the data directory's Kafka. When a running server holds
// the directory, the run goes through that server instead (viaServer):
// records land through its API, and b.core is opened on its Kafka for what
// reads it (a Mixpanel diff's identity directory, waiting for the stream).
func (b *backfiller) openLocal(ctx context.Context) (viaServer bool, err error) {
	lockErr := b.openCore(ctx)
	if !errors.Is(lockErr, broker.ErrLocked) {
		return false, lockErr
	}
	ls, err := service.HeldBy(b.cfg.DataDir, lockErr, b.opts.Stderr)
	if err != nil {
		return false, err
	}
	b.opts.Server, b.opts.Token = ls.URL, ls.Token
	b.cfg.Kafka.Brokers = ls.KafkaBrokers
	// The server's Kafka is its embedded broker: one broker, one replica.
	b.cfg.Kafka.ReplicationFactor = 1
	if err := b.openCore(ctx); err != nil {
		return true, fmt.Errorf("backfill: the running server's Kafka at %v: %w", ls.KafkaBrokers, err)
	}
	return true, nil
}

// openDirectory replicates the identity directory under
// DATA_DIR/backfill/identities, apart from a server's own replica.
func (b *backfiller) openDirectory(ctx context.Context) error {
	idCfg := identities.DefaultConfig(filepath.Join(b.cfg.DataDir, "backfill", "identities"))
	dir, err := identities.Open(ctx, b.core.Kafka, idCfg, identities.Options{Logger: b.log})
	if err != nil {
		return fmt.Errorf("backfill: identity directory: %w", err)
	}
	b.dir = dir
	b.closers = append(b.closers, dir.Close)
	return nil
}

func (b *backfiller) directory() *identities.Directory {
	if b.stream != nil {
		return b.stream.Directory()
	}
	return b.dir
}

// waitApplied waits until the live consumer group has committed everything
// on the landing topic, so the summary's data points are in the totals when
// the command returns. It is a phase of its own on the terminal: landed
// records are each applied by the stream, which can take a while after the
// input is read.
func (b *backfiller) waitApplied(ctx context.Context, landed int64) error {
	if b.opts.Wait == 0 || b.core == nil || landed == 0 {
		// Through a server without its Kafka: the server applies what
		// landed, and this run cannot see when.
		return nil
	}
	topic := b.core.Kafka.Config().Topics.Exports
	ends, err := b.core.Kafka.PartitionEnds(ctx, topic)
	if err != nil {
		return fmt.Errorf("backfill: %w", err)
	}
	wctx, cancel := context.WithTimeout(ctx, b.opts.Wait)
	defer cancel()
	group := kafka.DefaultGroupConfig().GroupID
	fmt.Fprintf(b.opts.Stderr, "waiting for the stream to apply the %d records landed (consumer group %s, --wait %s)\n", landed, group, b.opts.Wait)
	var rep *progress.Reporter
	var reported int64
	err = b.core.Kafka.WaitCommitted(wctx, group, topic, ends, 0, func(remaining int64) {
		if rep == nil {
			// The first poll says how far behind the group is: everything
			// on the topic not yet committed, the records just landed and
			// whatever else was waiting.
			rep = progress.New(b.opts.Stderr, progress.Options{Label: "stream applying", Unit: "records", Total: remaining, Logger: b.progLog})
			reported = remaining
		}
		if done := reported - remaining; done > 0 {
			rep.Add(done)
			reported = remaining
		}
	})
	if rep != nil {
		rep.Finish()
	}
	if err != nil {
		return fmt.Errorf("backfill: landed, but the stream did not apply everything within --wait %s (it will; check consumer lag): %w", b.opts.Wait, err)
	}
	return nil
}

// mixpanelPlan pulls the cohort and writes the plan under the data
// directory, or reuses the plan of an interrupted run, so that a resumed run
// lands exactly the records the first one planned.
func (b *backfiller) mixpanelPlan(ctx context.Context) ([]backfill.Source, []string, error) {
	settings := []string{b.opts.Workspace, b.opts.Partner, b.opts.Mixpanel.ProjectID, b.opts.Mixpanel.CohortID}
	planPath := filepath.Join(b.cfg.DataDir, "backfill", backfill.RunID("mixpanel-plan", settings, nil)+".plan.ndjson")
	source := func() ([]backfill.Source, error) { return fileSources([]string{planPath}, b.fileOptions()) }
	if !b.opts.Restart && !b.opts.DryRun {
		if srcs, err := source(); err == nil {
			cp := backfill.CheckpointPath(b.cfg.DataDir, backfill.RunID("mixpanel", settings, srcs))
			if backfill.Resumable(cp) {
				b.log.Warn("resuming an interrupted Mixpanel backfill with its plan", "plan", planPath)
				return srcs, settings, nil
			}
		}
	}
	user := b.opts.Mixpanel.Username
	mcfg := mixpanel.DefaultConfig()
	mcfg.Region, mcfg.BaseURL, mcfg.ProjectID = b.opts.Mixpanel.Region, b.opts.Mixpanel.BaseURL, b.opts.Mixpanel.ProjectID
	mcfg.Username, mcfg.Secret = user, b.opts.Mixpanel.Secret
	mcfg.IdentityProperty = b.opts.Mixpanel.IdentityProperty
	if err := mcfg.Validate(); err != nil {
		return nil, nil, &UsageError{fmt.Errorf("mixpanel: %w (credentials come from --mixpanel-username or %sMIXPANEL_USERNAME and %sMIXPANEL_SECRET)", err, config.EnvPrefix, config.EnvPrefix)}
	}
	client, err := mixpanel.New(mcfg, mixpanel.Options{Logger: b.log, Registerer: b.reg})
	if err != nil {
		return nil, nil, err
	}
	current, err := b.currentMembers(ctx)
	if err != nil {
		return nil, nil, err
	}
	dir := b.directory()
	if dir == nil {
		return nil, nil, errors.New("backfill: no identity directory")
	}
	plan, err := mixpanel.PlanSync(ctx, client, mixpanel.PlanRequest{
		Workspace: b.opts.Workspace, Partner: b.opts.Partner, CohortID: b.opts.Mixpanel.CohortID, CreatedAt: time.Now().UTC(),
	}, dir, current)
	if err != nil {
		return nil, nil, err
	}
	fmt.Fprintf(b.opts.Stderr, "mixpanel cohort %s: %d profiles pulled in %d requests; %d to add, %d to remove, %d unchanged\n",
		b.opts.Mixpanel.CohortID, plan.Pulled, plan.Pull.Requests, plan.Adds, plan.Removes, plan.Unchanged)
	for reason, n := range plan.Skipped {
		fmt.Fprintf(b.opts.Stderr, "  not landed: %s %d\n", reason, n)
	}
	if err := writePlan(planPath, plan.Envelopes); err != nil {
		return nil, nil, err
	}
	srcs, err := source()
	if err != nil {
		return nil, nil, err
	}
	// A new plan is a new run, whatever an older checkpoint says.
	b.opts.Restart = true
	return srcs, settings, nil
}

// currentMembers reads the cohort's members from the state of record.
func (b *backfiller) currentMembers(ctx context.Context) (func(context.Context, func(string) error) error, error) {
	ws, partner, cohort := b.opts.Workspace, b.opts.Partner, b.opts.Mixpanel.CohortID
	var record stateofrecord.Store
	switch {
	case b.stream != nil:
		record = b.stream.Record()
	case b.cfg.ClickHouse.Addr != "" || (b.core != nil && b.core.Broker != nil):
		// ClickHouse is reachable from here, or a dry run on our own data
		// directory runs no stream: open the state of record directly.
		var err error
		if record, err = stateofrecord.Open(ctx, b.cfg, stateofrecord.Options{Logger: b.log}); err != nil {
			return nil, fmt.Errorf("backfill: %w", err)
		}
		b.closers = append(b.closers, record.Close)
	}
	if record != nil {
		return func(ctx context.Context, fn func(string) error) error {
			return record.ForEachMember(ctx, ws, partner, cohort, fn)
		}, nil
	}
	if b.opts.Server != "" {
		return b.serverMembers(ws, partner, cohort)
	}
	return nil, &UsageError{errors.New("--from mixpanel needs the current members: run on the data directory (no server running), or give --clickhouse-addr, or --server")}
}

// writePlan writes envelopes as NDJSON, atomically.
func writePlan(path string, envs []schemas.Envelope) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("backfill: plan dir: %w", err)
	}
	err := atomicfile.Write(path, func(w io.Writer) error {
		bw := bufio.NewWriter(w)
		for _, e := range envs {
			raw, err := schemas.Encode(e)
			if err != nil {
				return fmt.Errorf("encode plan record %s: %w", e.RecordID, err)
			}
			bw.Write(raw)
			bw.WriteByte('\n')
		}
		return bw.Flush()
	})
	if err != nil {
		return fmt.Errorf("backfill: plan: %w", err)
	}
	return nil
}

// serverMembers pages through the cohort's members with the server's
// segments API.
func (b *backfiller) serverMembers(ws, partner, cohort string) (func(context.Context, func(string) error) error, error) {
	client, err := api.NewClient(b.opts.Server, b.opts.Token, ws, nil)
	if err != nil {
		return nil, &UsageError{err}
	}
	filter, err := json.Marshal(map[string]any{"cohort": map[string]string{"partner": partner, "id": cohort}})
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context, fn func(string) error) error {
		limit := api.MaxLimit
		cursor := ""
		for {
			page, err := client.Evaluate(ctx, api.EvaluateRequest{Filter: filter, Limit: &limit, Cursor: cursor})
			if err != nil {
				return fmt.Errorf("backfill: current members from %s: %w", b.opts.Server, err)
			}
			for _, m := range page.Members {
				if err := fn(m); err != nil {
					return err
				}
			}
			if page.NextCursor == nil {
				return nil
			}
			cursor = *page.NextCursor
		}
	}, nil
}

// replayKafka sends the landed records of [--since, --until) through the
// stream's transforms and sinks, reading partitions positioned by time: the
// live group's offsets are never touched. Versions come from offsets and data
// points are keyed by record id, so records the stream already applied
// change nothing.
func (b *backfiller) replayKafka(ctx context.Context) error {
	since, err := time.Parse(time.RFC3339Nano, b.opts.Since)
	if err != nil {
		return &UsageError{fmt.Errorf("--since %q: want an RFC 3339 time: %w", b.opts.Since, err)}
	}
	var until time.Time
	if b.opts.Until != "" {
		if until, err = time.Parse(time.RFC3339Nano, b.opts.Until); err != nil {
			return &UsageError{fmt.Errorf("--until %q: want an RFC 3339 time: %w", b.opts.Until, err)}
		}
		if !until.After(since) {
			return &UsageError{fmt.Errorf("--until %s is not after --since %s", b.opts.Until, b.opts.Since)}
		}
	}
	viaServer, err := b.openLocal(ctx)
	if err != nil {
		return err
	}
	if viaServer && !b.opts.DryRun {
		return &UsageError{fmt.Errorf("--from kafka %s", replayWhere)}
	}
	topic := b.core.Kafka.Config().Topics.Exports
	runID := backfill.RunID("kafka", []string{b.opts.Since, b.opts.Until}, nil)
	cpPath := backfill.CheckpointPath(b.cfg.DataDir, runID)
	var resume map[int]int64
	if !b.opts.Restart && !b.opts.DryRun {
		cp, found, err := backfill.ReadCheckpoint(cpPath)
		if err != nil {
			return err
		}
		if found && cp.Summary.Complete {
			// Finished before: say so rather than replay it all again.
			sum := cp.Summary
			sum.AlreadyComplete = true
			b.result = Result{Summary: sum, Checkpoint: cpPath}
			return nil
		}
		if found {
			resume = cp.Offsets
			b.log.Warn("resuming an interrupted replay", "checkpoint", cpPath)
		}
	}
	src, err := b.core.Kafka.NewRangeSource(ctx, topic, kafka.RangeOptions{Since: since, Until: until, Resume: resume}, b.reg, b.log)
	if err != nil {
		return err
	}
	sum := backfill.Summary{RunID: runID, DryRun: b.opts.DryRun, Replay: true}
	sum.Read = src.Total()
	if b.opts.DryRun {
		if err := src.Close(); err != nil {
			return err
		}
		fmt.Fprintf(b.opts.Stderr, "%d records of %s in the window would be replayed through the transforms and sinks\n", src.Total(), topic)
		b.result = Result{Summary: sum, Checkpoint: cpPath}
		return nil
	}
	start := src.Done()
	// The summary reports what the replay changed: the state of record's
	// totals over the window's landing days, before and after. The
	// runner's own count would include every assignment the stream had
	// applied already, which change nothing and bill nothing.
	lastDay := until
	if lastDay.IsZero() {
		lastDay = time.Now()
	}
	var before effect
	st, err := service.StartStream(ctx, b.cfg, b.core, b.log, b.reg, service.StreamOptions{
		Source: src,
		BeforeRun: func(ctx context.Context, record stateofrecord.Store) error {
			var err error
			before, err = b.effect(ctx, record, since, lastDay)
			return err
		},
	})
	if err != nil {
		_ = src.Close()
		return err
	}
	b.stream = st
	rep := progress.New(b.opts.Stderr, progress.Options{Label: "replay " + topic, Unit: "records", Total: src.Total(), Logger: b.progLog})
	save := func(complete bool) error {
		cp := backfill.Checkpoint{RunID: runID, Offsets: src.Done(), Summary: sum}
		cp.Summary.Complete = complete
		return backfill.WriteCheckpoint(cpPath, cp)
	}
	var reported int64
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var runErr error
loop:
	for {
		select {
		case <-st.Done():
			runErr = st.Err()
			break loop
		case <-ctx.Done():
			runErr = fmt.Errorf("%w: %w", backfill.ErrInterrupted, ctx.Err())
			break loop
		case <-tick.C:
			done := advanced(start, src.Done())
			rep.Add(done - reported)
			reported = done
			if err := save(false); err != nil {
				runErr = err
				break loop
			}
		}
	}
	// Drain finishes what is in flight; only acked batches move Done and
	// count in the runner's totals, read once it has stopped.
	runErr = errors.Join(runErr, st.Drain())
	outcomeFromTotals(st.Totals(), &sum)
	after, err := b.effect(context.WithoutCancel(ctx), st.Record(), since, lastDay)
	if err == nil {
		sum.DataPoints, sum.Transitions = after.billable-before.billable, after.transitions-before.transitions
	} else {
		runErr = errors.Join(runErr, fmt.Errorf("backfill: read what the replay changed: %w", err))
	}
	runErr = errors.Join(runErr, st.Stop())
	b.stream = nil
	rep.Add(advanced(start, src.Done()) - reported)
	rep.Finish()
	complete := runErr == nil
	if err := save(complete); err != nil {
		runErr = errors.Join(runErr, err)
	}
	sum.Complete = complete
	b.result = Result{Summary: sum, Checkpoint: cpPath}
	if errors.Is(runErr, backfill.ErrInterrupted) {
		return fmt.Errorf("%w\nrun the same command again to resume from %s", runErr, cpPath)
	}
	return runErr
}

// advanced sums the offsets each partition moved past its start.
func advanced(start, now map[int]int64) int64 {
	var n int64
	for p, off := range now {
		n += max(off-start[p], 0)
	}
	return n
}

// outcomeFromTotals copies what the runner made durable into the summary:
// accepted ids (the resolver's change rows, applied before or not), refused
// ids by reason, and whole records dropped by a transform (retention) or
// sent to the dead letter, by reason.
func outcomeFromTotals(t pipeline.Totals, sum *backfill.Summary) {
	sum.Replay = true
	sum.Replayed = t.Changes
	sum.Dropped, sum.DroppedRecords = map[string]int64{}, map[string]int64{}
	maps.Copy(sum.Dropped, t.RejectedIDs)
	maps.Copy(sum.DroppedRecords, t.DroppedRecords)
	for reason, n := range t.DeadLettered {
		sum.DroppedRecords[reason] += n
	}
}

// effect is what the state of record counts over some landing days.
type effect struct{ billable, transitions int64 }

// effect sums billable data points and membership transitions over the
// landing days from..to of every workspace the store or the key store
// knows.
func (b *backfiller) effect(ctx context.Context, record stateofrecord.Store, from, to time.Time) (effect, error) {
	eng, release, err := record.Engine(stateofrecord.EngineOptions{Logger: b.log})
	if err != nil {
		return effect{}, err
	}
	defer func() { _ = release() }()
	ws := b.core.Keys.Workspaces()
	more, err := record.Workspaces()
	if err != nil {
		return effect{}, err
	}
	ws = append(ws, more...)
	slices.Sort(ws)
	var e effect
	for _, w := range slices.Compact(ws) {
		rows, err := eng.DataPoints(ctx, w, from, to, segments.GroupByDay)
		if err != nil {
			return effect{}, fmt.Errorf("data points of %s: %w", w, err)
		}
		for _, r := range rows {
			e.billable += r.Billable
			e.transitions += r.Transitions
		}
	}
	return e, nil
}
