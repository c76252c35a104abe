package service

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
)

// printCredentials shows the admin token and partner keys that were
// generated and not shown yet, on the terminal (not in the logs). It runs
// before anything that can fail (Kafka, ClickHouse), so a first start that
// fails later has shown them already.
func printCredentials(out io.Writer, creds credentials) bool {
	if creds.generatedAdminToken == "" && len(creds.generatedPartners) == 0 {
		return false
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
	fmt.Fprintln(out, "")
	return true
}

// printFirstKey shows the first data import key as soon as it exists, before
// the rest of the start can fail.
func printFirstKey(out io.Writer, firstKey string) {
	fmt.Fprintf(out, "  data import key (client_secret) of workspace %q, partner mixpanel:  %s\n\n", FirstWorkspace, firstKey)
}

// printTryIt shows one curl line that lands a change with the first key, once
// the API listens on addr.
func printTryIt(out io.Writer, addr string, creds credentials, firstKey string) {
	if firstKey == "" {
		return
	}
	body, _ := json.Marshal(map[string]any{
		"partner_api_key": creds.partners["mixpanel"],
		"client_secret":   firstKey,
		"cohort_id":       "first-cohort",
		"cohort_changes":  []map[string]any{{"user_ids": []string{"user-1", "user-2"}}},
	})
	fmt.Fprintln(out, "Try it (expects 201):")
	fmt.Fprintf(out, "  curl -sS -i -X POST http://%s/partners/mixpanel/cohorts/users -H 'Content-Type: application/json' -d '%s'\n\n", addr, body)
}
