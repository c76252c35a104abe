package keys

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync/internal/testkit"
	"github.com/cohortsync/cohortsync/stores/adminauth"
)

const testAdminToken = "cst_test-admin-token-0123456789"

type adminFixture struct {
	store *Store
	srv   *httptest.Server
	logs  *testkit.SyncBuffer
}

func newAdminFixture(t *testing.T) *adminFixture {
	t.Helper()
	logs := &testkit.SyncBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	store := openStore(t, newTestClient(t, testBrokers), Options{Logger: log})
	auth, err := adminauth.NewAdminToken(testAdminToken)
	if err != nil {
		t.Fatal(err)
	}
	enabled := map[string]bool{"mixpanel": true, "amplitude": true}
	api, err := NewAdminAPI(store, auth, func(p string) bool { return enabled[p] }, log)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	api.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &adminFixture{store: store, srv: srv, logs: logs}
}

// call sends one request and returns the status, the raw body and the response headers.
func (f *adminFixture) call(t *testing.T, method, path, token, body string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequestWithContext(testkit.Context(t, 20*time.Second), method, f.srv.URL+path, strings.NewReader(body))
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

func TestAdminAPIErrors(t *testing.T) {
	t.Parallel()
	f := newAdminFixture(t)
	ctx := testkit.Context(t, 20*time.Second)
	other, _, err := f.store.Create(ctx, "other", "mixpanel", "")
	if err != nil {
		t.Fatal(err)
	}
	const keys = "/v1/workspaces/acme/keys"
	tests := []struct {
		name, method, path, token, body string
		wantStatus                      int
		wantError                       string // substring of the JSON error
	}{
		{"create without token", "POST", keys, "", `{"partner":"mixpanel"}`, 401, "admin token"},
		{"create with wrong token", "POST", keys, testAdminToken + "x", `{"partner":"mixpanel"}`, 401, "admin token"},
		{"list without token", "GET", keys, "", "", 401, "admin token"},
		{"revoke without token", "DELETE", keys + "/" + other.ID, "", "", 401, "admin token"},
		{"invalid workspace", "POST", "/v1/workspaces/Not%20Valid/keys", testAdminToken, `{"partner":"mixpanel"}`, 400, "workspace"},
		{"malformed JSON", "POST", keys, testAdminToken, `{"partner":`, 400, "JSON"},
		{"not an object", "POST", keys, testAdminToken, `["mixpanel"]`, 400, "JSON object"},
		{"empty body", "POST", keys, testAdminToken, ``, 400, "JSON object"},
		{"trailing data", "POST", keys, testAdminToken, `{"partner":"mixpanel"} {}`, 400, "single JSON object"},
		{"unknown field", "POST", keys, testAdminToken, `{"partnr":"mixpanel"}`, 400, "unknown field"},
		{"wrong type", "POST", keys, testAdminToken, `{"partner":7}`, 400, `"partner"`},
		{"missing partner", "POST", keys, testAdminToken, `{"label":"x"}`, 400, "partner is required"},
		{"unknown partner", "POST", keys, testAdminToken, `{"partner":"braze"}`, 400, `partner "braze" is unknown or not enabled`},
		{"disabled partner name syntax", "POST", keys, testAdminToken, `{"partner":"Mix Panel"}`, 400, "not enabled"},
		{"label with newline", "POST", keys, testAdminToken, `{"partner":"mixpanel","label":"a\nb"}`, 400, "control characters"},
		{"huge body", "POST", keys, testAdminToken, `{"partner":"mixpanel","label":"` + strings.Repeat("x", maxAdminBody) + `"}`, 400, "larger than"},
		{"revoke unknown key", "DELETE", keys + "/ffffffffffffffff", testAdminToken, "", 404, "key not found"},
		{"revoke malformed key id", "DELETE", keys + "/nope", testAdminToken, "", 404, "key not found"},
		{"revoke another workspace's key", "DELETE", keys + "/" + other.ID, testAdminToken, "", 404, "key not found"},
	}
	// The group returns only when its parallel subtests are done, so the
	// checks after it see their effects.
	t.Run("requests", func(t *testing.T) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				t.Parallel()
				status, body, hdr := f.call(t, tt.method, tt.path, tt.token, tt.body)
				if status != tt.wantStatus {
					t.Fatalf("status %d, want %d; body %s", status, tt.wantStatus, body)
				}
				if ct := hdr.Get("Content-Type"); ct != "application/json" {
					t.Fatalf("Content-Type %q", ct)
				}
				var eb ErrorBody
				if err := json.Unmarshal([]byte(body), &eb); err != nil || !strings.Contains(eb.Error, tt.wantError) {
					t.Fatalf("error body %s (%v), want error containing %q", body, err, tt.wantError)
				}
				if status == 401 && hdr.Get("WWW-Authenticate") == "" {
					t.Fatal("401 without WWW-Authenticate")
				}
			})
		}
	})
	if got, _ := f.store.Get(other.ID); got.Revoked() {
		t.Fatal("a request from the wrong workspace revoked a key")
	}
	if l := f.store.List("acme"); len(l) != 0 {
		t.Fatalf("failed requests created keys: %+v", l)
	}
	if logs := f.logs.String(); strings.Contains(logs, testAdminToken) || !strings.Contains(logs, "admin request refused") {
		t.Fatalf("refused requests are not audited, or the token was logged:\n%s", logs)
	}
}

func TestAdminAPILifecycle(t *testing.T) {
	t.Parallel()
	f := newAdminFixture(t)
	const keys = "/v1/workspaces/acme/keys"

	status, body, hdr := f.call(t, "POST", keys, testAdminToken, `{"partner":"mixpanel","label":"prod export"}`)
	if status != http.StatusCreated {
		t.Fatalf("create: %d %s", status, body)
	}
	if hdr.Get("Cache-Control") != "no-store" {
		t.Fatal("secret answer may be cached")
	}
	var created map[string]any
	if err := json.Unmarshal([]byte(body), &created); err != nil {
		t.Fatal(err)
	}
	for _, field := range []string{"key_id", "client_secret", "partner", "label", "created_at"} {
		if _, ok := created[field]; !ok {
			t.Fatalf("create answer lacks %q: %s", field, body)
		}
	}
	if _, ok := created["secret_sha256"]; ok {
		t.Fatal("create answer carries the hash")
	}
	id, secret := created["key_id"].(string), created["client_secret"].(string)
	if created["partner"] != "mixpanel" || created["label"] != "prod export" {
		t.Fatalf("create answer %s", body)
	}
	if _, err := time.Parse(time.RFC3339, created["created_at"].(string)); err != nil {
		t.Fatalf("created_at: %v", err)
	}
	if k, ok := f.store.VerifySecret(secret); !ok || k.ID != id || k.Workspace != "acme" {
		t.Fatalf("the returned secret does not verify: %+v %v", k, ok)
	}

	status, body, _ = f.call(t, "POST", keys, testAdminToken, `{"partner":"amplitude"}`)
	if status != http.StatusCreated {
		t.Fatalf("second create: %d %s", status, body)
	}

	status, body, _ = f.call(t, "GET", keys, testAdminToken, "")
	if status != http.StatusOK {
		t.Fatalf("list: %d %s", status, body)
	}
	if strings.Contains(body, secret) || strings.Contains(body, "client_secret") || strings.Contains(body, "secret_sha256") || strings.Contains(body, HashSecret(secret)) {
		t.Fatalf("list reveals secrets or hashes: %s", body)
	}
	var list KeyList
	if err := json.Unmarshal([]byte(body), &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Keys) != 2 || list.Keys[0].KeyID != id || list.Keys[0].Status != "active" || list.Keys[0].RevokedAt != nil {
		t.Fatalf("list = %+v", list)
	}

	status, body, _ = f.call(t, "DELETE", keys+"/"+id, testAdminToken, "")
	if status != http.StatusNoContent || body != "" {
		t.Fatalf("revoke: %d %q", status, body)
	}
	if _, ok := f.store.VerifySecret(secret); ok {
		t.Fatal("revoked key still verifies")
	}
	_, body, _ = f.call(t, "GET", keys, testAdminToken, "")
	if err := json.Unmarshal([]byte(body), &list); err != nil {
		t.Fatal(err)
	}
	if list.Keys[0].Status != "revoked" || list.Keys[0].RevokedAt == nil || list.Keys[1].Status != "active" {
		t.Fatalf("list after revoke = %s", body)
	}

	// An empty workspace lists as an empty array, not null.
	_, body, _ = f.call(t, "GET", "/v1/workspaces/empty/keys", testAdminToken, "")
	if strings.TrimSpace(body) != `{"keys":[]}` {
		t.Fatalf("empty list = %s", body)
	}
	assertNoSecret(t, f.logs.String(), secret, id)
}

func TestClientAgainstServer(t *testing.T) {
	t.Parallel()
	f := newAdminFixture(t)
	ctx := testkit.Context(t, 20*time.Second)
	c, err := NewClient(f.srv.URL+"/", testAdminToken, f.srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	created, err := c.Create(ctx, "acme", "mixpanel", "from the cli")
	if err != nil {
		t.Fatal(err)
	}
	if created.Workspace != "acme" || created.Label != "from the cli" || created.CreatedAt.IsZero() {
		t.Fatalf("created = %+v", created)
	}
	if _, ok := f.store.VerifySecret(created.ClientSecret); !ok {
		t.Fatal("secret from the client does not verify")
	}
	list, err := c.List(ctx, "acme")
	if err != nil || len(list) != 1 || list[0].KeyID != created.KeyID || list[0].Status != "active" {
		t.Fatalf("List = %+v, %v", list, err)
	}
	if err := c.Revoke(ctx, "acme", created.KeyID); err != nil {
		t.Fatal(err)
	}
	if list, _ := c.List(ctx, "acme"); list[0].Status != "revoked" {
		t.Fatalf("after Revoke: %+v", list)
	}

	tests := []struct {
		name    string
		call    func(*Client) error
		token   string
		wantErr error
		wantMsg string
	}{
		{"unknown key", func(c *Client) error { return c.Revoke(ctx, "acme", "ffffffffffffffff") }, testAdminToken, ErrNotFound, "key not found"},
		{"key id needing escapes", func(c *Client) error { return c.Revoke(ctx, "acme", "../../x?y") }, testAdminToken, nil, ""},
		{"unknown partner", func(c *Client) error { _, err := c.Create(ctx, "acme", "braze", ""); return err }, testAdminToken, ErrInvalid, "not enabled"},
		{"wrong token", func(c *Client) error { _, err := c.List(ctx, "acme"); return err }, "cst_wrong-token-0000000000", ErrUnauthorized, "admin token"},
		{"bad workspace", func(c *Client) error { _, err := c.List(ctx, "Acme/Corp"); return err }, testAdminToken, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := NewClient(f.srv.URL, tt.token, f.srv.Client())
			if err != nil {
				t.Fatal(err)
			}
			err = tt.call(c)
			var apiErr *APIError
			if !errors.As(err, &apiErr) {
				t.Fatalf("err = %v, want an *APIError", err)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("err = %v, want the server's message %q", err, tt.wantMsg)
			}
		})
	}
}

func TestNewClientValidates(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, url, token string }{
		{"no scheme", "127.0.0.1:8080", "t"},
		{"ftp", "ftp://host", "t"},
		{"no host", "http://", "t"},
		{"no token", "http://127.0.0.1:8080", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if _, err := NewClient(tt.url, tt.token, nil); err == nil {
				t.Fatal("NewClient accepted it")
			}
		})
	}
}

func TestNewAdminAPIValidates(t *testing.T) {
	t.Parallel()
	if _, err := NewAdminAPI(nil, nil, nil, nil); err == nil {
		t.Fatal("NewAdminAPI accepted nil dependencies")
	}
}
