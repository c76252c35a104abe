package mixpanel

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync/stores/identities"
)

// Benchmark shape: 100k pulled profiles (half identified, half anonymous)
// against 100k current members, of whom 90k are pulled again: 10k adds,
// 10k removes, 90k unchanged. The directory holds 110k users.
const (
	benchProfiles = 100_000
	benchStayers  = 90_000
)

func benchUser(i int) string {
	if i%2 == 0 {
		return fmt.Sprintf("ui-%07d", i)
	}
	return fmt.Sprintf("ua-%07d", i)
}

type benchFixture struct {
	idx      *identities.Index
	profiles []Profile
	current  []string
}

func newBenchFixture(b *testing.B) benchFixture {
	b.Helper()
	idx, err := identities.OpenIndex(filepath.Join(b.TempDir(), identities.FileName), identities.IndexOptions{Topic: "ids"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = idx.Close() })
	total := benchProfiles + (benchProfiles - benchStayers) // pulled users + users only current
	var msgs []identities.Message
	for i := range total {
		r := identities.Record{UserID: benchUser(i)}
		if i%2 == 0 {
			r.ExternalID = fmt.Sprintf("ext-%07d", i)
		} else {
			r.DeviceIDs = []string{fmt.Sprintf("dev-%07d", i)}
		}
		v, err := identities.EncodeValue("acme", r)
		if err != nil {
			b.Fatal(err)
		}
		msgs = append(msgs, identities.Message{Offset: int64(i), Key: identities.MessageKey("acme", r.UserID), Value: v})
		// Small transactions, as the tail writes them: bbolt splits its
		// nodes only at commit, so one huge transaction is quadratic.
		if len(msgs) == 5000 || i == total-1 {
			if _, err := idx.Apply(0, msgs, 0); err != nil {
				b.Fatal(err)
			}
			msgs = msgs[:0]
		}
	}
	f := benchFixture{idx: idx}
	for i := range benchProfiles {
		if i%2 == 0 {
			f.profiles = append(f.profiles, Profile{DistinctID: fmt.Sprintf("ext-%07d", i), ExternalID: fmt.Sprintf("ext-%07d", i)})
		} else {
			f.profiles = append(f.profiles, Profile{DistinctID: fmt.Sprintf("$device:dev-%07d", i), DeviceID: fmt.Sprintf("dev-%07d", i)})
		}
	}
	// Current: the first 90k pulled users, and 10k who are not pulled.
	for i := range benchStayers {
		f.current = append(f.current, benchUser(i))
	}
	for i := benchProfiles; i < total; i++ {
		f.current = append(f.current, benchUser(i))
	}
	return f
}

func (f benchFixture) currentMembers(_ context.Context, fn func(string) error) error {
	for _, u := range f.current {
		if err := fn(u); err != nil {
			return err
		}
	}
	return nil
}

func checkBenchPlan(b *testing.B, p Plan) {
	if p.Pulled != benchProfiles || p.Adds != benchProfiles-benchStayers || p.Removes != benchProfiles-benchStayers ||
		p.Unchanged != benchStayers || len(p.Skipped) != 0 {
		b.Fatalf("plan: pulled %d adds %d removes %d unchanged %d skipped %v", p.Pulled, p.Adds, p.Removes, p.Unchanged, p.Skipped)
	}
}

func reportBench(b *testing.B, start time.Time, before runtime.MemStats) {
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	secs := time.Since(start).Seconds()
	b.ReportMetric(float64(b.N)*benchProfiles/secs, "profiles/s")
	b.ReportMetric(float64(after.TotalAlloc-before.TotalAlloc)/float64(b.N)/benchProfiles, "B/profile")
}

// BenchmarkPlanResolveDiff is the planner alone: resolving 100k profiles in
// batches against the directory, reading 100k current members, diffing,
// addressing the removes and building the records.
//
//	go test -run '^$' -bench PlanResolveDiff -benchmem ./connectors/mixpanel
func BenchmarkPlanResolveDiff(b *testing.B) {
	f := newBenchFixture(b)
	req := PlanRequest{Workspace: "acme", Partner: "mixpanel", CohortID: "1", CreatedAt: time.Date(2026, 11, 3, 0, 0, 0, 0, time.UTC)}
	ctx := context.Background()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	start := time.Now()
	for b.Loop() {
		p := &planner{req: req, dir: f.idx, state: map[string]uint8{}, plan: Plan{Request: req, Skipped: map[string]int{}}}
		for _, pr := range f.profiles {
			if err := p.addProfile(pr); err != nil {
				b.Fatal(err)
			}
		}
		if err := p.flush(); err != nil {
			b.Fatal(err)
		}
		if err := f.currentMembers(ctx, func(u string) error { p.state[u] |= stateCurrent; return nil }); err != nil {
			b.Fatal(err)
		}
		if err := p.diff(ctx); err != nil {
			b.Fatal(err)
		}
		checkBenchPlan(b, p.plan)
	}
	reportBench(b, start, before)
}

// BenchmarkPlanSync is the whole PlanSync, pulling the 100k profiles as 100
// pages of 1,000 from a local server that answers pre-encoded pages, so
// that the figure is the client's decoding plus the planner.
//
//	go test -run '^$' -bench 'PlanSync$' -benchmem ./connectors/mixpanel
func BenchmarkPlanSync(b *testing.B) {
	f := newBenchFixture(b)
	var pages [][]byte
	for start := 0; start <= len(f.profiles); start += MaxPageSize {
		results := []map[string]any{}
		for _, pr := range f.profiles[start:min(start+MaxPageSize, len(f.profiles))] {
			props := map[string]any{}
			if pr.ExternalID != "" {
				props[PropUserID] = pr.ExternalID
			}
			results = append(results, map[string]any{"$distinct_id": pr.DistinctID, "$properties": props})
		}
		body, err := json.Marshal(map[string]any{"page": len(pages), "page_size": MaxPageSize, "results": results,
			"session_id": "bench", "status": "ok", "total": len(f.profiles)})
		if err != nil {
			b.Fatal(err)
		}
		pages = append(pages, body)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		page, err := strconv.Atoi(r.FormValue("page"))
		if err != nil || page < 0 || page >= len(pages) {
			http.Error(w, `{"error":"bad page"}`, http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(pages[page])
	}))
	b.Cleanup(srv.Close)
	cfg := DefaultConfig()
	cfg.BaseURL, cfg.Username, cfg.Secret, cfg.ProjectID = srv.URL, "u", "s", "1"
	// The quota holds at 60 an hour, on a clock that jumps instead of
	// waiting: the benchmark measures work, not the quota.
	var mu sync.Mutex
	clock := time.Date(2026, 11, 3, 0, 0, 0, 0, time.UTC)
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	sleep := func(ctx context.Context, d time.Duration) error {
		mu.Lock()
		defer mu.Unlock()
		clock = clock.Add(d)
		return ctx.Err()
	}
	c, err := New(cfg, Options{HTTPClient: srv.Client(), Now: now, Sleep: sleep})
	if err != nil {
		b.Fatal(err)
	}
	req := PlanRequest{Workspace: "acme", Partner: "mixpanel", CohortID: "1", CreatedAt: time.Date(2026, 11, 3, 0, 0, 0, 0, time.UTC)}
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	start := time.Now()
	for b.Loop() {
		p, err := PlanSync(context.Background(), c, req, f.idx, f.currentMembers)
		if err != nil {
			b.Fatal(err)
		}
		checkBenchPlan(b, p)
	}
	reportBench(b, start, before)
}
