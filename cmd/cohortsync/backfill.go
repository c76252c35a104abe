package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/signal"
	"slices"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/cohortsync/cohortsync/config"
	"github.com/cohortsync/cohortsync/connectors/backfill"
	"github.com/cohortsync/cohortsync/service"
	"github.com/cohortsync/cohortsync/service/backfillrun"
)

// backfillFlags are the flags of `cohortsync backfill`.
type backfillFlags struct {
	from                string
	since, until        string
	workspace, partner  string
	server, token       string
	dryRun, restart     bool
	wait, timeout       time.Duration
	format              string
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
a server holds the data directory, backfill finds it in DATA_DIR/server.json
and lands through its POST /v1/workspaces/{ws}/backfill; --server URL --token T
does the same with a server elsewhere. A replay (--from kafka) runs the sinks
itself and never goes through a server. --dry-run prints what would be landed
and dropped, and writes nothing. An interrupted run resumes
from its checkpoint under DATA_DIR/backfill/ when run again; a run that
finished says so and lands nothing (--restart lands it again). Every run ends
with a summary: read, landed, dropped by reason, data points.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := c.loadConfig(cmd)
			if err != nil {
				return err
			}
			if err := checkTableOrJSON(f.format); err != nil {
				return err
			}
			if f.token == "" {
				f.token = c.env[config.EnvPrefix+"ADMIN_TOKEN"]
			}
			if f.mixpanelUser == "" {
				f.mixpanelUser = c.env[config.EnvPrefix+"MIXPANEL_USERNAME"]
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
			opts := f.options(args)
			opts.Mixpanel.Secret = c.env[config.EnvPrefix+"MIXPANEL_SECRET"]
			opts.Stderr, opts.Logger, opts.ProgressLogger = c.stderr, log, progLog
			res, err := backfillrun.Run(ctx, cfg, opts)
			var ue *backfillrun.UsageError
			if errors.As(err, &ue) {
				return &usageError{ue.Err}
			}
			if res.Summary.RunID != "" {
				if perr := printSummary(c.stdout, f.format, res.Summary, res.Checkpoint); perr != nil {
					return errors.Join(err, perr)
				}
			}
			return err
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
	bindFormat(fl, &f.format, "summary format: table or json")
	fl.StringVar(&f.projectID, "project-id", "", "--from mixpanel: the numeric project id")
	fl.StringVar(&f.cohortID, "cohort-id", "", "--from mixpanel: the cohort id (also the cohort_id of the landed records)")
	fl.StringVar(&f.region, "region", "us", "--from mixpanel: us, eu or in")
	fl.StringVar(&f.mixpanelURL, "mixpanel-url", "", "--from mixpanel: API base URL instead of the region's (a proxy, or a local test server)")
	fl.StringVar(&f.mixpanelUser, "mixpanel-username", "", "--from mixpanel: service account user name (default: COHORTSYNC_MIXPANEL_USERNAME)")
	fl.StringVar(&f.identityProperty, "identity-property", "", "--from mixpanel: profile property holding the external id, tried before $braze_external_id and $user_id")
	fl.IntVar(&f.batch, "batch", 500, "records landed per batch (and per checkpoint)")
	config.BindFlags(fl, config.FlagDataDir, config.FlagKafkaBrokers, config.FlagClickHouseAddr, config.FlagClickHouseDatabase, config.FlagLogLevel)
	return cmd
}

// options turns the flags into the run's options.
func (f *backfillFlags) options(args []string) backfillrun.Options {
	return backfillrun.Options{
		From: f.from, Since: f.since, Until: f.until, Paths: args,
		Workspace: f.workspace, Partner: f.partner,
		Server: f.server, Token: f.token,
		DryRun: f.dryRun, Restart: f.restart, Wait: f.wait, Batch: f.batch,
		Mixpanel: backfillrun.MixpanelOptions{
			ProjectID: f.projectID, CohortID: f.cohortID,
			Region: f.region, BaseURL: f.mixpanelURL,
			Username: f.mixpanelUser, IdentityProperty: f.identityProperty,
		},
	}
}

// printSummary writes the run's summary to out as a table or as JSON.
func printSummary(out io.Writer, format string, s backfill.Summary, checkpoint string) error {
	if format == "json" {
		return writeJSON(out, s)
	}
	if s.AlreadyComplete {
		fmt.Fprintf(out, "backfill run %s is already complete: it landed %d records (%d data points) before; nothing landed now.\nRun it with --restart to land it again (the sinks count nothing twice).\n", s.RunID, s.Landed, s.DataPoints)
		return nil
	}
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	title := "summary"
	if s.DryRun {
		title = "dry run"
	}
	fmt.Fprintf(w, "backfill %s (run %s)\n", title, s.RunID)
	switch {
	case s.Replay:
		// A replay lands nothing: it sends landed records through the sinks again.
		verb := "replayed"
		if s.DryRun {
			verb = "would replay"
		}
		fmt.Fprintf(w, "  %s\t%d records\n", verb, s.Read)
		if !s.DryRun {
			fmt.Fprintf(w, "  assignments\t%d re-applied (those applied before change nothing)\n", s.Replayed)
			fmt.Fprintf(w, "  data points\t%d new billable (each landed record counts once)\n", s.DataPoints)
			fmt.Fprintf(w, "  membership changes\t%d\n", s.Transitions)
		}
	default:
		verb := "landed"
		if s.DryRun {
			verb = "would land"
		}
		fmt.Fprintf(w, "  read\t%d records\n", s.Read)
		fmt.Fprintf(w, "  bad lines\t%d\n", s.BadLines)
		fmt.Fprintf(w, "  %s\t%d records", verb, s.Landed)
		if s.Resumed > 0 {
			fmt.Fprintf(w, " (%d by the interrupted run resumed here)", s.Resumed)
		}
		fmt.Fprintln(w)
		fmt.Fprintf(w, "  data points\t%d accepted assignments (counted once per record id: landing them again adds nothing)\n", s.DataPoints)
	}
	// A reason drops ids (the resolver), whole records (retention, the
	// dead letter) or both; one line each.
	reasons := slices.Sorted(maps.Keys(s.Dropped))
	for r := range s.DroppedRecords {
		if _, ok := s.Dropped[r]; !ok {
			reasons = append(reasons, r)
		}
	}
	slices.Sort(reasons)
	for _, r := range reasons {
		ids, recs := s.Dropped[r], s.DroppedRecords[r]
		switch {
		case recs == 0:
			fmt.Fprintf(w, "  dropped: %s\t%d ids\n", r, ids)
		case ids == 0:
			fmt.Fprintf(w, "  dropped: %s\t%d records\n", r, recs)
		default:
			fmt.Fprintf(w, "  dropped: %s\t%d ids in %d whole records\n", r, ids, recs)
		}
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

// signalContext ends ctx on SIGINT or SIGTERM: the run stops after the
// batch in flight and its checkpoint says where to resume.
func signalContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
}
