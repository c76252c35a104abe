package duckdbtest

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// BenchmarkMembersOfCohort runs the documented "members now" query with
// DuckDB over a tree written by the sink. COHORTSYNC_BENCH_PARQUET_ROOT names
// the tree (bench/parquettree --keep DIR writes one: DIR/parquet); without it
// the benchmark has nothing to read and is skipped, since a benchmark never
// fails for want of data. The cohort is cohort-0001 of workspace acme,
// partner mixpanel, as bench/parquettree names them.
func BenchmarkMembersOfCohort(b *testing.B) {
	root := os.Getenv("COHORTSYNC_BENCH_PARQUET_ROOT")
	if root == "" {
		b.Skip("set COHORTSYNC_BENCH_PARQUET_ROOT to a tree written by bench/parquettree --keep DIR (DIR/parquet)")
	}
	q := strings.NewReplacer(
		"DATA_DIR/parquet", filepath.ToSlash(root),
		"'trial-users'", "'cohort-0001'",
	).Replace(docQueries(b)["members_now"])
	db, err := sql.Open("duckdb", "")
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	var members int
	for b.Loop() {
		rows, err := db.QueryContext(ctx, q)
		if err != nil {
			b.Fatal(err)
		}
		members = 0
		for rows.Next() {
			members++
		}
		if err := rows.Err(); err != nil {
			b.Fatal(err)
		}
		rows.Close()
	}
	b.ReportMetric(float64(members), "members")
}
