package chcompat_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/cohortsync/cohortsync/internal/chtest"
	"github.com/cohortsync/cohortsync/internal/testkit"
	"github.com/cohortsync/cohortsync/pipeline"
	"github.com/cohortsync/cohortsync/schemas"
	"github.com/cohortsync/cohortsync/segments"
	segch "github.com/cohortsync/cohortsync/segments/clickhouse"
	"github.com/cohortsync/cohortsync/segments/segmentstest"
	chsink "github.com/cohortsync/cohortsync/sinks/clickhouse"
)

// database holds the tables on the private 18.16 server. The replayed
// statements name it, so chDB gets a database of the same name.
const database = "cohortsync"

// quotesWorkspace holds what the corpus lacks: ids and names with quotes,
// backslashes and control characters, which the driver's binding and this
// test's own literals must both carry intact, and rejection counts.
const quotesWorkspace = "chcompat-quotes"

// TestCurrentReleaseAnswersLike1816 runs the project's own SQL on 18.16
// and on a current release (chDB) and compares the answers.
//
// The SQL is not rebuilt here: the real sink and segment engine run
// against a private 18.16 server that logs every statement, and the test
// reads back what the server received. That is every generated query with
// its "?" values bound by the driver, the DDL Migrate ran and the column
// lists of the inserts. chDB then runs the same DDL, the same inserts (with
// VALUES rows copied from 18.16's tables) and the same queries.
func TestCurrentReleaseAnswersLike1816(t *testing.T) {
	t.Parallel()
	engine := findChDB(t)
	srv := chtest.StartQueryLoggingServer(t)
	ctx := testkit.DetachedContext(t, 5*time.Minute)

	cfg := chsink.DefaultConfig()
	cfg.Addr, cfg.Database = srv.Addr, database
	cfg.DialTimeout, cfg.QueryTimeout = 2*time.Second, 30*time.Second
	cfg.Retry = chsink.Retry{Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond}
	log := slog.New(slog.DiscardHandler)
	sink, err := chsink.New(cfg, chsink.Options{Logger: log})
	if err != nil {
		t.Fatalf("new sink: %v", err)
	}
	t.Cleanup(func() { _ = sink.Close() })
	if _, err := sink.Migrate(ctx); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	eng, err := segch.New(cfg, segch.Options{Logger: log})
	if err != nil {
		t.Fatalf("new engine: %v", err)
	}
	t.Cleanup(func() { _ = eng.Close() })

	corpus := segmentstest.New()
	if err := corpus.Write(ctx, sink); err != nil {
		t.Fatal(err)
	}
	writeQuotes(ctx, t, sink)
	ask(ctx, t, sink, eng, corpus)
	if t.Failed() {
		return
	}

	conn := chtest.Open(t, srv.Addr)
	// The test's own statements stay out of the query log.
	quiet := ch.Context(ctx, ch.WithSettings(ch.Settings{"log_queries": 0}))
	stmts := classify(t, queryLog(quiet, t, conn), chsink.Statements(cfg))
	if len(stmts.selects) == 0 || len(stmts.inserts) == 0 {
		t.Fatalf("the query log has %d queries and %d inserts: nothing to compare", len(stmts.selects), len(stmts.inserts))
	}

	setup := slices.Clone(stmts.ddl)
	// The rows go in as one INSERT per table. A current release would
	// collapse a ReplacingMergeTree's rows of one key within that insert;
	// 18.16 keeps them until a merge, and production, writing batch by
	// batch, has such copies too. Keeping them makes chDB hold the rows
	// 18.16 holds, and the queries must not depend on merges on either.
	setup = append(setup, "SET optimize_on_insert = 0")
	compared := slices.Clone(stmts.selects)
	for _, table := range slices.Sorted(maps.Keys(stmts.inserts)) {
		head, cols := stmts.inserts[table].head, stmts.inserts[table].columns
		values := tableValues(quiet, t, conn, table, cols)
		if values == "" {
			continue
		}
		setup = append(setup, head+" VALUES "+values)
		// The copy itself is compared too, collapsed as FINAL reads it,
		// which is the same whether or not a merge has run yet.
		compared = append(compared, "SELECT "+cols+" FROM "+table+" FINAL ORDER BY "+cols)
	}
	// The state and data point tables get no INSERT of their own: each
	// engine's materialized views derive them from the history it was
	// given, and the derived rows must be the same.
	for _, name := range []string{chsink.TableMembership, chsink.TableDataPoints} {
		table := "`" + database + "`.`" + name + "`"
		if _, sent := stmts.inserts[table]; sent {
			t.Errorf("the sink inserted into %s, which the views fill", table)
		}
		cols := columnList(quiet, t, conn, name)
		compared = append(compared, "SELECT "+cols+" FROM "+table+" FINAL ORDER BY "+cols)
	}

	want := make([]answer, len(compared))
	for i, q := range compared {
		a, err := query1816(quiet, conn, q)
		if err != nil {
			t.Fatalf("on 18.16: %v\n%s", err, q)
		}
		want[i] = a
	}

	// chDB cannot run the cluster DDL (no ZooKeeper, no cluster); its parser
	// must still take every statement. 18.16 runs them in sinks/clickhouse's
	// TestClusterStatementsRunOn1816.
	cluster := cfg
	cluster.Cluster = "main"
	clusterDDL := chsink.Statements(cluster)
	queries := slices.Clone(compared)
	for _, s := range clusterDDL {
		queries = append(queries, "SELECT formatQuery("+sqlString(s)+")")
	}

	start := time.Now()
	res, err := engine.run(ctx, t.TempDir(), setup, queries)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("chDB %s: %d setup statements, %d queries in %s; %d compared with 18.16",
		res.version, len(setup), len(queries), time.Since(start).Round(time.Millisecond), len(compared))
	if major, _, _ := strings.Cut(res.version, "."); atoi(major) <= 18 {
		t.Fatalf("chDB runs ClickHouse %s, not a current release", res.version)
	}
	if res.timezone != "UTC" {
		t.Fatalf("chDB runs in time zone %q, want UTC like the 18.16 server", res.timezone)
	}
	if res.setupErr != nil {
		t.Fatalf("chDB refused setup statement %d: %s\n%s", res.setupErr.index, res.setupErr.msg, clip(setup[res.setupErr.index]))
	}

	mismatches := 0
	for i, q := range compared {
		msg := ""
		if e := res.errs[i]; e != "" {
			msg = "chDB refused it: " + e
		} else {
			msg = diff(q, want[i], res.answers[i])
		}
		if msg == "" {
			continue
		}
		if mismatches++; mismatches <= 20 {
			t.Errorf("query %d: %s\n%s", i, msg, q)
		}
	}
	if mismatches > 20 {
		t.Errorf("%d of %d queries differ in all; the first 20 are shown", mismatches, len(compared))
	}
	for i, s := range clusterDDL {
		if e := res.errs[len(compared)+i]; e != "" {
			t.Errorf("cluster DDL: chDB's parser refused it: %s\n%s", e, s)
		}
	}
}

// findChDB finds node and the chDB package installed next to run.js; when
// either is missing the test skips, or fails under CI=true.
func findChDB(t *testing.T) chdb {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		chtest.Unavailable(t, "node is not installed (apt-get install nodejs npm); chDB runs under it")
	}
	dir, err := filepath.Abs(filepath.Join("testdata", "chdb"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "chdb", "package.json")); err != nil {
		chtest.Unavailable(t, "chDB is not installed: run `npm install --prefix internal/chcompat/testdata/chdb --ignore-scripts`")
	}
	return chdb{node: node, script: filepath.Join(dir, "run.js")}
}

// writeQuotes lands one batch in quotesWorkspace: a cohort whose id and
// name need escaping, members added and one removed in a later record, and
// rejection counts.
func writeQuotes(ctx context.Context, t *testing.T, sink *chsink.Sink) {
	t.Helper()
	at := time.Date(2024, 11, 5, 10, 0, 0, 0, time.UTC)
	const partner, cohort = "mixpanel", `q'1\`
	b := schemas.NewChangesBuilder(nil)
	defer b.Release()
	users := []string{`o'brien`, `back\slash`, "tab\there", `"double"`, "Ωmega"}
	for i, u := range users {
		b.Append(schemas.ResolvedChange{
			Workspace: quotesWorkspace, Partner: partner, CohortID: cohort, UserID: u,
			IDKind: schemas.IDKindExternalID, IDValue: u, IsMember: true,
			Version: schemas.Version(100, i), RecordID: "r'add", Position: uint32(i),
			EventTime: at.Add(-time.Minute), ReceivedAt: at, Offset: 100,
		})
	}
	b.Append(schemas.ResolvedChange{
		Workspace: quotesWorkspace, Partner: partner, CohortID: cohort, UserID: `back\slash`,
		IDKind: schemas.IDKindExternalID, IDValue: `back\slash`, IsMember: false,
		Version: schemas.Version(101, 0), RecordID: `r\remove`,
		EventTime: at.Add(time.Hour), ReceivedAt: at.Add(25 * time.Hour), Offset: 101,
	})
	changes := b.NewRecordBatch()
	defer changes.Release()
	rej := pipeline.NewRejections()
	rej.AddIDs(pipeline.RejectionKey{Workspace: quotesWorkspace, Partner: partner, CohortID: cohort, RecordID: "r'add", Reason: pipeline.ReasonUnknownUser}, 3)
	rej.AddRecord(pipeline.RejectionKey{Workspace: quotesWorkspace, Partner: partner, CohortID: cohort, RecordID: "r'bad", Reason: pipeline.ReasonUndecodable})
	meta := pipeline.Record{Offset: 99, Envelope: schemas.Envelope{
		SchemaVersion: schemas.CurrentVersion, RecordID: "meta'q", Workspace: quotesWorkspace, Partner: partner,
		ReceivedAt: at, EventTime: at,
		Payload: schemas.CohortPayload{CohortID: cohort, Name: `it's "quoted" \ twice`, CreatedAt: at},
	}}
	out := &pipeline.Output{Changes: changes, Cohorts: []pipeline.Record{meta}, Rejections: rej}
	if err := sink.Write(ctx, out); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// ask calls every read path of the sink and the engine, so that each kind
// of query the code generates reaches the query log: the corpus's filters
// (counts, first and second pages, exports, explanations), its data-point
// reports, the cohort listings, and the sink's helpers for every cohort.
// The answers' correctness is segmentstest's business (TestCorpus); here
// they only have to be produced.
func ask(ctx context.Context, t *testing.T, sink *chsink.Sink, eng *segch.Engine, c segmentstest.Corpus) {
	t.Helper()
	cases := slices.Clone(c.Cases)
	for i, f := range []string{
		`{"cohort":{"partner":"mixpanel","id":"q'1\\"}}`,
		`{"not":{"cohort":{"partner":"mixpanel","name":"it's \"quoted\" \\ twice"}}}`,
	} {
		cases = append(cases, segmentstest.Case{Name: fmt.Sprintf("quotes-%d", i), Workspace: quotesWorkspace, Filter: json.RawMessage(f)})
		cases = append(cases, segmentstest.Case{Name: fmt.Sprintf("quotes-%d-as-of", i), Workspace: quotesWorkspace, Filter: json.RawMessage(f),
			AsOf: time.Date(2024, 11, 5, 10, 30, 0, 0, time.UTC)})
	}
	for _, cs := range cases {
		q := segments.Query{Filter: cs.Filter, AsOf: cs.AsOf}
		if cs.ErrPath != "" {
			// Refused filters still look their cohorts up first.
			if _, err := eng.Evaluate(ctx, cs.Workspace, q); err == nil {
				t.Errorf("case %s: Evaluate took a filter it must refuse", cs.Name)
			}
			continue
		}
		if _, err := eng.Evaluate(ctx, cs.Workspace, q); err != nil {
			t.Errorf("case %s: count: %v", cs.Name, err)
		}
		q.Limit = 7
		page, err := eng.Evaluate(ctx, cs.Workspace, q)
		if err != nil {
			t.Errorf("case %s: page: %v", cs.Name, err)
		}
		if page.NextCursor != "" {
			q.Cursor = page.NextCursor
			if _, err := eng.Evaluate(ctx, cs.Workspace, q); err != nil {
				t.Errorf("case %s: second page: %v", cs.Name, err)
			}
		}
		if err := eng.Export(ctx, cs.Workspace, cs.Filter, cs.AsOf, func(string) error { return nil }); err != nil {
			t.Errorf("case %s: export: %v", cs.Name, err)
		}
		explain := []string{"nobody-at-all", `o'brien`}
		if len(page.Members) > 0 {
			explain = append(explain, page.Members[0])
		}
		for _, u := range explain {
			if _, err := eng.Explain(ctx, cs.Workspace, cs.Filter, u, cs.AsOf); err != nil {
				t.Errorf("case %s: explain %q: %v", cs.Name, u, err)
			}
		}
	}
	dataPoints := slices.Clone(c.DataPoints)
	for _, g := range []segments.GroupBy{segments.GroupByDay, segments.GroupByPartner, segments.GroupByCohort} {
		dataPoints = append(dataPoints, segmentstest.DataPointCase{Workspace: quotesWorkspace, GroupBy: g,
			From: time.Date(2024, 11, 1, 0, 0, 0, 0, time.UTC), To: time.Date(2024, 11, 30, 0, 0, 0, 0, time.UTC)})
	}
	for _, q := range dataPoints {
		if _, err := eng.DataPoints(ctx, q.Workspace, q.From, q.To, q.GroupBy); err != nil {
			t.Errorf("data points %s: %v", q.Name, err)
		}
	}
	for _, ws := range []string{c.Workspace, c.OtherWorkspace, quotesWorkspace} {
		if _, err := eng.Cohorts(ctx, ws, c.Now); err != nil {
			t.Errorf("cohorts of %s: %v", ws, err)
		}
		if _, err := sink.DataPointTotals(ctx, ws); err != nil {
			t.Errorf("data point totals of %s: %v", ws, err)
		}
		if _, err := sink.RejectionTotals(ctx, ws); err != nil {
			t.Errorf("rejection totals of %s: %v", ws, err)
		}
	}
	versions, err := sink.CohortVersions(ctx)
	if err != nil {
		t.Errorf("cohort versions: %v", err)
	}
	for _, v := range versions {
		if _, err := sink.Members(ctx, v.Workspace, v.Partner, v.CohortID); err != nil {
			t.Errorf("members of %+v: %v", v, err)
		}
		if _, err := sink.SnapshotMembers(ctx, v.Workspace, v.Partner, v.CohortID, func(string) error { return nil }); err != nil {
			t.Errorf("snapshot members of %+v: %v", v, err)
		}
	}
}

// queryLog returns every statement the server finished, each once.
func queryLog(ctx context.Context, t *testing.T, conn driver.Conn) []string {
	t.Helper()
	if err := conn.Exec(ctx, "SYSTEM FLUSH LOGS"); err != nil {
		t.Fatalf("flush the query log: %v", err)
	}
	// On 18.16 type is a UInt8: 2 is QueryFinish (1 QueryStart, 3 and 4
	// failures, such as an export its caller stopped).
	rows, err := conn.Query(ctx, `SELECT query FROM system.query_log
WHERE type = 2
GROUP BY query
ORDER BY min(event_time), query`)
	if err != nil {
		t.Fatalf("read the query log: %v", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var q string
		if err := rows.Scan(&q); err != nil {
			t.Fatalf("read the query log: %v", err)
		}
		out = append(out, q)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("read the query log: %v", err)
	}
	return out
}

// statements are the logged statements by what the replay does with them.
type statements struct {
	// ddl is what Migrate runs, in its order (the log's times are whole
	// seconds, too coarse to order by).
	ddl []string
	// inserts maps a qualified table to its logged INSERT.
	inserts map[string]insertHead
	// selects are the queries whose answers are compared.
	selects []string
}

// insertHead is an INSERT up to its column list: the rows travel in the
// native protocol's blocks, not in the statement.
type insertHead struct{ head, columns string }

var insertRE = regexp.MustCompile("^INSERT INTO (`[^`]+`\\.`[^`]+`) \\(([^)]*)\\)")

// classify sorts the logged statements. Anything that is neither a query
// nor an insert must be one of ddl, so that a new kind of statement in the
// code fails here until the replay covers it.
func classify(t *testing.T, logged, ddl []string) statements {
	t.Helper()
	s := statements{ddl: ddl, inserts: map[string]insertHead{}}
	for _, q := range logged {
		switch {
		case strings.HasPrefix(q, "SELECT"):
			s.selects = append(s.selects, q)
		case strings.HasPrefix(q, "INSERT"):
			m := insertRE.FindStringSubmatch(q)
			if m == nil {
				t.Errorf("an INSERT this test cannot read the table and columns of:\n%s", q)
				continue
			}
			h := insertHead{head: m[0], columns: m[2]}
			if prev, ok := s.inserts[m[1]]; ok && prev != h {
				t.Errorf("two column lists for %s:\n%s\n%s", m[1], prev.head, h.head)
			}
			s.inserts[m[1]] = h
		case slices.Contains(ddl, q):
		default:
			t.Errorf("the code sent a statement this test does not replay on chDB:\n%s", q)
		}
	}
	return s
}

// tableValues reads every row of table (without FINAL: the rows as stored)
// and renders them as the tuples of an INSERT ... VALUES.
// columnList is the table's columns on the 18.16 server, quoted (18.16 has no
// position column to order them by; any order serves a comparison).
func columnList(ctx context.Context, t *testing.T, conn driver.Conn, table string) string {
	t.Helper()
	rows, err := conn.Query(ctx, "SELECT name FROM system.columns WHERE database = ? AND table = ?", database, table)
	if err != nil {
		t.Fatalf("columns of %s: %v", table, err)
	}
	defer rows.Close()
	var cols []string
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			t.Fatalf("columns of %s: %v", table, err)
		}
		cols = append(cols, "`"+name+"`")
	}
	if err := rows.Err(); err != nil || len(cols) == 0 {
		t.Fatalf("columns of %s: %v (%d found)", table, err, len(cols))
	}
	return strings.Join(cols, ", ")
}

func tableValues(ctx context.Context, t *testing.T, conn driver.Conn, table, cols string) string {
	t.Helper()
	var b strings.Builder
	_, err := scan(ctx, conn, "SELECT "+cols+" FROM "+table, func(types []string, vals []reflect.Value) error {
		if b.Len() > 0 {
			b.WriteString(", ")
		}
		b.WriteByte('(')
		for i, v := range vals {
			lit, err := literal(types[i], v)
			if err != nil {
				return err
			}
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString(lit)
		}
		b.WriteByte(')')
		return nil
	})
	if err != nil {
		t.Fatalf("copy %s: %v", table, err)
	}
	return b.String()
}

// literal renders one value of a stored column as SQL. DateTime goes as
// unix seconds, which no server's time zone can shift.
func literal(typ string, v reflect.Value) (string, error) {
	switch {
	case typ == "String":
		return sqlString(v.String()), nil
	case typ == "Date":
		return sqlString(v.Interface().(time.Time).UTC().Format(time.DateOnly)), nil
	case typ == "DateTime":
		return strconv.FormatInt(v.Interface().(time.Time).Unix(), 10), nil
	case strings.HasPrefix(typ, "UInt"):
		return strconv.FormatUint(v.Uint(), 10), nil
	case strings.HasPrefix(typ, "Int"):
		return strconv.FormatInt(v.Int(), 10), nil
	}
	return "", fmt.Errorf("no SQL literal for a column of type %s: teach literal", typ)
}

// sqlString quotes s as a ClickHouse string literal: backslash and quote
// escaped, control bytes as \xHH so none is left to the parser's reading,
// every other byte (UTF-8 included) as it is.
func sqlString(s string) string {
	var b strings.Builder
	b.WriteByte('\'')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\' || c == '\'':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < 0x20 || c == 0x7f:
			fmt.Fprintf(&b, `\x%02X`, c)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('\'')
	return b.String()
}

// answer is a query's result: its column types and its rows, each value in
// a form both engines' results reduce to (text for scalars, []any for
// arrays, nil for NULL).
type answer struct {
	types []string
	rows  [][]any
}

// scan runs q and hands fn each row as the driver scanned it, with the
// column types the server reported; it returns those types, which a result
// without rows has too.
func scan(ctx context.Context, conn driver.Conn, q string, fn func(types []string, vals []reflect.Value) error) ([]string, error) {
	rows, err := conn.Query(ctx, q)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	cts := rows.ColumnTypes()
	types := make([]string, len(cts))
	for i, ct := range cts {
		types[i] = ct.DatabaseTypeName()
	}
	for rows.Next() {
		dest := make([]any, len(cts))
		for i, ct := range cts {
			dest[i] = reflect.New(ct.ScanType()).Interface()
		}
		if err := rows.Scan(dest...); err != nil {
			return types, err
		}
		vals := make([]reflect.Value, len(dest))
		for i, d := range dest {
			vals[i] = reflect.ValueOf(d).Elem()
		}
		if err := fn(types, vals); err != nil {
			return types, err
		}
	}
	return types, rows.Err()
}

// query1816 runs q on 18.16 over the native protocol.
func query1816(ctx context.Context, conn driver.Conn, q string) (answer, error) {
	var a answer
	types, err := scan(ctx, conn, q, func(types []string, vals []reflect.Value) error {
		row := make([]any, len(vals))
		for i, v := range vals {
			c, err := fromDriver(types[i], v)
			if err != nil {
				return err
			}
			row[i] = c
		}
		a.rows = append(a.rows, row)
		return nil
	})
	a.types = types
	return a, err
}

// fromDriver reduces a scanned value to its common form. Times are written
// as ClickHouse writes them in JSON, in UTC, the zone of both engines.
func fromDriver(typ string, v reflect.Value) (any, error) {
	if inner, ok := unwrap(typ, "Nullable"); ok {
		if v.IsNil() {
			return nil, nil
		}
		return fromDriver(inner, v.Elem())
	}
	if inner, ok := unwrap(typ, "Array"); ok {
		out := make([]any, v.Len())
		for i := range out {
			c, err := fromDriver(inner, v.Index(i))
			if err != nil {
				return nil, err
			}
			out[i] = c
		}
		return out, nil
	}
	if tm, ok := v.Interface().(time.Time); ok {
		if strings.HasPrefix(typ, "Date") && !strings.HasPrefix(typ, "DateTime") {
			return tm.UTC().Format(time.DateOnly), nil
		}
		return tm.UTC().Format(time.DateTime), nil
	}
	switch v.Kind() {
	case reflect.String:
		return v.String(), nil
	case reflect.Bool:
		return strconv.FormatBool(v.Bool()), nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return strconv.FormatInt(v.Int(), 10), nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return strconv.FormatUint(v.Uint(), 10), nil
	case reflect.Float32, reflect.Float64:
		return strconv.FormatFloat(v.Float(), 'g', -1, 64), nil
	}
	return nil, fmt.Errorf("no common form for a %s value (%s): teach fromDriver", typ, v.Type())
}

// fromJSON reduces a value of chDB's JSONCompact output to the common form.
func fromJSON(typ string, v any) (any, error) {
	if inner, ok := unwrap(typ, "Nullable"); ok {
		if v == nil {
			return nil, nil
		}
		return fromJSON(inner, v)
	}
	if inner, ok := unwrap(typ, "Array"); ok {
		arr, ok := v.([]any)
		if !ok {
			return nil, fmt.Errorf("%s value %v is not a JSON array", typ, v)
		}
		out := make([]any, len(arr))
		for i, e := range arr {
			c, err := fromJSON(inner, e)
			if err != nil {
				return nil, err
			}
			out[i] = c
		}
		return out, nil
	}
	switch v := v.(type) {
	case string:
		return v, nil
	case json.Number:
		return v.String(), nil
	case bool:
		return strconv.FormatBool(v), nil
	}
	return nil, fmt.Errorf("no common form for a %s value %v (%T): teach fromJSON", typ, v, v)
}

func unwrap(typ, wrapper string) (string, bool) {
	if strings.HasPrefix(typ, wrapper+"(") && strings.HasSuffix(typ, ")") {
		return typ[len(wrapper)+1 : len(typ)-1], true
	}
	return "", false
}

// diff compares one query's answers and says how they differ ("" when
// they do not). Column names are not compared: they are the expressions'
// text, which releases spell differently, and the code reads columns by
// position. Only what the SQL leaves unspecified may differ:
//   - the order of rows, unless the query ends in an ORDER BY (which must
//     then order them fully: ties would show here as a difference);
//   - the order of groupUniqArray's elements, which the code (Cohorts)
//     reads as a set.
func diff(q string, want, got answer) string {
	want, got = normalize(q, want), normalize(q, got)
	if !slices.Equal(want.types, got.types) {
		return fmt.Sprintf("column types %v on 18.16, %v on chDB", want.types, got.types)
	}
	w, g := encodeRows(want.rows), encodeRows(got.rows)
	for i := range min(len(w), len(g)) {
		if w[i] != g[i] {
			return fmt.Sprintf("%d rows on 18.16, %d on chDB; row %d differs:\n18.16: %s\n chDB: %s", len(w), len(g), i, w[i], g[i])
		}
	}
	if len(w) != len(g) {
		return fmt.Sprintf("%d rows on 18.16, %d on chDB (the first %d agree)", len(w), len(g), min(len(w), len(g)))
	}
	return ""
}

func normalize(q string, a answer) answer {
	rows := make([][]any, len(a.rows))
	for i, r := range a.rows {
		rows[i] = slices.Clone(r)
	}
	if strings.Contains(q, "groupUniqArray(") {
		for _, r := range rows {
			for _, c := range r {
				if arr, ok := c.([]any); ok {
					slices.SortFunc(arr, func(x, y any) int { return strings.Compare(encode(x), encode(y)) })
				}
			}
		}
	}
	if !orderedAtTop(q) {
		slices.SortFunc(rows, func(x, y []any) int { return strings.Compare(encode(x), encode(y)) })
	}
	return answer{types: a.types, rows: rows}
}

func encodeRows(rows [][]any) []string {
	out := make([]string, len(rows))
	for i, r := range rows {
		out[i] = encode(r)
	}
	return out
}

func encode(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		// Only strings, nils and slices of them get here.
		return fmt.Sprint(v)
	}
	return string(b)
}

// orderedAtTop tells whether q's outermost SELECT has an ORDER BY, outside
// parentheses (subqueries, OVER) and quoted text (a cursor value may hold
// anything).
func orderedAtTop(q string) bool {
	depth := 0
	for i := 0; i < len(q); i++ {
		switch c := q[i]; c {
		case '\'', '"', '`':
			for i++; i < len(q) && q[i] != c; i++ {
				if q[i] == '\\' {
					i++
				}
			}
		case '(':
			depth++
		case ')':
			depth--
		case 'O':
			if depth == 0 && strings.HasPrefix(q[i:], "ORDER BY") && (i == 0 || q[i-1] == ' ' || q[i-1] == '\n') {
				return true
			}
		}
	}
	return false
}

// chdb runs statements on chDB through testdata/chdb/run.js.
type chdb struct{ node, script string }

// chdbResult is what run.js reported.
type chdbResult struct {
	version, timezone string
	setupErr          *setupError
	// answers and errs are indexed like the queries; errs[i] is chDB's
	// message when it refused query i.
	answers []answer
	errs    []string
}

type setupError struct {
	index int
	msg   string
}

// run starts one node process: chDB opens a session in dir, runs setup,
// then every query.
func (c chdb) run(ctx context.Context, dir string, setup, queries []string) (chdbResult, error) {
	in, err := json.Marshal(map[string]any{"dir": filepath.Join(dir, "session"), "setup": setup, "queries": queries})
	if err != nil {
		return chdbResult{}, fmt.Errorf("chdb input: %w", err)
	}
	inPath, outPath := filepath.Join(dir, "in.json"), filepath.Join(dir, "out.json")
	if err := os.WriteFile(inPath, in, 0o600); err != nil {
		return chdbResult{}, fmt.Errorf("chdb input: %w", err)
	}
	cmd := exec.CommandContext(ctx, c.node, c.script, inPath, outPath)
	// The 18.16 server runs in UTC; so must chDB, or DateTime values
	// would be written and read in another zone.
	cmd.Env = append(os.Environ(), "TZ=UTC")
	cmd.WaitDelay = 5 * time.Second
	var output bytes.Buffer
	cmd.Stdout, cmd.Stderr = &output, &output
	if err := cmd.Run(); err != nil {
		return chdbResult{}, fmt.Errorf("node %s: %w\n%s", c.script, err, output.String())
	}
	out, err := os.Open(outPath)
	if err != nil {
		return chdbResult{}, fmt.Errorf("chdb output: %w", err)
	}
	defer out.Close()
	res := chdbResult{answers: make([]answer, len(queries)), errs: make([]string, len(queries))}
	seen := make([]bool, len(queries))
	dec := json.NewDecoder(out)
	dec.UseNumber()
	for {
		var line struct {
			Kind, Version, Timezone, Error string
			Index                          int
			Result                         *struct {
				Meta []struct{ Name, Type string }
				Data [][]any
			}
		}
		if err := dec.Decode(&line); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return res, fmt.Errorf("chdb output: %w", err)
		}
		switch line.Kind {
		case "engine":
			res.version, res.timezone = line.Version, line.Timezone
		case "setup":
			res.setupErr = &setupError{index: line.Index, msg: line.Error}
			return res, nil
		case "query":
			if line.Index < 0 || line.Index >= len(queries) {
				return res, fmt.Errorf("chdb output: query index %d of %d", line.Index, len(queries))
			}
			seen[line.Index] = true
			if line.Result == nil {
				res.errs[line.Index] = line.Error
				continue
			}
			a := answer{}
			for _, m := range line.Result.Meta {
				a.types = append(a.types, m.Type)
			}
			for _, r := range line.Result.Data {
				if len(r) != len(a.types) {
					return res, fmt.Errorf("chdb output: query %d: a row of %d values for %d columns", line.Index, len(r), len(a.types))
				}
				row := make([]any, len(r))
				for i, v := range r {
					if row[i], err = fromJSON(a.types[i], v); err != nil {
						return res, fmt.Errorf("chdb output: query %d: %w", line.Index, err)
					}
				}
				a.rows = append(a.rows, row)
			}
			res.answers[line.Index] = a
		}
	}
	if i := slices.Index(seen, false); i >= 0 {
		return res, fmt.Errorf("chdb output: no answer to query %d\n%s", i, output.String())
	}
	return res, nil
}

// clip shortens a statement for a message; the VALUES of a copied table
// run to megabytes.
func clip(s string) string {
	if len(s) > 2000 {
		return s[:2000] + " ..."
	}
	return s
}

// atoi is strconv.Atoi with 0 for text that is not a number.
func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}
