package service

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
)

// printBanner shows the credentials generated in this start, once, on the
// terminal (not in the logs), with one curl line that works as printed.
func printBanner(out io.Writer, addr string, creds credentials, firstKey string) {
	if creds.generatedAdminToken == "" && len(creds.generatedPartners) == 0 && firstKey == "" {
		return
	}
	fmt.Fprintln(out, "")
	fmt.Fprintln(out, "cohortsync generated these credentials. Save them now: they are not shown again.")
	if creds.generatedAdminToken != "" {
		fmt.Fprintf(out, "  admin token (Authorization: Bearer ...):  %s\n", creds.generatedAdminToken)
	}
	names := make([]string, 0, len(creds.generatedPartners))
	for n := range creds.generatedPartners {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(out, "  partner_api_key for %-10s %s\n", n+":", creds.generatedPartners[n])
	}
	if firstKey != "" {
		fmt.Fprintf(out, "  data import key (client_secret) of workspace %q, partner mixpanel:  %s\n", FirstWorkspace, firstKey)
		body, _ := json.Marshal(map[string]any{
			"partner_api_key": creds.partners["mixpanel"],
			"client_secret":   firstKey,
			"cohort_id":       "first-cohort",
			"cohort_changes":  []map[string]any{{"user_ids": []string{"user-1", "user-2"}}},
		})
		fmt.Fprintln(out, "")
		fmt.Fprintln(out, "Try it (expects 201):")
		fmt.Fprintf(out, "  curl -sS -i -X POST http://%s/partners/mixpanel/cohorts/users -H 'Content-Type: application/json' -d '%s'\n", addr, body)
	}
	fmt.Fprintln(out, "")
}
