package keys

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync/internal/testkit"
	"github.com/cohortsync/cohortsync/stores/adminauth"
)

// tokenTable is an in-test set of workspace tokens.
type tokenTable map[string]string // token → workspace

func (m tokenTable) Verify(tok string) (adminauth.Token, bool) {
	ws, ok := m[tok]
	return adminauth.Token{Workspace: ws}, ok
}

// TestAdminAPIWorkspaceTokens: a token of workspace acme manages acme's keys
// and gets the 404 of a missing resource for every route of another
// workspace, which must stay untouched.
func TestAdminAPIWorkspaceTokens(t *testing.T) {
	t.Parallel()
	f := newAdminFixture(t)
	ctx := testkit.Context(t, 20*time.Second)
	admin, err := adminauth.NewAdminToken(testAdminToken)
	if err != nil {
		t.Fatal(err)
	}
	const acmeToken = "cst_0123456789abcdef_acme-token"
	auth, err := adminauth.NewScoped(admin, tokenTable{acmeToken: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	api, err := NewAdminAPI(f.store, auth, func(string) bool { return true }, nil)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	api.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	f.srv = srv

	betaKey, _, err := f.store.Create(ctx, "beta", "mixpanel", "")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, method, path, token, body string
		status                          int
	}{
		{"own create", "POST", "/v1/workspaces/acme/keys", acmeToken, `{"partner":"mixpanel"}`, 201},
		{"own list", "GET", "/v1/workspaces/acme/keys", acmeToken, "", 200},
		{"other create", "POST", "/v1/workspaces/beta/keys", acmeToken, `{"partner":"mixpanel"}`, 404},
		{"other list", "GET", "/v1/workspaces/beta/keys", acmeToken, "", 404},
		{"other revoke", "DELETE", "/v1/workspaces/beta/keys/" + betaKey.ID, acmeToken, "", 404},
		{"nonexistent workspace", "GET", "/v1/workspaces/nobody/keys", acmeToken, "", 404},
		{"global on beta", "GET", "/v1/workspaces/beta/keys", testAdminToken, "", 200},
		{"no token", "GET", "/v1/workspaces/acme/keys", "", "", 401},
	}
	for _, tt := range tests {
		status, body, _ := f.call(t, tt.method, tt.path, tt.token, tt.body)
		if status != tt.status {
			t.Errorf("%s: %d %s, want %d", tt.name, status, body, tt.status)
			continue
		}
		if status == 404 {
			var eb ErrorBody
			if json.Unmarshal([]byte(body), &eb) != nil || eb.Error != adminauth.NotFoundMessage {
				t.Errorf("%s: 404 body %s, want the body of a missing resource", tt.name, body)
			}
		}
	}
	if got, _ := f.store.Get(betaKey.ID); got.Revoked() || len(f.store.List("beta")) != 1 {
		t.Fatal("a token of acme changed beta's keys")
	}
}
