package clickhouse_test

import (
	"context"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cohortsync/cohortsync/internal/chtest"
	"github.com/cohortsync/cohortsync/internal/testkit"
	"github.com/cohortsync/cohortsync/pipeline"
	chsink "github.com/cohortsync/cohortsync/sinks/clickhouse"
)

var day1 = time.Date(2026, 3, 14, 9, 26, 53, 589793000, time.UTC)

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// count runs a single-number query against the sink's database.
func count(t testing.TB, conn driver.Conn, q string) uint64 {
	t.Helper()
	var n uint64
	if err := conn.QueryRow(testkit.DetachedContext(t, 60*time.Second), q).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

func TestMigrateIsIdempotent(t *testing.T) {
	t.Parallel()
	addr, db := chtest.NewDatabase(t)
	// The database does not exist yet: Migrate creates it.
	db += "_m"
	conn := chtest.Open(t, addr)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = conn.Exec(ctx, "DROP DATABASE IF EXISTS `"+db+"`")
	})
	cfg := chsink.DefaultConfig()
	cfg.Addr, cfg.Database = addr, db
	s, err := chsink.New(cfg, chsink.Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	first, err := s.Migrate(testkit.DetachedContext(t, 60*time.Second))
	if err != nil {
		t.Fatalf("first migrate: %v", err)
	}
	var every []uint32
	for v := range chsink.SchemaVersion() {
		every = append(every, v+1)
	}
	want := chsink.MigrationResult{From: 0, To: chsink.SchemaVersion(), Applied: every}
	if !reflect.DeepEqual(first, want) {
		t.Errorf("first migrate = %+v, want %+v", first, want)
	}
	second, err := s.Migrate(testkit.DetachedContext(t, 60*time.Second))
	if err != nil {
		t.Fatalf("second migrate: %v", err)
	}
	want = chsink.MigrationResult{From: chsink.SchemaVersion(), To: chsink.SchemaVersion()}
	if !reflect.DeepEqual(second, want) {
		t.Errorf("second migrate = %+v, want %+v", second, want)
	}

	if n := count(t, conn, "SELECT count() FROM `"+db+"`.schema_migrations"); n != uint64(len(every)) {
		t.Errorf("schema_migrations has %d rows, want %d", n, len(every))
	}
	rows, err := conn.Query(testkit.DetachedContext(t, 60*time.Second), "SELECT name, engine FROM system.tables WHERE database = ? ORDER BY name", db)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []string
	for rows.Next() {
		var name, engine string
		if err := rows.Scan(&name, &engine); err != nil {
			t.Fatal(err)
		}
		got = append(got, name+":"+engine)
	}
	wantTables := []string{
		"cohorts:ReplacingMergeTree", "data_points:ReplacingMergeTree", "data_points_from_changes:MaterializedView",
		"import_rejections:ReplacingMergeTree", "membership:ReplacingMergeTree", "membership_changes:ReplacingMergeTree",
		"membership_from_changes:MaterializedView", "schema_migrations:ReplacingMergeTree",
	}
	if !slices.Equal(got, wantTables) {
		t.Errorf("tables = %v, want %v", got, wantTables)
	}
}

// TestRedeliveryChangesNothing writes the same output twice, as a redelivery
// after a crash before the commit would, and expects the state and every
// total to be those of one delivery, before and after merges.
func TestRedeliveryChangesNothing(t *testing.T) {
	t.Parallel()
	s, reg := newSink(t)
	conn := chtest.Open(t, s.Config().Addr)
	db := "`" + s.Config().Database + "`"
	const ws, p, c = "ws1", "mixpanel", "churn"

	rej := pipeline.NewRejections()
	rej.AddIDs(pipeline.RejectionKey{Workspace: ws, Partner: p, CohortID: c, RecordID: "r1", Reason: pipeline.ReasonUnknownUser}, 3)
	rej.AddRecord(pipeline.RejectionKey{Workspace: ws, Partner: p, CohortID: c, RecordID: "r0", Reason: pipeline.ReasonRetention})
	rej.AddIDs(pipeline.RejectionKey{Workspace: ws, Partner: p, CohortID: c, RecordID: "r0", Reason: pipeline.ReasonRetention}, 4)
	out := output(t, []record{
		{ws, p, c, "r1", 10, day1, adds("u1", "u2", "u3", "u4", "u5")},
		{ws, p, c, "r2", 11, day1.Add(24 * time.Hour), concat(adds("u6"), removes("u2"))},
	}, []pipeline.Record{cohortRecord(ws, p, c, "Churn risk", 9, day1)}, rej)

	type state struct {
		members    []string
		dataPoints []chsink.DataPointTotal
		rejections []chsink.RejectionTotal
		changes    uint64
		cohortName string
	}
	read := func() state {
		t.Helper()
		var st state
		var err error
		if st.members, err = s.Members(testkit.DetachedContext(t, 60*time.Second), ws, p, c); err != nil {
			t.Fatal(err)
		}
		if st.dataPoints, err = s.DataPointTotals(testkit.DetachedContext(t, 60*time.Second), ws); err != nil {
			t.Fatal(err)
		}
		if st.rejections, err = s.RejectionTotals(testkit.DetachedContext(t, 60*time.Second), ws); err != nil {
			t.Fatal(err)
		}
		st.changes = count(t, conn, "SELECT count() FROM "+db+".membership_changes FINAL")
		if err := conn.QueryRow(testkit.DetachedContext(t, 60*time.Second), "SELECT name FROM "+db+".cohorts FINAL WHERE cohort_id = ?", c).Scan(&st.cohortName); err != nil {
			t.Fatal(err)
		}
		return st
	}

	if err := s.Write(testkit.DetachedContext(t, 60*time.Second), out); err != nil {
		t.Fatalf("first write: %v", err)
	}
	once := read()
	want := state{
		members: []string{"u1", "u3", "u4", "u5", "u6"},
		dataPoints: []chsink.DataPointTotal{
			{Partner: p, CohortID: c, Day: time.Date(2026, 3, 14, 0, 0, 0, 0, time.UTC), Adds: 5, Removes: 0, Total: 5},
			{Partner: p, CohortID: c, Day: time.Date(2026, 3, 15, 0, 0, 0, 0, time.UTC), Adds: 1, Removes: 1, Total: 2},
		},
		rejections: []chsink.RejectionTotal{
			{Partner: p, CohortID: c, Reason: pipeline.ReasonRetention, IDs: 4, Records: 1},
			{Partner: p, CohortID: c, Reason: pipeline.ReasonUnknownUser, IDs: 3, Records: 0},
		},
		changes:    7,
		cohortName: "Churn risk",
	}
	if !reflect.DeepEqual(once, want) {
		t.Fatalf("after one delivery:\n got %+v\nwant %+v", once, want)
	}

	if err := s.Write(testkit.DetachedContext(t, 60*time.Second), out); err != nil {
		t.Fatalf("second write: %v", err)
	}
	if twice := read(); !reflect.DeepEqual(twice, once) {
		t.Errorf("after redelivery:\n got %+v\nwant %+v", twice, once)
	}
	// The copies really are in the tables until a merge collapses them: the
	// engines, not only FINAL, make a replay replace rows.
	if n := count(t, conn, "SELECT count() FROM "+db+".data_points"); n != 14 {
		t.Errorf("data_points before merge = %d rows, want 14 (two deliveries)", n)
	}
	for _, table := range []string{"membership", "membership_changes", "data_points", "import_rejections", "cohorts"} {
		if err := conn.Exec(testkit.DetachedContext(t, 60*time.Second), "OPTIMIZE TABLE "+db+"."+table+" FINAL"); err != nil {
			t.Fatalf("optimize %s: %v", table, err)
		}
	}
	for table, want := range map[string]uint64{"membership": 6, "membership_changes": 7, "data_points": 7, "import_rejections": 2, "cohorts": 1} {
		if n := count(t, conn, "SELECT count() FROM "+db+"."+table); n != want {
			t.Errorf("%s after merge = %d rows, want %d", table, n, want)
		}
	}
	if merged := read(); !reflect.DeepEqual(merged, once) {
		t.Errorf("after merge:\n got %+v\nwant %+v", merged, once)
	}

	// The sink sends each change once, as history; the views derive the rest.
	if got := metric(t, reg, "cohortsync_clickhouse_rows_written_total", "membership_changes"); got != 14 {
		t.Errorf("rows_written_total{table=membership_changes} = %v, want 14", got)
	}
	for _, table := range []string{"membership", "data_points"} {
		if got := metric(t, reg, "cohortsync_clickhouse_rows_written_total", table); got != 0 {
			t.Errorf("rows_written_total{table=%s} = %v, want 0: the server derives those rows", table, got)
		}
	}
}

// metric returns the value of the counter name{table=table} in reg (0 when absent).
func metric(t testing.TB, reg *prometheus.Registry, name, table string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "table" && l.GetValue() == table {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// TestLaterVersionWins writes the same changes in every order; the state is
// always the one of the highest version per user.
func TestLaterVersionWins(t *testing.T) {
	t.Parallel()
	s, _ := newSink(t)
	const p, c = "mixpanel", "c1"
	batches := func(ws string) []record {
		return []record{
			{ws, p, c, "a", 20, day1, adds("u1", "u2", "u3")},
			{ws, p, c, "b", 30, day1, concat(removes("u1"), adds("u4"), removes("u3"))},
			{ws, p, c, "c", 40, day1, concat(adds("u3"), removes("u4"))},
		}
	}
	want := []string{"u2", "u3"}
	for _, order := range [][]int{{0, 1, 2}, {2, 1, 0}, {1, 2, 0}, {2, 0, 1}} {
		name := fmtInts(order)
		t.Run("order="+name, func(t *testing.T) {
			t.Parallel()
			ws := "ws_" + name
			recs := batches(ws)
			for _, i := range order {
				if err := s.Write(testkit.DetachedContext(t, 60*time.Second), output(t, []record{recs[i]}, nil, nil)); err != nil {
					t.Fatalf("write %s: %v", recs[i].recordID, err)
				}
			}
			got, err := s.Members(testkit.DetachedContext(t, 60*time.Second), ws, p, c)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, want) {
				t.Errorf("members = %v, want %v", got, want)
			}
			// Every assignment is billable once, whatever the order.
			totals, err := s.DataPointTotals(testkit.DetachedContext(t, 60*time.Second), ws)
			if err != nil {
				t.Fatal(err)
			}
			if len(totals) != 1 || totals[0].Adds != 5 || totals[0].Removes != 3 || totals[0].Total != 8 {
				t.Errorf("data point totals = %+v, want one day with 5 adds, 3 removes", totals)
			}
		})
	}
}

func fmtInts(xs []int) string {
	var b strings.Builder
	for _, x := range xs {
		b.WriteByte(byte('0' + x))
	}
	return b.String()
}

// TestWriteEmptyOutput: a batch whose records were all filtered still has to
// be acked, so writing nothing succeeds.
func TestWriteEmptyOutput(t *testing.T) {
	t.Parallel()
	s, reg := newSink(t)
	if err := s.Write(testkit.DetachedContext(t, 60*time.Second), output(t, nil, nil, nil)); err != nil {
		t.Fatalf("write: %v", err)
	}
	if err := s.Write(testkit.DetachedContext(t, 60*time.Second), nil); err != nil {
		t.Fatalf("write nil: %v", err)
	}
	if n, err := testutil.GatherAndCount(reg, "cohortsync_clickhouse_inserts_total"); err != nil || n != 0 {
		t.Errorf("inserts_total series = %d (%v), want none", n, err)
	}
	if err := s.Healthy(); err != nil {
		t.Errorf("Healthy() = %v", err)
	}
}

// TestUpgradeToDerivedRows migrates a database that a release before the
// views made (schema version 1, with the rows that release wrote into all
// three tables) and writes through the views: the old rows answer as before,
// new changes reach membership and data_points, and the copies an older
// release still sends alongside the views' rows count once.
func TestUpgradeToDerivedRows(t *testing.T) {
	t.Parallel()
	addr, db := chtest.NewDatabase(t)
	conn := chtest.Open(t, addr)
	ctx := testkit.DetachedContext(t, 60*time.Second)
	cfg := chsink.DefaultConfig()
	cfg.Addr, cfg.Database = addr, db
	var views int
	for _, stmt := range chsink.Statements(cfg) {
		if strings.HasPrefix(stmt, "CREATE MATERIALIZED VIEW") {
			views++
			continue
		}
		if err := conn.Exec(ctx, stmt); err != nil {
			t.Fatalf("version 1 schema: %v\n%s", err, stmt)
		}
	}
	if views != 2 {
		t.Fatalf("statements hold %d views, want 2", views)
	}
	q := "`" + db + "`."
	// INSERT ... SELECT: clickhouse-go sends VALUES only as a batch.
	for _, stmt := range []string{
		"INSERT INTO " + q + "schema_migrations (version, name, applied_at) SELECT 1, 'initial tables', now()",
		// What the release before wrote for one change: a row in each table.
		"INSERT INTO " + q + "membership_changes (workspace, partner, cohort_id, user_id, id_kind, id_value, is_member, version, record_id, position, event_time, received_at, partition, offset) SELECT 'ws', 'mixpanel', 'c', 'old', 'external_id', 'old', 1, 1, 'r0', 0, toDateTime('2026-03-14 08:00:00'), toDateTime('2026-03-14 08:00:00'), 0, 0",
		"INSERT INTO " + q + "data_points (workspace, day, partner, cohort_id, record_id, position, user_id, is_member, version, received_at) SELECT 'ws', toDate('2026-03-14'), 'mixpanel', 'c', 'r0', 0, 'old', 1, 1, toDateTime('2026-03-14 08:00:00')",
		"INSERT INTO " + q + "membership (workspace, partner, cohort_id, user_id, is_member, version, updated_at, record_id) SELECT 'ws', 'mixpanel', 'c', 'old', 1, 1, toDateTime('2026-03-14 08:00:00'), 'r0'",
	} {
		if err := conn.Exec(ctx, stmt); err != nil {
			t.Fatalf("%v\n%s", err, stmt)
		}
	}

	s, _ := newSinkAt(t, addr, db) // migrates
	out := output(t, []record{{"ws", "mixpanel", "c", "r1", 10, day1, concat(adds("u1", "u2"), removes("u3"))}}, nil, nil)
	if err := s.Write(ctx, out); err != nil {
		t.Fatal(err)
	}
	check := func(when string) {
		t.Helper()
		members, err := s.Members(ctx, "ws", "mixpanel", "c")
		if err != nil {
			t.Fatal(err)
		}
		if want := []string{"old", "u1", "u2"}; !slices.Equal(members, want) {
			t.Errorf("%s: members = %v, want %v", when, members, want)
		}
		totals, err := s.DataPointTotals(ctx, "ws")
		if err != nil {
			t.Fatal(err)
		}
		want := []chsink.DataPointTotal{{Partner: "mixpanel", CohortID: "c", Day: time.Date(2026, 3, 14, 0, 0, 0, 0, time.UTC), Adds: 3, Removes: 1, Total: 4}}
		if !reflect.DeepEqual(totals, want) {
			t.Errorf("%s: data points = %+v, want %+v", when, totals, want)
		}
	}
	check("after the upgrade")
	if n := count(t, conn, "SELECT toUInt64(max(version)) FROM "+q+"schema_migrations"); n != uint64(chsink.SchemaVersion()) {
		t.Errorf("schema version = %d, want %d", n, chsink.SchemaVersion())
	}

	// An older release, still running beside this one during a rolling
	// upgrade, writes the state and data point rows itself as well.
	for _, table := range []string{"membership", "data_points"} {
		if err := conn.Exec(ctx, "INSERT INTO "+q+table+" SELECT * FROM "+q+table); err != nil {
			t.Fatal(err)
		}
	}
	check("with an older release's copies")
}
