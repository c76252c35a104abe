package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/cohortsync/cohortsync/config"
	"github.com/cohortsync/cohortsync/kafka/broker"
	"github.com/cohortsync/cohortsync/service"
	"github.com/cohortsync/cohortsync/stores/adminauth"
	"github.com/cohortsync/cohortsync/stores/identities"
	"github.com/cohortsync/cohortsync/stores/keys"
)

type identitiesFlags struct {
	server, token, workspace string
	timeout                  time.Duration
	showRejected             int
}

func (c *cli) newIdentitiesCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "identities",
		Short: "Load the identity directory (which ids belong to which user)",
		Long: `identities feeds the identity directory that resolves the user_ids, aliases
and device_ids of cohort changes to users.`,
		Args: subcommandArgs,
		RunE: helpOnly,
		// Cobra sets its default distance on the root command only.
		SuggestionsMinimumDistance: 2,
	}
	f := &identitiesFlags{}
	load := &cobra.Command{
		Use:   "load FILE",
		Short: "Land the identity records of an NDJSON file ('-' reads stdin)",
		Long: `load lands one identity record per line of FILE:

  {"user_id": "u1", "external_id": "e1", "device_ids": ["d1"], "aliases": [{"alias_name": "a", "alias_label": "email"}]}

A record replaces the previous record of the same user_id, so loading a file
again is safe. Invalid lines are reported with their numbers and the others
still land; the command exits 1 if any line was rejected.

With --server it sends the file, in chunks, to the identities endpoint of a
running cohortsync (token from --token or COHORTSYNC_ADMIN_TOKEN). Without it,
it opens the data directory (or the configured Kafka) directly; on the
embedded default that only works while no server holds the data directory.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return &usageError{fmt.Errorf("%s takes exactly one FILE", cmd.CommandPath())}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error { return c.loadIdentities(cmd, f, args[0]) },
	}
	fl := load.Flags()
	fl.StringVar(&f.server, "server", "", "base URL of a running cohortsync, e.g. http://127.0.0.1:8080")
	fl.StringVar(&f.token, "token", "", "admin token for --server (default: COHORTSYNC_ADMIN_TOKEN)")
	fl.StringVarP(&f.workspace, "workspace", "w", service.FirstWorkspace, "workspace the identities belong to")
	fl.DurationVar(&f.timeout, "timeout", time.Hour, "deadline for the whole load")
	fl.IntVar(&f.showRejected, "show-rejected", 100, "print at most this many rejected lines (all are counted)")
	config.BindFlags(fl, config.FlagDataDir, config.FlagKafkaBrokers, config.FlagLogLevel)
	cmd.AddCommand(load)
	return cmd
}

func (c *cli) loadIdentities(cmd *cobra.Command, f *identitiesFlags, path string) error {
	if !keys.ValidWorkspace(f.workspace) {
		return &usageError{fmt.Errorf("--%s", adminauth.WorkspaceProblem(f.workspace))}
	}
	cfg, err := c.loadConfig(cmd)
	if err != nil {
		return err
	}
	idCfg := identities.DefaultConfig(cfg.DataDir)

	var in io.Reader
	if path == "-" {
		in = cmd.InOrStdin()
	} else {
		file, err := os.Open(path)
		if err != nil {
			return fmt.Errorf("identities load: %w", err)
		}
		defer file.Close()
		in = file
	}

	ctx, cancel := context.WithTimeout(cmd.Context(), f.timeout)
	defer cancel()
	shown := 0
	onReject := func(le identities.LineError) {
		if shown < f.showRejected {
			fmt.Fprintf(c.stderr, "%s:%d: %s\n", path, le.Line, le.Error)
		}
		shown++
	}

	var st identities.LoadStats
	remote := func(server, token string) error {
		client, err := identities.NewClient(server, token, identities.ClientOptions{MaxLineBytes: idCfg.MaxLineBytes})
		if err != nil {
			return &usageError{err}
		}
		st, err = client.Load(ctx, f.workspace, in, onReject)
		return c.loadSummary(path, f, st, shown, err)
	}
	if f.server != "" {
		token := f.token
		if token == "" {
			token = c.env[config.EnvPrefix+"ADMIN_TOKEN"]
		}
		return remote(f.server, token)
	}

	// The direct mode is a short-lived tool: only warnings and errors are news.
	logCfg := cfg.Log
	if logCfg.Level == "debug" || logCfg.Level == "info" {
		logCfg.Level = "warn"
	}
	log, err := logCfg.NewLogger(c.stderr)
	if err != nil {
		return &configError{what: "invalid configuration", err: err}
	}
	core, err := service.OpenCore(ctx, cfg, log, prometheus.NewRegistry())
	if errors.Is(err, broker.ErrLocked) {
		ls, err := service.HeldBy(cfg.DataDir, err, c.stderr)
		if err != nil {
			return err
		}
		return remote(ls.URL, ls.Token)
	}
	if err != nil {
		return err
	}
	defer func() { _ = core.Close() }()
	loader, err := identities.NewLoader(core.Kafka, idCfg, nil)
	if err != nil {
		return err
	}
	defer func() { _ = loader.Close() }()
	st, err = loader.Load(ctx, f.workspace, in, onReject)
	return c.loadSummary(path, f, st, shown, err)
}

// loadSummary prints what a load did, also after a failure, so that the
// operator knows how far it got, and turns rejections into a failure.
func (c *cli) loadSummary(path string, f *identitiesFlags, st identities.LoadStats, shown int, err error) error {
	if shown > f.showRejected {
		fmt.Fprintf(c.stderr, "%s: %d more rejected lines not shown (--show-rejected)\n", path, shown-f.showRejected)
	}
	fmt.Fprintf(c.stdout, "%s: workspace %s: %d records, %d accepted, %d rejected\n", path, f.workspace, st.Lines, st.Accepted, st.Rejected)
	if err != nil {
		return fmt.Errorf("identities load stopped after %d accepted records: %w", st.Accepted, err)
	}
	if st.Rejected > 0 {
		return fmt.Errorf("identities load: %d of %d records rejected", st.Rejected, st.Lines)
	}
	return nil
}
