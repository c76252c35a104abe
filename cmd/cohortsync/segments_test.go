package main

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync/internal/httproute"
	"github.com/cohortsync/cohortsync/internal/testkit"
	"github.com/cohortsync/cohortsync/kafka/kafkatest"
	"github.com/cohortsync/cohortsync/segments"
	"github.com/cohortsync/cohortsync/segments/api"
	"github.com/cohortsync/cohortsync/segments/saved"
	"github.com/cohortsync/cohortsync/stores/adminauth"
)

const cliAdminToken = "cst_cli-test-admin-token-0123456789"

// cliEngine answers {"cohort":{"id":ID}} from fixed member lists; the real
// engines have their own tests against real stores.
type cliEngine struct{ cohorts map[string][]string }

func (e cliEngine) members(filter json.RawMessage) ([]string, error) {
	var doc struct{ Cohort struct{ ID string } }
	if err := json.Unmarshal(filter, &doc); err != nil {
		return nil, &segments.FilterError{Msg: "not an object"}
	}
	m, ok := e.cohorts[doc.Cohort.ID]
	if !ok {
		return nil, &segments.FilterError{Path: "/cohort/id", Msg: "unknown cohort " + strconv.Quote(doc.Cohort.ID)}
	}
	return m, nil
}

func (e cliEngine) Evaluate(_ context.Context, _ string, q segments.Query) (segments.Page, error) {
	m, err := e.members(q.Filter)
	if err != nil {
		return segments.Page{}, err
	}
	start := 0
	if q.Cursor != "" {
		if start, err = strconv.Atoi(q.Cursor); err != nil {
			return segments.Page{}, segments.ErrBadCursor
		}
	}
	end := min(start+q.Limit, len(m))
	p := segments.Page{Count: int64(len(m)), Members: m[start:end]}
	if end < len(m) && q.Limit > 0 {
		p.NextCursor = strconv.Itoa(end)
	}
	return p, nil
}

func (e cliEngine) Explain(_ context.Context, _ string, f json.RawMessage, user string, _ time.Time) (segments.Answer, error) {
	m, err := e.members(f)
	if err != nil {
		return segments.Answer{}, err
	}
	in := slices.Contains(m, user)
	return segments.Answer{UserID: user, Member: in, Reasons: []segments.Reason{{Partner: "mixpanel", CohortID: "c1", InCohort: in}}}, nil
}

func (e cliEngine) Export(_ context.Context, _ string, f json.RawMessage, _ time.Time, fn func(string) error) error {
	m, err := e.members(f)
	if err != nil {
		return err
	}
	for _, id := range m {
		if err := fn(id); err != nil {
			return err
		}
	}
	return nil
}

func (e cliEngine) DataPoints(_ context.Context, _ string, from, _ time.Time, gb segments.GroupBy) ([]segments.DataPointRow, error) {
	switch gb {
	case segments.GroupByCohort:
		return []segments.DataPointRow{{Partner: "mixpanel", CohortID: "c1", Billable: 9, Transitions: 4}, {Partner: "mixpanel", CohortID: "c2", Billable: 1, Transitions: 1}}, nil
	default:
		return []segments.DataPointRow{{Day: from.Format("2006-01-02"), Billable: 7, Transitions: 5}, {Day: from.AddDate(0, 0, 1).Format("2006-01-02"), Billable: 3, Transitions: 3}}, nil
	}
}

func (e cliEngine) Cohorts(context.Context, string, time.Time) ([]segments.CohortInfo, error) {
	return nil, nil
}

// newSegmentsServer serves the real segments and token handlers over a
// fake engine, with the stores on kfake.
func newSegmentsServer(t *testing.T) (*httptest.Server, *adminauth.TokenStore) {
	t.Helper()
	ctx := testkit.Context(t, 10*time.Second)
	client := kafkatest.NewClient(t, kafkatest.NewCluster(t), "cli")
	store, err := saved.Open(ctx, client, saved.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	tokens, err := adminauth.OpenTokenStore(ctx, client, adminauth.TokenStoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tokens.Close() })
	admin, err := adminauth.NewAdminToken(cliAdminToken)
	if err != nil {
		t.Fatal(err)
	}
	auth, err := adminauth.NewScoped(admin, tokens)
	if err != nil {
		t.Fatal(err)
	}
	many := make([]string, 25_000)
	for i := range many {
		many[i] = "m" + strconv.Itoa(100_000+i)
	}
	a, err := api.New(api.Options{
		Engine: cliEngine{cohorts: map[string][]string{"c1": {"u1", "u2", "u3"}, "many": many}},
		Saved:  store, Auth: auth,
		ValidateFilter: func(raw json.RawMessage) error {
			if !strings.Contains(string(raw), `"cohort"`) {
				return &segments.FilterError{Path: "", Msg: "want a cohort"}
			}
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	routes := httproute.NewRecorder()
	a.Register(routes)
	tokAPI, err := adminauth.NewTokenAPI(tokens, auth, nil)
	if err != nil {
		t.Fatal(err)
	}
	tokAPI.Register(routes)
	srv := httptest.NewServer(routes.Mux)
	t.Cleanup(srv.Close)
	return srv, tokens
}

func TestSegmentsCLI(t *testing.T) {
	t.Parallel()
	srv, _ := newSegmentsServer(t)
	env := map[string]string{"COHORTSYNC_ADMIN_TOKEN": cliAdminToken}
	run := func(args ...string) result {
		t.Helper()
		return execute(t, testkit.Context(t, 10*time.Second), env, nil, append(args, "--server", srv.URL, "-w", "acme")...)
	}
	dir := t.TempDir()
	filterFile := filepath.Join(dir, "f.json")
	if err := os.WriteFile(filterFile, []byte(`{"cohort":{"partner":"mixpanel","id":"c1"}}`), 0o600); err != nil {
		t.Fatal(err)
	}

	r := run("segments", "create", "--name", "Churn", "--filter", "@"+filterFile)
	var created api.Segment
	if r.code != exitOK || json.Unmarshal([]byte(r.stdout), &created) != nil || created.ID == "" || created.Name != "Churn" {
		t.Fatalf("create: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	r = run("segments", "create", "--name", "Many", "--filter", `{"cohort":{"partner":"mixpanel","id":"many"}}`)
	var many api.Segment
	if r.code != exitOK || json.Unmarshal([]byte(r.stdout), &many) != nil {
		t.Fatalf("create many: %d %q", r.code, r.stderr)
	}

	r = run("segments", "list")
	if r.code != exitOK || !strings.Contains(r.stdout, created.ID) || !strings.Contains(r.stdout, "Churn") || !strings.HasPrefix(r.stdout, "ID") {
		t.Fatalf("list: %d %q %q", r.code, r.stdout, r.stderr)
	}
	r = run("segments", "get", created.ID)
	var got api.Segment
	if r.code != exitOK || json.Unmarshal([]byte(r.stdout), &got) != nil || got.Count == nil || *got.Count != 3 {
		t.Fatalf("get: %d %q %q", r.code, r.stdout, r.stderr)
	}

	r = run("segments", "evaluate", "--filter", `{"cohort":{"partner":"mixpanel","id":"c1"}}`, "--limit", "2")
	var page api.Page
	if r.code != exitOK || json.Unmarshal([]byte(r.stdout), &page) != nil || page.Count != 3 || !slices.Equal(page.Members, []string{"u1", "u2"}) || page.NextCursor == nil {
		t.Fatalf("evaluate: %d %q %q", r.code, r.stdout, r.stderr)
	}
	r = run("segments", "evaluate", "--filter", `{"cohort":{"partner":"mixpanel","id":"c1"}}`, "--limit", "2", "--cursor", *page.NextCursor)
	if r.code != exitOK || json.Unmarshal([]byte(r.stdout), &page) != nil || !slices.Equal(page.Members, []string{"u3"}) || page.NextCursor != nil {
		t.Fatalf("evaluate page 2: %d %q %q", r.code, r.stdout, r.stderr)
	}
	r = run("segments", "evaluate", "--filter", `{"cohort":{"partner":"mixpanel","id":"nope"}}`)
	if r.code != exitFailure || !strings.Contains(r.stderr, `unknown cohort "nope"`) || !strings.Contains(r.stderr, "/cohort/id") {
		t.Fatalf("evaluate unknown cohort: %d %q", r.code, r.stderr)
	}

	out := filepath.Join(dir, "members.csv")
	r = run("segments", "members", many.ID, "--format", "csv", "--output", out)
	data, err := os.ReadFile(out)
	if r.code != exitOK || err != nil {
		t.Fatalf("members csv: %d %q (%v)", r.code, r.stderr, err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) != 25_001 || lines[0] != "user_id" || lines[1] != "m100000" || lines[25_000] != "m124999" {
		t.Fatalf("csv has %d lines, first %q", len(lines), lines[0])
	}
	r = run("segments", "members", many.ID, "--format", "json")
	var all struct {
		Count   int64    `json:"count"`
		Members []string `json:"members"`
	}
	if r.code != exitOK || json.Unmarshal([]byte(r.stdout), &all) != nil || all.Count != 25_000 || len(all.Members) != 25_000 || all.Members[24_999] != "m124999" {
		t.Fatalf("members json: exit %d, %d members, stderr %q", r.code, len(all.Members), r.stderr)
	}
	// A failed export leaves no file behind.
	bad := filepath.Join(dir, "missing.csv")
	if r = run("segments", "members", "ffffffffffffffff", "--output", bad); r.code != exitFailure || !strings.Contains(r.stderr, "404") {
		t.Fatalf("members of a missing segment: %d %q", r.code, r.stderr)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 2 {
		t.Fatalf("files left in %s: %v", dir, entries)
	}

	r = run("segments", "explain", created.ID, "u2")
	var ans segments.Answer
	if r.code != exitOK || json.Unmarshal([]byte(r.stdout), &ans) != nil || !ans.Member || ans.UserID != "u2" {
		t.Fatalf("explain: %d %q %q", r.code, r.stdout, r.stderr)
	}
	if r = run("segments", "delete", created.ID); r.code != exitOK || r.stdout != "deleted "+created.ID+"\n" {
		t.Fatalf("delete: %d %q %q", r.code, r.stdout, r.stderr)
	}
	if r = run("segments", "get", created.ID); r.code != exitFailure || !strings.Contains(r.stderr, "404") {
		t.Fatalf("get after delete: %d %q", r.code, r.stderr)
	}
}

func TestDataPointsCLI(t *testing.T) {
	t.Parallel()
	srv, _ := newSegmentsServer(t)
	run := func(args ...string) result {
		t.Helper()
		return execute(t, testkit.Context(t, 10*time.Second), nil, nil, append(args, "--server", srv.URL, "--token", cliAdminToken)...)
	}
	r := run("datapoints", "--from", "2026-11-01", "--to", "2026-11-02")
	want := "         DAY  BILLABLE  TRANSITIONS\n  2026-11-01         7            5\n  2026-11-02         3            3\n       TOTAL        10            8\n"
	if r.code != exitOK || r.stdout != want {
		t.Fatalf("table: exit %d\n%s\nwant\n%s\nstderr %s", r.code, r.stdout, want, r.stderr)
	}
	r = run("datapoints", "--from", "2026-11-01", "--to", "2026-11-02", "--group-by", "cohort", "--format", "csv")
	if want := "partner,cohort_id,billable,transitions\nmixpanel,c1,9,4\nmixpanel,c2,1,1\n"; r.code != exitOK || r.stdout != want {
		t.Fatalf("csv: %d %q, want %q (%s)", r.code, r.stdout, want, r.stderr)
	}
	r = run("datapoints", "--from", "2026-11-01", "--to", "2026-11-01", "--format", "json")
	var dp api.DataPoints
	if r.code != exitOK || json.Unmarshal([]byte(r.stdout), &dp) != nil || len(dp.Rows) != 2 || dp.Rows[0].Billable != 7 {
		t.Fatalf("json: %d %q", r.code, r.stdout)
	}
	r = run("datapoints", "--from", "2026-11-03", "--to", "2026-11-02")
	if r.code != exitFailure || !strings.Contains(r.stderr, "from 2026-11-03 is after to 2026-11-02") {
		t.Fatalf("from after to: %d %q", r.code, r.stderr)
	}
}

func TestTokensCLI(t *testing.T) {
	t.Parallel()
	srv, tokens := newSegmentsServer(t)
	r := execute(t, testkit.Context(t, 10*time.Second), nil, nil, "tokens", "create", "--workspace", "acme", "--server", srv.URL, "--token", cliAdminToken, "--format", "json")
	var created adminauth.CreatedToken
	if r.code != exitOK || json.Unmarshal([]byte(r.stdout), &created) != nil || created.Workspace != "acme" {
		t.Fatalf("create: %d %q %q", r.code, r.stdout, r.stderr)
	}
	if tok, ok := tokens.Verify(created.Token); !ok || tok.ID != created.ID {
		t.Fatal("the printed token does not verify")
	}
	// The new token reaches its workspace, is refused elsewhere and cannot mint.
	r = execute(t, testkit.Context(t, 10*time.Second), nil, nil, "segments", "list", "--server", srv.URL, "--token", created.Token, "-w", "acme")
	if r.code != exitOK {
		t.Fatalf("list with the workspace token: %d %q", r.code, r.stderr)
	}
	r = execute(t, testkit.Context(t, 10*time.Second), nil, nil, "segments", "list", "--server", srv.URL, "--token", created.Token, "-w", "beta")
	if r.code != exitFailure || !strings.Contains(r.stderr, "404 Not Found: not found") {
		t.Fatalf("list of another workspace: %d %q", r.code, r.stderr)
	}
	r = execute(t, testkit.Context(t, 10*time.Second), nil, nil, "tokens", "create", "--workspace", "acme", "--server", srv.URL, "--token", created.Token)
	if r.code != exitFailure || !strings.Contains(r.stderr, "only the admin token can mint tokens") {
		t.Fatalf("mint with a workspace token: %d %q", r.code, r.stderr)
	}
}

func TestRemoteCommandUsageErrors(t *testing.T) {
	t.Parallel()
	srv := "http://127.0.0.1:1"
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no server", []string{"segments", "list", "--token", "t"}, exitUsage, "--server is required"},
		{"no token", []string{"segments", "list", "--server", srv}, exitUsage, "no token"},
		{"bad server url", []string{"segments", "list", "--server", "ftp://x", "--token", "t"}, exitUsage, "must look like http://host:port"},
		{"no filter", []string{"segments", "evaluate", "--server", srv, "--token", "t"}, exitUsage, "--filter is required"},
		{"filter not json", []string{"segments", "evaluate", "--filter", "{", "--server", srv, "--token", "t"}, exitUsage, "not valid JSON"},
		{"filter file missing", []string{"segments", "evaluate", "--filter", "@/nonexistent/f.json", "--server", srv, "--token", "t"}, exitFailure, "no such file"},
		{"bad as-of", []string{"segments", "evaluate", "--filter", "{}", "--as-of", "today", "--server", srv, "--token", "t"}, exitUsage, "--as-of \"today\""},
		{"create without name", []string{"segments", "create", "--filter", "{}", "--server", srv, "--token", "t"}, exitUsage, "--name is required"},
		{"members bad format", []string{"segments", "members", "x", "--format", "xlsx", "--server", srv, "--token", "t"}, exitUsage, "--format \"xlsx\""},
		{"explain one arg", []string{"segments", "explain", "x", "--server", srv, "--token", "t"}, exitUsage, "a segment ID and a USER_ID"},
		{"datapoints bad date", []string{"datapoints", "--from", "2026-1-1", "--server", srv, "--token", "t"}, exitUsage, "--from \"2026-1-1\""},
		{"datapoints bad group", []string{"datapoints", "--group-by", "week", "--server", srv, "--token", "t"}, exitUsage, "--group-by \"week\""},
		{"datapoints bad format", []string{"datapoints", "--format", "xml", "--server", srv, "--token", "t"}, exitUsage, "--format \"xml\""},
		{"tokens bad workspace", []string{"tokens", "create", "--workspace", "Not Valid", "--server", srv, "--token", "t"}, exitUsage, "--workspace \"Not Valid\""},
		{"server down", []string{"segments", "list", "--server", srv, "--token", "t"}, exitFailure, "connection refused"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := execute(t, testkit.Context(t, 10*time.Second), nil, nil, tt.args...)
			if r.code != tt.code || !strings.Contains(r.stderr, tt.want) {
				t.Fatalf("exit %d stderr %q; want exit %d and %q", r.code, r.stderr, tt.code, tt.want)
			}
		})
	}
}
