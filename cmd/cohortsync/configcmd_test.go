package main

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync/config"
	"github.com/cohortsync/cohortsync/internal/testkit"
)

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	full := filepath.Join("..", "..", "config", "testdata", "full.yaml")
	env := map[string]string{"COHORTSYNC_KAFKA_PARTITIONS": "3", "COHORTSYNC_MIXPANEL_SECRET": "x"}
	r := execute(t, testkit.Context(t, 10*time.Second), env, nil, "config", "validate", "--config", full)
	if r.code != exitOK || r.stdout != "configuration is valid\n" || r.stderr != "" {
		t.Errorf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	r = execute(t, testkit.Context(t, 10*time.Second), nil, nil, "config", "validate", "--log-level", "loud")
	if r.code != exitUsage || r.stdout != "" || !strings.Contains(r.stderr, `  log.level: "loud" is not one of`) {
		t.Errorf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	r = execute(t, testkit.Context(t, 10*time.Second), nil, nil, "config", "valdate")
	if r.code != exitUsage || !strings.Contains(r.stderr, `unknown command "valdate" for cohortsync config; did you mean validate?`) {
		t.Errorf("exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestConfigPrint(t *testing.T) {
	t.Parallel()
	full := filepath.Join("..", "..", "config", "testdata", "full.yaml")
	env := map[string]string{
		"COHORTSYNC_PARTNERS_NEWTOOL_API_KEY": "newtool-key-0123456789",
		"COHORTSYNC_SNAPSHOTS_KEPT":           "9",
		// Set as execute would set it; the file's own value is overridden.
		"COHORTSYNC_EMBEDDED_KAFKA_ADDR": "127.0.0.1:0",
	}
	args := []string{"--config", full, "--http-addr", "0.0.0.0:1234"}
	want, err := config.Load(config.LoadOptions{File: full, Env: env})
	if err != nil {
		t.Fatal(err)
	}
	want.HTTPAddr = "0.0.0.0:1234"

	r := execute(t, testkit.Context(t, 10*time.Second), env, nil, append([]string{"config", "print"}, args...)...)
	if r.code != exitOK || r.stderr != "" {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	if got := loadPrinted(t, r.stdout); !reflect.DeepEqual(got, want) {
		t.Errorf("printed configuration loads as\n%+v\nwant\n%+v\n%s", got, want, r.stdout)
	}
	for _, secret := range []string{"admin-token-0123456789", "mixpanel-key-0123456789", "newtool-key-0123456789", "sasl-password", "ch-password"} {
		if !strings.Contains(r.stdout, secret) {
			t.Errorf("config print without --redact lacks %q", secret)
		}
	}

	r = execute(t, testkit.Context(t, 10*time.Second), env, nil, append([]string{"config", "print", "--redact"}, args...)...)
	if r.code != exitOK || r.stderr != "" {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	for _, secret := range []string{"admin-token-0123456789", "mixpanel-key-0123456789", "newtool-key-0123456789", "my-tool-key", "sasl-password", "ch-password"} {
		if strings.Contains(r.stdout, secret) {
			t.Errorf("config print --redact shows %q:\n%s", secret, r.stdout)
		}
	}
	got := loadPrinted(t, r.stdout)
	if got.AdminToken != config.Redacted || got.Partners["newtool"].APIKey != config.Redacted || got.Partners["heap"].APIKey != "" {
		t.Errorf("redacted: admin_token %q, partners %+v", got.AdminToken, got.Partners)
	}

	r = execute(t, testkit.Context(t, 10*time.Second), nil, nil, "config", "print", "--http-addr", "nonsense")
	if r.code != exitUsage || r.stdout != "" || !strings.Contains(r.stderr, `http_addr: "nonsense" is not HOST:PORT`) {
		t.Errorf("invalid configuration: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
}

// loadPrinted loads what config print wrote, as --config would.
func loadPrinted(t *testing.T, text string) config.Config {
	t.Helper()
	path := filepath.Join(t.TempDir(), "printed.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(config.LoadOptions{File: path})
	if err != nil {
		t.Fatalf("loading the printed configuration: %v\n%s", err, text)
	}
	return cfg
}
