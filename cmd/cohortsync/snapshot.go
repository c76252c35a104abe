package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/cohortsync/cohortsync/config"
	"github.com/cohortsync/cohortsync/jobs/snapshot"
	"github.com/cohortsync/cohortsync/service"
	"github.com/cohortsync/cohortsync/service/stateofrecord"
	"github.com/cohortsync/cohortsync/sinks/parquet"
)

func (c *cli) newSnapshotCmd() *cobra.Command {
	var (
		server, token, workspace, cohort, format string
		timeout                                  time.Duration
	)
	cmd := &cobra.Command{
		Use:   "snapshot",
		Short: "Write Parquet member-list snapshots of the cohorts that changed",
		Long: `snapshot writes DATA_DIR/parquet/snapshots/workspace=W/partner=P/cohort_id=C/version=V.parquet
for every cohort of --workspace (or only --cohort PARTNER/COHORT_ID) whose
membership changed since its newest snapshot. serve does the same every
snapshots.interval.

With --server it asks a running cohortsync to do it (token from --token or
COHORTSYNC_ADMIN_TOKEN). Without it, it reads the state of record itself:
ClickHouse when --clickhouse-addr is set, otherwise the embedded state store in
--data-dir; while a server holds it, the command asks that server, found in
DATA_DIR/server.json.`,
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
			var res []snapshot.SnapshotInfo
			if server != "" {
				if token == "" {
					token = c.env[config.EnvPrefix+"ADMIN_TOKEN"]
				}
				if _, err := selection(workspace, cohort); err != nil {
					return err
				}
				res, err = snapshot.Request(ctx, nil, server, token, workspace, cohort)
			} else {
				sel, serr := selection(workspace, cohort)
				if serr != nil {
					return serr
				}
				res, err = service.SnapshotNow(ctx, cfg, sel)
				if errors.Is(err, stateofrecord.ErrLocked) {
					ls, herr := service.HeldBy(cfg.DataDir, err, c.stderr)
					if herr != nil {
						return herr
					}
					res, err = snapshot.Request(ctx, nil, ls.URL, ls.Token, workspace, cohort)
				}
			}
			if err != nil {
				return err
			}
			failed := 0
			for _, r := range res {
				if r.Error != "" {
					failed++
				}
			}
			if err := printSnapshots(c, format, res); err != nil {
				return err
			}
			if failed > 0 {
				return fmt.Errorf("%d of %d cohort snapshots failed (the server log says why); they are retried next round", failed, len(res))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&server, "server", "", "base URL of a running cohortsync, e.g. http://127.0.0.1:8080")
	f.StringVar(&token, "token", "", "admin token for --server (default: COHORTSYNC_ADMIN_TOKEN)")
	f.StringVarP(&workspace, "workspace", "w", "default", "workspace whose cohorts to snapshot")
	f.StringVar(&cohort, "cohort", "", "only this cohort, as `PARTNER/COHORT_ID`")
	bindFormat(f, &format, "output format: table or json")
	f.DurationVar(&timeout, "timeout", 10*time.Minute, "deadline for the whole command")
	// Without --server it reads the state of record itself.
	config.BindFlags(f, config.FlagDataDir, config.FlagClickHouseAddr, config.FlagClickHouseDatabase)
	return cmd
}

func selection(workspace, cohort string) (snapshot.Selection, error) {
	sel := snapshot.Selection{Workspace: workspace}
	if cohort == "" {
		return sel, nil
	}
	partner, id, ok := strings.Cut(cohort, "/")
	if !ok || partner == "" || id == "" {
		return sel, &usageError{fmt.Errorf("--cohort %q: want PARTNER/COHORT_ID", cohort)}
	}
	sel.Cohort = &parquet.CohortKey{Workspace: workspace, Partner: partner, CohortID: id}
	return sel, nil
}

// printSnapshots writes the results as a table or JSON.
func printSnapshots(c *cli, format string, res []snapshot.SnapshotInfo) error {
	if format == "json" {
		return writeJSON(c.stdout, snapshot.Response{Snapshots: res})
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PARTNER\tCOHORT\tVERSION\tMEMBERS\tWRITTEN\tPATH (under DATA_DIR/parquet)")
	for _, r := range res {
		members := fmt.Sprint(r.Members)
		if !r.Written {
			members = "-"
		}
		path := r.Path
		if r.Error != "" {
			path = "failed: " + r.Error
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%v\t%s\n", r.Partner, r.CohortID, r.Version, members, r.Written, path)
	}
	return tw.Flush()
}
