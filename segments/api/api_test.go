package api_test

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/cohortsync/cohortsync/internal/httproute"
	"github.com/cohortsync/cohortsync/internal/testkit"
	"github.com/cohortsync/cohortsync/kafka"
	"github.com/cohortsync/cohortsync/kafka/kafkatest"
	"github.com/cohortsync/cohortsync/segments"
	"github.com/cohortsync/cohortsync/segments/api"
	"github.com/cohortsync/cohortsync/segments/saved"
	"github.com/cohortsync/cohortsync/stores/adminauth"
	"github.com/cohortsync/cohortsync/stores/identities"
	"github.com/cohortsync/cohortsync/stores/keys"
)

const globalToken = "cst_global-admin-token-for-tests-0123"

// testBrokers is the package's shared in-process broker, set once in TestMain.
var testBrokers []string

func TestMain(m *testing.M) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		fmt.Fprintln(os.Stderr, "kfake:", err)
		os.Exit(1)
	}
	testBrokers = c.ListenAddrs()
	code := m.Run()
	c.Close()
	os.Exit(code)
}

// fixture is a server with the segments API, the token API, the keys admin
// API and the identities endpoint behind one Scoped authorizer, on stores
// running against kfake.
type fixture struct {
	srv    *httptest.Server
	engine *fakeEngine
	saved  *saved.Store
	tokens *adminauth.TokenStore
	keys   *keys.Store
	client *kafka.Client
	reg    *prometheus.Registry
	routes *httproute.Recorder
}

var topicSeq = make(chan int, 1)

func init() { topicSeq <- 0 }

func nextPrefix(t *testing.T) string {
	n := <-topicSeq
	topicSeq <- n + 1
	return fmt.Sprintf("api%d", n)
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx := testkit.Context(t, 30*time.Second)
	client := kafkatest.NewClient(t, testBrokers, nextPrefix(t))
	f := &fixture{engine: newFakeEngine(), client: client, reg: prometheus.NewRegistry(), routes: httproute.NewRecorder()}
	var err error
	if f.saved, err = saved.Open(ctx, client, saved.Options{Registerer: f.reg}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.saved.Close() })
	if f.tokens, err = adminauth.OpenTokenStore(ctx, client, adminauth.TokenStoreOptions{Registerer: f.reg}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.tokens.Close() })
	if f.keys, err = keys.Open(ctx, client, keys.Options{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.keys.Close() })
	admin, err := adminauth.NewAdminToken(globalToken)
	if err != nil {
		t.Fatal(err)
	}
	auth, err := adminauth.NewScoped(admin, f.tokens)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	segAPI, err := api.New(api.Options{
		Engine: f.engine, Saved: f.saved, Auth: auth, ValidateFilter: validateFilter,
		Logger: log, Registerer: f.reg,
		Now: func() time.Time { return time.Date(2026, 11, 5, 12, 0, 0, 0, time.UTC) },
	})
	if err != nil {
		t.Fatal(err)
	}
	segAPI.Register(f.routes)
	tokAPI, err := adminauth.NewTokenAPI(f.tokens, auth, log)
	if err != nil {
		t.Fatal(err)
	}
	tokAPI.Register(f.routes)
	keyAPI, err := keys.NewAdminAPI(f.keys, auth, func(p string) bool { return p == "mixpanel" }, log)
	if err != nil {
		t.Fatal(err)
	}
	keyAPI.Register(f.routes)
	idCfg := identities.DefaultConfig(t.TempDir())
	loader, err := identities.NewLoader(client, idCfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = loader.Close() })
	idAPI, err := identities.NewAdminAPI(loader, auth, idCfg, log)
	if err != nil {
		t.Fatal(err)
	}
	idAPI.Register(f.routes)
	f.srv = httptest.NewServer(f.routes.Mux)
	t.Cleanup(f.srv.Close)
	return f
}

type answer struct {
	status int
	body   []byte
	header http.Header
}

func (f *fixture) call(t *testing.T, method, path, token, body string) answer {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(testkit.Context(t, 30*time.Second), method, f.srv.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return answer{status: resp.StatusCode, body: raw, header: resp.Header}
}

func decode[T any](t *testing.T, a answer) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(a.body, &v); err != nil {
		t.Fatalf("decode %s: %v", a.body, err)
	}
	return v
}

func (f *fixture) segment(t *testing.T, ws, name, cohort string) saved.Segment {
	t.Helper()
	s, err := f.saved.Create(testkit.Context(t, 30*time.Second), ws, name, json.RawMessage(`{"cohort":{"partner":"mixpanel","id":"`+cohort+`"}}`))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestWorkspaceIsolationEveryRoute proves, for every route of the segments,
// tokens, keys and identities APIs, that a token of workspace acme gets the
// 404 of a missing resource in workspace beta (and changes nothing there),
// that the global token works everywhere and that no token gets 401.
func TestWorkspaceIsolationEveryRoute(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := testkit.Context(t, 30*time.Second)
	_, acmeToken, err := f.tokens.Create(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	type route struct {
		pattern string
		method  string
		// path builds the request path for workspace ws; it may create what
		// the request needs (a segment, a key) first.
		path func(t *testing.T, ws string) string
		body string
		ok   int // status for an allowed caller
	}
	segPath := func(suffix string) func(*testing.T, string) string {
		return func(t *testing.T, ws string) string {
			return "/v1/workspaces/" + ws + "/segments/" + f.segment(t, ws, fmt.Sprintf("s-%d", time.Now().UnixNano()), "c1").ID + suffix
		}
	}
	fixed := func(suffix string) func(*testing.T, string) string {
		return func(_ *testing.T, ws string) string { return "/v1/workspaces/" + ws + suffix }
	}
	routes := []route{
		{"POST /v1/workspaces/{workspace}/tokens", "POST", fixed("/tokens"), "", 201},
		{"POST /v1/workspaces/{workspace}/segments", "POST", fixed("/segments"), `{"name":"n` + fmt.Sprint(time.Now().UnixNano()) + `","filter":{"cohort":{"partner":"mixpanel","id":"c1"}}}`, 201},
		{"GET /v1/workspaces/{workspace}/segments", "GET", fixed("/segments"), "", 200},
		{"GET /v1/workspaces/{workspace}/segments/{segment_id}", "GET", segPath(""), "", 200},
		{"DELETE /v1/workspaces/{workspace}/segments/{segment_id}", "DELETE", segPath(""), "", 204},
		{"POST /v1/workspaces/{workspace}/segments:evaluate", "POST", fixed("/segments:evaluate"), `{"filter":{"cohort":{"partner":"mixpanel","id":"c1"}}}`, 200},
		{"GET /v1/workspaces/{workspace}/segments/{segment_id}/members", "GET", segPath("/members"), "", 200},
		{"GET /v1/workspaces/{workspace}/segments/{segment_id}/members/{user_id}", "GET", segPath("/members/u1"), "", 200},
		{"GET /v1/workspaces/{workspace}/datapoints", "GET", fixed("/datapoints?from=2026-11-01&to=2026-11-02"), "", 200},
		{"GET /v1/workspaces/{workspace}/cohorts", "GET", fixed("/cohorts"), "", 200},
		{"POST /v1/workspaces/{workspace}/keys", "POST", fixed("/keys"), `{"partner":"mixpanel"}`, 201},
		{"GET /v1/workspaces/{workspace}/keys", "GET", fixed("/keys"), "", 200},
		{"DELETE /v1/workspaces/{workspace}/keys/{key_id}", "DELETE", func(t *testing.T, ws string) string {
			k, _, err := f.keys.Create(testkit.Context(t, 30*time.Second), ws, "mixpanel", "")
			if err != nil {
				t.Fatal(err)
			}
			return "/v1/workspaces/" + ws + "/keys/" + k.ID
		}, "", 204},
		{"POST /v1/workspaces/{workspace}/identities", "POST", fixed("/identities"), `{"user_id":"u1"}`, 200},
	}
	// Every registered route is in the table, and nothing else.
	var want []string
	for _, r := range routes {
		want = append(want, r.pattern)
	}
	slices.Sort(want)
	if got := f.routes.Patterns(); !slices.Equal(got, want) {
		t.Fatalf("registered routes %v\ntable covers %v", got, want)
	}

	callers := []struct {
		name, token, ws string
		status          func(r route) int
	}{
		{"global token on beta", globalToken, "beta", func(r route) int { return r.ok }},
		{"acme token on acme", acmeToken, "acme", func(r route) int {
			if strings.HasSuffix(r.pattern, "/tokens") {
				return 403
			}
			return r.ok
		}},
		{"acme token on beta", acmeToken, "beta", func(route) int { return 404 }},
		{"acme token on a workspace that does not exist", acmeToken, "nobody", func(route) int { return 404 }},
		{"no token on beta", "", "beta", func(route) int { return 401 }},
		{"unknown token on acme", "cst_0123456789abcdef_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", "acme", func(route) int { return 401 }},
	}
	for _, c := range callers {
		for _, r := range routes {
			path := r.path(t, c.ws)
			before := f.saved.List(c.ws)
			keysBefore := f.keys.List(c.ws)
			got := f.call(t, r.method, path, c.token, r.body)
			wantStatus := c.status(r)
			if got.status != wantStatus {
				t.Errorf("%s: %s %s = %d %s, want %d", c.name, r.method, path, got.status, got.body, wantStatus)
				continue
			}
			switch wantStatus {
			case 404:
				if strings.TrimSpace(string(got.body)) != `{"error":"not found"}` {
					t.Errorf("%s: %s: 404 body %s, want the body of a missing resource", c.name, r.pattern, got.body)
				}
			case 401:
				if got.header.Get("WWW-Authenticate") == "" {
					t.Errorf("%s: %s: 401 without WWW-Authenticate", c.name, r.pattern)
				}
			}
			if wantStatus >= 400 {
				after := f.saved.List(c.ws)
				if len(after) != len(before) || len(f.keys.List(c.ws)) != len(keysBefore) {
					t.Errorf("%s: refused %s changed the workspace's segments or keys", c.name, r.pattern)
				}
			}
		}
	}
	// A segment of another workspace is not reachable by id through one's own.
	beta := f.segment(t, "beta", "private", "c1")
	if got := f.call(t, "GET", "/v1/workspaces/acme/segments/"+beta.ID, acmeToken, ""); got.status != 404 {
		t.Fatalf("beta's segment through acme: %d %s", got.status, got.body)
	}
}

func TestEvaluatePagesWithAStableCursor(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	const ev = "/v1/workspaces/acme/segments:evaluate"
	filter := `{"cohort":{"partner":"mixpanel","id":"c1"}}`
	var all []string
	cursor := ""
	for page := 0; ; page++ {
		body := `{"filter":` + filter + `,"limit":2`
		if cursor != "" {
			body += `,"cursor":"` + cursor + `"`
		}
		got := f.call(t, "POST", ev, globalToken, body+"}")
		if got.status != 200 {
			t.Fatalf("page %d: %d %s", page, got.status, got.body)
		}
		p := decode[api.Page](t, got)
		if p.Count != 5 || len(p.Members) > 2 {
			t.Fatalf("page %d: %+v", page, p)
		}
		all = append(all, p.Members...)
		if p.NextCursor == nil {
			if !bytes.Contains(got.body, []byte(`"next_cursor":null`)) {
				t.Fatalf("last page without an explicit null cursor: %s", got.body)
			}
			break
		}
		cursor = *p.NextCursor
	}
	if want := []string{"u1", "u2", "u3", "u4", "u5"}; !slices.Equal(all, want) {
		t.Fatalf("paged members %v, want %v", all, want)
	}

	got := f.call(t, "POST", ev, globalToken, `{"filter":`+filter+`,"as_of":"2026-10-01T10:00:00+02:00"}`)
	if p := decode[api.Page](t, got); got.status != 200 || !slices.Equal(p.Members, []string{"u1", "u9"}) {
		t.Fatalf("as_of answer %d %s", got.status, got.body)
	}
	q := f.engine.lastQuery()
	if q.Limit != api.DefaultLimit || !q.AsOf.Equal(time.Date(2026, 10, 1, 8, 0, 0, 0, time.UTC)) || q.AsOf.Location() != time.UTC {
		t.Fatalf("engine got limit %d as_of %s", q.Limit, q.AsOf)
	}
	got = f.call(t, "POST", ev, globalToken, `{"filter":{"cohort":{"partner":"mixpanel","id":"empty"}}}`)
	if got.status != 200 || strings.TrimSpace(string(got.body)) != `{"count":0,"members":[],"next_cursor":null}` {
		t.Fatalf("empty segment: %d %s", got.status, got.body)
	}
}

func TestBadRequests(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	seg := f.segment(t, "acme", "c1", "c1")
	const ws = "/v1/workspaces/acme"
	members := ws + "/segments/" + seg.ID + "/members"
	ok := `{"cohort":{"partner":"mixpanel","id":"c1"}}`
	tests := []struct {
		name, method, path, body string
		status                   int
		msg, filterPath          string
	}{
		{"limit 0", "POST", ws + "/segments:evaluate", `{"filter":` + ok + `,"limit":0}`, 400, "limit 0 must be from 1 to 10000", ""},
		{"limit too big", "POST", ws + "/segments:evaluate", `{"filter":` + ok + `,"limit":10001}`, 400, "from 1 to 10000", ""},
		{"limit not a number", "POST", ws + "/segments:evaluate", `{"filter":` + ok + `,"limit":"10"}`, 400, `field "limit"`, ""},
		{"bad as_of", "POST", ws + "/segments:evaluate", `{"filter":` + ok + `,"as_of":"yesterday"}`, 400, "as_of \"yesterday\" must be an RFC 3339", ""},
		{"no filter", "POST", ws + "/segments:evaluate", `{"limit":5}`, 400, "filter is required", ""},
		{"misspelt field", "POST", ws + "/segments:evaluate", `{"fitler":` + ok + `}`, 400, "unknown field", ""},
		{"malformed body", "POST", ws + "/segments:evaluate", `{"filter":`, 400, "malformed JSON", ""},
		{"unknown cohort", "POST", ws + "/segments:evaluate", `{"filter":{"cohort":{"partner":"mixpanel","id":"nope"}}}`, 400, "unknown cohort nope", "/cohort/id"},
		{"bad cursor", "POST", ws + "/segments:evaluate", `{"filter":` + ok + `,"cursor":"forged"}`, 400, "invalid cursor", ""},
		{"create: invalid filter", "POST", ws + "/segments", `{"name":"x","filter":{"and":[]}}`, 400, "missing", "/cohort"},
		{"create: no name", "POST", ws + "/segments", `{"filter":` + ok + `}`, 400, "name must be a non-empty string", ""},
		{"create: duplicate name", "POST", ws + "/segments", `{"name":"c1","filter":` + ok + `}`, 409, "already in use", ""},
		{"get: missing", "GET", ws + "/segments/ffffffffffffffff", "", 404, "not found", ""},
		{"delete: missing", "DELETE", ws + "/segments/ffffffffffffffff", "", 404, "not found", ""},
		{"members: missing segment", "GET", ws + "/segments/ffffffffffffffff/members", "", 404, "not found", ""},
		{"members: bad limit", "GET", members + "?limit=-1", "", 400, "limit \"-1\" must be an integer from 1 to 10000", ""},
		{"members: bad as_of", "GET", members + "?as_of=2026-13-01", "", 400, "as_of", ""},
		{"members: bad format", "GET", members + "?format=xlsx", "", 400, "format \"xlsx\" must be json, csv, ndjson or parquet", ""},
		{"members: cursor with csv", "GET", members + "?format=csv&cursor=x", "", 400, "cursor and limit page format=json", ""},
		{"members: bad cursor", "GET", members + "?cursor=forged", "", 400, "invalid cursor", ""},
		{"explain: bad as_of", "GET", members + "/u1?as_of=now", "", 400, "as_of", ""},
		{"datapoints: bad from", "GET", ws + "/datapoints?from=2026-11-31&to=2026-12-01", "", 400, "from \"2026-11-31\" must be a date YYYY-MM-DD", ""},
		{"datapoints: bad to", "GET", ws + "/datapoints?from=2026-11-01&to=11/02/2026", "", 400, "to \"11/02/2026\" must be a date", ""},
		{"datapoints: from after to", "GET", ws + "/datapoints?from=2026-11-03&to=2026-11-02", "", 400, "from 2026-11-03 is after to 2026-11-02", ""},
		{"datapoints: bad group_by", "GET", ws + "/datapoints?group_by=week", "", 400, "group_by \"week\" must be day, partner or cohort", ""},
		{"invalid workspace", "GET", "/v1/workspaces/Not%20Valid/cohorts", "", 400, "workspace", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := f.call(t, tt.method, tt.path, globalToken, tt.body)
			eb := decode[api.ErrorBody](t, got)
			if got.status != tt.status || !strings.Contains(eb.Error, tt.msg) || eb.Path != tt.filterPath {
				t.Fatalf("%d %s; want %d with %q and path %q", got.status, got.body, tt.status, tt.msg, tt.filterPath)
			}
			if ct := got.header.Get("Content-Type"); ct != "application/json" {
				t.Fatalf("Content-Type %q", ct)
			}
		})
	}
}

func TestSavedSegmentLifecycle(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	const segs = "/v1/workspaces/acme/segments"
	got := f.call(t, "POST", segs, globalToken, `{"name":"Churn","filter":{ "cohort": {"partner":"mixpanel","id":"c1"} }}`)
	if got.status != 201 {
		t.Fatalf("create: %d %s", got.status, got.body)
	}
	created := decode[api.Segment](t, got)
	if created.ID == "" || created.Name != "Churn" || string(created.Filter) != `{"cohort":{"partner":"mixpanel","id":"c1"}}` || created.CreatedAt.IsZero() || created.Count != nil {
		t.Fatalf("created %s", got.body)
	}
	// Saved with a cohort the engine does not know: the definition is still
	// served, with the reason it cannot be counted.
	unknown := decode[api.Segment](t, f.call(t, "POST", segs, globalToken, `{"name":"Later","filter":{"cohort":{"partner":"mixpanel","id":"not-synced-yet"}}}`))

	list := decode[api.SegmentList](t, f.call(t, "GET", segs, globalToken, ""))
	if len(list.Segments) != 2 || list.Segments[0].ID != created.ID || list.Segments[1].ID != unknown.ID {
		t.Fatalf("list %+v", list)
	}
	one := decode[api.Segment](t, f.call(t, "GET", segs+"/"+created.ID, globalToken, ""))
	if one.Count == nil || *one.Count != 5 || one.CountError != nil {
		t.Fatalf("get: %+v", one)
	}
	later := decode[api.Segment](t, f.call(t, "GET", segs+"/"+unknown.ID, globalToken, ""))
	if later.Count != nil || later.CountError == nil || later.CountError.Path != "/cohort/id" {
		t.Fatalf("get of an uncountable segment: %+v", later)
	}

	m := decode[api.Page](t, f.call(t, "GET", segs+"/"+created.ID+"/members?limit=3", globalToken, ""))
	if m.Count != 5 || !slices.Equal(m.Members, []string{"u1", "u2", "u3"}) || m.NextCursor == nil {
		t.Fatalf("members page %+v", m)
	}
	m = decode[api.Page](t, f.call(t, "GET", segs+"/"+created.ID+"/members?limit=3&cursor="+*m.NextCursor, globalToken, ""))
	if !slices.Equal(m.Members, []string{"u4", "u5"}) || m.NextCursor != nil {
		t.Fatalf("second members page %+v", m)
	}

	ans := decode[segments.Answer](t, f.call(t, "GET", segs+"/"+created.ID+"/members/u3", globalToken, ""))
	if !ans.Member || ans.UserID != "u3" || len(ans.Reasons) != 1 || ans.Reasons[0].CohortID != "c1" || ans.Reasons[0].LastChange == nil {
		t.Fatalf("explain u3: %+v", ans)
	}
	ans = decode[segments.Answer](t, f.call(t, "GET", segs+"/"+created.ID+"/members/u9?as_of=2026-10-01T00:00:00Z", globalToken, ""))
	if !ans.Member {
		t.Fatalf("explain u9 as of October: %+v", ans)
	}
	if got := f.call(t, "GET", segs+"/"+created.ID+"/members/u%2Fslash", globalToken, ""); got.status != 200 || decode[segments.Answer](t, got).UserID != "u/slash" {
		t.Fatalf("user id with a slash: %d %s", got.status, got.body)
	}

	if got := f.call(t, "DELETE", segs+"/"+created.ID, globalToken, ""); got.status != 204 || len(got.body) != 0 {
		t.Fatalf("delete: %d %s", got.status, got.body)
	}
	if got := f.call(t, "GET", segs+"/"+created.ID, globalToken, ""); got.status != 404 {
		t.Fatalf("get after delete: %d %s", got.status, got.body)
	}
}

func TestMembersExport(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	many := f.segment(t, "acme", "many", "many")
	quoted := f.segment(t, "acme", "quoted", "quoted")
	path := func(s saved.Segment, format string) string {
		return "/v1/workspaces/acme/segments/" + s.ID + "/members?format=" + format
	}
	want := f.engine.cohorts["many"]

	t.Run("csv", func(t *testing.T) {
		t.Parallel()
		got := f.call(t, "GET", path(many, "csv"), globalToken, "")
		if got.status != 200 || !strings.HasPrefix(got.header.Get("Content-Type"), "text/csv") {
			t.Fatalf("%d %s", got.status, got.header)
		}
		if cd := got.header.Get("Content-Disposition"); cd != `attachment; filename="segment-`+many.ID+`.csv"` {
			t.Fatalf("Content-Disposition %q", cd)
		}
		rows, err := csv.NewReader(bytes.NewReader(got.body)).ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		if len(rows) != len(want)+1 || rows[0][0] != "user_id" || rows[1][0] != want[0] || rows[len(rows)-1][0] != want[len(want)-1] {
			t.Fatalf("%d csv rows, first %v last %v", len(rows), rows[0], rows[len(rows)-1])
		}
		got = f.call(t, "GET", path(quoted, "csv"), globalToken, "")
		rows, err = csv.NewReader(bytes.NewReader(got.body)).ReadAll()
		if err != nil || len(rows) != 3 || rows[1][0] != `a,"b"` || rows[2][0] != "line\nbreak" {
			t.Fatalf("quoted csv %q (%v)", got.body, err)
		}
	})
	t.Run("ndjson", func(t *testing.T) {
		t.Parallel()
		got := f.call(t, "GET", path(quoted, "ndjson"), globalToken, "")
		if got.status != 200 || got.header.Get("Content-Type") != "application/x-ndjson" {
			t.Fatalf("%d %s", got.status, got.header)
		}
		if want := "{\"user_id\":\"a,\\\"b\\\"\"}\n{\"user_id\":\"line\\nbreak\"}\n"; string(got.body) != want {
			t.Fatalf("ndjson %q, want %q", got.body, want)
		}
	})
	t.Run("parquet read by arrow", func(t *testing.T) {
		t.Parallel()
		got := f.call(t, "GET", path(many, "parquet"), globalToken, "")
		if got.status != 200 || got.header.Get("Content-Type") != "application/vnd.apache.parquet" {
			t.Fatalf("%d %s", got.status, got.header)
		}
		rdr, err := file.NewParquetReader(bytes.NewReader(got.body))
		if err != nil {
			t.Fatal(err)
		}
		fr, err := pqarrow.NewFileReader(rdr, pqarrow.ArrowReadProperties{}, memory.DefaultAllocator)
		if err != nil {
			t.Fatal(err)
		}
		tbl, err := fr.ReadTable(testkit.Context(t, 30*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		defer tbl.Release()
		if tbl.NumCols() != 1 || tbl.Schema().Field(0).Name != "user_id" || tbl.NumRows() != int64(len(want)) {
			t.Fatalf("arrow table %s with %d rows", tbl.Schema(), tbl.NumRows())
		}
		var ids []string
		for _, chunk := range tbl.Column(0).Data().Chunks() {
			s := chunk.(*array.String)
			for i := range s.Len() {
				ids = append(ids, s.Value(i))
			}
		}
		if !slices.Equal(ids, want) {
			t.Fatal("parquet members differ from the engine's")
		}
		if rdr.NumRowGroups() < 2 {
			t.Fatalf("%d row groups: the export is held in memory whole", rdr.NumRowGroups())
		}
	})
	t.Run("failure midway cuts the connection", func(t *testing.T) {
		t.Parallel()
		broken := f.segment(t, "acme", "broken", "broken")
		req, _ := http.NewRequestWithContext(testkit.Context(t, 30*time.Second), "GET", f.srv.URL+path(broken, "csv"), nil)
		req.Header.Set("Authorization", "Bearer "+globalToken)
		resp, err := f.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		_, err = io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || err == nil || !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("status %d, read error %v: a truncated export must not look complete", resp.StatusCode, err)
		}
	})
	t.Run("unknown cohort before the first byte", func(t *testing.T) {
		t.Parallel()
		s, err := f.saved.Create(testkit.Context(t, 30*time.Second), "acme", "gone", json.RawMessage(`{"cohort":{"partner":"mixpanel","id":"gone"}}`))
		if err != nil {
			t.Fatal(err)
		}
		got := f.call(t, "GET", path(s, "ndjson"), globalToken, "")
		if eb := decode[api.ErrorBody](t, got); got.status != 400 || eb.Path != "/cohort/id" {
			t.Fatalf("%d %s", got.status, got.body)
		}
	})
}

func TestDataPointsAndCohorts(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	const ws = "/v1/workspaces/acme"
	got := f.call(t, "GET", ws+"/datapoints?from=2026-11-01&to=2026-11-03", globalToken, "")
	if got.status != 200 {
		t.Fatalf("%d %s", got.status, got.body)
	}
	want := `{"rows":[{"day":"2026-11-01","billable":2,"transitions":1},{"day":"2026-11-02","billable":4,"transitions":2},{"day":"2026-11-03","billable":6,"transitions":3}]}`
	if strings.TrimSpace(string(got.body)) != want {
		t.Fatalf("body %s, want %s", got.body, want)
	}
	got = f.call(t, "GET", ws+"/datapoints?from=2026-11-01&to=2026-11-01&group_by=cohort", globalToken, "")
	if strings.TrimSpace(string(got.body)) != `{"rows":[{"partner":"mixpanel","cohort_id":"c1","billable":2,"transitions":1}]}` {
		t.Fatalf("by cohort: %s", got.body)
	}
	// Without dates: the 30 days up to today, by day.
	f.call(t, "GET", ws+"/datapoints", globalToken, "")
	f.call(t, "GET", ws+"/datapoints?group_by=partner&to=2026-02-10", globalToken, "")
	f.engine.mu.Lock()
	calls := slices.Clone(f.engine.dpCalls)
	f.engine.mu.Unlock()
	if want := []string{"2026-11-01..2026-11-03/day", "2026-11-01..2026-11-01/cohort", "2026-10-07..2026-11-05/day", "2026-01-12..2026-02-10/partner"}; !slices.Equal(calls, want) {
		t.Fatalf("engine calls %v, want %v", calls, want)
	}

	got = f.call(t, "GET", ws+"/cohorts", globalToken, "")
	var list map[string][]map[string]any
	if err := json.Unmarshal(got.body, &list); err != nil || len(list["cohorts"]) != 1 {
		t.Fatalf("cohorts %s (%v)", got.body, err)
	}
	c := list["cohorts"][0]
	for _, k := range []string{"partner", "cohort_id", "name", "member_count", "last_sync", "sync_mode", "period_seconds", "stale", "age_seconds"} {
		if _, ok := c[k]; !ok {
			t.Errorf("cohort lacks %q: %s", k, got.body)
		}
	}
	if c["last_sync"] != "2026-11-05T11:00:00Z" || c["stale"] != true {
		t.Fatalf("cohort %v: the API's clock was not used", c)
	}

	mfs, err := f.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var counted float64
	for _, mf := range mfs {
		if mf.GetName() == "cohortsync_segments_api_requests_total" {
			for _, m := range mf.GetMetric() {
				counted += m.GetCounter().GetValue()
			}
		}
	}
	if counted != 5 {
		t.Fatalf("requests_total counts %v requests, want 5", counted)
	}
}
