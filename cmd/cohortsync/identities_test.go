package main

import (
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
	"github.com/cohortsync/cohortsync/stores/identities"
)

func writeFile(t *testing.T, lines ...string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "identities.ndjson")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestIdentitiesLoadDirect loads a file into a fresh data directory, then
// opens that directory the way serve does and finds the identities in the
// replica built from the topic.
func TestIdentitiesLoadDirect(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir()
	file := writeFile(t,
		`{"user_id":"u1","external_id":"e1","device_ids":["d1"]}`,
		`{"user_id":"u2","device_ids":["d2"]}`,
		`{"user_id":"u3","external_id":""}`,
		``,
		`{"user_id":"u4","aliases":[{"alias_name":"a@x.io","alias_label":"email"}]}`,
	)
	r := execute(t, testkit.Context(t, 10*time.Second), nil, nil, "identities", "load", file, "--data-dir", dataDir, "--workspace", "acme")
	if r.code != exitFailure {
		t.Errorf("exit %d with a rejected line, want %d", r.code, exitFailure)
	}
	if want := file + ":3: external_id must be a non-empty string or absent"; !strings.Contains(r.stderr, want) {
		t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
	}
	if want := file + ": workspace acme: 4 records, 3 accepted, 1 rejected\n"; r.stdout != want {
		t.Errorf("stdout %q, want %q", r.stdout, want)
	}
	if !strings.Contains(r.stderr, "1 of 4 records rejected") {
		t.Errorf("stderr lacks the failure summary:\n%s", r.stderr)
	}

	// A second, clean load replaces u2: identified now.
	clean := writeFile(t, `{"user_id":"u2","external_id":"e2","device_ids":["d2"]}`)
	r = execute(t, testkit.Context(t, 10*time.Second), nil, nil, "identities", "load", clean, "--data-dir", dataDir, "-w", "acme")
	if r.code != exitOK || !strings.Contains(r.stdout, "1 records, 1 accepted, 0 rejected") {
		t.Fatalf("clean load: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}

	ctx := testkit.Context(t, 10*time.Second)
	cfg := config.Default()
	cfg.Embedded.KafkaAddr = "127.0.0.1:0" // tests run in parallel: any free port
	cfg.DataDir = dataDir
	log := slog.New(slog.DiscardHandler)
	core, err := service.OpenCore(ctx, cfg, log, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	defer core.Close()
	dir, err := identities.Open(ctx, core.Kafka, identities.DefaultConfig(dataDir), identities.Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer dir.Close()
	type match struct {
		user              string
		identified, found bool
	}
	m := func(u string, i, f bool) match { return match{u, i, f} }
	for name, tt := range map[string]struct{ got, want match }{
		"external id":                  {m(dir.LookupExternalID("acme", "e1")), match{"u1", true, true}},
		"later identified device":      {m(dir.LookupDevice("acme", "d2")), match{"u2", true, true}},
		"alias":                        {m(dir.LookupAlias("acme", "a@x.io", "email")), match{"u4", false, true}},
		"rejected line did not land":   {m(dir.LookupExternalID("acme", "u3")), match{}},
		"other workspace sees none":    {m(dir.LookupExternalID("default", "e1")), match{}},
		"replaced record's new ext id": {m(dir.LookupExternalID("acme", "e2")), match{"u2", true, true}},
	} {
		if tt.got != tt.want {
			t.Errorf("%s: got %+v, want %+v", name, tt.got, tt.want)
		}
	}
	if _, err := os.Stat(filepath.Join(dataDir, identities.FileName)); err != nil {
		t.Errorf("replica file not under the data dir: %v", err)
	}
}

func TestIdentitiesLoadErrors(t *testing.T) {
	t.Parallel()
	file := writeFile(t, `{"user_id":"u1"}`)
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no file", []string{"identities", "load"}, exitUsage, "takes exactly one FILE"},
		{"bad workspace", []string{"identities", "load", file, "--workspace", "Not Valid"}, exitUsage, `--workspace "Not Valid"`},
		{"missing file", []string{"identities", "load", filepath.Join(t.TempDir(), "nope.ndjson"), "--data-dir", t.TempDir()}, exitFailure, "no such file"},
		{"bad server url", []string{"identities", "load", file, "--server", "ftp://x", "--token", "cst_0123456789abcdef"}, exitUsage, "must look like http://host:port"},
		{"server without token", []string{"identities", "load", file, "--server", "http://127.0.0.1:1"}, exitUsage, "admin token is empty"},
		{"server down", []string{"identities", "load", file, "--server", "http://127.0.0.1:1", "--token", "cst_0123456789abcdef"}, exitFailure, "connection refused"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := execute(t, testkit.Context(t, 10*time.Second), nil, nil, tt.args...)
			if r.code != tt.code || !strings.Contains(r.stderr, tt.want) {
				t.Errorf("exit %d, stderr %q; want exit %d and %q", r.code, r.stderr, tt.code, tt.want)
			}
		})
	}
}
