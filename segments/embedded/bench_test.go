package embedded_test

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync/pipeline"
	"github.com/cohortsync/cohortsync/schemas"
	"github.com/cohortsync/cohortsync/segments"
	"github.com/cohortsync/cohortsync/sinks/state"
)

var benchMembers = flag.Int("members", 1_000_000, "members of each cohort in BenchmarkAndNot")

// benchUser is user n's id: hex of n spread over 64 bits, so ids arrive in
// no particular order, as real ones do.
func benchUser(n int) string {
	return fmt.Sprintf("%016x", uint64(n)*0x9E3779B97F4A7C15)
}

// loadCohorts writes cohorts A = users [0, n) and B = users [n/2, 3n/2)
// through Store.Write, in batches of 100 records of 1,000 adds each.
func loadCohorts(b *testing.B, s *state.Store, n int) {
	const perRecord, perBatch = 1000, 100_000
	ctx := context.Background()
	at := time.Date(2024, 11, 4, 9, 0, 0, 0, time.UTC)
	var offset int64
	for _, c := range []struct {
		id    string
		first int
	}{{"A", 0}, {"B", n / 2}} {
		for start := 0; start < n; start += perBatch {
			cb := schemas.NewChangesBuilder(nil)
			for i := start; i < min(start+perBatch, n); i++ {
				pos := (i - start) % perRecord
				if pos == 0 && i != start {
					offset++
				}
				u := benchUser(c.first + i)
				cb.Append(schemas.ResolvedChange{
					Workspace: "bench", Partner: "mixpanel", CohortID: c.id, UserID: u,
					IDKind: schemas.IDKindExternalID, IDValue: u, IsMember: true,
					Version: schemas.Version(offset, pos), RecordID: fmt.Sprintf("rec-%d", offset), Position: uint32(pos),
					EventTime: at, ReceivedAt: at, Offset: offset,
				})
			}
			offset++
			out := &pipeline.Output{Changes: cb.NewRecordBatch(), Rejections: pipeline.NewRejections()}
			cb.Release()
			err := s.Write(ctx, out)
			out.Changes.Release()
			if err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkAndNot evaluates "A and not B" (count only) over two cohorts of
// -members members each, half of them shared, once the bitmaps are cached.
// It reports the load rate through Store.Write, the first (cold) query that
// builds the dictionary and bitmaps, and the peak RSS of the process.
func BenchmarkAndNot(b *testing.B) {
	n := *benchMembers
	s, err := state.Open(state.DefaultConfig(b.TempDir()), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	start := time.Now()
	loadCohorts(b, s, n)
	load := time.Since(start)
	e := newEngine(b, s)
	ctx := context.Background()
	q := segments.Query{Filter: json.RawMessage(`{"and":[{"cohort":{"partner":"mixpanel","id":"A"}},{"not":{"cohort":{"partner":"mixpanel","id":"B"}}}]}`)}
	start = time.Now()
	p, err := e.Evaluate(ctx, "bench", q)
	if err != nil {
		b.Fatal(err)
	}
	cold := time.Since(start)
	if want := int64(n / 2); p.Count != want {
		b.Fatalf("count %d, want %d", p.Count, want)
	}
	b.ResetTimer()
	for b.Loop() {
		if _, err := e.Evaluate(ctx, "bench", q); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(2*n)/load.Seconds(), "loaded_changes/s")
	b.ReportMetric(cold.Seconds(), "cold_query_s")
	b.ReportMetric(float64(peakRSS())/(1<<20), "peak_rss_MiB")
}

// peakRSS is the process's high-water resident set size in bytes, 0 where
// /proc does not tell.
func peakRSS() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}
