package duckdbtest

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	_ "github.com/duckdb/duckdb-go/v2"

	"github.com/cohortsync/cohortsync/jobs/snapshot"
	"github.com/cohortsync/cohortsync/pipeline"
	"github.com/cohortsync/cohortsync/schemas"
	"github.com/cohortsync/cohortsync/segments"
	"github.com/cohortsync/cohortsync/segments/embedded"
	"github.com/cohortsync/cohortsync/sinks/parquet"
	"github.com/cohortsync/cohortsync/sinks/state"
)

// The values the documented queries name.
const (
	docWorkspace = "acme"
	docPartner   = "mixpanel"
	docCohort    = "trial-users"
)

var docAsOf = time.Date(2024, 3, 2, 12, 0, 0, 0, time.UTC)

// docQueries reads the named SQL blocks of docs/PARQUET.md, so that the
// test runs exactly what the documentation tells a data engineer to run.
func docQueries(t testing.TB) map[string]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "..", "docs", "PARQUET.md"))
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile("(?s)```sql\n-- name: ([a-z_]+)\n(.*?)```")
	out := map[string]string{}
	for _, m := range re.FindAllStringSubmatch(string(b), -1) {
		out[m[1]] = m[2]
	}
	for _, name := range []string{"members_now", "members_as_of", "datapoints_by_day_partner_cohort", "datapoints_by_day", "newest_snapshot"} {
		if out[name] == "" {
			t.Fatalf("docs/PARQUET.md has no query named %s", name)
		}
	}
	return out
}

// record is one landed record of the scenario.
type record struct {
	id                 string
	workspace, partner string
	cohort             string
	partition          int32
	offset             int64
	event, received    time.Time
	add                bool
	users              []string
}

func (r record) changes() []schemas.ResolvedChange {
	out := make([]schemas.ResolvedChange, len(r.users))
	for pos, u := range r.users {
		out[pos] = schemas.ResolvedChange{
			Workspace: r.workspace, Partner: r.partner, CohortID: r.cohort, UserID: u,
			IDKind: schemas.IDKindExternalID, IDValue: u, IsMember: r.add,
			Version: schemas.Version(r.offset, pos), RecordID: r.id, Position: uint32(pos),
			EventTime: r.event, ReceivedAt: r.received, Partition: r.partition, Offset: r.offset,
		}
	}
	return out
}

// landedAt is the record landed again at another offset: same id, ids and
// times, a new version.
func (r record) landedAt(offset int64) record {
	r.offset = offset
	return r
}

// scenario generates per Kafka partition n records. As in production, a
// cohort's records all land on one partition.
func scenario(n int) map[int32][]record {
	rng := rand.New(rand.NewPCG(42, 1))
	cohorts := map[int32]string{0: docCohort, 1: "power-users", 2: "churned"}
	start := time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC)
	out := map[int32][]record{}
	for p, cohort := range cohorts {
		for off := range int64(n) {
			// Time moves forward with the offset over three days; some
			// records land a day or two after their event (a backfill).
			event := start.Add(time.Duration(off) * 72 * time.Hour / time.Duration(n)).Add(time.Duration(rng.IntN(3600)) * time.Second)
			received := event
			if rng.IntN(4) == 0 {
				received = event.Add(time.Duration(1+rng.IntN(2)) * 24 * time.Hour)
			}
			ws := docWorkspace
			if rng.IntN(5) == 0 {
				ws = "other"
			}
			partner := docPartner
			if rng.IntN(3) == 0 {
				partner = "amplitude"
			}
			users := map[string]bool{}
			for range 1 + rng.IntN(15) {
				users[fmt.Sprintf("u%03d", rng.IntN(60))] = true
			}
			out[p] = append(out[p], record{
				id: fmt.Sprintf("rec-%d-%d", p, off), workspace: ws, partner: partner, cohort: cohort,
				partition: p, offset: off, event: event.Truncate(time.Microsecond), received: received.Truncate(time.Microsecond),
				add: rng.IntN(10) < 7, users: slices.Sorted(func(yield func(string) bool) {
					for u := range users {
						if !yield(u) {
							return
						}
					}
				}),
			})
		}
	}
	return out
}

// batch is the pipeline output of some records of one partition, covering
// offsets first..last.
func batch(recs []record, first, last int64) *pipeline.Output {
	b := schemas.NewChangesBuilder(nil)
	defer b.Release()
	p := recs[0].partition
	for _, r := range recs {
		for _, c := range r.changes() {
			b.Append(c)
		}
	}
	return &pipeline.Output{Changes: b.NewRecordBatch(), Rejections: pipeline.NewRejections(),
		Positions: map[int]pipeline.OffsetRange{int(p): {First: first, Last: last}}}
}

func between(recs []record, first, last int64) []record {
	var out []record
	for _, r := range recs {
		if r.offset >= first && r.offset <= last {
			out = append(out, r)
		}
	}
	return out
}

type stream struct {
	t     *testing.T
	ctx   context.Context
	store *state.Store
	sinks []*parquet.Sink
}

// deliver writes one batch to the state of record and to the given Parquet
// sink, as the runner does, and releases it.
func (s *stream) deliver(pq *parquet.Sink, recs []record, first, last int64) {
	s.t.Helper()
	out := batch(recs, first, last)
	defer out.Changes.Release()
	if err := s.store.Write(s.ctx, out); err != nil {
		s.t.Fatal(err)
	}
	if err := pq.Write(s.ctx, out); err != nil {
		s.t.Fatal(err)
	}
}

func (s *stream) open(root string) *parquet.Sink {
	s.t.Helper()
	// A long interval: rolls happen when the test says (Flush, Close).
	pq, err := parquet.New(parquet.Config{Root: root, RollInterval: time.Hour, RollRows: 1 << 20}, parquet.Options{})
	if err != nil {
		s.t.Fatal(err)
	}
	s.sinks = append(s.sinks, pq)
	return pq
}

func TestDocumentedQueriesEqualTheAPI(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	queries := docQueries(t)
	dir := t.TempDir()
	root := filepath.Join(dir, "parquet")
	store, err := state.Open(state.DefaultConfig(dir), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	s := &stream{t: t, ctx: ctx, store: store}
	defer func() {
		for _, pq := range s.sinks {
			_ = pq.Close()
		}
	}()
	recs := scenario(30)

	pq := s.open(root)
	// The stream, in batches of ten records per partition.
	for p := range int32(3) {
		for first := int64(0); first < 30; first += 10 {
			s.deliver(pq, between(recs[p], first, first+9), first, first+9)
		}
	}
	// A redelivery as it was, and one cut at other offsets (a rebalance).
	s.deliver(pq, between(recs[0], 10, 19), 10, 19)
	s.deliver(pq, between(recs[1], 5, 24), 5, 24)
	// A restart, then partition 2's records landed again at new offsets
	// (a file backfill run twice); nothing else landed there in between.
	if err := pq.Close(); err != nil {
		t.Fatal(err)
	}
	pq = s.open(root)
	var again []record
	for _, r := range recs[2] {
		again = append(again, r.landedAt(r.offset+30))
	}
	s.deliver(pq, again, 30, 59)
	// New records staged by an instance that then dies without rolling
	// (its sink is never closed before the next one opens): the next
	// instance gets them redelivered and rolls what the first staged.
	more := scenario(40)[0][30:]
	s.deliver(pq, more, 30, 39)
	next := s.open(root)
	s.deliver(next, more, 30, 39)
	if err := next.Flush(ctx); err != nil {
		t.Fatal(err)
	}

	// Snapshots, from the state of record into the same tree.
	snap, err := snapshot.New(snapshot.Config{Interval: -1}, snapshot.FromState(store), next, snapshot.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := snap.Snapshot(ctx, snapshot.Selection{}); err != nil {
		t.Fatal(err)
	}
	for _, x := range s.sinks {
		if err := x.Close(); err != nil {
			t.Fatal(err)
		}
	}
	s.sinks = nil

	db, err := sql.Open("duckdb", "")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	run := func(name string) [][]string {
		t.Helper()
		q := strings.ReplaceAll(queries[name], "DATA_DIR/parquet", filepath.ToSlash(root))
		rows, err := db.QueryContext(ctx, q)
		if err != nil {
			t.Fatalf("%s: %v\n%s", name, err, q)
		}
		defer rows.Close()
		cols, err := rows.Columns()
		if err != nil {
			t.Fatal(err)
		}
		var out [][]string
		for rows.Next() {
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				t.Fatal(err)
			}
			row := make([]string, len(cols))
			for i, v := range vals {
				if tm, ok := v.(time.Time); ok {
					row[i] = tm.UTC().Format(time.DateOnly)
				} else {
					row[i] = fmt.Sprint(v)
				}
			}
			out = append(out, row)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		return out
	}
	column := func(rows [][]string) []string {
		out := make([]string, len(rows))
		for i, r := range rows {
			out[i] = r[0]
		}
		return out
	}

	eng, err := embedded.New(store, embedded.Options{})
	if err != nil {
		t.Fatal(err)
	}
	filter := json.RawMessage(fmt.Sprintf(`{"cohort":{"partner":%q,"id":%q}}`, docPartner, docCohort))
	members := func(asOf time.Time) []string {
		t.Helper()
		p, err := eng.Evaluate(ctx, docWorkspace, segments.Query{Filter: filter, Limit: 10_000, AsOf: asOf})
		if err != nil {
			t.Fatal(err)
		}
		return p.Members
	}

	now := members(time.Time{})
	if len(now) == 0 {
		t.Fatal("the scenario leaves the documented cohort empty: the comparison would prove nothing")
	}
	if got := column(run("members_now")); !slices.Equal(got, now) {
		t.Errorf("members_now: DuckDB %v, API %v", got, now)
	}
	past := members(docAsOf)
	if slices.Equal(past, now) {
		t.Fatal("the as-of instant sees the same members as now: the comparison would prove nothing")
	}
	if got := column(run("members_as_of")); !slices.Equal(got, past) {
		t.Errorf("members_as_of: DuckDB %v, API %v", got, past)
	}
	if got := column(run("newest_snapshot")); !slices.Equal(got, now) {
		t.Errorf("newest_snapshot: DuckDB %v, API %v", got, now)
	}

	points, err := store.DataPoints(docWorkspace, time.Time{}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	var want [][]string
	for _, p := range points {
		want = append(want, []string{p.Day.Format(time.DateOnly), p.Partner, p.CohortID, fmt.Sprint(p.Billable)})
	}
	slices.SortFunc(want, func(a, b []string) int { return strings.Compare(strings.Join(a, " "), strings.Join(b, " ")) })
	if got := run("datapoints_by_day_partner_cohort"); !slices.EqualFunc(got, want, slices.Equal) {
		t.Errorf("datapoints_by_day_partner_cohort:\nDuckDB %v\nAPI    %v", got, want)
	}
	byDay, err := eng.DataPoints(ctx, docWorkspace, time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2024, 12, 31, 0, 0, 0, 0, time.UTC), segments.GroupByDay)
	if err != nil {
		t.Fatal(err)
	}
	var wantDays [][]string
	for _, r := range byDay {
		wantDays = append(wantDays, []string{r.Day, fmt.Sprint(r.Billable)})
	}
	if len(wantDays) < 3 {
		t.Fatalf("the scenario bills on %d days: want several", len(wantDays))
	}
	if got := run("datapoints_by_day"); !slices.EqualFunc(got, wantDays, slices.Equal) {
		t.Errorf("datapoints_by_day:\nDuckDB %v\nAPI    %v", got, wantDays)
	}
}
