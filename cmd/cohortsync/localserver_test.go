package main

import (
	"encoding/json"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cohortsync/cohortsync/config"
	"github.com/cohortsync/cohortsync/internal/testkit"
	"github.com/cohortsync/cohortsync/service"
)

// TestCommandsWorkThroughTheServerHoldingTheDataDir: README's commands
// without --server keep working while serve holds --data-dir. They find
// the server in DATA_DIR/server.json and go through its API with the
// token of that start, which the file alone grants; the file is gone once
// the server stops.
func TestCommandsWorkThroughTheServerHoldingTheDataDir(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	_, stop := serveFor(t, dir, "cst_local-server-test-admin")
	ctx := testkit.Context(t, 60*time.Second)

	info, err := os.Stat(filepath.Join(dir, service.LocalServerFile))
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Errorf("%s has mode %v, want 0600: it holds an admin token", service.LocalServerFile, info.Mode().Perm())
	}

	ids := filepath.Join(t.TempDir(), "ids.ndjson")
	writeLines(t, ids, []string{`{"user_id":"u1","external_id":"e1"}`, `{"user_id":"u2","external_id":"e2"}`})
	for _, args := range [][]string{
		{"identities", "load", ids},
		{"keys", "create", "--partner", "mixpanel", "--label", "second"},
		{"keys", "list", "--format", "json"},
		{"snapshot"},
	} {
		r := execute(t, ctx, nil, nil, append(args, "--data-dir", dir)...)
		if r.code != exitOK || !strings.Contains(r.stderr, "working through it") {
			t.Errorf("%s on a held data dir: exit %d\n%s\n%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
		}
		if len(args) > 1 && args[1] == "list" {
			var keys []json.RawMessage
			if err := json.Unmarshal([]byte(r.stdout), &keys); err != nil || len(keys) != 2 {
				t.Errorf("keys list through the server: %v, want the first key and the one just created:\n%s", err, r.stdout)
			}
		}
	}

	stop()
	if _, err := os.Stat(filepath.Join(dir, service.LocalServerFile)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("after the server stopped, %s: %v, want it removed", service.LocalServerFile, err)
	}
	// No server: the command opens the directory itself again.
	r := execute(t, ctx, nil, nil, "keys", "list", "--data-dir", dir)
	if r.code != exitOK || strings.Contains(r.stderr, "working through") {
		t.Errorf("keys list with no server: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
}

// TestHeldByAnotherCommandSaysSo: a data directory held by a command that is
// not a server (here an open Core) is reported as such, with no server to
// go through.
func TestHeldByAnotherCommandSaysSo(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ctx := testkit.Context(t, 60*time.Second)
	cfg := config.Default()
	cfg.Embedded.KafkaAddr = "127.0.0.1:0" // tests run in parallel: any free port
	cfg.DataDir = dir
	core, err := service.OpenCore(ctx, cfg, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	defer core.Close()
	r := execute(t, ctx, nil, nil, "keys", "list", "--data-dir", dir)
	if r.code != exitFailure || !strings.Contains(r.stderr, "another cohortsync command holds") {
		t.Errorf("keys list on a directory another command holds: exit %d\n%s", r.code, r.stderr)
	}
}
