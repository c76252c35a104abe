package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/spf13/cobra"

	"github.com/cohortsync/cohortsync/config"
	"github.com/cohortsync/cohortsync/service"
)

func (c *cli) newParquetCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "parquet",
		Short: "Maintain the Parquet trees under DATA_DIR/parquet",
		Args:  subcommandArgs,
		RunE:  helpOnly,
		// Cobra sets its default distance on the root command only.
		SuggestionsMinimumDistance: 2,
	}
	cmd.AddCommand(c.newParquetCompactCmd())
	return cmd
}

func (c *cli) newParquetCompactCmd() *cobra.Command {
	var (
		format  string
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "compact",
		Short: "Rewrite each partition of changes/ and datapoints/ as one file, each row once",
		Long: `compact rewrites DATA_DIR/parquet into the current format (docs/PARQUET.md):
every Hive partition of changes/ and datapoints/ becomes one file holding each
(record_id, position) once, with BOOLEAN/INT32/INT64 columns; trees written by
earlier versions (many small files, rows repeated after replays, datapoints/
by event day) come out as the current sink writes them. Each partition is
exchanged atomically, so readers see the old files or the new, never both.

It needs the trees to itself: stop serve first. Running it again on a
compacted tree changes nothing.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := c.loadConfig(cmd)
			if err != nil {
				return err
			}
			if err := checkTableOrJSON(format); err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			log := slog.New(slog.NewTextHandler(c.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
			st, err := service.CompactParquet(ctx, cfg, log)
			if err != nil {
				return err
			}
			if format == "json" {
				return writeJSON(c.stdout, st)
			}
			fmt.Fprintf(c.stdout, "compacted %d partitions: %d files into %d, %d rows read, %d kept (%d repeated rows removed)\n",
				st.Partitions, st.FilesBefore, st.FilesAfter, st.RowsRead, st.RowsKept, st.RowsRead-st.RowsKept)
			if st.DataPointsRebuilt {
				fmt.Fprintln(c.stdout, "datapoints/ was derived again from changes/, partitioned by landing day")
			}
			if st.SnapshotFoldersRenamed > 0 {
				fmt.Fprintf(c.stdout, "%d snapshot folders renamed cohort= to cohort_id=\n", st.SnapshotFoldersRenamed)
			}
			return nil
		},
	}
	f := cmd.Flags()
	bindFormat(f, &format, "output format: table or json")
	f.DurationVar(&timeout, "timeout", time.Hour, "deadline for the whole command")
	config.BindFlags(f, config.FlagDataDir)
	return cmd
}
