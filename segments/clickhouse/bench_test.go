package clickhouse_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync/internal/chtest"
	"github.com/cohortsync/cohortsync/internal/testkit"
	"github.com/cohortsync/cohortsync/segments"
)

// loadCtx bounds loading the benchmark data: 10M or 100M rows take minutes.
func loadCtx(b *testing.B) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	b.Cleanup(cancel)
	return ctx
}

// BenchmarkAAndNotB evaluates "A and not B" (count and the first page of
// 100) over two cohorts of n members each that overlap by half; in the
// overlap every 7th user has left B. Rows are loaded with INSERT ... SELECT
// from numbers() straight into the membership table.
//
//	go test -run '^$' -bench AAndNotB -benchtime 5x ./segments/clickhouse
//	COHORTSYNC_BENCH_MEMBERS=10000000 go test -run '^$' -bench AAndNotB -benchtime 3x -timeout 30m ./segments/clickhouse
func BenchmarkAAndNotB(b *testing.B) {
	n := testkit.EnvCount(b, "COHORTSYNC_BENCH_MEMBERS", 100_000, 10)
	addr, db := chtest.NewDatabase(b)
	_, eng := newPairAt(b, addr, db)
	conn := chtest.Open(b, addr)
	ctx := loadCtx(b)
	start := time.Now()
	// User ids have one width (u10000000000 and up), so their order is
	// numeric order.
	load := fmt.Sprintf("INSERT INTO `%s`.`membership` (workspace, partner, cohort_id, user_id, is_member, version, updated_at, record_id) "+
		"SELECT 'bench', 'mixpanel', ?, concat('u', toString(10000000000 + number + ?)), %s, number + 1, toDateTime(1793000000), 'r' FROM numbers(?)", db, "%s")
	if err := conn.Exec(ctx, fmt.Sprintf(load, "1"), "A", 0, n); err != nil {
		b.Fatalf("load A: %v", err)
	}
	if err := conn.Exec(ctx, fmt.Sprintf(load, "(number % 7) != 0"), "B", n/2, n); err != nil {
		b.Fatalf("load B: %v", err)
	}
	b.Logf("loaded 2 x %d members in %s", n, time.Since(start).Round(time.Millisecond))
	// Expected count: A's first half, plus the overlap's users who left B.
	want := int64(n / 2)
	for i := range n - n/2 {
		if i%7 == 0 {
			want++
		}
	}
	filter := json.RawMessage(`{"and":[{"cohort":{"partner":"mixpanel","id":"A"}},{"not":{"cohort":{"partner":"mixpanel","id":"B"}}}]}`)
	for _, limit := range []int{0, 100} {
		b.Run(fmt.Sprintf("members=%d/limit=%d", n, limit), func(b *testing.B) {
			for b.Loop() {
				p, err := eng.Evaluate(ctx, "bench", segments.Query{Filter: filter, Limit: limit})
				if err != nil {
					b.Fatal(err)
				}
				if p.Count != want || len(p.Members) != limit {
					b.Fatalf("count %d with %d members, want %d with %d", p.Count, len(p.Members), want, limit)
				}
			}
			b.ReportMetric(float64(2*n)*float64(b.N)/b.Elapsed().Seconds(), "member-rows/s")
		})
	}
}

// BenchmarkDataPoints reports data points by day over n assignment rows
// (30 days, 20 cohorts, n/10 users, records of 1,000 ids, every third round
// of assignments a remove), loaded with INSERT ... SELECT into the history,
// membership_changes, which the query reads (the views fill the other
// tables as the sink's inserts do).
//
//	go test -run '^$' -bench DataPoints -benchtime 5x ./segments/clickhouse
//	COHORTSYNC_BENCH_DATAPOINTS=100000000 go test -run '^$' -bench DataPoints -benchtime 1x -timeout 60m ./segments/clickhouse
func BenchmarkDataPoints(b *testing.B) {
	n := testkit.EnvCount(b, "COHORTSYNC_BENCH_DATAPOINTS", 1_000_000, 10)
	users := max(n/10, 1)
	addr, db := chtest.NewDatabase(b)
	_, eng := newPairAt(b, addr, db)
	conn := chtest.Open(b, addr)
	ctx := loadCtx(b)
	start := time.Now()
	// Records land step seconds apart so that the rows span 30 days.
	step := max(30*86400/(n/1000+1), 1)
	load := fmt.Sprintf("INSERT INTO `%s`.`membership_changes` (workspace, partner, cohort_id, user_id, id_kind, id_value, is_member, version, record_id, position, event_time, received_at, partition, offset) "+
		"SELECT 'bench', 'mixpanel', concat('c', toString(number %% 20)), concat('u', toString(number %% ?)), 'external_id', concat('u', toString(number %% ?)), "+
		"(intDiv(number, ?) %% 3) != 2, number + 1, concat('r', toString(intDiv(number, 1000))), number %% 1000, "+
		"toDateTime(1793000000 + intDiv(number, 1000) * ?), toDateTime(1793000000 + intDiv(number, 1000) * ?), 0, intDiv(number, 1000) FROM numbers(?)", db)
	if err := conn.Exec(ctx, load, users, users, users, step, step, n); err != nil {
		b.Fatalf("load: %v", err)
	}
	b.Logf("loaded %d data points in %s", n, time.Since(start).Round(time.Millisecond))
	from := time.Unix(1793000000, 0).UTC().Truncate(24 * time.Hour)
	to := from.AddDate(0, 0, 31)
	for _, g := range []segments.GroupBy{segments.GroupByDay, segments.GroupByCohort} {
		b.Run(fmt.Sprintf("rows=%d/group_by=%s", n, g), func(b *testing.B) {
			for b.Loop() {
				rows, err := eng.DataPoints(ctx, "bench", from, to, g)
				if err != nil {
					b.Fatal(err)
				}
				var billable int64
				for _, r := range rows {
					billable += r.Billable
				}
				if billable != int64(n) {
					b.Fatalf("billable %d, want %d", billable, n)
				}
			}
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}
