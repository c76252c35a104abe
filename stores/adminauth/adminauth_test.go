package adminauth

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestAdminTokenAuthorize(t *testing.T) {
	t.Parallel()
	const token = "cst_0123456789abcdefghij"
	a, err := NewAdminToken(token)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		header string
		want   bool
	}{
		{"bearer", "Bearer " + token, true},
		{"scheme case-insensitive", "bearer " + token, true},
		{"extra spaces", "Bearer   " + token + " ", true},
		{"missing", "", false},
		{"scheme only", "Bearer ", false},
		{"basic", "Basic " + base64.StdEncoding.EncodeToString([]byte("admin:"+token)), false},
		{"no scheme", token, false},
		{"wrong token", "Bearer cst_0123456789abcdefghiX", false},
		{"prefix of token", "Bearer " + token[:len(token)-1], false},
		{"token plus suffix", "Bearer " + token + "x", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := httptest.NewRequest(http.MethodGet, "/v1/workspaces/acme/keys", nil)
			if tt.header != "" {
				r.Header.Set("Authorization", tt.header)
			}
			if got := a.Authorize(r, "acme"); got != tt.want {
				t.Fatalf("Authorize = %v, want %v", got, tt.want)
			}
		})
	}
	var nilToken *AdminToken
	if nilToken.Authorize(httptest.NewRequest(http.MethodGet, "/", nil), "acme") {
		t.Fatal("nil AdminToken authorized a request")
	}
}

func TestAdminTokenKeepsOnlyAHash(t *testing.T) {
	t.Parallel()
	const token = "cst_do-not-print-me-please"
	a, err := NewAdminToken(token)
	if err != nil {
		t.Fatal(err)
	}
	if s := fmt.Sprintf("%+v %#v", a, a); strings.Contains(s, token) || strings.Contains(s, "do-not-print") {
		t.Fatalf("AdminToken holds the token in clear: %s", s)
	}
}

func TestNewAdminTokenRejects(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, token string }{
		{"empty", ""},
		{"short", "cst_short"},
		{"whitespace", "cst_0123456789 abcdef"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if _, err := NewAdminToken(tt.token); err == nil {
				t.Fatalf("NewAdminToken(%q) accepted it", tt.token)
			}
		})
	}
}

func TestGenerateToken(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for range 1000 {
		tok, err := GenerateToken()
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(tok, TokenPrefix) {
			t.Fatalf("token %q lacks prefix", tok)
		}
		raw, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(tok, TokenPrefix))
		if err != nil || len(raw) < 16 {
			t.Fatalf("token carries %d random bytes (%v), want at least 16", len(raw), err)
		}
		if seen[tok] {
			t.Fatal("repeated token")
		}
		seen[tok] = true
		a, err := NewAdminToken(tok)
		if err != nil {
			t.Fatalf("generated token refused: %v", err)
		}
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.Header.Set("Authorization", "Bearer "+tok)
		if !a.Authorize(r, "any") {
			t.Fatal("generated token does not authorize")
		}
	}
}

// The interface is what the admin API depends on.
var _ Authorizer = (*AdminToken)(nil)

func TestAdminTokenFromHash(t *testing.T) {
	t.Parallel()
	tok, err := GenerateToken()
	if err != nil {
		t.Fatal(err)
	}
	a, err := NewAdminToken(tok)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(a.Hash(), strings.TrimPrefix(tok, TokenPrefix)) || len(a.Hash()) != 64 {
		t.Fatalf("Hash() = %q", a.Hash())
	}
	restored, err := NewAdminTokenFromHash(a.Hash())
	if err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.Header.Set("Authorization", "Bearer "+tok)
	if !restored.Authorize(r, "acme") {
		t.Fatal("token restored from its hash does not authorize")
	}
	r.Header.Set("Authorization", "Bearer "+a.Hash())
	if restored.Authorize(r, "acme") {
		t.Fatal("the hash itself must not work as a token")
	}
	for _, bad := range []string{"", "zz", strings.Repeat("a", 63), strings.Repeat("g", 64)} {
		if _, err := NewAdminTokenFromHash(bad); err == nil {
			t.Fatalf("NewAdminTokenFromHash(%q) accepted it", bad)
		}
	}
}
