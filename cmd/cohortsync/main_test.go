package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync/config"
	"github.com/cohortsync/cohortsync/internal/testkit"
)

// result is one finished command line.
type result struct {
	code           int
	stdout, stderr string
}

// execute runs args with env as the whole environment and svc in place of
// service.Run. A nil svc fails the test if serve gets that far.
func execute(t *testing.T, ctx context.Context, env map[string]string, svc func(context.Context, config.Config, *slog.Logger) error, args ...string) result {
	t.Helper()
	var stdout, stderr testkit.SyncBuffer
	if _, ok := env["COHORTSYNC_EMBEDDED_KAFKA_ADDR"]; !ok {
		// Commands run in parallel, each with its own embedded broker: the
		// default's fixed port would be taken by the first.
		env = maps.Clone(env)
		if env == nil {
			env = map[string]string{}
		}
		env["COHORTSYNC_EMBEDDED_KAFKA_ADDR"] = "127.0.0.1:0"
	}
	c := newCLI(&stdout, &stderr, env)
	c.runService = svc
	if svc == nil {
		c.runService = func(context.Context, config.Config, *slog.Logger) error {
			t.Error("the service was started")
			return nil
		}
	}
	code := c.execute(ctx, args)
	return result{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

func TestVersion(t *testing.T) {
	t.Parallel()
	r := execute(t, testkit.Context(t, 10*time.Second), nil, nil, "version")
	if r.code != exitOK {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	for _, want := range []string{"cohortsync " + version + "\n", "commit: " + commit + "\n", runtime.Version()} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("version output %q lacks %q", r.stdout, want)
		}
	}
}

// TestRunVersion goes through run, the function main calls.
func TestRunVersion(t *testing.T) {
	t.Parallel()
	var stdout, stderr bytes.Buffer
	if code := run([]string{"version"}, &stdout, &stderr); code != exitOK || !strings.HasPrefix(stdout.String(), "cohortsync ") {
		t.Errorf("run version: exit %d, stdout %q, stderr %q", code, stdout.String(), stderr.String())
	}
}

func TestUsageErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		want string
		help string // the help the message points at
	}{
		{"unknown command", []string{"serv"}, `unknown command "serv"; did you mean serve?`, "cohortsync --help"},
		{"unknown flag", []string{"serve", "--no-such-flag"}, "unknown flag: --no-such-flag", "cohortsync serve --help"},
		{"argument to serve", []string{"serve", "extra"}, "cohortsync serve takes no arguments", "cohortsync serve --help"},
		{"bad flag value of a subcommand", []string{"snapshot", "--cohort", "x"}, "want PARTNER/COHORT_ID", "cohortsync snapshot --help"},
		{"nested command", []string{"parquet", "compact", "extra"}, "takes no arguments", "cohortsync parquet compact --help"},
		{"misspelt subcommand", []string{"parquet", "compcat"}, `unknown command "compcat" for cohortsync parquet; did you mean compact?`, "cohortsync parquet --help"},
		{"misspelt key command", []string{"keys", "lsit"}, `unknown command "lsit" for cohortsync keys; did you mean list?`, "cohortsync keys --help"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := execute(t, testkit.Context(t, 10*time.Second), nil, nil, tt.args...)
			if r.code != exitUsage || !strings.Contains(r.stderr, tt.want) || !strings.Contains(r.stderr, "Run '"+tt.help+"' for usage.") {
				t.Errorf("exit %d, stderr %q; want exit %d, %q and a pointer to %s", r.code, r.stderr, exitUsage, tt.want, tt.help)
			}
		})
	}
}

func TestNoArgumentsPrintsHelp(t *testing.T) {
	t.Parallel()
	r := execute(t, testkit.Context(t, 10*time.Second), nil, nil)
	if r.code != exitOK || !strings.Contains(r.stdout, "serve") || !strings.Contains(r.stdout, "--data-dir") {
		t.Errorf("exit %d, stdout %q", r.code, r.stdout)
	}
}

func TestServeInvalidConfig(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	badKey := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(badKey, []byte("http_adr: 127.0.0.1:1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		env  map[string]string
		args []string
		// wantLines must each appear as a line of stderr, after indentation.
		wantLines []string
	}{
		{
			name:      "flag and env problems reported together",
			env:       map[string]string{"COHORTSYNC_KAFKA_PARTITIONS": "0"},
			args:      []string{"serve", "--http-addr", "nonsense"},
			wantLines: []string{`http_addr: "nonsense" is not HOST:PORT`, "kafka.partitions: 0"},
		},
		{
			name:      "bad env value",
			env:       map[string]string{"COHORTSYNC_SHUTDOWN_TIMEOUT": "soon"},
			args:      []string{"serve"},
			wantLines: []string{"COHORTSYNC_SHUTDOWN_TIMEOUT:"},
		},
		{
			name:      "unknown key in the file",
			args:      []string{"serve", "--config", badKey},
			wantLines: []string{"http_adr: line 1: unknown key; did you mean http_addr?"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := execute(t, testkit.Context(t, 10*time.Second), tt.env, nil, tt.args...)
			if r.code != exitUsage {
				t.Errorf("exit %d, want %d", r.code, exitUsage)
			}
			lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
			for _, want := range tt.wantLines {
				found := false
				for _, l := range lines {
					if strings.Contains(l, want) {
						found = true
					}
				}
				if !found {
					t.Errorf("stderr has no line with %q:\n%s", want, r.stderr)
				}
			}
		})
	}
}

// TestConfigProblemsInOneRun checks that problems of the file, the
// environment, the flags and validation are all reported by one run, in that
// order, and nothing else.
func TestConfigProblemsInOneRun(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "cohortsync.yaml")
	file := "shutdown_timeout: 15\nlog:\n  level: loud\ningest:\n  rate_burst: many\nclickhouse:\n  databse: x\n"
	if err := os.WriteFile(path, []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"COHORTSYNC_EMBEDDED_KAFKA_ADDR": "127.0.0.1:99999",
		"COHORTSYNC_KAFKA_PARTITIONS":    "none",
		"COHORTSYNC_SNAPSHOT_KEPT":       "3",
		"COHORTSYNC_MIXPANEL_SECRET":     "read by backfill, not a setting",
	}
	for _, args := range [][]string{
		{"serve", "--config", path, "--http-addr", "nonsense"},
		{"config", "validate", "--config", path, "--http-addr", "nonsense"},
	} {
		r := execute(t, testkit.Context(t, 10*time.Second), env, nil, args...)
		want := `cohortsync: invalid configuration:
  shutdown_timeout: line 1: 15 is not a duration; write it with a unit, like 15s, 5m or 1h
  ingest.rate_burst: line 5: "many" is not a whole number
  clickhouse.databse: line 7: unknown key; did you mean clickhouse.database?
  COHORTSYNC_KAFKA_PARTITIONS: "none" is not a whole number
  COHORTSYNC_SNAPSHOT_KEPT: unknown variable, it sets nothing; did you mean COHORTSYNC_SNAPSHOTS_KEPT?
  http_addr: "nonsense" is not HOST:PORT (missing port in address)
  log.level: "loud" is not one of debug, info, warn, error
  embedded.kafka_addr: "127.0.0.1:99999" is not HOST:PORT (port "99999" is not a number from 0 to 65535)
`
		if r.code != exitUsage || r.stderr != want || r.stdout != "" {
			t.Errorf("%q: exit %d, stdout %q, stderr:\n%s\nwant exit %d, stderr:\n%s", args, r.code, r.stdout, r.stderr, exitUsage, want)
		}
	}
}

func TestServePassesConfigAndLogger(t *testing.T) {
	t.Parallel()
	var got config.Config
	svc := func(_ context.Context, cfg config.Config, log *slog.Logger) error {
		got = cfg
		log.Debug("service saw debug")
		return nil
	}
	env := map[string]string{
		"COHORTSYNC_HTTP_ADDR":                 "127.0.0.1:0",
		"COHORTSYNC_PARTNERS_MIXPANEL_API_KEY": "mixpanel-key-0123456789",
	}
	dataDir := t.TempDir()
	r := execute(t, testkit.Context(t, 10*time.Second), env, svc, "serve", "--data-dir", dataDir, "--log-level", "debug")
	if r.code != exitOK {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	if got.DataDir != dataDir || got.HTTPAddr != "127.0.0.1:0" || got.Partners["mixpanel"].APIKey != "mixpanel-key-0123456789" {
		t.Errorf("service got %+v", got)
	}
	if !strings.Contains(r.stderr, `"msg":"service saw debug"`) {
		t.Errorf("logger is not JSON at debug level: stderr %q", r.stderr)
	}
}

func TestServeFailure(t *testing.T) {
	t.Parallel()
	svc := func(context.Context, config.Config, *slog.Logger) error {
		return errors.New("port in use")
	}
	r := execute(t, testkit.Context(t, 10*time.Second), nil, svc, "serve")
	if r.code != exitFailure || !strings.Contains(r.stderr, "cohortsync: serve: port in use") {
		t.Errorf("exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestServeStopsWhenCancelled(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// svc runs until ctx is done, then returns what it wants to.
		svc      func(ctx context.Context, release <-chan struct{}) error
		wantCode int
		wantErr  string
	}{
		{
			name:     "returns nil",
			svc:      func(ctx context.Context, _ <-chan struct{}) error { <-ctx.Done(); return nil },
			wantCode: exitOK,
		},
		{
			name:     "returns the context's error",
			svc:      func(ctx context.Context, _ <-chan struct{}) error { <-ctx.Done(); return ctx.Err() },
			wantCode: exitOK,
		},
		{
			name: "never stops",
			svc: func(ctx context.Context, release <-chan struct{}) error {
				<-ctx.Done()
				<-release
				return nil
			},
			wantCode: exitFailure,
			wantErr:  "did not stop within shutdown_timeout (50ms)",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithCancel(testkit.Context(t, 10*time.Second))
			release := make(chan struct{})
			t.Cleanup(func() { close(release) })
			started := make(chan struct{})
			svc := func(ctx context.Context, _ config.Config, _ *slog.Logger) error {
				close(started)
				return tt.svc(ctx, release)
			}
			go func() { <-started; cancel() }()
			env := map[string]string{"COHORTSYNC_SHUTDOWN_TIMEOUT": "50ms"}
			r := execute(t, ctx, env, svc, "serve")
			if r.code != tt.wantCode || !strings.Contains(r.stderr, tt.wantErr) {
				t.Errorf("exit %d, stderr %q; want exit %d with %q", r.code, r.stderr, tt.wantCode, tt.wantErr)
			}
		})
	}
}
