package main

import (
	"context"
	"encoding/csv"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/cohortsync/cohortsync/segments"
	"github.com/cohortsync/cohortsync/segments/api"
)

func (c *cli) newDataPointsCmd() *cobra.Command {
	f := &remoteFlags{}
	var from, to, groupBy, format string
	cmd := &cobra.Command{
		Use:   "datapoints",
		Short: "Report billable data points and membership transitions of a running server",
		Long: `datapoints prints, per landing day (or partner, or cohort), the billable
assignments (every accepted add and remove) and the effective membership
transitions, which are never more than the billable count.

Without --from and --to it reports the last 30 days.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			for flag, v := range map[string]string{"--from": from, "--to": to} {
				if _, err := time.Parse("2006-01-02", v); v != "" && err != nil {
					return &usageError{fmt.Errorf("%s %q must be a date YYYY-MM-DD", flag, v)}
				}
			}
			gb := segments.GroupBy(groupBy)
			switch gb {
			case segments.GroupByDay, segments.GroupByPartner, segments.GroupByCohort:
			default:
				return &usageError{fmt.Errorf("--group-by %q: want day, partner or cohort", groupBy)}
			}
			if format != "table" && format != "csv" && format != "json" {
				return &usageError{fmt.Errorf("--format %q: want table, csv or json", format)}
			}
			return c.withClient(cmd, f, func(ctx context.Context, client *api.Client) error {
				rows, err := client.DataPoints(ctx, from, to, gb)
				if err != nil {
					return err
				}
				return c.printDataPoints(rows, gb, format)
			})
		},
	}
	f.bind(cmd.Flags(), time.Minute)
	cmd.Flags().StringVar(&from, "from", "", "first landing day, YYYY-MM-DD (UTC)")
	cmd.Flags().StringVar(&to, "to", "", "last landing day, YYYY-MM-DD (UTC), included")
	cmd.Flags().StringVar(&groupBy, "group-by", "day", "day, partner or cohort")
	cmd.Flags().StringVar(&format, "format", "table", "table, csv or json")
	return cmd
}

func (c *cli) printDataPoints(rows []segments.DataPointRow, gb segments.GroupBy, format string) error {
	if format == "json" {
		return writeJSON(c.stdout, api.DataPoints{Rows: rows})
	}
	var head []string
	key := func(r segments.DataPointRow) []string { return []string{r.Day} }
	switch gb {
	case segments.GroupByDay:
		head = []string{"day"}
	case segments.GroupByPartner:
		head = []string{"partner"}
		key = func(r segments.DataPointRow) []string { return []string{r.Partner} }
	case segments.GroupByCohort:
		head = []string{"partner", "cohort_id"}
		key = func(r segments.DataPointRow) []string { return []string{r.Partner, r.CohortID} }
	}
	head = append(head, "billable", "transitions")
	line := func(r segments.DataPointRow) []string {
		return append(key(r), strconv.FormatInt(r.Billable, 10), strconv.FormatInt(r.Transitions, 10))
	}
	if format == "csv" {
		w := csv.NewWriter(c.stdout)
		_ = w.Write(head)
		for _, r := range rows {
			_ = w.Write(line(r))
		}
		w.Flush()
		return w.Error()
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	var total segments.DataPointRow
	for i, h := range head {
		head[i] = strings.ToUpper(h)
	}
	fmt.Fprintln(tw, strings.Join(head, "\t")+"\t")
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(line(r), "\t")+"\t")
		total.Billable += r.Billable
		total.Transitions += r.Transitions
	}
	sum := append(make([]string, len(head)-3), "TOTAL", strconv.FormatInt(total.Billable, 10), strconv.FormatInt(total.Transitions, 10))
	fmt.Fprintln(tw, strings.Join(sum, "\t")+"\t")
	return tw.Flush()
}
