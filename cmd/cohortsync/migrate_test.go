package main

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync/internal/chtest"
	"github.com/cohortsync/cohortsync/internal/testkit"
	chsink "github.com/cohortsync/cohortsync/sinks/clickhouse"
)

func TestMigrateCommand(t *testing.T) {
	t.Parallel()
	addr, db := chtest.NewDatabase(t)

	// Every step applies on a new database, in order.
	v := chsink.SchemaVersion()
	steps := make([]string, v)
	for i := range steps {
		steps[i] = strconv.Itoa(i + 1)
	}
	first := execute(t, testkit.Context(t, 10*time.Second), nil, nil, "migrate", "--clickhouse-addr", addr, "--clickhouse-database", db, "--log-level", "warn")
	if want := fmt.Sprintf("schema version 0 -> %d (applied [%s])", v, strings.Join(steps, " ")); first.code != exitOK || !strings.Contains(first.stdout, want) {
		t.Fatalf("first migrate: exit %d, stdout %q, stderr %q", first.code, first.stdout, first.stderr)
	}
	// The environment names the server as well as the flag does.
	env := map[string]string{"COHORTSYNC_CLICKHOUSE_ADDR": addr, "COHORTSYNC_CLICKHOUSE_DATABASE": db}
	second := execute(t, testkit.Context(t, 10*time.Second), env, nil, "migrate", "--log-level", "warn")
	if want := fmt.Sprintf("schema version %d, nothing to do", v); second.code != exitOK || !strings.Contains(second.stdout, want) {
		t.Fatalf("second migrate: exit %d, stdout %q, stderr %q", second.code, second.stdout, second.stderr)
	}
}

func TestMigrateCommandErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no server", []string{"migrate"}, exitUsage, "migrate needs a server: set --clickhouse-addr"},
		{"bad cluster name", []string{"migrate", "--clickhouse-addr", "127.0.0.1:9000", "--cluster", "a-b"}, exitUsage, `cluster: "a-b" must be letters`},
		{"server down", []string{"migrate", "--clickhouse-addr", "127.0.0.1:1", "--timeout", "5s"}, exitFailure, "connection refused"},
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

func TestMigrateDryRunPrintsClusterDDL(t *testing.T) {
	t.Parallel()
	r := execute(t, testkit.Context(t, 10*time.Second), nil, nil, "migrate", "--dry-run", "--cluster", "main", "--clickhouse-database", "analytics")
	if r.code != exitOK {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	for _, want := range []string{
		"CREATE DATABASE IF NOT EXISTS `analytics` ON CLUSTER `main`;",
		"ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/analytics/membership_local', '{replica}', version)",
		"ENGINE = Distributed(`main`, `analytics`, `membership_local`, cityHash64(workspace, partner, cohort_id));",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("dry run lacks %q:\n%s", want, r.stdout)
		}
	}
}
