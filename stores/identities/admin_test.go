package identities

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync/internal/testkit"
	"github.com/cohortsync/cohortsync/kafka"
	"github.com/cohortsync/cohortsync/kafka/kafkatest"
	"github.com/cohortsync/cohortsync/stores/adminauth"
)

const testAdminToken = "cst_test-admin-token-0123456789"

type adminFixture struct {
	client *kafka.Client
	srv    *httptest.Server
	logs   *testkit.SyncBuffer
}

func newAdminFixture(t *testing.T, client *kafka.Client, cfg Config) *adminFixture {
	t.Helper()
	logs := &testkit.SyncBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	loader, err := NewLoader(client, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = loader.Close() })
	auth, err := adminauth.NewAdminToken(testAdminToken)
	if err != nil {
		t.Fatal(err)
	}
	api, err := NewAdminAPI(loader, auth, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	api.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &adminFixture{client: client, srv: srv, logs: logs}
}

// post sends body (a reader of unknown length when chunked) and returns the
// status, the raw answer and its headers.
func (f *adminFixture) post(t *testing.T, path, token string, body io.Reader) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequestWithContext(testkit.Context(t, 20*time.Second), http.MethodPost, f.srv.URL+path, body)
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
		t.Fatal(err)
	}
	return resp.StatusCode, string(raw), resp.Header
}

// landed returns the records on the identities topic as key → value.
func (f *adminFixture) landed(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, m := range kafkatest.ReadAll(t, f.client, f.client.Config().Topics.Identities) {
		out[string(m.Key)] = string(m.Value)
	}
	return out
}

// unknownLength hides the length of a body so that it is sent chunked.
type unknownLength struct{ io.Reader }

func TestAdminAPILandsGoodLinesAndReportsBadOnes(t *testing.T) {
	t.Parallel()
	f := newAdminFixture(t, newTestClient(t), testConfig(t))
	body := strings.Join([]string{
		`{"user_id":"u1","external_id":"e1"}`, // 1
		`{"user_id":"u2",`,                    // 2 malformed
		``,                                    // 3 blank: skipped
		`{"user_id":"u3","device_ids":["d3"]}` + "\r",                                                       // 4 CRLF
		`{"user_id":"u4","externalId":"e4"}`,                                                                // 5 unknown field
		`{"user_id":"u5","aliases":[{"alias_name":"` + strings.Repeat("n", 1100) + `","alias_label":"l"}]}`, // 6 too long
		`{"user_id":"u1","external_id":"e1b"}`,                                                              // 7 replaces line 1
		`{"device_ids":["x"]}`,                                                                              // 8 no user id
	}, "\n")
	status, raw, _ := f.post(t, "/v1/workspaces/acme/identities", testAdminToken, strings.NewReader(body))
	if status != http.StatusOK {
		t.Fatalf("status %d: %s", status, raw)
	}
	var resp LoadResponse
	if err := json.Unmarshal([]byte(raw), &resp); err != nil {
		t.Fatal(err)
	}
	wantRejected := map[int64]string{2: "malformed JSON", 5: `unknown field "externalId"`, 6: "line longer than 1024 bytes", 8: "user_id is required"}
	if resp.Accepted != 3 || len(resp.Rejected) != len(wantRejected) {
		t.Fatalf("answer %s", raw)
	}
	for _, r := range resp.Rejected {
		if want, ok := wantRejected[r.Line]; !ok || !strings.Contains(r.Error, want) {
			t.Errorf("line %d: %q, want %q", r.Line, r.Error, want)
		}
	}
	got := f.landed(t)
	if len(got) != 2 {
		t.Fatalf("landed keys %v", keysOf(got))
	}
	// Compaction keeps the last record per key; here both are still on the
	// topic, and the last one read for acme/u1 is the replacement.
	if !strings.Contains(got["acme/u1"], `"external_id":"e1b"`) || !strings.Contains(got["acme/u3"], `"device_ids":["d3"]`) {
		t.Errorf("landed %v", got)
	}
	if logs := f.logs.String(); !strings.Contains(logs, `"accepted":3`) || strings.Contains(logs, "e1b") {
		t.Errorf("log lacks the summary or leaks identifiers:\n%s", logs)
	}
}

func TestAdminAPIErrors(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	f := newAdminFixture(t, newTestClient(t), cfg)
	big := strings.Repeat(`{"user_id":"u"}`+"\n", int(cfg.MaxBodyBytes)/16+1)
	tests := []struct {
		name, path, token string
		body              io.Reader
		wantStatus        int
		wantError         string
	}{
		{"no token", "/v1/workspaces/acme/identities", "", strings.NewReader(`{"user_id":"u"}`), 401, "missing or invalid admin token"},
		{"wrong token", "/v1/workspaces/acme/identities", "cst_wrong-token-0123456789", strings.NewReader(`{"user_id":"u"}`), 401, "missing or invalid admin token"},
		{"bad workspace", "/v1/workspaces/Not%20Valid/identities", testAdminToken, strings.NewReader(`{"user_id":"u"}`), 400, "workspace"},
		{"empty body", "/v1/workspaces/acme/identities", testAdminToken, strings.NewReader(" \n\n"), 400, "request body is empty"},
		{"too large", "/v1/workspaces/acme/identities", testAdminToken, strings.NewReader(big), 413, "request body larger than 8192 bytes"},
		{"too large, chunked", "/v1/workspaces/acme/identities", testAdminToken, unknownLength{strings.NewReader(big)}, 413, "request body larger than 8192 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			status, raw, hdr := f.post(t, tt.path, tt.token, tt.body)
			var eb ErrorBody
			if status != tt.wantStatus || json.Unmarshal([]byte(raw), &eb) != nil || !strings.Contains(eb.Error, tt.wantError) {
				t.Errorf("status %d, body %s; want %d with %q", status, raw, tt.wantStatus, tt.wantError)
			}
			if status == 401 && hdr.Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
		})
	}
	t.Cleanup(func() {
		// Nothing of the refused requests landed, not even the first lines
		// of the oversized bodies.
		if got := f.landed(t); len(got) != 0 {
			t.Errorf("refused requests landed %v", keysOf(got))
		}
	})
}

func TestAdminAPIKafkaDownAnswers503(t *testing.T) {
	t.Parallel()
	kc := kafka.DefaultConfig()
	kc.Brokers = []string{"127.0.0.1:1"}
	client, err := kafka.NewClient(kc)
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t)
	cfg.LandTimeout = 300 * time.Millisecond
	f := newAdminFixture(t, client, cfg)
	status, raw, _ := f.post(t, "/v1/workspaces/acme/identities", testAdminToken, strings.NewReader(`{"user_id":"u"}`))
	if status != http.StatusServiceUnavailable || !strings.Contains(raw, "sending the request again is safe") {
		t.Errorf("status %d: %s", status, raw)
	}
}

func TestClientLoadsInChunksWithFileLineNumbers(t *testing.T) {
	t.Parallel()
	f := newAdminFixture(t, newTestClient(t), testConfig(t))
	var lines []string
	wantRejected := map[int64]string{}
	blank := 0
	for i := 1; i <= 120; i++ {
		switch {
		case i%37 == 0:
			lines = append(lines, `{"user_id":`)
			wantRejected[int64(i)] = "malformed JSON"
		case i == 50:
			lines = append(lines, `{"user_id":"`+strings.Repeat("x", 2000)+`"}`)
			wantRejected[int64(i)] = "line longer than 1024 bytes"
		case i%10 == 0:
			lines = append(lines, "") // blank lines must not shift numbers
			blank++
		default:
			lines = append(lines, `{"user_id":"user-`+strings.Repeat("0", 40)+strconv.Itoa(i)+`","external_id":"e`+strconv.Itoa(i)+`"}`)
		}
	}
	c, err := NewClient(f.srv.URL, testAdminToken, ClientOptions{ChunkBytes: 1100, MaxLineBytes: 1024})
	if err != nil {
		t.Fatal(err)
	}
	got := map[int64]string{}
	st, err := c.Load(testkit.Context(t, 30*time.Second), "acme", strings.NewReader(strings.Join(lines, "\n")+"\n"), func(le LineError) {
		got[le.Line] = le.Error
	})
	if err != nil {
		t.Fatal(err)
	}
	wantAccepted := int64(120 - blank - len(wantRejected))
	if st.Accepted != wantAccepted || st.Rejected != int64(len(wantRejected)) || st.Lines != st.Accepted+st.Rejected {
		t.Errorf("stats %+v, want %d accepted and %d rejected", st, wantAccepted, len(wantRejected))
	}
	for line, want := range wantRejected {
		if !strings.Contains(got[line], want) {
			t.Errorf("line %d: %q, want %q (all: %v)", line, got[line], want, got)
		}
	}
	if n := len(f.landed(t)); int64(n) != wantAccepted {
		t.Errorf("%d records landed, want %d", n, wantAccepted)
	}

	bad, err := NewClient(f.srv.URL, "cst_wrong-token-0123456789", ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bad.Load(testkit.Context(t, 10*time.Second), "acme", strings.NewReader(`{"user_id":"u"}`), nil); !errors.Is(err, ErrUnauthorized) {
		t.Errorf("wrong token: %v", err)
	}
	for _, u := range []string{"ftp://x", "http://", "::"} {
		if _, err := NewClient(u, testAdminToken, ClientOptions{}); err == nil {
			t.Errorf("NewClient(%q) accepted", u)
		}
	}
	if _, err := NewClient(f.srv.URL, "", ClientOptions{}); err == nil {
		t.Error("empty token accepted")
	}
}

func keysOf(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
