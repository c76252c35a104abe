package adminauth_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync/internal/testkit"
	"github.com/cohortsync/cohortsync/kafka"
	"github.com/cohortsync/cohortsync/kafka/kafkatest"
	"github.com/cohortsync/cohortsync/stores/adminauth"
)

const globalToken = "cst_global-admin-token-0123456789"

func openTokens(t *testing.T, client *kafka.Client) *adminauth.TokenStore {
	t.Helper()
	s, err := adminauth.OpenTokenStore(testkit.Context(t, 20*time.Second), client, adminauth.TokenStoreOptions{PollWait: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func request(token string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	if token != "" {
		r.Header.Set("Authorization", "Bearer "+token)
	}
	return r
}

func TestWorkspaceTokensAcrossInstances(t *testing.T) {
	t.Parallel()
	ctx := testkit.Context(t, 20*time.Second)
	client := kafkatest.NewClient(t, kafkatest.NewCluster(t), "tok")
	a := openTokens(t, client)

	rec, tokA, err := a.Create(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tokA, adminauth.TokenPrefix+rec.ID+"_") || rec.Workspace != "acme" {
		t.Fatalf("token %q record %+v", tokA, rec)
	}
	// Stored hashed: the topic never holds the token.
	for _, m := range kafkatest.ReadAll(t, client, client.Config().Topics.Tokens) {
		if strings.Contains(string(m.Value), strings.TrimPrefix(tokA, adminauth.TokenPrefix+rec.ID+"_")) {
			t.Fatalf("topic holds the token: %s", m.Value)
		}
		var stored adminauth.Token
		if err := json.Unmarshal(m.Value, &stored); err != nil || stored.SHA256 == "" || string(m.Key) != stored.ID {
			t.Fatalf("stored record %s key %s (%v)", m.Value, m.Key, err)
		}
	}
	if got, ok := a.Verify(tokA); !ok || got.Workspace != "acme" {
		t.Fatalf("Verify right after Create = %+v, %v", got, ok)
	}

	// Another instance replays it, and sees a revocation through its tail.
	b := openTokens(t, client)
	if _, ok := b.Verify(tokA); !ok {
		t.Fatal("second instance does not know the token")
	}
	_, tokB, err := a.Create(ctx, "beta")
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Revoke(ctx, "beta", rec.ID); err == nil {
		t.Fatal("revoked acme's token through workspace beta")
	}
	if err := a.Revoke(ctx, "acme", rec.ID); err != nil {
		t.Fatal(err)
	}
	if _, ok := a.Verify(tokA); ok {
		t.Fatal("revoked token verifies on the instance that revoked it")
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, okA := b.Verify(tokA)
		_, okB := b.Verify(tokB)
		if !okA && okB {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("second instance after 5s: revoked token ok=%v, new token ok=%v", okA, okB)
		}
		time.Sleep(10 * time.Millisecond)
	}

	bad := []string{"", tokB + "x", tokB[:len(tokB)-1], strings.Replace(tokB, "cst_", "csk_", 1), "cst_0123456789abcdef_", globalToken}
	for _, tok := range bad {
		if _, ok := b.Verify(tok); ok {
			t.Errorf("Verify(%q) accepted", tok)
		}
	}
	if _, _, err := a.Create(ctx, "Not Valid"); err == nil {
		t.Fatal("minted a token for an invalid workspace")
	}
}

func TestScopedDecisions(t *testing.T) {
	t.Parallel()
	ctx := testkit.Context(t, 20*time.Second)
	client := kafkatest.NewClient(t, kafkatest.NewCluster(t), "scoped")
	store := openTokens(t, client)
	admin, err := adminauth.NewAdminToken(globalToken)
	if err != nil {
		t.Fatal(err)
	}
	auth, err := adminauth.NewScoped(admin, store)
	if err != nil {
		t.Fatal(err)
	}
	_, tokA, err := store.Create(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	recR, tokRevoked, err := store.Create(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Revoke(ctx, "acme", recR.ID); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, token, ws string
		want            adminauth.Decision
	}{
		{"global on acme", globalToken, "acme", adminauth.AllowedGlobal},
		{"global on any", globalToken, "zzz", adminauth.AllowedGlobal},
		{"own workspace", tokA, "acme", adminauth.AllowedWorkspace},
		{"other workspace", tokA, "beta", adminauth.OtherWorkspace},
		{"revoked", tokRevoked, "acme", adminauth.Unauthenticated},
		{"no token", "", "acme", adminauth.Unauthenticated},
		{"unknown token", "cst_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "acme", adminauth.Unauthenticated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := auth.Check(request(tt.token), tt.ws); got != tt.want {
				t.Fatalf("Check = %s, want %s", got, tt.want)
			}
			if got := auth.Authorize(request(tt.token), tt.ws); got != tt.want.Allowed() {
				t.Fatalf("Authorize = %v, want %v", got, tt.want.Allowed())
			}
		})
	}
	if _, err := adminauth.NewScoped(nil, nil); err == nil || !strings.Contains(err.Error(), "nil admin token") {
		t.Fatalf("NewScoped(nil, nil) = %v", err)
	}
}

func TestTokenAPI(t *testing.T) {
	t.Parallel()
	ctx := testkit.Context(t, 20*time.Second)
	client := kafkatest.NewClient(t, kafkatest.NewCluster(t), "tokapi")
	store := openTokens(t, client)
	admin, err := adminauth.NewAdminToken(globalToken)
	if err != nil {
		t.Fatal(err)
	}
	auth, err := adminauth.NewScoped(admin, store)
	if err != nil {
		t.Fatal(err)
	}
	api, err := adminauth.NewTokenAPI(store, auth, nil)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	api.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	created, err := adminauth.MintToken(ctx, srv.Client(), srv.URL, globalToken, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if created.Workspace != "acme" || created.ID == "" || created.CreatedAt.IsZero() {
		t.Fatalf("created %+v", created)
	}
	if got, ok := store.Verify(created.Token); !ok || got.ID != created.ID {
		t.Fatalf("minted token does not verify: %+v %v", got, ok)
	}

	tests := []struct {
		name, token, ws string
		status          int
		body            string
	}{
		{"no token", "", "acme", 401, adminauth.UnauthenticatedMessage},
		{"wrong token", globalToken + "x", "acme", 401, adminauth.UnauthenticatedMessage},
		{"workspace token, own workspace", created.Token, "acme", 403, adminauth.OnlyAdminMintsMessage},
		{"workspace token, other workspace", created.Token, "beta", 404, adminauth.NotFoundMessage},
		{"global, invalid workspace", globalToken, "Not%20Valid", 400, "must be 1-63 lowercase letters"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/v1/workspaces/"+tt.ws+"/tokens", nil)
			if tt.token != "" {
				req.Header.Set("Authorization", "Bearer "+tt.token)
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			raw, _ := io.ReadAll(resp.Body)
			var eb struct{ Error string }
			if resp.StatusCode != tt.status || json.Unmarshal(raw, &eb) != nil || !strings.Contains(eb.Error, tt.body) {
				t.Fatalf("got %d %s, want %d with %q", resp.StatusCode, raw, tt.status, tt.body)
			}
			if (tt.status == 401) != (resp.Header.Get("WWW-Authenticate") != "") {
				t.Fatalf("WWW-Authenticate %q on %d", resp.Header.Get("WWW-Authenticate"), tt.status)
			}
		})
	}
}
