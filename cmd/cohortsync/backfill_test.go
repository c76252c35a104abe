package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync/config"
	"github.com/cohortsync/cohortsync/connectors/backfill"
	"github.com/cohortsync/cohortsync/demo"
	"github.com/cohortsync/cohortsync/service"
	"github.com/cohortsync/cohortsync/sinks/state"
)

// outcome is a workspace's state as the acceptance compares it.
type outcome struct {
	Members               map[string][]string // cohort id → members
	Billable, Transitions int64
}

func readOutcome(t *testing.T, dir string, cohorts []string) outcome {
	t.Helper()
	st, err := state.Open(state.DefaultConfig(dir), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	o := outcome{Members: map[string][]string{}}
	for _, c := range cohorts {
		m, err := st.Members(service.FirstWorkspace, "mixpanel", c)
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(m)
		o.Members[c] = m
	}
	rows, err := st.DataPoints(service.FirstWorkspace, time.Time{}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		o.Billable += r.Billable
		o.Transitions += r.Effective
	}
	return o
}

func (o outcome) diff(want outcome) string {
	var out []string
	for c, m := range want.Members {
		if !slices.Equal(o.Members[c], m) {
			out = append(out, fmt.Sprintf("cohort %s: %d members, want %d", c, len(o.Members[c]), len(m)))
		}
	}
	if o.Billable != want.Billable || o.Transitions != want.Transitions {
		out = append(out, fmt.Sprintf("data points billable=%d transitions=%d, want %d and %d", o.Billable, o.Transitions, want.Billable, want.Transitions))
	}
	return strings.Join(out, "; ")
}

// serveFor runs the service on dir until the test ends or stop is called.
func serveFor(t *testing.T, dir, admin string) (addr string, stop func()) {
	t.Helper()
	cfg := config.Default()
	cfg.Embedded.KafkaAddr = "127.0.0.1:0" // tests run in parallel: any free port
	cfg.DataDir, cfg.HTTPAddr, cfg.AdminToken = dir, "127.0.0.1:0", admin
	cfg.Kafka.Partitions = 2
	ctx, cancel := context.WithCancel(context.Background())
	ready, done := make(chan string, 1), make(chan error, 1)
	go func() {
		done <- service.Run(ctx, cfg, slog.New(slog.DiscardHandler), service.Options{Out: io.Discard, Ready: func(a string) { ready <- a }})
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				t.Error("service did not stop")
			}
		})
	}
	t.Cleanup(stop)
	select {
	case addr = <-ready:
	case err := <-done:
		t.Fatalf("service: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("service not ready")
	}
	return addr, stop
}

func writeLines(t *testing.T, path string, lines []string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

// identitiesFile writes the plan's identity records as NDJSON.
func identitiesFile(t *testing.T, dir string, plan demo.Plan) string {
	t.Helper()
	var lines []string
	for _, r := range plan.Identities {
		raw, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, string(raw))
	}
	path := filepath.Join(dir, "identities.ndjson")
	writeLines(t, path, lines)
	return path
}

// exportFiles writes what the plan's syncs sent, in the order sent, as
// partner API bodies (NDJSON) and as CSV rows.
func exportFiles(t *testing.T, dir string, plan demo.Plan, cfg demo.Config) (ndjson, csv string) {
	t.Helper()
	var bodies []string
	rows := []string{"workspace,partner,cohort_id,id_kind,id,action,event_time"}
	for _, co := range plan.Cohorts {
		raw, _ := json.Marshal(map[string]string{"cohort_id": co.ID, "name": co.Name, "created_at": "2026-11-01T00:00:00Z", "client_secret": "csk_never_logged"})
		bodies = append(bodies, string(raw))
	}
	at := time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC)
	n := 0
	for _, round := range plan.Rounds {
		for _, s := range round {
			for _, req := range s.Sent() {
				n++
				ts := at.Add(time.Duration(n) * time.Second).Format(time.RFC3339)
				var b map[string]any
				raw, _ := json.Marshal(req)
				_ = json.Unmarshal(raw, &b)
				b["event_time"] = ts
				raw, _ = json.Marshal(b)
				bodies = append(bodies, string(raw))
				for _, ch := range req.Changes {
					action := "add"
					if ch.ShouldRemove {
						action = "remove"
					}
					row := func(kind, id string) {
						rows = append(rows, strings.Join([]string{cfg.Workspace, cfg.Partner, req.CohortID, kind, id, action, ts}, ","))
					}
					for _, id := range ch.UserIDs {
						row("external_id", id)
					}
					for _, id := range ch.DeviceIDs {
						row("device_id", id)
					}
					for _, a := range ch.Aliases {
						row("alias", a.Label+":"+a.Name)
					}
				}
			}
		}
	}
	// Lines the import rules refuse, by line number, and one too old to keep.
	bodies = append(bodies, `{"cohort_id": 7}`, `not json`)
	rows = append(rows, "default,mixpanel,x,passport,p1,add,2026-11-02T00:00:00Z", strings.Join([]string{cfg.Workspace, cfg.Partner, plan.Cohorts[0].ID, "external_id", "nobody", "add", "2009-12-31T23:59:59Z"}, ","))
	ndjson, csv = filepath.Join(dir, "sync.ndjson"), filepath.Join(dir, "sync.csv")
	writeLines(t, ndjson, bodies)
	writeLines(t, csv, rows)
	return ndjson, csv
}

// TestBackfillFromFilesReachesTheStreamState is the backfill acceptance test for
// files: the same Mixpanel-style syncs, once pushed through the partner API
// of a running service and once backfilled from NDJSON bodies and from CSV
// into fresh data directories, end in the same membership and data points;
// a second run changes nothing; an interrupted run resumes and ends the same.
func TestBackfillFromFilesReachesTheStreamState(t *testing.T) {
	t.Parallel()
	dcfg := demo.DefaultConfig()
	dcfg.Users, dcfg.Rounds, dcfg.Interval, dcfg.Seed, dcfg.Prefix, dcfg.BatchSize = 400, 3, 0, 5, "bf", 40
	plan := demo.NewPlan(dcfg)
	var cohorts []string
	for _, co := range plan.Cohorts {
		cohorts = append(cohorts, co.ID)
	}
	const admin = "cst_backfill-acceptance-admin"
	work := t.TempDir()

	// The stream's state: the demo pushes the plan through the partner API.
	streamDir := filepath.Join(work, "stream")
	addr, stop := serveFor(t, streamDir, admin)
	rcfg := dcfg
	rcfg.Server, rcfg.Token, rcfg.Wait = "http://"+addr, admin, 60*time.Second
	rcfg.PartnerAPIKey = partnerKey(t, streamDir)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	// Parallel subtests run after this function returns.
	t.Cleanup(cancel)
	if _, err := demo.Run(ctx, rcfg, demo.Options{}); err != nil {
		t.Fatalf("demo: %v", err)
	}
	stop()
	want := readOutcome(t, streamDir, cohorts)
	exp := plan.Expect()
	if want.Billable != exp.Billable || len(want.Members[cohorts[0]]) != len(exp.Final[0]) {
		t.Fatalf("the stream reached billable=%d, %d members; the plan says %d, %d", want.Billable, len(want.Members[cohorts[0]]), exp.Billable, len(exp.Final[0]))
	}

	ids := identitiesFile(t, work, plan)
	ndjson, csv := exportFiles(t, work, plan, dcfg)
	for _, tc := range []struct {
		name, path       string
		badLines, tooOld int64
	}{{"ndjson", ndjson, 2, 0}, {"csv", csv, 1, 1}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := filepath.Join(work, tc.name)
			env := map[string]string{}
			if r := execute(t, ctx, env, nil, "identities", "load", ids, "--data-dir", dir); r.code != exitOK {
				t.Fatalf("identities load: %d %s %s", r.code, r.stdout, r.stderr)
			}
			args := []string{"backfill", "--from", "file", tc.path, "--data-dir", dir, "--format", "json"}
			r := execute(t, ctx, env, nil, args...)
			if r.code != exitOK {
				t.Fatalf("backfill: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
			}
			var sum struct {
				BadLines   int64            `json:"bad_lines"`
				DataPoints int64            `json:"data_points"`
				Dropped    map[string]int64 `json:"dropped"`
			}
			if err := json.Unmarshal([]byte(r.stdout), &sum); err != nil {
				t.Fatalf("summary: %v\n%s", err, r.stdout)
			}
			if sum.BadLines != tc.badLines || sum.DataPoints != exp.Billable || sum.Dropped["retention"] != tc.tooOld {
				t.Errorf("summary %s: want %d bad lines, %d data points, %d ids dropped by retention", r.stdout, tc.badLines, exp.Billable, tc.tooOld)
			}
			if d := readOutcome(t, dir, cohorts).diff(want); d != "" {
				t.Fatalf("after the backfill: %s", d)
			}
			// Again: the run is complete, so it says so and lands nothing.
			if r := execute(t, ctx, env, nil, args...); r.code != exitOK || !strings.Contains(r.stdout, `"already_complete": true`) {
				t.Fatalf("second backfill: exit %d, want already_complete\n%s\n%s", r.code, r.stdout, r.stderr)
			}
			// --restart lands it again: same records, same ids, nothing changes.
			if r := execute(t, ctx, env, nil, append(args, "--restart")...); r.code != exitOK || strings.Contains(r.stdout, "already_complete") {
				t.Fatalf("restarted backfill: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
			}
			if d := readOutcome(t, dir, cohorts).diff(want); d != "" {
				t.Fatalf("after the restarted backfill: %s", d)
			}
		})
	}
	t.Run("replay from kafka", func(t *testing.T) {
		t.Parallel()
		// The live path applied everything already: replaying it through the
		// same transforms and sinks must change neither state nor totals.
		args := []string{"backfill", "--from", "kafka", "--since", "2000-01-01T00:00:00Z", "--data-dir", streamDir, "--format", "json"}
		r := execute(t, ctx, nil, nil, append(args, "--dry-run")...)
		var sum struct {
			Read        int64 `json:"read"`
			Replayed    int64 `json:"replayed"`
			DataPoints  int64 `json:"data_points"`
			Transitions int64 `json:"transitions"`
			Complete    bool  `json:"complete"`
		}
		if r.code != exitOK || json.Unmarshal([]byte(r.stdout), &sum) != nil || sum.Read == 0 {
			t.Fatalf("dry run: exit %d %s %s", r.code, r.stdout, r.stderr)
		}
		records := sum.Read
		r = execute(t, ctx, nil, nil, args...)
		if r.code != exitOK {
			t.Fatalf("replay: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
		}
		// Every assignment went through the sinks again, and none of them
		// was new: no data point, no membership change.
		if err := json.Unmarshal([]byte(r.stdout), &sum); err != nil || sum.Read != records || !sum.Complete || sum.Replayed != exp.Billable || sum.DataPoints != 0 || sum.Transitions != 0 {
			t.Fatalf("replay summary %s: want %d records read, complete, %d assignments replayed, 0 new data points, 0 membership changes", r.stdout, records, exp.Billable)
		}
		if d := readOutcome(t, streamDir, cohorts).diff(want); d != "" {
			t.Fatalf("after the replay: %s", d)
		}
		// A window that ends before the first record replays nothing.
		r = execute(t, ctx, nil, nil, "backfill", "--from", "kafka", "--since", "2000-01-01T00:00:00Z", "--until", "2000-01-02T00:00:00Z", "--data-dir", streamDir, "--format", "json")
		if r.code != exitOK || json.Unmarshal([]byte(r.stdout), &sum) != nil || sum.Read != 0 {
			t.Fatalf("empty window: exit %d %s %s", r.code, r.stdout, r.stderr)
		}
	})
	t.Run("through a running server", func(t *testing.T) {
		t.Parallel()
		dir := filepath.Join(work, "served")
		addr, stop := serveFor(t, dir, admin)
		base := "http://" + addr
		env := map[string]string{"COHORTSYNC_ADMIN_TOKEN": admin}
		if r := execute(t, ctx, env, nil, "identities", "load", ids, "--server", base); r.code != exitOK {
			t.Fatalf("identities load: %d %s %s", r.code, r.stdout, r.stderr)
		}
		// The server holds dir: the commands README prints work as printed,
		// through the server, with no --server and no token.
		var sum struct {
			Landed     int64 `json:"landed"`
			DataPoints int64 `json:"data_points"`
			DryRun     bool  `json:"dry_run"`
		}
		r := execute(t, ctx, nil, nil, "backfill", "--from", "file", csv, "--data-dir", dir, "--dry-run", "--format", "json")
		if r.code != exitOK || json.Unmarshal([]byte(r.stdout), &sum) != nil || !sum.DryRun || !strings.Contains(r.stderr, "working through it") {
			t.Fatalf("dry run on a held data dir: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
		}
		wouldLand, wouldBill := sum.Landed, sum.DataPoints
		r = execute(t, ctx, nil, nil, "backfill", "--from", "file", csv, "--data-dir", dir, "--format", "json")
		if r.code != exitOK || json.Unmarshal([]byte(r.stdout), &sum) != nil {
			t.Fatalf("backfill on a held data dir: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
		}
		if wouldLand == 0 || sum.Landed != wouldLand || sum.DataPoints != wouldBill {
			t.Fatalf("the dry run said %d records and %d data points; the run landed %d with %d", wouldLand, wouldBill, sum.Landed, sum.DataPoints)
		}
		// A replay needs the sinks the server holds: it says so once, and
		// its dry run still counts the window.
		r = execute(t, ctx, nil, nil, "backfill", "--from", "kafka", "--since", "2000-01-01T00:00:00Z", "--data-dir", dir)
		if r.code != exitUsage || !strings.Contains(r.stderr, "cannot go through a server") || strings.Contains(r.stderr, "add --server") {
			t.Fatalf("replay on a held data dir: exit %d, %s", r.code, r.stderr)
		}
		r = execute(t, ctx, nil, nil, "backfill", "--from", "kafka", "--since", "2000-01-01T00:00:00Z", "--data-dir", dir, "--dry-run")
		if r.code != exitOK || !strings.Contains(r.stdout, "would replay") {
			t.Fatalf("replay dry run on a held data dir: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
		}
		// The same file through --server from another data directory lands
		// the same record ids again: nothing more is billed.
		r = execute(t, ctx, env, nil, "backfill", "--from", "file", csv, "--server", base, "--data-dir", filepath.Join(work, "client"))
		if r.code != exitOK {
			t.Fatalf("backfill through the server: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
		}
		// The server applies what landed on its own: wait for every
		// billable data point (the CSV's event days are its billing days).
		for {
			r := execute(t, ctx, env, nil, "datapoints", "--server", base, "--from", "2026-11-01", "--to", "2026-11-03", "--format", "json")
			var rep struct {
				Rows []struct {
					Billable int64 `json:"billable"`
				} `json:"rows"`
			}
			var billable int64
			if r.code == exitOK && json.Unmarshal([]byte(r.stdout), &rep) == nil {
				for _, row := range rep.Rows {
					billable += row.Billable
				}
			}
			if billable == want.Billable {
				break
			}
			select {
			case <-ctx.Done():
				t.Fatalf("data points never arrived: %s %s", r.stdout, r.stderr)
			case <-time.After(100 * time.Millisecond):
			}
		}
		stop()
		if d := readOutcome(t, dir, cohorts).diff(want); d != "" {
			t.Fatalf("after the backfill through the server: %s", d)
		}
	})
	t.Run("interrupted", func(t *testing.T) {
		t.Parallel()
		dir := filepath.Join(work, "interrupted")
		if r := execute(t, ctx, nil, nil, "identities", "load", ids, "--data-dir", dir); r.code != exitOK {
			t.Fatalf("identities load: %d %s", r.code, r.stderr)
		}
		args := []string{"backfill", "--from", "file", csv, "--data-dir", dir, "--batch", "1", "--format", "json"}
		runCtx, stopRun := context.WithCancel(ctx)
		done := make(chan result, 1)
		go func() { done <- execute(t, runCtx, nil, nil, args...) }()
		// Stop it once a few batches are checkpointed.
		waitCheckpoint(t, ctx, filepath.Join(dir, "backfill"), 5)
		stopRun()
		r := <-done
		if r.code == exitOK || !strings.Contains(r.stderr, "resume") {
			t.Fatalf("an interrupted run must fail and say how to resume: exit %d\n%s", r.code, r.stderr)
		}
		r = execute(t, ctx, nil, nil, args...)
		if r.code != exitOK {
			t.Fatalf("resumed backfill: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
		}
		var sum struct {
			Resumed    int64 `json:"resumed"`
			DataPoints int64 `json:"data_points"`
		}
		if err := json.Unmarshal([]byte(r.stdout), &sum); err != nil {
			t.Fatal(err)
		}
		if sum.Resumed == 0 || sum.DataPoints != exp.Billable {
			t.Errorf("resumed summary %s: want records resumed and %d data points", r.stdout, exp.Billable)
		}
		if d := readOutcome(t, dir, cohorts).diff(want); d != "" {
			t.Fatalf("after the resumed backfill: %s", d)
		}
	})
}

// partnerKey reads the mixpanel partner_api_key the first start wrote.
func partnerKey(t *testing.T, dir string) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, "bootstrap.json"))
	if err != nil {
		t.Fatal(err)
	}
	var b struct {
		Partners map[string]string `json:"partner_api_keys"`
	}
	if err := json.Unmarshal(raw, &b); err != nil || b.Partners["mixpanel"] == "" {
		t.Fatalf("bootstrap.json: %v %s", err, raw)
	}
	return b.Partners["mixpanel"]
}

// waitCheckpoint waits until a checkpoint in dir records at least n landed
// records of an unfinished run.
func waitCheckpoint(t *testing.T, ctx context.Context, dir string, n int64) {
	t.Helper()
	for {
		paths, _ := filepath.Glob(filepath.Join(dir, "*.json"))
		for _, p := range paths {
			raw, err := os.ReadFile(p)
			if err != nil {
				continue
			}
			var cp struct {
				Summary struct {
					Landed   int64
					Complete bool
				}
			}
			if json.Unmarshal(raw, &cp) == nil && cp.Summary.Landed >= n && !cp.Summary.Complete {
				return
			}
		}
		select {
		case <-ctx.Done():
			t.Fatal("no checkpoint appeared")
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// fakeEngage answers POST /api/query/engage in the documented shape, pages
// of pageSize, with one 500 and one 429 on the first pull.
type fakeEngage struct {
	mu       sync.Mutex
	members  []map[string]any
	pageSize int
	requests int
	failed   bool
}

func (f *fakeEngage) set(members []map[string]any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.members = members
}

func (f *fakeEngage) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if user, pass, ok := r.BasicAuth(); !ok || user != "sa-user" || pass != "sa-secret" || r.URL.Path != "/api/query/engage" || r.URL.Query().Get("project_id") != "4242" {
		http.Error(w, `{"error":"Invalid service account credentials","status":"error"}`, http.StatusUnauthorized)
		return
	}
	if err := r.ParseForm(); err != nil || (r.PostForm.Get("filter_by_cohort") != `{"id":777}` && r.PostForm.Get("filter_by_cohort") != `{"id":"777"}`) {
		http.Error(w, `{"error":"bad filter","status":"error"}`, http.StatusBadRequest)
		return
	}
	page, _ := strconv.Atoi(r.PostForm.Get("page"))
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests++
	if !f.failed && page == 1 {
		f.failed = true
		http.Error(w, `{"error":"internal","status":"error"}`, http.StatusInternalServerError)
		return
	}
	if f.requests == 4 {
		w.Header().Set("Retry-After", "1")
		http.Error(w, `{"error":"rate limited","status":"error"}`, http.StatusTooManyRequests)
		return
	}
	lo := min(page*f.pageSize, len(f.members))
	hi := min(lo+f.pageSize, len(f.members))
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"page": page, "page_size": f.pageSize, "results": f.members[lo:hi],
		"session_id": "sess-1", "status": "ok", "total": len(f.members),
	})
}

// profiles makes the Engage profiles of users (by index into the plan's
// identities): identified users by $user_id, anonymous ones by device.
func profiles(plan demo.Plan, users []int) (out []map[string]any, members []string) {
	for _, i := range users {
		r := plan.Identities[i]
		switch {
		case r.ExternalID != "":
			out = append(out, map[string]any{"$distinct_id": r.ExternalID, "$properties": map[string]any{"$user_id": r.ExternalID}})
		case len(r.DeviceIDs) > 0:
			out = append(out, map[string]any{"$distinct_id": "$device:" + r.DeviceIDs[0], "$properties": map[string]any{}})
		default:
			continue
		}
		members = append(members, r.UserID)
	}
	slices.Sort(members)
	return out, members
}

// TestBackfillFromMixpanel is the backfill acceptance test for the Engage API: a
// fresh workspace reaches the cohort's member list (what a stream of the
// same adds reaches), a second run lands nothing, and a changed list lands
// only the difference.
func TestBackfillFromMixpanel(t *testing.T) {
	t.Parallel()
	dcfg := demo.DefaultConfig()
	dcfg.Users, dcfg.Seed, dcfg.Prefix = 300, 9, "mp"
	plan := demo.NewPlan(dcfg)
	fake := &fakeEngage{pageSize: 50}
	srv := httptest.NewServer(fake)
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	work := t.TempDir()
	dir := filepath.Join(work, "data")
	if r := execute(t, ctx, nil, nil, "identities", "load", identitiesFile(t, work, plan), "--data-dir", dir); r.code != exitOK {
		t.Fatalf("identities load: %d %s", r.code, r.stderr)
	}
	env := map[string]string{"COHORTSYNC_MIXPANEL_USERNAME": "sa-user", "COHORTSYNC_MIXPANEL_SECRET": "sa-secret"}
	args := []string{"backfill", "--from", "mixpanel", "--project-id", "4242", "--cohort-id", "777", "--mixpanel-url", srv.URL, "--data-dir", dir, "--format", "json"}
	run := func() (landed, dataPoints int64) {
		t.Helper()
		r := execute(t, ctx, env, nil, args...)
		if r.code != exitOK {
			t.Fatalf("backfill: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
		}
		var sum struct {
			Landed     int64 `json:"landed"`
			DataPoints int64 `json:"data_points"`
		}
		if err := json.Unmarshal([]byte(r.stdout), &sum); err != nil {
			t.Fatalf("summary: %v\n%s", err, r.stdout)
		}
		return sum.Landed, sum.DataPoints
	}
	check := func(members []string, billable int64) {
		t.Helper()
		o := readOutcome(t, dir, []string{"777"})
		if !slices.Equal(o.Members["777"], members) || o.Billable != billable {
			t.Fatalf("state: %d members (want %d), billable %d (want %d)", len(o.Members["777"]), len(members), o.Billable, billable)
		}
	}

	var first []int
	for i := range 180 {
		first = append(first, i)
	}
	list, m1 := profiles(plan, first)
	fake.set(list)
	if landed, dp := run(); landed == 0 || dp != int64(len(m1)) {
		t.Fatalf("first pull: landed %d records, %d data points; want %d adds", landed, dp, len(m1))
	}
	check(m1, int64(len(m1)))
	if !fake.failed {
		t.Fatal("the fake never failed: the retry path was not exercised")
	}

	if landed, dp := run(); landed != 0 || dp != 0 {
		t.Fatalf("second pull of the same list: landed %d, %d data points; want nothing", landed, dp)
	}
	check(m1, int64(len(m1)))

	// 30 leave, 40 join.
	second := append(slices.Clone(first[30:]), []int{200, 201, 202, 203, 204, 205, 206, 207, 208, 209, 210, 211, 212, 213, 214, 215, 216, 217, 218, 219, 220, 221, 222, 223, 224, 225, 226, 227, 228, 229, 230, 231, 232, 233, 234, 235, 236, 237, 238, 239}...)
	list, m2 := profiles(plan, second)
	fake.set(list)
	changed := int64(0)
	for _, u := range m1 {
		if _, ok := slices.BinarySearch(m2, u); !ok {
			changed++
		}
	}
	for _, u := range m2 {
		if _, ok := slices.BinarySearch(m1, u); !ok {
			changed++
		}
	}
	if _, dp := run(); dp != changed {
		t.Fatalf("changed list: %d data points, want %d (only the difference)", dp, changed)
	}
	check(m2, int64(len(m1))+changed)
}

// TestPrintSummaryShowsEveryDrop: whole records a transform dropped
// (retention) are in the table next to refused ids, and a replay says what it
// changed rather than how many assignments passed through.
func TestPrintSummaryShowsEveryDrop(t *testing.T) {
	t.Parallel()
	var out strings.Builder
	sum := backfill.Summary{RunID: "r1", Read: 40, Replay: true, Replayed: 4329, Complete: true}
	sum.DataPoints, sum.Transitions = 2, 2
	sum.Dropped = map[string]int64{"unknown_user": 3, "decode": 4}
	sum.DroppedRecords = map[string]int64{"retention": 5, "decode": 2}
	if err := printSummary(&out, "table", sum, ""); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"replayed", "40 records", "4329 re-applied", "2 new billable", "membership changes     2", "dropped: unknown_user  3 ids", "dropped: retention     5 records", "dropped: decode        4 ids in 2 whole records"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	if err := printSummary(&out, "table", backfill.Summary{RunID: "r2", Read: 5, DryRun: true, Outcome: backfill.Outcome{Landed: 5}}, ""); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "would land   5 records") {
		t.Errorf("dry run summary:\n%s", out.String())
	}
}
