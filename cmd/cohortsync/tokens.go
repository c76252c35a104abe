package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/cohortsync/cohortsync/stores/adminauth"
)

func (c *cli) newTokensCmd() *cobra.Command {
	f := &remoteFlags{}
	cmd := &cobra.Command{
		Use:   "tokens",
		Short: "Mint workspace tokens on a running server",
		Long: `tokens mints tokens limited to one workspace. Only the global admin token
may mint them. A workspace token reaches that workspace's segments, cohorts,
data points, identities and keys, and gets 404 for any other workspace.`,
		Args: subcommandArgs,
		RunE: helpOnly,
		// Cobra sets its default distance on the root command only.
		SuggestionsMinimumDistance: 2,
	}
	f.bind(cmd.PersistentFlags(), 30*time.Second)
	var format string
	create := &cobra.Command{
		Use:   "create",
		Short: "Mint a token for --workspace; it is shown once",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if format != "text" && format != "json" {
				return &usageError{fmt.Errorf("--format %q: want text or json", format)}
			}
			if !adminauth.ValidWorkspace(f.workspace) {
				return &usageError{fmt.Errorf("--%s", adminauth.WorkspaceProblem(f.workspace))}
			}
			server, token, err := f.resolve(c)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), f.timeout)
			defer cancel()
			t, err := adminauth.MintToken(ctx, nil, server, token, f.workspace)
			if err != nil {
				return err
			}
			if format == "json" {
				return writeJSON(c.stdout, t)
			}
			fmt.Fprintf(c.stdout, "id:         %s\nworkspace:  %s\ncreated_at: %s\ntoken:      %s\n", t.ID, t.Workspace, t.CreatedAt.Format(time.RFC3339), t.Token)
			fmt.Fprintln(c.stderr, "The token is shown only now: store it where its user keeps secrets.")
			return nil
		},
	}
	create.Flags().StringVar(&format, "format", "text", "text or json")
	cmd.AddCommand(create)
	return cmd
}
