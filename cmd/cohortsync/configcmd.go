package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/cohortsync/cohortsync/config"
)

func (c *cli) newConfigCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Check or show the configuration",
		Long: `config works on the configuration every command reads: the defaults, the
YAML file (--config), COHORTSYNC_* environment variables and flags, each
overriding the one before.`,
		Args: subcommandArgs,
		RunE: helpOnly,
		// Cobra sets its default distance on the root command only.
		SuggestionsMinimumDistance: 2,
	}
	// Every flag serve takes, so that validate and print see what serve would.
	config.BindFlags(cmd.PersistentFlags())
	config.BindNoMigrateFlag(cmd.PersistentFlags())
	cmd.AddCommand(c.newConfigValidateCmd(), c.newConfigPrintCmd())
	return cmd
}

func (c *cli) newConfigValidateCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "validate",
		Short: "Check the configuration and report every problem at once",
		Long: `validate loads the configuration the way serve does and checks it, without
starting anything or touching the data directory. It prints "configuration is
valid" and exits 0, or lists every problem, each with its key path (and line
of the file) or its variable, and exits 2: unknown keys, values of the wrong
type, unknown COHORTSYNC_* variables and settings that fail validation.`,
		Example: `  cohortsync config validate --config /etc/cohortsync/cohortsync.yaml`,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, err := c.loadConfig(cmd); err != nil {
				return err
			}
			_, err := fmt.Fprintln(c.stdout, "configuration is valid")
			return err
		},
	}
}

func (c *cli) newConfigPrintCmd() *cobra.Command {
	var redact bool
	cmd := &cobra.Command{
		Use:   "print",
		Short: "Print the effective configuration as YAML",
		Long: `print writes the configuration every command would use, after the file,
COHORTSYNC_* variables and flags, as a YAML file with every key: a file that
--config reads back to the same configuration. An invalid configuration is
not printed; its problems are listed as by 'cohortsync config validate'.

Without --redact the output includes the secrets (admin_token, every
partners.<name>.api_key, kafka.sasl.password, clickhouse.password) in clear
text: use --redact to share it or paste it into a ticket. --redact writes
` + config.Redacted + ` in place of each secret that is set; a secret that is empty
stays empty, so the reader can tell it is unset.`,
		Example: `  cohortsync config print --redact
  cohortsync config print > effective.yaml && cohortsync serve --config effective.yaml`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := c.loadConfig(cmd)
			if err != nil {
				return err
			}
			text, err := cfg.MarshalYAMLText(config.MarshalOptions{Redact: redact})
			if err != nil {
				return err
			}
			_, err = c.stdout.Write(text)
			return err
		},
	}
	cmd.Flags().BoolVar(&redact, "redact", false, "print "+config.Redacted+" in place of each secret that is set")
	return cmd
}
