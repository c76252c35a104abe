package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/cohortsync/cohortsync/config"
	"github.com/cohortsync/cohortsync/kafka/broker"
	"github.com/cohortsync/cohortsync/service"
	"github.com/cohortsync/cohortsync/stores/keys"
)

// keyOps is what the keys commands need, served either by a running server's
// admin API or by the data directory (or Kafka) directly.
type keyOps interface {
	Create(ctx context.Context, workspace, partner, label string) (keys.CreatedKey, error)
	List(ctx context.Context, workspace string) ([]keys.KeyInfo, error)
	Revoke(ctx context.Context, workspace, keyID string) error
	Close() error
}

type keysFlags struct {
	server, token, workspace, format string
	timeout                          time.Duration
}

func (c *cli) newKeysCmd() *cobra.Command {
	f := &keysFlags{}
	cmd := &cobra.Command{
		Use:   "keys",
		Short: "Create, list and revoke data import keys",
		Long: `keys manages data import keys (the client_secret partners send).

With --server it calls the admin API of a running cohortsync (token from --token
or COHORTSYNC_ADMIN_TOKEN). Without it, it opens the data directory (or the
configured Kafka) directly; on the embedded default that only works while no
server holds the data directory.`,
		Args: subcommandArgs,
		RunE: helpOnly,
		// Cobra sets its default distance on the root command only.
		SuggestionsMinimumDistance: 2,
	}
	pf := cmd.PersistentFlags()
	// Without --server the commands open the key store on Kafka themselves.
	config.BindFlags(pf, config.FlagDataDir, config.FlagKafkaBrokers, config.FlagLogLevel)
	pf.StringVar(&f.server, "server", "", "base URL of a running cohortsync, e.g. http://127.0.0.1:8080")
	pf.StringVar(&f.token, "token", "", "admin token for --server (default: COHORTSYNC_ADMIN_TOKEN)")
	pf.StringVarP(&f.workspace, "workspace", "w", service.FirstWorkspace, "workspace the keys belong to")
	bindFormat(pf, &f.format, "output format: table or json")
	pf.DurationVar(&f.timeout, "timeout", 30*time.Second, "deadline for the whole command")

	var partner, label string
	create := &cobra.Command{
		Use:   "create",
		Short: "Create a data import key; its secret is shown once",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.withKeyOps(cmd, f, func(ctx context.Context, ops keyOps) error {
				k, err := ops.Create(ctx, f.workspace, partner, label)
				if err != nil {
					return err
				}
				if f.format == "json" {
					return writeJSON(c.stdout, k)
				}
				fmt.Fprintf(c.stdout, "key_id:        %s\nworkspace:     %s\npartner:       %s\nclient_secret: %s\n", k.KeyID, k.Workspace, k.Partner, k.ClientSecret)
				fmt.Fprintln(c.stderr, "The client_secret is shown only now: give it to the partner and do not store it elsewhere.")
				return nil
			})
		},
	}
	create.Flags().StringVar(&partner, "partner", "mixpanel", "partner the key is for")
	create.Flags().StringVar(&label, "label", "", "free text to tell keys apart")

	list := &cobra.Command{
		Use:   "list",
		Short: "List the keys of a workspace (never their secrets)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.withKeyOps(cmd, f, func(ctx context.Context, ops keyOps) error {
				ks, err := ops.List(ctx, f.workspace)
				if err != nil {
					return err
				}
				if f.format == "json" {
					return writeJSON(c.stdout, ks)
				}
				tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "KEY_ID\tPARTNER\tSTATUS\tCREATED_AT\tLABEL")
				for _, k := range ks {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", k.KeyID, k.Partner, k.Status, k.CreatedAt.Format(time.RFC3339), k.Label)
				}
				return tw.Flush()
			})
		},
	}

	revoke := &cobra.Command{
		Use:   "revoke KEY_ID",
		Short: "Revoke a key; every instance refuses it within seconds",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return &usageError{fmt.Errorf("%s takes exactly one KEY_ID", cmd.CommandPath())}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.withKeyOps(cmd, f, func(ctx context.Context, ops keyOps) error {
				if err := ops.Revoke(ctx, f.workspace, args[0]); err != nil {
					return err
				}
				fmt.Fprintf(c.stdout, "revoked %s\n", args[0])
				return nil
			})
		},
	}
	cmd.AddCommand(create, list, revoke)
	return cmd
}

// withKeyOps opens the key operations for the flags, runs fn under the
// command's deadline and closes them again.
func (c *cli) withKeyOps(cmd *cobra.Command, f *keysFlags, fn func(context.Context, keyOps) error) error {
	if err := checkTableOrJSON(f.format); err != nil {
		return err
	}
	cfg, err := c.loadConfig(cmd)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), f.timeout)
	defer cancel()
	var ops keyOps
	remote := func(server, token string) error {
		client, err := keys.NewClient(server, token, nil)
		if err != nil {
			return &usageError{err}
		}
		ops = remoteKeys{client}
		return nil
	}
	if f.server != "" {
		token := f.token
		if token == "" {
			token = c.env[config.EnvPrefix+"ADMIN_TOKEN"]
		}
		if err := remote(f.server, token); err != nil {
			return err
		}
	} else {
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
		switch {
		case errors.Is(err, broker.ErrLocked):
			ls, err := service.HeldBy(cfg.DataDir, err, c.stderr)
			if err != nil {
				return err
			}
			if err := remote(ls.URL, ls.Token); err != nil {
				return err
			}
		case err != nil:
			return err
		default:
			ops = localKeys{core: core, cfg: cfg}
		}
	}
	defer func() { _ = ops.Close() }()
	return fn(ctx, ops)
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

type remoteKeys struct{ *keys.Client }

func (remoteKeys) Close() error { return nil }

type localKeys struct {
	core *service.Core
	cfg  config.Config
}

func (l localKeys) Create(ctx context.Context, workspace, partner, label string) (keys.CreatedKey, error) {
	// The admin API checks this too; the direct path must not be a way around it.
	if p, ok := l.cfg.Partners[partner]; !ok || !p.Enabled {
		return keys.CreatedKey{}, fmt.Errorf("partner %q is not enabled", partner)
	}
	k, secret, err := l.core.Keys.Create(ctx, workspace, partner, label)
	if err != nil {
		return keys.CreatedKey{}, err
	}
	return keys.NewCreatedKey(k, secret), nil
}

func (l localKeys) List(_ context.Context, workspace string) ([]keys.KeyInfo, error) {
	ks := l.core.Keys.List(workspace)
	out := make([]keys.KeyInfo, len(ks))
	for i, k := range ks {
		out[i] = k.Info()
	}
	return out, nil
}

func (l localKeys) Revoke(ctx context.Context, workspace, keyID string) error {
	return l.core.Keys.Revoke(ctx, workspace, keyID)
}

func (l localKeys) Close() error { return l.core.Close() }
