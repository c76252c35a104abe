// Command cohortsync receives cohort exports from product-analytics tools over
// a Braze-compatible HTTP API and lands them in Kafka.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/cohortsync/cohortsync/config"
	"github.com/cohortsync/cohortsync/service"
)

// Set at build time: go build -ldflags "-X main.version=v1.2.3 -X main.commit=$(git rev-parse HEAD)".
var (
	version = "dev"
	commit  = "dev"
)

// Exit codes. Scripts tell "fix your command line or configuration" (2) from
// "it ran and failed" (1).
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run executes one command line against the process environment and returns
// the exit code, so that tests can drive the binary without exiting.
func run(args []string, stdout, stderr io.Writer) int {
	return newCLI(stdout, stderr, config.OSEnv()).execute(context.Background(), args)
}

// cli holds what every command needs. Commands are built from it on each
// execution instead of living in package variables, so tests can run many
// command lines in parallel, each with its own environment and output.
type cli struct {
	stdout, stderr io.Writer
	// env is where COHORTSYNC_* variables are read from.
	env map[string]string
	// runService runs the service; tests replace it to observe what serve passes.
	runService func(context.Context, config.Config, *slog.Logger) error
}

func newCLI(stdout, stderr io.Writer, env map[string]string) *cli {
	c := &cli{stdout: stdout, stderr: stderr, env: env}
	c.runService = func(ctx context.Context, cfg config.Config, log *slog.Logger) error {
		// Logs go to stderr; stdout carries only what a person must see once,
		// the first-start secrets.
		return service.Run(ctx, cfg, log, service.Options{Out: stdout})
	}
	return c
}

// execute runs args and turns the outcome into an exit code, printing any
// error to stderr itself so that every failure has the same shape.
func (c *cli) execute(ctx context.Context, args []string) int {
	root := c.newRootCmd()
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return exitOK
	}
	help := "cohortsync --help"
	if cmd != nil {
		help = cmd.CommandPath() + " --help"
	}
	var ce *configError
	var ue *usageError
	switch {
	case errors.As(err, &ce):
		fmt.Fprintf(c.stderr, "cohortsync: %s:\n", ce.what)
		for line := range strings.SplitSeq(ce.err.Error(), "\n") {
			fmt.Fprintf(c.stderr, "  %s\n", line)
		}
		return exitUsage
	case errors.As(err, &ue):
		fmt.Fprintf(c.stderr, "cohortsync: %v\nRun '%s' for usage.\n", ue.err, help)
		return exitUsage
	default:
		fmt.Fprintf(c.stderr, "cohortsync: %v\n", err)
		return exitFailure
	}
}

func (c *cli) newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "cohortsync",
		Short: "Receive cohort exports from product-analytics tools and land them in Kafka",
		Long: `cohortsync is the receiving side of cohort exports from Mixpanel, Amplitude,
Heap, Hightouch, Census and Segment. It serves their Braze-compatible cohort
import API and lands every accepted request durably in Kafka; without
--kafka-brokers it runs an embedded broker under --data-dir.

Configuration comes from a YAML file (--config), COHORTSYNC_* environment
variables and flags, each overriding the one before; 'cohortsync config
validate' checks it and 'cohortsync config print --redact' shows it.`,
		Args: subcommandArgs,
		RunE: helpOnly,
		// execute prints errors; cobra would print them a second time, with
		// the whole usage text after a configuration problem.
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	root.SetOut(c.stdout)
	root.SetErr(c.stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		return &usageError{err}
	})

	root.AddCommand(
		c.newServeCmd(),
		c.newSnapshotCmd(),
		c.newVersionCmd(),
		c.newKeysCmd(),
		c.newIdentitiesCmd(),
		c.newMigrateCmd(),
		c.newDemoCmd(),
		c.newSegmentsCmd(),
		c.newDataPointsCmd(),
		c.newTokensCmd(),
		c.newBackfillCmd(),
		c.newParquetCmd(),
		c.newConfigCmd(),
	)
	return root
}

// loadConfig loads the configuration from c's environment and the flags of
// cmd, and validates it. Every command that needs the configuration uses it,
// so all of them report problems the same way and exit with code 2. The
// configuration is validated even when loading found problems (a setting
// that failed to load keeps its previous value), so that one run lists the
// file's, the environment's and the validation's problems together.
func (c *cli) loadConfig(cmd *cobra.Command) (config.Config, error) {
	cfg, loadErr := config.Load(config.LoadOptions{Env: c.env, Flags: cmd.Flags()})
	if err := errors.Join(loadErr, cfg.Validate()); err != nil {
		return config.Config{}, &configError{what: "invalid configuration", err: err}
	}
	return cfg, nil
}

// subcommandArgs is the Args of a command that only groups subcommands:
// without it cobra answers a misspelt subcommand with help and exit 0, and a
// script takes the typo for success.
func subcommandArgs(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	msg := fmt.Sprintf("unknown command %q", args[0])
	if cmd.HasParent() {
		msg += " for " + cmd.CommandPath()
	}
	if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
		msg += "; did you mean " + strings.Join(s, " or ") + "?"
	}
	return &usageError{errors.New(msg)}
}

// helpOnly is the RunE of a command that only groups subcommands.
func helpOnly(cmd *cobra.Command, _ []string) error { return cmd.Help() }

// noArgs rejects positional arguments as a usage error.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return &usageError{fmt.Errorf("%s takes no arguments, got %q", cmd.CommandPath(), args)}
	}
	return nil
}

// configError is a configuration that could not be loaded or is invalid; err
// may join several problems, printed one per line.
type configError struct {
	what string
	err  error
}

func (e *configError) Error() string { return e.what + ": " + e.err.Error() }
func (e *configError) Unwrap() error { return e.err }

// usageError is a command line cobra or we could not make sense of.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// bindFormat registers --format, the output format of a command that prints
// a table or JSON. Every command names its format --format; -o/--output is
// only ever a file to write (segments members).
func bindFormat(fs *pflag.FlagSet, dst *string, usage string) {
	fs.StringVar(dst, "format", "table", usage)
}

// checkTableOrJSON refuses a --format other than table or json.
func checkTableOrJSON(format string) error {
	if format != "table" && format != "json" {
		return &usageError{fmt.Errorf("--format %q: want table or json", format)}
	}
	return nil
}
