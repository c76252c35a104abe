package mixpanel_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cohortsync/cohortsync/connectors/mixpanel"
	"github.com/cohortsync/cohortsync/internal/testkit"
)

const (
	testUser    = "svc-cohortsync.123.mp-service-account"
	testSecret  = "s3cr3t"
	testProject = "4242"
	testCohort  = "1150561"
	testSession = "1689875040-engagetask"
)

// fakeClock is the clock of a test: Sleep moves it forward at once.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	sleeps []time.Duration
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 11, 3, 9, 0, 0, 0, time.UTC)}
}

func (f *fakeClock) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *fakeClock) Sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = f.now.Add(d)
	f.sleeps = append(f.sleeps, d)
	return nil
}

func (f *fakeClock) Sleeps() []time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Duration(nil), f.sleeps...)
}

// request is what the fake Engage API saw of one request.
type request struct {
	page    int
	session string
	at      time.Time
}

// fakeEngage answers POST /api/query/engage in the documented shape,
// checking every request the way Mixpanel would, and failing the test on a
// request Mixpanel would refuse.
type fakeEngage struct {
	t        *testing.T
	clock    *fakeClock
	members  []map[string]any // results, in order
	pageSize int
	// fail, when set, may answer request n (1-based) itself.
	fail func(w http.ResponseWriter, r *http.Request, n, page int) bool
	// extraProp is the configured identity property expected in output_properties.
	extraProp string

	mu       sync.Mutex
	requests []request
}

func (f *fakeEngage) Requests() []request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]request(nil), f.requests...)
}

func (f *fakeEngage) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	t := f.t
	if r.Method != http.MethodPost || r.URL.Path != "/api/query/engage" {
		t.Errorf("request %s %s, want POST /api/query/engage", r.Method, r.URL.Path)
		http.Error(w, `{"error":"not found"}`, http.StatusNotFound)
		return
	}
	if got := r.URL.Query().Get("project_id"); got != testProject {
		t.Errorf("project_id %q, want %q", got, testProject)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/x-www-form-urlencoded" {
		t.Errorf("Content-Type %q", ct)
	}
	user, pass, ok := r.BasicAuth()
	if !ok || user != testUser || pass != testSecret {
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"error": "Invalid service account credentials", "status": "error"}`))
		return
	}
	if err := r.ParseForm(); err != nil {
		t.Errorf("form: %v", err)
	}
	if got := r.PostForm.Get("filter_by_cohort"); got != `{"id":`+testCohort+`}` {
		t.Errorf("filter_by_cohort %q", got)
	}
	var props []string
	if err := json.Unmarshal([]byte(r.PostForm.Get("output_properties")), &props); err != nil {
		t.Errorf("output_properties %q is not a JSON array of strings: %v", r.PostForm.Get("output_properties"), err)
	}
	want := []string{"$braze_external_id", "$user_id", "$device_id"}
	if f.extraProp != "" {
		want = append(want, f.extraProp)
	}
	if !reflect.DeepEqual(props, want) {
		t.Errorf("output_properties %v, want %v", props, want)
	}
	if got := r.PostForm.Get("include_all_users"); got != "true" {
		t.Errorf("include_all_users %q", got)
	}
	page, err := strconv.Atoi(r.PostForm.Get("page"))
	if err != nil || page < 0 {
		t.Errorf("page %q", r.PostForm.Get("page"))
	}
	session := r.PostForm.Get("session_id")
	if page > 0 && session != testSession {
		t.Errorf("page %d with session_id %q, want %q", page, session, testSession)
	}
	if page == 0 && session != "" {
		t.Errorf("page 0 sent session_id %q", session)
	}
	f.mu.Lock()
	f.requests = append(f.requests, request{page: page, session: session, at: f.clock.Now()})
	n := len(f.requests)
	f.mu.Unlock()
	if f.fail != nil && f.fail(w, r, n, page) {
		return
	}
	lo := min(page*f.pageSize, len(f.members))
	hi := min(lo+f.pageSize, len(f.members))
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"page": page, "page_size": f.pageSize, "results": f.members[lo:hi],
		"session_id": testSession, "status": "ok", "total": len(f.members),
	})
}

func member(distinct any, props map[string]any) map[string]any {
	return map[string]any{"$distinct_id": distinct, "$properties": props}
}

func numbered(n int) []map[string]any {
	out := make([]map[string]any, n)
	for i := range out {
		out[i] = member(fmt.Sprintf("u%03d", i), map[string]any{"$user_id": fmt.Sprintf("u%03d", i)})
	}
	return out
}

type harness struct {
	engage *fakeEngage
	clock  *fakeClock
	reg    *prometheus.Registry
	client *mixpanel.Client
}

func newHarness(t *testing.T, members []map[string]any, pageSize int, tune func(*mixpanel.Config)) *harness {
	t.Helper()
	clock := newFakeClock()
	fe := &fakeEngage{t: t, clock: clock, members: members, pageSize: pageSize}
	srv := httptest.NewServer(fe)
	t.Cleanup(srv.Close)
	cfg := mixpanel.DefaultConfig()
	cfg.BaseURL = srv.URL
	cfg.Username, cfg.Secret, cfg.ProjectID = testUser, testSecret, testProject
	cfg.Timeout = 5 * time.Second
	if tune != nil {
		tune(&cfg)
	}
	fe.extraProp = cfg.IdentityProperty
	reg := prometheus.NewRegistry()
	client, err := mixpanel.New(cfg, mixpanel.Options{
		HTTPClient: srv.Client(),
		Registerer: reg,
		Now:        clock.Now,
		Sleep:      clock.Sleep,
		Jitter:     func(d time.Duration) time.Duration { return d }, // the longest backoff, so waits are known
	})
	if err != nil {
		t.Fatal(err)
	}
	return &harness{engage: fe, clock: clock, reg: reg, client: client}
}

func (h *harness) collect(ctx context.Context) ([]mixpanel.Profile, mixpanel.Stats, error) {
	var got []mixpanel.Profile
	st, err := h.client.CohortMembers(ctx, testCohort, func(p mixpanel.Profile) error {
		got = append(got, p)
		return nil
	})
	return got, st, err
}

func TestCohortMembersPaging(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		members   int
		pageSize  int
		wantPages []int
	}{
		{"several pages, last one short", 7, 3, []int{0, 1, 2}},
		{"exact multiple ends on an empty page", 6, 3, []int{0, 1, 2}},
		{"one short page", 2, 1000, []int{0}},
		{"empty cohort", 0, 1000, []int{0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, numbered(tc.members), tc.pageSize, nil)
			got, st, err := h.collect(testkit.DetachedContext(t, 20*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			var pages []int
			for _, r := range h.engage.Requests() {
				pages = append(pages, r.page)
			}
			if !reflect.DeepEqual(pages, tc.wantPages) {
				t.Errorf("pages requested %v, want %v", pages, tc.wantPages)
			}
			if len(got) != tc.members {
				t.Fatalf("%d profiles, want %d", len(got), tc.members)
			}
			for i, p := range got {
				if want := fmt.Sprintf("u%03d", i); p.DistinctID != want || p.ExternalID != want {
					t.Errorf("profile %d: %+v, want distinct and external id %s", i, p, want)
				}
			}
			if st.Profiles != int64(tc.members) || st.Total != int64(tc.members) || st.Pages != len(tc.wantPages) ||
				st.Requests != len(tc.wantPages) || st.Retries != 0 || st.RateLimitWaits != 0 {
				t.Errorf("stats %+v", st)
			}
			if v := testutil.ToFloat64(mustCounter(t, h.reg, "cohortsync_mixpanel_profiles_total", nil)); v != float64(tc.members) {
				t.Errorf("profiles_total %v", v)
			}
		})
	}
}

func TestProfileIdentities(t *testing.T) {
	t.Parallel()
	members := []map[string]any{
		member("d-1", map[string]any{"$braze_external_id": "braze-1", "$user_id": "user-1", "crm_id": "crm-1"}),
		member("d-2", map[string]any{"$braze_external_id": "braze-2", "$user_id": "user-2"}),
		member("user-3", map[string]any{"$user_id": "user-3", "$device_id": "dev-3"}),
		member("$device:dev-4", map[string]any{}),
		member("$device:dev-5", map[string]any{"$device_id": "dev-5b"}),
		member(12345, map[string]any{"$device_id": nil, "$user_id": 678, "plan": true}),
		member("mystery", map[string]any{"$email": "x@example.com"}),
	}
	h := newHarness(t, members, 1000, func(c *mixpanel.Config) { c.IdentityProperty = "crm_id" })
	got, st, err := h.collect(testkit.DetachedContext(t, 20*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	type id struct{ kind, value string }
	want := []id{
		{"external_id", "crm-1"}, {"external_id", "braze-2"}, {"external_id", "user-3"},
		{"device_id", "dev-4"}, {"device_id", "dev-5b"}, {"external_id", "678"}, {"", ""},
	}
	for i, p := range got {
		kind, value, ok := p.Identity()
		if (id{kind, value}) != want[i] || ok != (want[i].kind != "") {
			t.Errorf("profile %d (%+v): identity %s %s %v, want %v", i, p, kind, value, ok, want[i])
		}
	}
	if got[5].DistinctID != "12345" || got[5].Properties["plan"] != "true" {
		t.Errorf("non-string values: %+v", got[5])
	}
	if _, ok := got[5].Properties["$device_id"]; ok {
		t.Errorf("null property kept: %+v", got[5].Properties)
	}
	if st.WithoutIdentity != 1 {
		t.Errorf("without identity %d, want 1", st.WithoutIdentity)
	}
}

func TestRetriesThenSucceeds(t *testing.T) {
	t.Parallel()
	// Request 1 (page 0) loses its connection, request 3 (page 1) is
	// rate limited with Retry-After, request 5 (page 2) hits a 500.
	h := newHarness(t, numbered(7), 3, func(c *mixpanel.Config) { c.RetryBase = 100 * time.Millisecond })
	h.engage.fail = func(w http.ResponseWriter, _ *http.Request, n, _ int) bool {
		switch n {
		case 1:
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				_ = conn.Close()
			}
			return true
		case 3:
			w.Header().Set("Retry-After", "7")
			w.WriteHeader(http.StatusTooManyRequests)
			_, _ = w.Write([]byte(`{"error":"Query rate limit exceeded","status":"error"}`))
			return true
		case 5:
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = w.Write([]byte(`{"error":"internal","status":"error"}`))
			return true
		}
		return false
	}
	got, st, err := h.collect(testkit.DetachedContext(t, 20*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 7 {
		t.Fatalf("%d profiles after retries, want 7", len(got))
	}
	var pages []int
	for _, r := range h.engage.Requests() {
		pages = append(pages, r.page)
	}
	if want := []int{0, 0, 1, 1, 2, 2}; !reflect.DeepEqual(pages, want) {
		t.Errorf("pages %v, want %v", pages, want)
	}
	// Jitter is at its maximum, so each wait is the full backoff: 100ms for
	// every first retry of a page, except the 429's Retry-After.
	if want := []time.Duration{100 * time.Millisecond, 7 * time.Second, 100 * time.Millisecond}; !reflect.DeepEqual(h.clock.Sleeps(), want) {
		t.Errorf("waits %v, want %v", h.clock.Sleeps(), want)
	}
	if st.Retries != 3 || st.Requests != 6 || st.Pages != 3 {
		t.Errorf("stats %+v", st)
	}
	for reason, want := range map[string]float64{"transport": 1, "rate_limited": 1, "server_error": 1} {
		if v := testutil.ToFloat64(mustCounter(t, h.reg, "cohortsync_mixpanel_retries_total", map[string]string{"reason": reason})); v != want {
			t.Errorf("retries_total{reason=%s} = %v, want %v", reason, v, want)
		}
	}
	for code, want := range map[string]float64{"200": 3, "429": 1, "500": 1, "error": 1} {
		if v := testutil.ToFloat64(mustCounter(t, h.reg, "cohortsync_mixpanel_requests_total", map[string]string{"code": code})); v != want {
			t.Errorf("requests_total{code=%s} = %v, want %v", code, v, want)
		}
	}
}

func TestBackoffGrowsAndGivesUp(t *testing.T) {
	t.Parallel()
	h := newHarness(t, numbered(2), 1000, func(c *mixpanel.Config) {
		c.MaxRetries = 3
		c.RetryBase = time.Second
		c.RetryMax = 3 * time.Second
	})
	h.engage.fail = func(w http.ResponseWriter, _ *http.Request, _, _ int) bool {
		w.WriteHeader(http.StatusBadGateway)
		return true
	}
	_, st, err := h.collect(testkit.DetachedContext(t, 20*time.Second))
	var apiErr *mixpanel.APIError
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusBadGateway || apiErr.Attempts != 4 {
		t.Fatalf("err %v, want a 502 APIError after 4 attempts", err)
	}
	if want := []time.Duration{time.Second, 2 * time.Second, 3 * time.Second}; !reflect.DeepEqual(h.clock.Sleeps(), want) {
		t.Errorf("waits %v, want %v", h.clock.Sleeps(), want)
	}
	if st.Requests != 4 || st.Retries != 3 {
		t.Errorf("stats %+v", st)
	}
}

func TestPermanentErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name         string
		secret       string
		answer       func(w http.ResponseWriter, n int) bool
		unauthorized bool
		malformed    bool
		contains     []string
	}{
		{
			name: "wrong secret is 401", secret: "wrong", unauthorized: true,
			contains: []string{"401", "service account", "project " + testProject, "Invalid service account credentials"},
		},
		{
			name: "403 is a refused account", unauthorized: true,
			answer: func(w http.ResponseWriter, _ int) bool {
				w.WriteHeader(http.StatusForbidden)
				_, _ = w.Write([]byte(`{"error":"project access denied"}`))
				return true
			},
			contains: []string{"403", "project access denied"},
		},
		{
			name: "400 is not retried",
			answer: func(w http.ResponseWriter, _ int) bool {
				w.WriteHeader(http.StatusBadRequest)
				_, _ = w.Write([]byte(`{"error":"invalid filter_by_cohort"}`))
				return true
			},
			contains: []string{"400", "invalid filter_by_cohort"},
		},
		{
			name: "malformed body names the page", malformed: true,
			answer: func(w http.ResponseWriter, n int) bool {
				if n == 2 {
					_, _ = w.Write([]byte(`<html>maintenance</html>`))
					return true
				}
				return false
			},
			contains: []string{"page 1", "maintenance"},
		},
		{
			name: "missing results", malformed: true,
			answer: func(w http.ResponseWriter, _ int) bool {
				_, _ = w.Write([]byte(`{"page":0,"page_size":1000,"status":"ok"}`))
				return true
			},
			contains: []string{"page 0", "no results"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, numbered(5), 2, func(c *mixpanel.Config) {
				if tc.secret != "" {
					c.Secret = tc.secret
				}
			})
			if tc.answer != nil {
				h.engage.fail = func(w http.ResponseWriter, _ *http.Request, n, _ int) bool { return tc.answer(w, n) }
			}
			_, st, err := h.collect(testkit.DetachedContext(t, 20*time.Second))
			if err == nil {
				t.Fatal("no error")
			}
			if errors.Is(err, mixpanel.ErrUnauthorized) != tc.unauthorized {
				t.Errorf("errors.Is(ErrUnauthorized) = %v for %v", !tc.unauthorized, err)
			}
			if errors.Is(err, mixpanel.ErrMalformed) != tc.malformed {
				t.Errorf("errors.Is(ErrMalformed) = %v for %v", !tc.malformed, err)
			}
			for _, s := range tc.contains {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q lacks %q", err, s)
				}
			}
			if st.Retries != 0 || len(h.clock.Sleeps()) != 0 {
				t.Errorf("retried a permanent error: %+v, waits %v", st, h.clock.Sleeps())
			}
			if strings.Contains(err.Error(), testSecret) {
				t.Errorf("error shows the secret: %v", err)
			}
		})
	}
}

func TestCallbackErrorStops(t *testing.T) {
	t.Parallel()
	h := newHarness(t, numbered(7), 3, nil)
	stop := errors.New("disk full")
	n := 0
	st, err := h.client.CohortMembers(testkit.DetachedContext(t, 20*time.Second), testCohort, func(mixpanel.Profile) error {
		n++
		if n == 4 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || !strings.Contains(err.Error(), "page 1") {
		t.Fatalf("err %v", err)
	}
	if st.Profiles != 4 || len(h.engage.Requests()) != 2 {
		t.Errorf("stats %+v after %d requests", st, len(h.engage.Requests()))
	}
}

// TestHourlyQuota pulls more pages than the hourly quota allows: the client
// must wait (on the fake clock) instead of failing, and no rolling hour may
// see more requests than the quota.
func TestHourlyQuota(t *testing.T) {
	t.Parallel()
	const quota = 2
	h := newHarness(t, numbered(9), 2, func(c *mixpanel.Config) { c.QueriesPerHour = quota })
	got, st, err := h.collect(testkit.DetachedContext(t, 20*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 9 {
		t.Fatalf("%d profiles", len(got))
	}
	reqs := h.engage.Requests()
	if len(reqs) != 5 {
		t.Fatalf("%d requests, want 5", len(reqs))
	}
	for i := quota; i < len(reqs); i++ {
		if gap := reqs[i].at.Sub(reqs[i-quota].at); gap < time.Hour {
			t.Errorf("requests %d and %d only %s apart: %d requests within an hour", i-quota, i, gap, quota+1)
		}
	}
	if span := reqs[len(reqs)-1].at.Sub(reqs[0].at); span != 2*time.Hour {
		t.Errorf("5 requests at 2/hour took %s, want exactly 2h", span)
	}
	// Requests 1-2 go at once; 3 waits an hour and 4 follows it at once; 5 waits another hour.
	if st.RateLimitWaits != 2 || st.RateLimitWaited != 2*time.Hour {
		t.Errorf("stats %+v, want 2 waits of an hour each", st)
	}
	if v := testutil.ToFloat64(mustCounter(t, h.reg, "cohortsync_mixpanel_rate_limit_waits_total", map[string]string{"limit": "hourly"})); v != 2 {
		t.Errorf("rate_limit_waits_total{limit=hourly} = %v", v)
	}
}

// TestConcurrencyLimit runs four pulls at once on a client allowing two
// requests in flight: two must wait until the first two are answered.
func TestConcurrencyLimit(t *testing.T) {
	t.Parallel()
	h := newHarness(t, numbered(1), 1000, func(c *mixpanel.Config) { c.MaxConcurrent = 2 })
	gate := make(chan struct{})
	var mu sync.Mutex
	inFlight, peak := 0, 0
	h.engage.fail = func(_ http.ResponseWriter, r *http.Request, _, _ int) bool {
		mu.Lock()
		inFlight++
		peak = max(peak, inFlight)
		mu.Unlock()
		select {
		case <-gate:
		case <-r.Context().Done():
		}
		mu.Lock()
		inFlight--
		mu.Unlock()
		return false
	}
	ctx := testkit.DetachedContext(t, 20*time.Second)
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			_, _, err := h.collect(ctx)
			errs <- err
		}()
	}
	waits := mustCounter(t, h.reg, "cohortsync_mixpanel_rate_limit_waits_total", map[string]string{"limit": "concurrency"})
	for testutil.ToFloat64(waits) < 2 {
		if ctx.Err() != nil {
			t.Fatal("two pulls never waited for a slot")
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // would let a third request through, if the limit leaked
	mu.Lock()
	p := peak
	mu.Unlock()
	if p != 2 {
		t.Errorf("%d requests in flight, want 2", p)
	}
	close(gate)
	for range 4 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if n := len(h.engage.Requests()); n != 4 {
		t.Errorf("%d requests, want 4", n)
	}
	if peak != 2 {
		t.Errorf("peak %d in flight, want 2", peak)
	}
}

func TestCancelWhileWaiting(t *testing.T) {
	t.Parallel()
	h := newHarness(t, numbered(2), 1000, nil)
	ctx, cancel := context.WithCancel(testkit.DetachedContext(t, 20*time.Second))
	// The run is cancelled while its first request fails: it must stop
	// instead of waiting to retry.
	h.engage.fail = func(w http.ResponseWriter, _ *http.Request, _, _ int) bool {
		cancel()
		w.WriteHeader(http.StatusServiceUnavailable)
		return true
	}
	_, st, err := h.collect(ctx)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v, want context.Canceled", err)
	}
	if n := len(h.engage.Requests()); n != 1 || st.Pages != 0 {
		t.Errorf("%d requests, stats %+v", n, st)
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	valid := func() mixpanel.Config {
		c := mixpanel.DefaultConfig()
		c.Username, c.Secret, c.ProjectID = "u", "s", "1"
		return c
	}
	for _, tc := range []struct {
		name   string
		mutate func(*mixpanel.Config)
		fields []string
	}{
		{"valid", func(*mixpanel.Config) {}, nil},
		{"eu and zero values", func(c *mixpanel.Config) { c.Region = "eu"; c.PageSize = 0; c.QueriesPerHour = 0 }, nil},
		{"everything wrong", func(c *mixpanel.Config) {
			*c = mixpanel.Config{Region: "mars", ProjectID: "abc", PageSize: 5000, QueriesPerHour: -1, MaxConcurrent: -1,
				Timeout: -1, RetryBase: -1, RetryMax: -1}
		}, []string{"region", "username", "secret", "project_id", "page_size", "queries_per_hour", "max_concurrent", "timeout", "retry_base", "retry_max"}},
		{"bad base url", func(c *mixpanel.Config) { c.BaseURL = "mixpanel.com" }, []string{"base_url"}},
		{"retry max below base", func(c *mixpanel.Config) { c.RetryBase = time.Minute; c.RetryMax = time.Second }, []string{"retry_max"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := valid()
			tc.mutate(&c)
			err := c.Validate()
			if len(tc.fields) == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				if _, err := mixpanel.New(c, mixpanel.Options{}); err != nil {
					t.Fatalf("New: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("no error")
			}
			for _, f := range tc.fields {
				if !strings.Contains(err.Error(), f+":") {
					t.Errorf("error lacks field %s: %v", f, err)
				}
			}
			if _, err := mixpanel.New(c, mixpanel.Options{}); err == nil {
				t.Error("New accepted an invalid config")
			}
		})
	}
}

// mustCounter finds one series of a registered metric family.
func mustCounter(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) prometheus.Collector {
	t.Helper()
	return counterOf{reg: reg, name: name, labels: labels, t: t}
}

// counterOf is a collector view of one gathered series, for testutil.ToFloat64.
type counterOf struct {
	t      *testing.T
	reg    *prometheus.Registry
	name   string
	labels map[string]string
}

func (c counterOf) Describe(ch chan<- *prometheus.Desc) {
	ch <- prometheus.NewDesc(c.name, "view", nil, nil)
}

func (c counterOf) Collect(ch chan<- prometheus.Metric) {
	mfs, err := c.reg.Gather()
	if err != nil {
		c.t.Errorf("gather: %v", err)
		return
	}
	for _, mf := range mfs {
		if mf.GetName() != c.name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			for k, v := range c.labels {
				if got[k] != v {
					continue series
				}
			}
			ch <- prometheus.MustNewConstMetric(prometheus.NewDesc(c.name, "view", nil, nil), prometheus.CounterValue, m.GetCounter().GetValue())
			return
		}
	}
	ch <- prometheus.MustNewConstMetric(prometheus.NewDesc(c.name, "view", nil, nil), prometheus.CounterValue, 0)
}
