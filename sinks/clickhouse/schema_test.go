package clickhouse_test

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"

	"github.com/cohortsync/cohortsync/internal/chtest"
	"github.com/cohortsync/cohortsync/internal/testkit"
	chsink "github.com/cohortsync/cohortsync/sinks/clickhouse"
)

func clusterConfig(cluster string) chsink.Config {
	c := chsink.DefaultConfig()
	c.Addr = "127.0.0.1:9000"
	c.Database = "cs"
	c.Cluster = cluster
	return c
}

// TestClusterStatements pins the DDL of cluster mode: ON CLUSTER everywhere,
// replicated storage under *_local, Distributed tables sharded by cohort
// under the names the sink writes to.
func TestClusterStatements(t *testing.T) {
	t.Parallel()
	stmts := chsink.Statements(clusterConfig("main"))
	all := strings.Join(stmts, "\n")

	for i, s := range stmts {
		if !strings.Contains(s, " ON CLUSTER `main`") {
			t.Errorf("statement %d lacks ON CLUSTER:\n%s", i, s)
		}
		if !strings.Contains(s, "IF NOT EXISTS") {
			t.Errorf("statement %d is not idempotent:\n%s", i, s)
		}
	}
	if stmts[0] != "CREATE DATABASE IF NOT EXISTS `cs` ON CLUSTER `main`" {
		t.Errorf("first statement = %q", stmts[0])
	}
	wantEngines := map[string]string{
		"schema_migrations":        "ReplicatedReplacingMergeTree('/clickhouse/tables/all/cs/schema_migrations', '{replica}')",
		"cohorts_local":            "ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/cs/cohorts_local', '{replica}', version)",
		"membership_local":         "ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/cs/membership_local', '{replica}', version)",
		"membership_changes_local": "ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/cs/membership_changes_local', '{replica}')",
		"data_points_local":        "ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/cs/data_points_local', '{replica}')",
		"import_rejections_local":  "ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/cs/import_rejections_local', '{replica}')",
	}
	for _, name := range []string{"cohorts", "membership", "membership_changes", "data_points", "import_rejections"} {
		wantEngines[name] = fmt.Sprintf("Distributed(`main`, `cs`, `%s_local`, cityHash64(workspace, partner, cohort_id))", name)
	}
	created := regexp.MustCompile("(?s)CREATE TABLE IF NOT EXISTS `cs`\\.`([a-z_]+)` ON CLUSTER `main` \\(.*?\\) ENGINE = ([^\n]+)")
	view := regexp.MustCompile("^CREATE MATERIALIZED VIEW IF NOT EXISTS `cs`\\.`([a-z_]+)` ON CLUSTER `main` TO `cs`\\.`([a-z_]+)` AS SELECT .* FROM `cs`\\.`([a-z_]+)`$")
	got := map[string]string{}
	views := map[string]string{}
	for _, s := range stmts[1:] {
		if m := view.FindStringSubmatch(s); m != nil {
			views[m[1]] = m[3] + " -> " + m[2]
			continue
		}
		m := created.FindStringSubmatch(s)
		if m == nil {
			t.Errorf("unexpected statement:\n%s", s)
			continue
		}
		got[m[1]] = m[2]
	}
	for name, want := range wantEngines {
		if got[name] != want {
			t.Errorf("engine of %s:\n got %s\nwant %s", name, got[name], want)
		}
	}
	if len(got) != len(wantEngines) {
		t.Errorf("tables = %d, want %d: %v", len(got), len(wantEngines), got)
	}
	// The views run on each shard, from its local history to its local
	// state and data points, never through the Distributed tables.
	wantViews := map[string]string{
		"membership_from_changes":  "membership_changes_local -> membership_local",
		"data_points_from_changes": "membership_changes_local -> data_points_local",
	}
	if !reflect.DeepEqual(views, wantViews) {
		t.Errorf("views:\n got %v\nwant %v", views, wantViews)
	}
	for _, want := range []string{
		"ORDER BY (workspace, partner, cohort_id, user_id)\n",
		"PARTITION BY toYYYYMM(day)\nORDER BY (workspace, day, partner, cohort_id, record_id, position)",
		"PARTITION BY toYYYYMM(received_at)\nORDER BY (workspace, partner, cohort_id, user_id, version)",
	} {
		if !strings.Contains(all+"\n", want) {
			t.Errorf("DDL lacks %q", want)
		}
	}
}

// TestStatementsAvoidNewDialect keeps every statement within what 18.16 runs.
func TestStatementsAvoidNewDialect(t *testing.T) {
	t.Parallel()
	for _, cluster := range []string{"", "main"} {
		for _, s := range chsink.Statements(clusterConfig(cluster)) {
			for _, banned := range []string{"LowCardinality", "DateTime64", "Map(", "Bool", "TTL", "CODEC", "WITH ", "{database}", "{table}"} {
				if strings.Contains(s, banned) {
					t.Errorf("statement uses %s, which 18.16 does not run:\n%s", banned, s)
				}
			}
		}
	}
	single := strings.Join(chsink.Statements(clusterConfig("")), "\n")
	for _, banned := range []string{"ON CLUSTER", "Replicated", "Distributed", "_local"} {
		if strings.Contains(single, banned) {
			t.Errorf("single-server DDL contains %s", banned)
		}
	}
	if !strings.Contains(single, "`membership` (") || !strings.Contains(single, "ENGINE = ReplacingMergeTree(version)\nORDER BY (workspace, partner, cohort_id, user_id)") {
		t.Errorf("membership DDL is not ReplacingMergeTree(version) ordered without version:\n%s", single)
	}
}

// TestClusterStatementsRunOn1816 runs the cluster DDL on a private 18.16
// server configured with a cluster and the {shard}/{replica} macros but no
// ZooKeeper. Every statement must get past the parser and the engine's
// argument checks: the only errors allowed are the ones a missing ZooKeeper
// causes (no distributed DDL queue, no replicated tables).
func TestClusterStatementsRunOn1816(t *testing.T) {
	t.Parallel()
	// The cluster's replica is never contacted: creating a Distributed table
	// does not connect.
	srv := chtest.StartPrivateServer(t, `
    <macros><shard>01</shard><replica>r1</replica></macros>
    <remote_servers><main><shard><replica><host>127.0.0.1</host><port>1</port></replica></shard></main></remote_servers>`)
	conn := chtest.Open(t, srv.Addr)
	ctx := testkit.DetachedContext(t, 60*time.Second)

	for _, s := range chsink.Statements(clusterConfig("main")) {
		if err := conn.Exec(ctx, s); err != nil && !zookeeperMissing(err) {
			t.Errorf("as sent: %v\n%s", err, s)
		}
		// Without ON CLUSTER the server checks the statement itself.
		local := strings.Replace(s, " ON CLUSTER `main`", "", 1)
		if strings.HasPrefix(s, "CREATE MATERIALIZED VIEW") {
			// The local tables a view joins could not be made without
			// ZooKeeper; the Distributed tables have the same columns,
			// so the view is checked against those.
			local = strings.ReplaceAll(local, "_local`", "`")
		}
		err := conn.Exec(ctx, local)
		switch {
		case strings.Contains(s, "Replicated"):
			if !zookeeperMissing(err) {
				t.Errorf("want only the missing-ZooKeeper error, got %v\n%s", err, local)
			}
		case err != nil:
			t.Errorf("%v\n%s", err, local)
		}
	}
	// The Distributed tables exist with their columns.
	var n uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM system.tables WHERE database = 'cs' AND engine = 'Distributed'").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 5 {
		t.Errorf("Distributed tables = %d, want 5", n)
	}
}

// zookeeperMissing reports errors that only mean "no ZooKeeper here".
func zookeeperMissing(err error) bool {
	var ex *ch.Exception
	if !errors.As(err, &ex) {
		return false
	}
	// 49: DDL background thread is not initialized (ON CLUSTER);
	// 225: Can't create replicated table without ZooKeeper.
	return ex.Code == 49 || ex.Code == 225
}
