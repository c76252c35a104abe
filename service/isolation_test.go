package service_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync/config"
	"github.com/cohortsync/cohortsync/service"
	"github.com/cohortsync/cohortsync/stores/adminauth"
)

// TestWorkspaceTokenIsolationEveryRoute walks every route the server
// registers under /v1/workspaces/{workspace}/: a token of workspace "alpha"
// gets 404 for all of them in workspace "beta", exactly like a workspace that
// does not exist, while the global admin token reaches beta. New routes are
// covered without touching this test.
func TestWorkspaceTokenIsolationEveryRoute(t *testing.T) {
	t.Parallel()
	const admin = "cst_isolation-test-admin-token"
	cfg := config.Default()
	cfg.Embedded.KafkaAddr = "127.0.0.1:0" // tests run in parallel: any free port
	cfg.DataDir, cfg.HTTPAddr, cfg.AdminToken = t.TempDir(), "127.0.0.1:0", admin
	cfg.Kafka.Partitions = 1
	ctx, cancel := context.WithCancel(context.Background())
	ready, done, routes := make(chan string, 1), make(chan error, 1), make(chan []string, 1)
	go func() {
		done <- service.Run(ctx, cfg, slog.New(slog.DiscardHandler), service.Options{
			Out: io.Discard, Ready: func(a string) { ready <- a }, Routes: func(p []string) { routes <- p },
		})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("service did not stop")
		}
	})
	var base string
	select {
	case base = <-ready:
		base = "http://" + base
	case err := <-done:
		t.Fatalf("service: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("service not ready")
	}
	patterns := <-routes

	code, body := post(t, base+"/v1/workspaces/alpha/tokens", "application/json", admin, "")
	if code != http.StatusCreated {
		t.Fatalf("mint alpha token: %d %s", code, body)
	}
	var minted struct{ Token string }
	if err := json.Unmarshal([]byte(body), &minted); err != nil || minted.Token == "" {
		t.Fatalf("minted token: %v in %s", err, body)
	}

	const prefix = "/v1/workspaces/{workspace}/"
	// The refusal is the same for another workspace as for none at all, so
	// a token cannot even learn which workspaces exist.
	refusal := `{"error":"` + adminauth.NotFoundMessage + `"}`
	checked := 0
	for _, p := range patterns {
		method, path, ok := strings.Cut(p, " ")
		if !ok || !strings.HasPrefix(path, prefix) {
			continue
		}
		checked++
		t.Run(p, func(t *testing.T) {
			// A real segment of beta, so that the admin's answer differs
			// from the refusal and alpha's 404 hides something that exists.
			segID := "0123456789abcdef"
			if strings.Contains(path, "{segment_id}") {
				req, err := http.NewRequest(http.MethodPost, base+"/v1/workspaces/beta/segments",
					strings.NewReader(`{"name":`+strconv.Quote(p)+`,"filter":{"cohort":{"partner":"mixpanel","id":"c"}}}`))
				if err != nil {
					t.Fatal(err)
				}
				req.Header.Set("Authorization", "Bearer "+admin)
				req.Header.Set("Content-Type", "application/json")
				code, body := do(t, req)
				var seg struct{ ID string }
				if err := json.Unmarshal([]byte(body), &seg); code != http.StatusCreated || err != nil {
					t.Fatalf("admin creates a segment in beta: %d %s", code, body)
				}
				segID = seg.ID
			}
			fill := func(pattern, ws string) string {
				return strings.NewReplacer("{workspace}", ws, "{segment_id}", segID, "{user_id}", "u-1", "{key_id}", "0123456789abcdef").Replace(pattern)
			}
			for _, ws := range []string{"beta", "no-such-workspace"} {
				u := base + fill(path, ws)
				code, body := call(t, method, u, minted.Token)
				if code != http.StatusNotFound || strings.TrimSpace(body) != refusal {
					t.Errorf("alpha's token on %s %s: %d %s, want 404 %s", method, u, code, body, refusal)
				}
			}
			// The admin token is not refused on beta: whatever it gets (a
			// 404 for a missing segment is fine), it is not the refusal.
			code, body := call(t, method, base+fill(path, "beta"), admin)
			if code == http.StatusUnauthorized || code == http.StatusForbidden || strings.TrimSpace(body) == refusal {
				t.Errorf("admin token on beta: %d %s", code, body)
			}
		})
	}
	if checked < 12 {
		t.Fatalf("only %d workspace routes registered: %v", checked, patterns)
	}
}

func call(t *testing.T, method, url, token string) (int, string) {
	t.Helper()
	var body io.Reader
	if method == http.MethodPost {
		body = strings.NewReader(requestBody(url))
	}
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return do(t, req)
}

// requestBody is a valid body for each POST route, so that an admin's
// answer is the route's own and not a 400.
func requestBody(url string) string {
	const filter = `{"cohort":{"partner":"mixpanel","id":"c"}}`
	switch {
	case strings.HasSuffix(url, "/segments"):
		return `{"name":"isolation","filter":` + filter + `}`
	case strings.HasSuffix(url, "/segments:evaluate"):
		return `{"filter":` + filter + `}`
	case strings.HasSuffix(url, "/keys"):
		return `{"partner":"mixpanel"}`
	case strings.HasSuffix(url, "/identities"):
		return `{"user_id":"u-1","external_id":"e-1"}`
	}
	return ""
}
