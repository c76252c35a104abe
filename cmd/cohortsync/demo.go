package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/cohortsync/cohortsync/config"
	"github.com/cohortsync/cohortsync/demo"
	"github.com/cohortsync/cohortsync/service"
)

func (c *cli) newDemoCmd() *cobra.Command {
	d := demo.DefaultConfig()
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run Mixpanel-style cohort syncs against a running cohortsync and check the outcome",
		Long: `demo plays a Mixpanel deployment against a running cohortsync: it loads
--users identities (anonymous users, users identified after starting anonymous,
users with an email alias), creates a data import key and --cohorts cohorts, and
runs --rounds dynamic syncs --interval apart: adds, removes, ids the import
rules refuse (unknown users, old device ids of identified users) and one sync
that fails midway and is re-sent from the top.

It prints what it sent and the outcome the import rules imply (members per
cohort, billable data points, transitions, refusals), then waits for the
stream and checks that outcome against the server's /metrics; a difference
exits 1. Everything sent follows from --seed. The expected numbers assume
cohorts the server has not seen: run again with another --seed or --prefix.

The partner_api_key comes from --partner-key, else from the configuration
(COHORTSYNC_PARTNERS_<NAME>_API_KEY), else from the bootstrap.json the server
wrote in --data-dir at its first start.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := c.loadConfig(cmd)
			if err != nil {
				return err
			}
			if d.Token == "" {
				// COHORTSYNC_ADMIN_TOKEN or admin_token of the config file.
				d.Token = cfg.AdminToken
			}
			if d.PartnerAPIKey == "" {
				d.PartnerAPIKey, err = partnerAPIKey(cfg, d.Partner)
				if err != nil {
					return &usageError{err}
				}
			}
			if err := d.Validate(); err != nil {
				return &configError{what: "invalid demo options", err: err}
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			_, err = demo.Run(ctx, d, demo.Options{Out: c.stdout})
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&d.Server, "server", "", "base URL of a running cohortsync, e.g. http://127.0.0.1:8080 (required)")
	f.StringVar(&d.Token, "token", "", "admin token (default: COHORTSYNC_ADMIN_TOKEN)")
	f.StringVarP(&d.Workspace, "workspace", "w", service.FirstWorkspace, "workspace to load identities and cohorts into")
	f.StringVar(&d.Partner, "partner", d.Partner, "partner whose API the syncs use")
	f.StringVar(&d.PartnerAPIKey, "partner-key", "", "the partner's partner_api_key (default: configuration, then DATA_DIR/bootstrap.json)")
	f.IntVar(&d.Users, "users", d.Users, "identities to load")
	f.IntVar(&d.Cohorts, "cohorts", d.Cohorts, "cohorts to sync")
	f.IntVar(&d.Rounds, "rounds", d.Rounds, "dynamic sync rounds")
	f.DurationVar(&d.Interval, "interval", d.Interval, "pause between rounds")
	f.Uint64Var(&d.Seed, "seed", d.Seed, "seed of everything sent")
	f.StringVar(&d.Prefix, "prefix", d.Prefix, "prefix of every user and cohort id the demo makes up")
	f.IntVar(&d.BatchSize, "batch-size", d.BatchSize, "most ids per request (at most 1000)")
	f.DurationVar(&d.Wait, "wait", d.Wait, "how long to wait for the stream before checking /metrics (0: do not check)")
	f.DurationVar(&timeout, "timeout", 10*time.Minute, "deadline for the whole demo")
	// The partner key is read from the configuration or the server's data directory.
	config.BindFlags(f, config.FlagDataDir)
	return cmd
}

// bootstrapKeys is the part of the server's DATA_DIR/bootstrap.json the demo
// reads: the partner_api_keys generated at first start.
type bootstrapKeys struct {
	PartnerAPIKeys map[string]string `json:"partner_api_keys"`
}

// partnerAPIKey finds the partner_api_key the server uses for partner: a
// configured one, else the one its first start generated in the data directory.
func partnerAPIKey(cfg config.Config, partner string) (string, error) {
	if p, ok := cfg.Partners[partner]; ok && p.APIKey != "" {
		return p.APIKey, nil
	}
	path := filepath.Join(cfg.DataDir, "bootstrap.json")
	raw, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("no partner_api_key for %s: pass --partner-key (the first start of serve printed it), or --data-dir of the server", partner)
	}
	if err != nil {
		return "", fmt.Errorf("partner_api_key: %w", err)
	}
	var b bootstrapKeys
	if err := json.Unmarshal(raw, &b); err != nil {
		return "", fmt.Errorf("partner_api_key: %s: %w", path, err)
	}
	if k := b.PartnerAPIKeys[partner]; k != "" {
		return k, nil
	}
	return "", fmt.Errorf("no partner_api_key for %s in %s: pass --partner-key", partner, path)
}
