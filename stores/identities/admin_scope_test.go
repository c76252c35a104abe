package identities

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/cohortsync/cohortsync/stores/adminauth"
)

type tokenTable map[string]string // token → workspace

func (m tokenTable) Verify(tok string) (adminauth.Token, bool) {
	ws, ok := m[tok]
	return adminauth.Token{Workspace: ws}, ok
}

// TestAdminAPIWorkspaceTokens: a token of acme loads acme's identities and
// gets the 404 of a missing resource for another workspace, landing nothing.
func TestAdminAPIWorkspaceTokens(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	f := newAdminFixture(t, newTestClient(t), cfg)
	loader, err := NewLoader(f.client, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = loader.Close() })
	admin, err := adminauth.NewAdminToken(testAdminToken)
	if err != nil {
		t.Fatal(err)
	}
	const acmeToken = "cst_0123456789abcdef_acme-token"
	auth, err := adminauth.NewScoped(admin, tokenTable{acmeToken: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	api, err := NewAdminAPI(loader, auth, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	api.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	f.srv = srv

	status, raw, _ := f.post(t, "/v1/workspaces/beta/identities", acmeToken, strings.NewReader(`{"user_id":"b1"}`))
	var eb ErrorBody
	if status != http.StatusNotFound || json.Unmarshal([]byte(raw), &eb) != nil || eb.Error != adminauth.NotFoundMessage {
		t.Fatalf("other workspace: %d %s, want 404 not found", status, raw)
	}
	if got := f.landed(t); len(got) != 0 {
		t.Fatalf("a refused request landed %v", keysOf(got))
	}
	if status, raw, _ := f.post(t, "/v1/workspaces/acme/identities", acmeToken, strings.NewReader(`{"user_id":"a1"}`)); status != http.StatusOK {
		t.Fatalf("own workspace: %d %s", status, raw)
	}
	if status, raw, _ := f.post(t, "/v1/workspaces/beta/identities", "", strings.NewReader(`{"user_id":"b1"}`)); status != http.StatusUnauthorized {
		t.Fatalf("no token: %d %s", status, raw)
	}
	got := f.landed(t)
	if len(got) != 1 || !strings.Contains(strings.Join(keysOf(got), ","), "acme/a1") {
		t.Fatalf("landed %v, want only acme/a1", keysOf(got))
	}
}
