package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/cohortsync/cohortsync/config"
)

func (c *cli) newServeCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve the partner cohort import API and land requests in Kafka",
		Long: `serve runs the partner cohort import API, the admin API for data import keys
and /healthz. Without --kafka-brokers it starts an embedded Kafka-protocol
broker whose log lives under --data-dir. The first start prints a data import
key and the admin token.

The configuration is validated first: every problem is printed with its field
path and serve exits with code 2. SIGINT or SIGTERM stops it gracefully within
shutdown_timeout.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := c.loadConfig(cmd)
			if err != nil {
				return err
			}
			log, err := cfg.Log.NewLogger(c.stderr)
			if err != nil {
				return &configError{what: "invalid configuration", err: err}
			}
			return c.serve(cmd.Context(), cfg, log)
		},
	}
	config.BindFlags(cmd.Flags())
	config.BindNoMigrateFlag(cmd.Flags())
	return cmd
}

// serve runs the service until it returns or a SIGINT/SIGTERM arrives, then
// gives it shutdown_timeout to drain.
func (c *cli) serve(parent context.Context, cfg config.Config, log *slog.Logger) error {
	ctx, stop := signal.NotifyContext(parent, os.Interrupt, syscall.SIGTERM)
	defer stop()

	done := make(chan error, 1)
	go func() { done <- c.runService(ctx, cfg, log) }()

	select {
	case err := <-done:
		return serviceResult(ctx, err)
	case <-ctx.Done():
	}
	// Give the signals back to the runtime, so that a second Ctrl-C ends a
	// drain that hangs instead of being swallowed.
	stop()

	// The service drains within shutdown_timeout by contract. Past that a
	// stuck component must not keep the process (and whoever waits for it,
	// such as an orchestrator) hanging until it is killed.
	timer := time.NewTimer(cfg.ShutdownTimeout)
	defer timer.Stop()
	select {
	case err := <-done:
		return serviceResult(ctx, err)
	case <-timer.C:
		return fmt.Errorf("serve: service did not stop within shutdown_timeout (%s)", cfg.ShutdownTimeout)
	}
}

// serviceResult maps what the service returned to serve's result: returning
// the context's own error after a requested shutdown is a clean stop.
func serviceResult(ctx context.Context, err error) error {
	if err == nil || (ctx.Err() != nil && errors.Is(err, ctx.Err())) {
		return nil
	}
	return fmt.Errorf("serve: %w", err)
}
