package clickhouse

import (
	"fmt"
	"strings"
)

// Table names. With a cluster these are the Distributed tables; the
// replicated storage behind each is named with localSuffix.
const (
	TableCohorts           = "cohorts"
	TableMembership        = "membership"
	TableMembershipChanges = "membership_changes"
	TableDataPoints        = "data_points"
	TableImportRejections  = "import_rejections"
	TableSchemaMigrations  = "schema_migrations"
)

const localSuffix = "_local"

// column is one column of a table: its name and ClickHouse type.
type column struct{ name, typ string }

// table describes one table in terms every ClickHouse since 18.16 accepts:
// plain String instead of LowCardinality, UInt8 for booleans, DateTime
// (seconds) with an integer version for finer order, no TTL or CODEC.
type table struct {
	name    string
	columns []column
	// version is the ReplacingMergeTree version column; empty means the
	// last row inserted for a key wins (every copy of a key is identical).
	version     string
	partitionBy string
	orderBy     string
	// shardBy is the Distributed sharding key with a cluster. Every table is
	// sharded by cohort, so the copies a replay writes land on the shard that
	// holds the first ones, where ReplacingMergeTree can collapse them.
	shardBy string
	// clusterWide keeps one copy per replica across the whole cluster, not
	// per shard, and has no Distributed table (schema_migrations).
	clusterWide bool
}

const byCohort = "cityHash64(workspace, partner, cohort_id)"

var (
	// cohorts: the latest metadata per cohort; version is the landed record's.
	cohortsTable = table{
		name: TableCohorts,
		columns: []column{
			{"workspace", "String"}, {"partner", "String"}, {"cohort_id", "String"},
			{"name", "String"}, {"created_at", "DateTime"}, {"updated_at", "DateTime"},
			{"version", "UInt64"}, {"record_id", "String"},
		},
		version: "version",
		orderBy: "workspace, partner, cohort_id",
		shardBy: byCohort,
	}
	// membership: the state per user and cohort. The version is not part of
	// ORDER BY, so a merge (or FINAL) keeps the highest version per user. No
	// PARTITION BY: rows of one key in different partitions never collapse.
	membershipTable = table{
		name: TableMembership,
		columns: []column{
			{"workspace", "String"}, {"partner", "String"}, {"cohort_id", "String"},
			{"user_id", "String"}, {"is_member", "UInt8"}, {"version", "UInt64"},
			{"updated_at", "DateTime"}, {"record_id", "String"},
		},
		version: "version",
		orderBy: "workspace, partner, cohort_id, user_id",
		shardBy: byCohort,
	}
	// membership_changes: the history, one row per resolved change with every
	// column of schemas.ChangesSchema. It is append-only in meaning, but the
	// engine is ReplacingMergeTree keyed by the change's version, so a batch
	// delivered twice collapses to one copy in merges and under FINAL instead
	// of duplicating history. Partitioned by landing month, which a replay
	// keeps, so both copies share a partition.
	membershipChangesTable = table{
		name: TableMembershipChanges,
		columns: []column{
			{"workspace", "String"}, {"partner", "String"}, {"cohort_id", "String"},
			{"user_id", "String"}, {"id_kind", "String"}, {"id_value", "String"},
			{"is_member", "UInt8"}, {"version", "UInt64"}, {"record_id", "String"},
			{"position", "UInt32"}, {"event_time", "DateTime"}, {"received_at", "DateTime"},
			{"partition", "Int32"}, {"offset", "Int64"},
		},
		partitionBy: "toYYYYMM(received_at)",
		orderBy:     "workspace, partner, cohort_id, user_id, version",
		shardBy:     byCohort,
	}
	// data_points: one row per accepted assignment (add or remove), keyed by
	// the landed record and the id's position in it, so a redelivery replaces
	// rows while a partner's re-sent sync (a new record id) adds new ones.
	// day is the UTC landing day, the billing day.
	dataPointsTable = table{
		name: TableDataPoints,
		columns: []column{
			{"workspace", "String"}, {"day", "Date"}, {"partner", "String"},
			{"cohort_id", "String"}, {"record_id", "String"}, {"position", "UInt32"},
			{"user_id", "String"}, {"is_member", "UInt8"}, {"version", "UInt64"},
			{"received_at", "DateTime"},
		},
		partitionBy: "toYYYYMM(day)",
		orderBy:     "workspace, day, partner, cohort_id, record_id, position",
		shardBy:     byCohort,
	}
	// import_rejections: refused ids and records per landed record and
	// reason; a replay computes the same counts and replaces the row.
	importRejectionsTable = table{
		name: TableImportRejections,
		columns: []column{
			{"workspace", "String"}, {"partner", "String"}, {"cohort_id", "String"},
			{"record_id", "String"}, {"reason", "String"}, {"ids", "UInt64"},
			{"records", "UInt64"}, {"updated_at", "DateTime"},
		},
		orderBy: "workspace, partner, cohort_id, record_id, reason",
		shardBy: byCohort,
	}
	schemaMigrationsTable = table{
		name: TableSchemaMigrations,
		columns: []column{
			{"version", "UInt32"}, {"name", "String"}, {"applied_at", "DateTime"},
		},
		orderBy:     "version",
		clusterWide: true,
	}
)

// view is a materialized view that derives one table from another: every
// block inserted into from is also inserted, through a SELECT, into to. The
// sink then sends each change once, as a history row, and the server writes
// the state and data point rows from the same block, where sending all three
// cost the client a second and third encoding and the server a second and
// third parse of the same values.
type view struct {
	name     string
	from, to table
	// derived gives the SELECT expression of each column of to that from
	// does not have under the same name; the others are copied.
	derived map[string]string
}

var (
	// membership: each change is the user's state at its version; the
	// state's updated_at is the change's event time.
	membershipView = view{
		name: "membership_from_changes", from: membershipChangesTable, to: membershipTable,
		derived: map[string]string{"updated_at": "event_time"},
	}
	// data_points: each change is one billable assignment, on its UTC landing
	// day whatever the server's time zone.
	dataPointsView = view{
		name: "data_points_from_changes", from: membershipChangesTable, to: dataPointsTable,
		derived: map[string]string{"day": "toDate(received_at, 'UTC')"},
	}
)

// migration is one step of the schema. Steps are applied in order, each at
// most once per database; their statements must be safe to run again (IF NOT
// EXISTS, ADD COLUMN IF NOT EXISTS), because a step interrupted before it was
// recorded runs again in full.
type migration struct {
	version    uint32
	name       string
	statements func(l layout) []string
}

// migrations is the schema's history. Append only: never edit a step that
// has shipped, add one that alters what it made.
var migrations = []migration{
	{
		version: 1,
		name:    "initial tables",
		statements: func(l layout) []string {
			var out []string
			for _, t := range []table{cohortsTable, membershipTable, membershipChangesTable, dataPointsTable, importRejectionsTable} {
				out = append(out, l.createTable(t)...)
			}
			return out
		},
	},
	{
		// Before this step the sink inserted every change into all three
		// tables. A release from before it writes them still: the rows the
		// views add then are copies of the same keys and versions, which
		// ReplacingMergeTree collapses.
		version: 2,
		name:    "derive membership and data points from the history",
		statements: func(l layout) []string {
			return []string{l.createView(membershipView), l.createView(dataPointsView)}
		},
	},
}

// SchemaVersion is the version Migrate brings a database to.
func SchemaVersion() uint32 { return migrations[len(migrations)-1].version }

// layout renders DDL for one database, on one server or on a cluster.
type layout struct{ database, cluster string }

func newLayout(c Config) layout { return layout{database: c.Database, cluster: c.Cluster} }

func quote(ident string) string { return "`" + ident + "`" }

// qualified is the table the sink reads and writes: the Distributed table
// with a cluster, the only one without.
func (l layout) qualified(name string) string { return quote(l.database) + "." + quote(name) }

func (l layout) onCluster() string {
	if l.cluster == "" {
		return ""
	}
	return " ON CLUSTER " + quote(l.cluster)
}

// bootstrap creates the database and the migrations table.
func (l layout) bootstrap() []string {
	return append([]string{"CREATE DATABASE IF NOT EXISTS " + quote(l.database) + l.onCluster()},
		l.createTable(schemaMigrationsTable)...)
}

// createTable returns the statements that create t: one table on a single
// server; with a cluster, the replicated storage and the Distributed table
// over it under t's own name.
func (l layout) createTable(t table) []string {
	var cols strings.Builder
	for i, c := range t.columns {
		if i > 0 {
			cols.WriteString(",\n    ")
		}
		cols.WriteString(quote(c.name) + " " + c.typ)
	}
	if l.cluster == "" {
		return []string{l.createStorage(t.name, cols.String(), t, "ReplacingMergeTree("+t.version+")")}
	}
	// {shard} and {replica} are server macros. The database and table go in
	// literally rather than as {database}/{table}: servers before 20.x keep
	// those macros unexpanded in the table's metadata, so a later RENAME
	// would move the table off its ZooKeeper path (ClickHouse issue 25953).
	replicated := func(path string) string {
		args := "'" + path + "', '{replica}'"
		if t.version != "" {
			args += ", " + t.version
		}
		return "ReplicatedReplacingMergeTree(" + args + ")"
	}
	if t.clusterWide {
		// One copy on every replica of every shard, read and written under
		// its own name: no Distributed table.
		path := "/clickhouse/tables/all/" + l.database + "/" + t.name
		return []string{l.createStorage(t.name, cols.String(), t, replicated(path))}
	}
	local := t.name + localSuffix
	storage := l.createStorage(local, cols.String(), t, replicated("/clickhouse/tables/{shard}/"+l.database+"/"+local))
	dist := fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s%s (\n    %s\n) ENGINE = Distributed(%s, %s, %s, %s)",
		l.qualified(t.name), l.onCluster(), cols.String(),
		quote(l.cluster), quote(l.database), quote(local), t.shardBy)
	return []string{storage, dist}
}

func (l layout) createStorage(name, cols string, t table, engine string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "CREATE TABLE IF NOT EXISTS %s%s (\n    %s\n) ENGINE = %s", l.qualified(name), l.onCluster(), cols, engine)
	if t.partitionBy != "" {
		b.WriteString("\nPARTITION BY " + t.partitionBy)
	}
	b.WriteString("\nORDER BY (" + t.orderBy + ")")
	return b.String()
}

// createView returns the statement that creates v. With a cluster the view
// reads and writes the local tables of each shard: the Distributed tables
// share one sharding key, so a change and the rows derived from it land on
// the same shard.
func (l layout) createView(v view) string {
	exprs := make([]string, len(v.to.columns))
	for i, c := range v.to.columns {
		if e, ok := v.derived[c.name]; ok {
			exprs[i] = e + " AS " + quote(c.name)
		} else {
			exprs[i] = quote(c.name)
		}
	}
	from, to := v.from.name, v.to.name
	if l.cluster != "" {
		from, to = from+localSuffix, to+localSuffix
	}
	return fmt.Sprintf("CREATE MATERIALIZED VIEW IF NOT EXISTS %s%s TO %s AS SELECT %s FROM %s",
		l.qualified(v.name), l.onCluster(), l.qualified(to), strings.Join(exprs, ", "), l.qualified(from))
}

// insertQuery is the INSERT with an explicit column list that PrepareBatch
// needs on 18.16 (without one it fails with "expected 0 arguments").
func (l layout) insertQuery(t table) string {
	names := make([]string, len(t.columns))
	for i, c := range t.columns {
		names[i] = quote(c.name)
	}
	return "INSERT INTO " + l.qualified(t.name) + " (" + strings.Join(names, ", ") + ")"
}

// Statements returns every DDL statement Migrate may run for c, in order:
// the bootstrap (database, schema_migrations) and then each migration's.
// It needs no server; `cohortsync migrate --dry-run` prints it.
func Statements(c Config) []string {
	l := newLayout(c.WithDefaults())
	out := l.bootstrap()
	for _, m := range migrations {
		out = append(out, m.statements(l)...)
	}
	return out
}
