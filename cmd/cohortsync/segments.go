package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/cohortsync/cohortsync/config"
	"github.com/cohortsync/cohortsync/internal/atomicfile"
	"github.com/cohortsync/cohortsync/segments/api"
	"github.com/cohortsync/cohortsync/service"
)

// remoteFlags are the flags of the commands that only talk to a running
// server: segments, datapoints, tokens.
type remoteFlags struct {
	server, token, workspace string
	timeout                  time.Duration
}

func (f *remoteFlags) bind(pf *pflag.FlagSet, timeout time.Duration) {
	pf.StringVar(&f.server, "server", "", "base URL of a running cohortsync, e.g. http://127.0.0.1:8080 (required)")
	pf.StringVar(&f.token, "token", "", "admin or workspace token (default: COHORTSYNC_ADMIN_TOKEN)")
	pf.StringVarP(&f.workspace, "workspace", "w", service.FirstWorkspace, "workspace to query")
	pf.DurationVar(&f.timeout, "timeout", timeout, "deadline for the whole command")
}

// resolve checks the flags and fills the token from the environment.
func (f *remoteFlags) resolve(c *cli) (server, token string, err error) {
	if f.server == "" {
		return "", "", &usageError{errors.New("--server is required: these commands ask a running cohortsync")}
	}
	token = f.token
	if token == "" {
		token = c.env[config.EnvPrefix+"ADMIN_TOKEN"]
	}
	if token == "" {
		return "", "", &usageError{errors.New("no token: pass --token or set " + config.EnvPrefix + "ADMIN_TOKEN")}
	}
	return f.server, token, nil
}

// withClient runs fn with a segments API client under the command's deadline.
func (c *cli) withClient(cmd *cobra.Command, f *remoteFlags, fn func(context.Context, *api.Client) error) error {
	server, token, err := f.resolve(c)
	if err != nil {
		return err
	}
	client, err := api.NewClient(server, token, f.workspace, nil)
	if err != nil {
		return &usageError{err}
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), f.timeout)
	defer cancel()
	return fn(ctx, client)
}

// readFilter takes a filter as JSON, @FILE or @- (standard input).
func (c *cli) readFilter(cmd *cobra.Command, s string) (json.RawMessage, error) {
	raw := []byte(s)
	if name, ok := strings.CutPrefix(s, "@"); ok {
		var err error
		if name == "-" {
			raw, err = io.ReadAll(io.LimitReader(cmd.InOrStdin(), 1<<20))
		} else {
			raw, err = os.ReadFile(name)
		}
		if err != nil {
			return nil, fmt.Errorf("--filter %s: %w", s, err)
		}
	}
	if strings.TrimSpace(string(raw)) == "" {
		return nil, &usageError{errors.New("--filter is required: a JSON filter, @FILE or @-")}
	}
	if !json.Valid(raw) {
		return nil, &usageError{fmt.Errorf("--filter %q is not valid JSON", truncateArg(s))}
	}
	return raw, nil
}

func parseAsOfFlag(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, &usageError{fmt.Errorf("--as-of %q must be an RFC 3339 timestamp such as 2026-11-05T14:00:00Z", s)}
	}
	return t, nil
}

func exactlyArgs(n int, names string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return &usageError{fmt.Errorf("%s takes %s", cmd.CommandPath(), names)}
		}
		return nil
	}
}

func truncateArg(s string) string {
	if len(s) <= 60 {
		return s
	}
	return s[:60] + "..."
}

func (c *cli) newSegmentsCmd() *cobra.Command {
	f := &remoteFlags{}
	cmd := &cobra.Command{
		Use:   "segments",
		Short: "Evaluate, save, list and export segments of a running server",
		Long: `segments asks a running cohortsync about segments: filters over cohort
membership such as {"and":[{"cohort":{"partner":"mixpanel","id":"A"}},{"not":{"cohort":{"partner":"mixpanel","id":"B"}}}]}.

--filter takes the JSON itself, @FILE or @- for standard input. --as-of asks
for membership at an earlier instant (RFC 3339).`,
		Args: subcommandArgs,
		RunE: helpOnly,
		// Cobra sets its default distance on the root command only.
		SuggestionsMinimumDistance: 2,
	}
	f.bind(cmd.PersistentFlags(), 2*time.Minute)

	var filter, asOf, cursor string
	var limit int
	evaluate := &cobra.Command{
		Use:   "evaluate",
		Short: "Count a filter's members and print one page of them (JSON)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			raw, err := c.readFilter(cmd, filter)
			if err != nil {
				return err
			}
			at, err := parseAsOfFlag(asOf)
			if err != nil {
				return err
			}
			req := api.EvaluateRequest{Filter: raw, Cursor: cursor}
			if cmd.Flags().Changed("limit") {
				req.Limit = &limit
			}
			if !at.IsZero() {
				req.AsOf = at.UTC().Format(time.RFC3339Nano)
			}
			return c.withClient(cmd, f, func(ctx context.Context, client *api.Client) error {
				p, err := client.Evaluate(ctx, req)
				if err != nil {
					return err
				}
				return writeJSON(c.stdout, p)
			})
		},
	}
	evaluate.Flags().StringVar(&filter, "filter", "", "filter JSON, @FILE or @-")
	evaluate.Flags().StringVar(&asOf, "as-of", "", "membership at this RFC 3339 instant")
	evaluate.Flags().IntVar(&limit, "limit", api.DefaultLimit, fmt.Sprintf("members per page, 1 to %d", api.MaxLimit))
	evaluate.Flags().StringVar(&cursor, "cursor", "", "next_cursor of the previous page")

	var name, createFilter string
	create := &cobra.Command{
		Use:   "create",
		Short: "Save a segment",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			raw, err := c.readFilter(cmd, createFilter)
			if err != nil {
				return err
			}
			if strings.TrimSpace(name) == "" {
				return &usageError{errors.New("--name is required")}
			}
			return c.withClient(cmd, f, func(ctx context.Context, client *api.Client) error {
				s, err := client.CreateSegment(ctx, name, raw)
				if err != nil {
					return err
				}
				return writeJSON(c.stdout, s)
			})
		},
	}
	create.Flags().StringVar(&name, "name", "", "name of the segment")
	create.Flags().StringVar(&createFilter, "filter", "", "filter JSON, @FILE or @-")

	var listFormat string
	list := &cobra.Command{
		Use:   "list",
		Short: "List the saved segments",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if listFormat != "table" && listFormat != "json" {
				return &usageError{fmt.Errorf("--format %q: want table or json", listFormat)}
			}
			return c.withClient(cmd, f, func(ctx context.Context, client *api.Client) error {
				segs, err := client.ListSegments(ctx)
				if err != nil {
					return err
				}
				if listFormat == "json" {
					return writeJSON(c.stdout, api.SegmentList{Segments: segs})
				}
				tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tNAME\tCREATED_AT\tFILTER")
				for _, s := range segs {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", s.ID, s.Name, s.CreatedAt.Format(time.RFC3339), s.Filter)
				}
				return tw.Flush()
			})
		},
	}
	list.Flags().StringVar(&listFormat, "format", "table", "output format: table or json")

	get := &cobra.Command{
		Use:   "get ID",
		Short: "Show a saved segment with its member count",
		Args:  exactlyArgs(1, "exactly one segment ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.withClient(cmd, f, func(ctx context.Context, client *api.Client) error {
				s, err := client.GetSegment(ctx, args[0])
				if err != nil {
					return err
				}
				return writeJSON(c.stdout, s)
			})
		},
	}

	del := &cobra.Command{
		Use:   "delete ID",
		Short: "Delete a saved segment",
		Args:  exactlyArgs(1, "exactly one segment ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.withClient(cmd, f, func(ctx context.Context, client *api.Client) error {
				if err := client.DeleteSegment(ctx, args[0]); err != nil {
					return err
				}
				fmt.Fprintf(c.stdout, "deleted %s\n", args[0])
				return nil
			})
		},
	}

	var membersFormat, output, membersAsOf string
	members := &cobra.Command{
		Use:   "members ID",
		Short: "Export every member of a saved segment (csv, ndjson, parquet or json)",
		Args:  exactlyArgs(1, "exactly one segment ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			switch membersFormat {
			case "csv", "ndjson", "parquet", "json":
			default:
				return &usageError{fmt.Errorf("--format %q: want csv, ndjson, parquet or json", membersFormat)}
			}
			at, err := parseAsOfFlag(membersAsOf)
			if err != nil {
				return err
			}
			return c.withClient(cmd, f, func(ctx context.Context, client *api.Client) error {
				return c.exportMembers(ctx, client, args[0], membersFormat, at, output)
			})
		},
	}
	members.Flags().StringVar(&membersFormat, "format", "csv", "csv, ndjson, parquet or json")
	members.Flags().StringVarP(&output, "output", "o", "", "write to FILE (complete or not at all) instead of standard output")
	members.Flags().StringVar(&membersAsOf, "as-of", "", "membership at this RFC 3339 instant")

	var explainAsOf string
	explain := &cobra.Command{
		Use:   "explain ID USER_ID",
		Short: "Tell whether a user is in a saved segment, and which cohort changes decided it",
		Args:  exactlyArgs(2, "a segment ID and a USER_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			at, err := parseAsOfFlag(explainAsOf)
			if err != nil {
				return err
			}
			return c.withClient(cmd, f, func(ctx context.Context, client *api.Client) error {
				ans, err := client.Explain(ctx, args[0], args[1], at)
				if err != nil {
					return err
				}
				return writeJSON(c.stdout, ans)
			})
		},
	}
	explain.Flags().StringVar(&explainAsOf, "as-of", "", "membership at this RFC 3339 instant")

	cmd.AddCommand(evaluate, create, list, get, del, members, explain)
	return cmd
}

// exportMembers writes all members to output, or to standard output. A file
// is written under a temporary name and renamed once complete, so a failed
// export never leaves a plausible-looking partial file.
func (c *cli) exportMembers(ctx context.Context, client *api.Client, id, format string, asOf time.Time, output string) error {
	var n int64
	export := func(w io.Writer) (err error) {
		if format == "json" {
			n, err = allPages(ctx, client, id, asOf, w)
		} else {
			_, err = client.ExportMembers(ctx, id, format, asOf, w)
		}
		return err
	}
	if output == "" {
		return export(c.stdout)
	}
	var exportErr error
	err := atomicfile.Write(output, func(w io.Writer) error {
		exportErr = export(w)
		return exportErr
	})
	if exportErr != nil {
		return exportErr
	}
	if err != nil {
		return fmt.Errorf("--output: %w", err)
	}
	if format == "json" {
		fmt.Fprintf(c.stderr, "wrote %d members to %s\n", n, output)
	} else {
		fmt.Fprintf(c.stderr, "wrote %s\n", output)
	}
	return nil
}

// allPages writes {"count":N,"members":[...]} by following the cursor; the
// members are streamed, never held all at once.
func allPages(ctx context.Context, client *api.Client, id string, asOf time.Time, w io.Writer) (int64, error) {
	var n int64
	cursor := ""
	for first := true; ; first = false {
		p, err := client.MembersPage(ctx, id, cursor, api.MaxLimit, asOf)
		if err != nil {
			return n, err
		}
		if first {
			if _, err := fmt.Fprintf(w, "{\"count\":%d,\"members\":[", p.Count); err != nil {
				return n, err
			}
		}
		for _, m := range p.Members {
			v, _ := json.Marshal(m)
			sep := ","
			if n == 0 {
				sep = ""
			}
			if _, err := fmt.Fprintf(w, "%s\n%s", sep, v); err != nil {
				return n, err
			}
			n++
		}
		if p.NextCursor == nil {
			_, err := io.WriteString(w, "\n]}\n")
			return n, err
		}
		cursor = *p.NextCursor
	}
}
