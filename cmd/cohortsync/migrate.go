package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/cohortsync/cohortsync/config"
	chsink "github.com/cohortsync/cohortsync/sinks/clickhouse"
)

func (c *cli) newMigrateCmd() *cobra.Command {
	var (
		cluster string
		dryRun  bool
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Create or upgrade the ClickHouse database and tables",
		Long: `migrate creates the ClickHouse database (--clickhouse-database, default
cohortsync) and its tables on the server at --clickhouse-addr, or upgrades them to
this release's schema version. It records every applied step in the
schema_migrations table, so running it again changes nothing.

With --cluster NAME every statement runs ON CLUSTER NAME, the tables are
Replicated*MergeTree (ZooKeeper path /clickhouse/tables/{shard}/DB/TABLE_local,
replica {replica}) and Distributed tables over them carry the plain names.
--dry-run prints the statements instead of running them.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := c.loadConfig(cmd)
			if err != nil {
				return err
			}
			chCfg := cfg.ClickHouse.SinkConfig()
			if cmd.Flags().Changed("cluster") {
				chCfg.Cluster = cluster
			}
			if dryRun && chCfg.Addr == "" {
				// Printing needs no server; any address satisfies Validate.
				chCfg.Addr = "127.0.0.1:9000"
			}
			if chCfg.Addr == "" {
				return &usageError{fmt.Errorf("migrate needs a server: set --%s HOST:PORT (or %sCLICKHOUSE_ADDR)", config.FlagClickHouseAddr, config.EnvPrefix)}
			}
			if err := chCfg.Validate(); err != nil {
				return &configError{what: "invalid configuration", err: err}
			}
			if dryRun {
				for _, s := range chsink.Statements(chCfg) {
					fmt.Fprintf(c.stdout, "%s;\n\n", s)
				}
				return nil
			}
			log, err := cfg.Log.NewLogger(c.stderr)
			if err != nil {
				return &configError{what: "invalid configuration", err: err}
			}
			sink, err := chsink.New(chCfg, chsink.Options{Logger: log})
			if err != nil {
				return err
			}
			defer func() { _ = sink.Close() }()
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			res, err := sink.Migrate(ctx)
			if err != nil {
				if errors.Is(err, context.DeadlineExceeded) {
					return fmt.Errorf("%w (no answer from %s within --timeout %s)", err, chCfg.Addr, timeout)
				}
				return err
			}
			if len(res.Applied) == 0 {
				fmt.Fprintf(c.stdout, "clickhouse %s database %s: schema version %d, nothing to do\n", chCfg.Addr, chCfg.Database, res.To)
				return nil
			}
			fmt.Fprintf(c.stdout, "clickhouse %s database %s: schema version %d -> %d (applied %v)\n", chCfg.Addr, chCfg.Database, res.From, res.To, res.Applied)
			return nil
		},
	}
	cmd.Flags().StringVar(&cluster, "cluster", "", "ClickHouse cluster `NAME`: ON CLUSTER DDL, Replicated and Distributed tables")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "print the statements instead of running them")
	cmd.Flags().DurationVar(&timeout, "timeout", 2*time.Minute, "deadline for the whole migration")
	config.BindFlags(cmd.Flags(), config.FlagClickHouseAddr, config.FlagClickHouseDatabase, config.FlagLogLevel)
	return cmd
}
