package main

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync/config"
	"github.com/cohortsync/cohortsync/internal/testkit"
	"github.com/cohortsync/cohortsync/service"
)

// TestDemoCommand runs the README tour's second step against a real server
// whose partner_api_key was generated at its first start: the demo finds it
// in the data directory and its check of /metrics passes.
func TestDemoCommand(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	const token = "cst_demo-command-test-token"
	cfg := config.Default()
	cfg.Embedded.KafkaAddr = "127.0.0.1:0" // tests run in parallel: any free port
	cfg.DataDir, cfg.HTTPAddr, cfg.AdminToken = dir, "127.0.0.1:0", token
	ctx, cancel := context.WithCancel(context.Background())
	ready, done := make(chan string, 1), make(chan error, 1)
	go func() {
		done <- service.Run(ctx, cfg, slog.New(slog.DiscardHandler), service.Options{Out: io.Discard, Ready: func(a string) { ready <- a }})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("service did not stop")
		}
	})
	var addr string
	select {
	case addr = <-ready:
	case err := <-done:
		t.Fatalf("service: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("service not ready")
	}

	tctx, tcancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer tcancel()
	r := execute(t, tctx, map[string]string{"COHORTSYNC_ADMIN_TOKEN": token}, nil,
		"demo", "--server", "http://"+addr, "--data-dir", dir, "--users", "60", "--rounds", "2", "--interval", "0", "--seed", "3", "--wait", "20s")
	if r.code != exitOK {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	for _, want := range []string{"identities: loaded 60 users", "sync round 2 of 2", "restarted from the top", "expected outcome", "billable data points (state store):"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, r.stdout)
		}
	}
	if strings.Contains(r.stdout, "MISMATCH") {
		t.Errorf("mismatch:\n%s", r.stdout)
	}
}

func TestDemoCommandErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"no partner key anywhere", []string{"demo", "--server", "http://127.0.0.1:1", "--token", "t", "--data-dir", t.TempDir()}, nil, "--partner-key"},
		{"no server", []string{"demo", "--token", "t", "--partner-key", "k"}, nil, "server:"},
		{"bad sizes", []string{"demo", "--server", "http://127.0.0.1:1", "--partner-key", "k", "--users", "1", "--batch-size", "5000"},
			map[string]string{"COHORTSYNC_ADMIN_TOKEN": "cst_long-enough-admin-token"}, "batch_size:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := execute(t, testkit.Context(t, 10*time.Second), tc.env, nil, tc.args...)
			if r.code != exitUsage || !strings.Contains(r.stderr, tc.want) {
				t.Fatalf("exit %d, stderr %q; want exit %d mentioning %q", r.code, r.stderr, exitUsage, tc.want)
			}
		})
	}
}
