package service

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
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

// printServing says where this start can be reached, at every start: the
// HTTP API and the Kafka brokers (the embedded broker's fixed address, for
// kcat and for commands run beside the server).
func printServing(out io.Writer, url string, brokers []string, embedded bool, dataDir string) {
	kafka := strings.Join(brokers, ",")
	if embedded {
		kafka += fmt.Sprintf(" (embedded broker, data in %s; kcat -b %s -L)", dataDir, brokers[0])
	}
	fmt.Fprintln(out, "cohortsync is serving")
	fmt.Fprintf(out, "  HTTP API  %s  (GET /openapi.json describes it)\n", url)
	fmt.Fprintf(out, "  Kafka     %s\n\n", kafka)
}

// printTryIt shows the first steps with the first key, once the API
// listens on url: make two users known, add them to a cohort with the
// partner API, and list the cohorts. A partner push only changes
// membership for users the identity directory knows, so the identities
// come first, or the cohort would never appear.
func printTryIt(out io.Writer, url string, creds credentials, firstKey string) {
	if firstKey == "" {
		return
	}
	token := creds.generatedAdminToken
	if token == "" {
		token = "$COHORTSYNC_ADMIN_TOKEN"
	}
	body, _ := json.Marshal(map[string]any{
		"partner_api_key": creds.partners["mixpanel"],
		"client_secret":   firstKey,
		"cohort_id":       "first-cohort",
		"cohort_changes":  []map[string]any{{"user_ids": []string{"user-1", "user-2"}}},
	})
	fmt.Fprintln(out, "Try it: make two users known, add them to a cohort (expects 201), and a moment later list the cohorts:")
	fmt.Fprintf(out, "  printf '%%s\\n' '{\"user_id\":\"user-1\",\"external_id\":\"user-1\"}' '{\"user_id\":\"user-2\",\"external_id\":\"user-2\"}' | curl -sS -X POST %s/v1/workspaces/%s/identities -H \"Authorization: Bearer %s\" -H 'Content-Type: application/x-ndjson' --data-binary @-\n", url, FirstWorkspace, token)
	fmt.Fprintf(out, "  curl -sS -i -X POST %s/partners/mixpanel/cohorts/users -H 'Content-Type: application/json' -d '%s'\n", url, body)
	fmt.Fprintf(out, "  curl -sS %s/v1/workspaces/%s/cohorts -H \"Authorization: Bearer %s\"\n\n", url, FirstWorkspace, token)
}
