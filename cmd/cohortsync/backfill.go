package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/cohortsync/cohortsync/config"
	"github.com/cohortsync/cohortsync/connectors/backfill"
	"github.com/cohortsync/cohortsync/connectors/files"
	"github.com/cohortsync/cohortsync/connectors/mixpanel"
	"github.com/cohortsync/cohortsync/internal/atomicfile"
	"github.com/cohortsync/cohortsync/internal/progress"
	"github.com/cohortsync/cohortsync/kafka"
	"github.com/cohortsync/cohortsync/kafka/broker"
	"github.com/cohortsync/cohortsync/schemas"
	"github.com/cohortsync/cohortsync/segments/api"
	"github.com/cohortsync/cohortsync/service"
	"github.com/cohortsync/cohortsync/service/stateofrecord"
	"github.com/cohortsync/cohortsync/stores/identities"
)

// backfillFlags are the flags of `cohortsync backfill`.
type backfillFlags struct {
	from                string
	since, until        string
	workspace, partner  string
	server, token       string
	dryRun, restart     bool
	wait, timeout       time.Duration
	output              string
	projectID, cohortID string
	region, mixpanelURL string
	mixpanelUser        string
	identityProperty    string
	batch               int
}

func (c *cli) newBackfillCmd() *cobra.Command {
	f := &backfillFlags{}
	cmd := &cobra.Command{
		Use:   "backfill --from kafka|file|mixpanel [PATH...]",
		Short: "Replay landed records, or land history from files or the Mixpanel API",
		Long: `backfill brings history into cohortsync through the same transforms and sinks
as the stream, safely: every record it lands has a deterministic id, so running
the same backfill twice changes no state and no data-point totals.

  --from kafka --since T [--until T]
      replays the landed records of that time window through the transforms
      and sinks, with partition readers positioned by time: the live consumer
      group is left alone. Needs the sinks: on the embedded default no server
      may hold --data-dir; otherwise give --kafka-brokers and --clickhouse-addr.
  --from file PATH...
      NDJSON (partner API bodies or landing envelopes), CSV with the header
      workspace,partner,cohort_id,id_kind,id,action,event_time, or Parquet in
      the changes/ layout; .gz and .zst are read directly. A bad line is
      reported with its line number and counted; the run goes on.
  --from mixpanel --project-id P --cohort-id C [--region us|eu]
      pulls the cohort's members from the Engage API (service account from
      COHORTSYNC_MIXPANEL_USERNAME and COHORTSYNC_MIXPANEL_SECRET), diffs them
      against the current members and lands only the adds and removes.

Where records go: without --server, backfill opens --data-dir itself (the
embedded broker, consumed in-process until everything is applied) or the
--kafka-brokers of a distributed deployment (whose instances apply them). While
a server holds the data directory, pass --server URL --token T: records land
through that server's POST /v1/workspaces/{ws}/backfill. --dry-run prints what
would be landed and dropped, and writes nothing. An interrupted run resumes
from its checkpoint under DATA_DIR/backfill/ when run again (--restart starts
over). Every run ends with a summary: read, landed, dropped by reason, data
points.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := c.loadConfig(cmd)
			if err != nil {
				return err
			}
			if err := f.check(args); err != nil {
				return &usageError{err}
			}
			if f.token == "" {
				f.token = c.env[config.EnvPrefix+"ADMIN_TOKEN"]
			}
			logCfg := cfg.Log
			if logCfg.Level == "debug" || logCfg.Level == "info" {
				// A terminal tool: progress and the summary are the news.
				logCfg.Level = "warn"
			}
			log, err := logCfg.NewLogger(c.stderr)
			if err != nil {
				return &configError{what: "invalid configuration", err: err}
			}
			// Progress lines are info, in the same format as the rest.
			progCfg := cfg.Log
			progCfg.Level = "info"
			progLog, err := progCfg.NewLogger(c.stderr)
			if err != nil {
				return &configError{what: "invalid configuration", err: err}
			}
			ctx := cmd.Context()
			if f.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, f.timeout)
				defer cancel()
			}
			ctx, stop := signalContext(ctx)
			defer stop()
			b := &backfiller{c: c, f: f, cfg: cfg, log: log, progLog: progLog}
			return b.run(ctx, args)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.from, "from", "", "what to backfill from: kafka, file or mixpanel (required)")
	fl.StringVar(&f.since, "since", "", "--from kafka: start of the window, RFC 3339 (inclusive)")
	fl.StringVar(&f.until, "until", "", "--from kafka: end of the window, RFC 3339 (exclusive; default: now)")
	fl.StringVarP(&f.workspace, "workspace", "w", service.FirstWorkspace, "workspace of partner API bodies and Mixpanel cohorts (CSV and envelopes name their own)")
	fl.StringVar(&f.partner, "partner", "mixpanel", "partner of partner API bodies and Mixpanel cohorts")
	fl.StringVar(&f.server, "server", "", "land through a running cohortsync at this base URL instead of opening --data-dir")
	fl.StringVar(&f.token, "token", "", "admin or workspace token for --server (default: COHORTSYNC_ADMIN_TOKEN)")
	fl.BoolVar(&f.dryRun, "dry-run", false, "print what would be landed and dropped; write nothing")
	fl.BoolVar(&f.restart, "restart", false, "ignore the checkpoint of an interrupted run and start over")
	fl.DurationVar(&f.wait, "wait", 10*time.Minute, "how long to wait for the stream to apply what was landed (0: do not wait)")
	fl.DurationVar(&f.timeout, "timeout", 0, "deadline for the whole run (0: none; Ctrl-C stops it, resumable)")
	fl.StringVarP(&f.output, "output", "o", "table", "summary format: table or json")
	fl.StringVar(&f.projectID, "project-id", "", "--from mixpanel: the numeric project id")
	fl.StringVar(&f.cohortID, "cohort-id", "", "--from mixpanel: the cohort id (also the cohort_id of the landed records)")
	fl.StringVar(&f.region, "region", "us", "--from mixpanel: us, eu or in")
	fl.StringVar(&f.mixpanelURL, "mixpanel-url", "", "--from mixpanel: API base URL instead of the region's (a proxy, or a local test server)")
	fl.StringVar(&f.mixpanelUser, "mixpanel-username", "", "--from mixpanel: service account user name (default: COHORTSYNC_MIXPANEL_USERNAME)")
	fl.StringVar(&f.identityProperty, "identity-property", "", "--from mixpanel: profile property holding the external id, tried before $braze_external_id and $user_id")
	fl.IntVar(&f.batch, "batch", 500, "records landed per batch (and per checkpoint)")
	return cmd
}

func (f *backfillFlags) check(args []string) error {
	var errs []error
	switch f.from {
	case "file":
		if len(args) == 0 {
			errs = append(errs, errors.New("--from file needs at least one PATH"))
		}
	case "kafka":
		if f.since == "" {
			errs = append(errs, errors.New("--from kafka needs --since"))
		}
		if f.server != "" {
			errs = append(errs, errors.New("--from kafka runs the sinks itself and cannot go through --server: stop the server, or give --kafka-brokers and --clickhouse-addr"))
		}
	case "mixpanel":
		if f.projectID == "" || f.cohortID == "" {
			errs = append(errs, errors.New("--from mixpanel needs --project-id and --cohort-id"))
		}
	case "":
		errs = append(errs, errors.New("--from is required: kafka, file or mixpanel"))
	default:
		errs = append(errs, fmt.Errorf("--from %q: want kafka, file or mixpanel", f.from))
	}
	if f.from != "file" && len(args) > 0 {
		errs = append(errs, fmt.Errorf("--from %s takes no PATH arguments, got %q", f.from, args))
	}
	if f.output != "table" && f.output != "json" {
		errs = append(errs, fmt.Errorf("--output %q: want table or json", f.output))
	}
	if f.batch < 1 || f.batch > backfill.MaxRequestRecords {
		errs = append(errs, fmt.Errorf("--batch %d: want 1..%d", f.batch, backfill.MaxRequestRecords))
	}
	return errors.Join(errs...)
}

// backfiller holds one run's parts; close releases whatever was opened.
type backfiller struct {
	c   *cli
	f   *backfillFlags
	cfg config.Config
	log *slog.Logger
	// progLog carries the progress lines when stderr is not a terminal.
	progLog *slog.Logger

	reg     *prometheus.Registry
	core    *service.Core
	stream  *service.Stream
	dir     *identities.Directory // own replica when no in-process stream
	lander  *kafka.Lander
	closers []func() error
}

func (b *backfiller) close() error {
	var errs []error
	for i := len(b.closers) - 1; i >= 0; i-- {
		errs = append(errs, b.closers[i]())
	}
	return errors.Join(errs...)
}

func (b *backfiller) run(ctx context.Context, args []string) (err error) {
	defer func() { err = errors.Join(err, b.close()) }()
	b.reg = prometheus.NewRegistry()
	if b.f.from == "kafka" {
		return b.replayKafka(ctx)
	}
	dest, err := b.destination(ctx)
	if err != nil {
		return err
	}
	var sources []backfill.Source
	var settings []string
	kind := b.f.from
	switch b.f.from {
	case "file":
		sources, err = fileSources(args, b.fileOptions())
		settings = []string{b.f.workspace, b.f.partner}
	case "mixpanel":
		sources, settings, err = b.mixpanelPlan(ctx)
	}
	if err != nil || len(sources) == 0 {
		return err
	}
	runID := backfill.RunID(kind, settings, sources)
	checkpoint := backfill.CheckpointPath(b.cfg.DataDir, runID)
	rep := progress.New(b.c.stderr, progress.Options{Label: "backfill " + kind, Unit: "input bytes", Logger: b.progLog})
	sum, runErr := backfill.Run(ctx, backfill.Options{
		Sources:      sources,
		IsBadInput:   files.IsLineError,
		Destination:  dest,
		Checkpoint:   checkpoint,
		Restart:      b.f.restart,
		DryRun:       b.f.dryRun,
		BatchRecords: b.f.batch,
		Progress:     rep,
		Logger:       b.log,
	})
	rep.Finish()
	if runErr == nil && !b.f.dryRun {
		runErr = b.waitApplied(ctx)
	}
	if perr := b.printSummary(sum, checkpoint); perr != nil {
		return errors.Join(runErr, perr)
	}
	if errors.Is(runErr, backfill.ErrInterrupted) {
		return fmt.Errorf("%w\nrun the same command again to resume from %s", runErr, checkpoint)
	}
	return runErr
}

func (b *backfiller) fileOptions() files.Options {
	return files.Options{Workspace: b.f.workspace, Partner: b.f.partner, TempDir: filepath.Join(b.cfg.DataDir, "backfill", "tmp")}
}

// fileSources describes each path; a missing file is a usage error.
func fileSources(paths []string, opts files.Options) ([]backfill.Source, error) {
	srcs, err := backfill.FileSources(paths, opts)
	if err != nil {
		return nil, &usageError{err}
	}
	return srcs, nil
}

// destination opens where records go, and the identity directory the
// counts (and a Mixpanel diff) resolve with.
func (b *backfiller) destination(ctx context.Context) (backfill.Destination, error) {
	if b.f.server != "" {
		remote, err := backfill.NewRemote(b.f.server, b.f.token, nil)
		if err != nil {
			return nil, &usageError{err}
		}
		if b.f.from == "mixpanel" {
			// The diff needs the identity directory: replicate it from the
			// deployment's Kafka into this run's own data directory.
			if len(b.cfg.Kafka.Brokers) == 0 {
				return nil, &usageError{errors.New("--from mixpanel with --server also needs --kafka-brokers (the server's Kafka; for the embedded broker start serve with COHORTSYNC_EMBEDDED_KAFKA_ADDR=127.0.0.1:9092) to read the identity directory, and a --data-dir of its own")}
			}
			if err := b.openCore(ctx); err != nil {
				return nil, err
			}
			if err := b.openDirectory(ctx); err != nil {
				return nil, err
			}
		}
		return remote, nil
	}
	if err := b.openCore(ctx); err != nil {
		return nil, err
	}
	if b.core.Broker != nil && !b.f.dryRun {
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
	if errors.Is(err, broker.ErrLocked) {
		return fmt.Errorf("%w\na running server holds %s: add --server http://HOST:PORT --token TOKEN to land through it", err, b.cfg.DataDir)
	}
	if err != nil {
		return err
	}
	b.core = core
	b.closers = append(b.closers, core.Close)
	return nil
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
// the command returns.
func (b *backfiller) waitApplied(ctx context.Context) error {
	if b.f.wait == 0 || b.core == nil || b.f.server != "" {
		return nil
	}
	topic := b.core.Kafka.Config().Topics.Exports
	ends, err := b.core.Kafka.PartitionEnds(ctx, topic)
	if err != nil {
		return fmt.Errorf("backfill: %w", err)
	}
	wctx, cancel := context.WithTimeout(ctx, b.f.wait)
	defer cancel()
	group := kafka.DefaultGroupConfig().GroupID
	b.log.Info("waiting for the stream to apply the landed records", "group", group)
	if err := b.core.Kafka.WaitCommitted(wctx, group, topic, ends, 0, nil); err != nil {
		return fmt.Errorf("backfill: landed, but the stream did not apply everything within --wait %s (it will; check consumer lag): %w", b.f.wait, err)
	}
	return nil
}

func (b *backfiller) printSummary(s backfill.Summary, checkpoint string) error {
	if b.f.output == "json" {
		return writeJSON(b.c.stdout, s)
	}
	w := tabwriter.NewWriter(b.c.stdout, 0, 4, 2, ' ', 0)
	verb := "landed"
	if s.DryRun {
		verb = "would land"
	}
	title := "summary"
	if s.DryRun {
		title = "dry run"
	}
	fmt.Fprintf(w, "backfill %s (run %s)\n", title, s.RunID)
	fmt.Fprintf(w, "  read\t%d records\n", s.Read)
	fmt.Fprintf(w, "  bad lines\t%d\n", s.BadLines)
	fmt.Fprintf(w, "  %s\t%d records", verb, s.Landed)
	if s.Resumed > 0 {
		fmt.Fprintf(w, " (%d by the interrupted run resumed here)", s.Resumed)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "  data points\t%d accepted assignments (counted once per record id: landing them again adds nothing)\n", s.DataPoints)
	for _, r := range s.Reasons() {
		fmt.Fprintf(w, "  dropped: %s\t%d ids\n", r, s.Dropped[r])
	}
	for _, bl := range s.Samples {
		fmt.Fprintf(w, "  bad line\t%s\n", bl.Error)
	}
	if s.BadLines > int64(len(s.Samples)) {
		fmt.Fprintf(w, "  \t(%d more bad lines in the log)\n", s.BadLines-int64(len(s.Samples)))
	}
	if !s.Complete && !s.DryRun {
		fmt.Fprintf(w, "  checkpoint\t%s\n", checkpoint)
	}
	return w.Flush()
}

// mixpanelPlan pulls the cohort and writes the plan under the data
// directory, or reuses the plan of an interrupted run, so that a resumed run
// lands exactly the records the first one planned.
func (b *backfiller) mixpanelPlan(ctx context.Context) ([]backfill.Source, []string, error) {
	settings := []string{b.f.workspace, b.f.partner, b.f.projectID, b.f.cohortID}
	planPath := filepath.Join(b.cfg.DataDir, "backfill", backfill.RunID("mixpanel-plan", settings, nil)+".plan.ndjson")
	source := func() ([]backfill.Source, error) { return fileSources([]string{planPath}, b.fileOptions()) }
	if !b.f.restart && !b.f.dryRun {
		if srcs, err := source(); err == nil {
			cp := backfill.CheckpointPath(b.cfg.DataDir, backfill.RunID("mixpanel", settings, srcs))
			if backfill.Resumable(cp) {
				b.log.Warn("resuming an interrupted Mixpanel backfill with its plan", "plan", planPath)
				return srcs, settings, nil
			}
		}
	}
	user := b.f.mixpanelUser
	if user == "" {
		user = b.c.env[config.EnvPrefix+"MIXPANEL_USERNAME"]
	}
	mcfg := mixpanel.DefaultConfig()
	mcfg.Region, mcfg.BaseURL, mcfg.ProjectID = b.f.region, b.f.mixpanelURL, b.f.projectID
	mcfg.Username, mcfg.Secret = user, b.c.env[config.EnvPrefix+"MIXPANEL_SECRET"]
	mcfg.IdentityProperty = b.f.identityProperty
	if err := mcfg.Validate(); err != nil {
		return nil, nil, &usageError{fmt.Errorf("mixpanel: %w (credentials come from --mixpanel-username or %sMIXPANEL_USERNAME and %sMIXPANEL_SECRET)", err, config.EnvPrefix, config.EnvPrefix)}
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
		Workspace: b.f.workspace, Partner: b.f.partner, CohortID: b.f.cohortID, CreatedAt: time.Now().UTC(),
	}, dir, current)
	if err != nil {
		return nil, nil, err
	}
	fmt.Fprintf(b.c.stderr, "mixpanel cohort %s: %d profiles pulled in %d requests; %d to add, %d to remove, %d unchanged\n",
		b.f.cohortID, plan.Pulled, plan.Pull.Requests, plan.Adds, plan.Removes, plan.Unchanged)
	for reason, n := range plan.Skipped {
		fmt.Fprintf(b.c.stderr, "  not landed: %s %d\n", reason, n)
	}
	if err := writePlan(planPath, plan.Envelopes); err != nil {
		return nil, nil, err
	}
	srcs, err := source()
	if err != nil {
		return nil, nil, err
	}
	// A new plan is a new run, whatever an older checkpoint says.
	b.f.restart = true
	return srcs, settings, nil
}

// currentMembers reads the cohort's members from the state of record.
func (b *backfiller) currentMembers(ctx context.Context) (func(context.Context, func(string) error) error, error) {
	ws, partner, cohort := b.f.workspace, b.f.partner, b.f.cohortID
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
	if b.f.server != "" {
		return b.serverMembers(ws, partner, cohort)
	}
	return nil, &usageError{errors.New("--from mixpanel needs the current members: run on the data directory (no server running), or give --clickhouse-addr, or --server")}
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
	client, err := api.NewClient(b.f.server, b.f.token, ws, nil)
	if err != nil {
		return nil, &usageError{err}
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
				return fmt.Errorf("backfill: current members from %s: %w", b.f.server, err)
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

// signalContext ends ctx on SIGINT or SIGTERM: the run stops after the
// batch in flight and its checkpoint says where to resume.
func signalContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
}
