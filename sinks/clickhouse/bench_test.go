package clickhouse_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync/internal/chtest"
	"github.com/cohortsync/cohortsync/internal/testkit"
	"github.com/cohortsync/cohortsync/pipeline"
	"github.com/cohortsync/cohortsync/schemas"
)

// BenchmarkSinkWrite measures changes per second into ClickHouse: one Write
// of a batch of resolved changes inserts it into membership_changes (one
// columnar insert), and the server's views derive data_points and
// membership from the same block. It runs its own
// server so that the server's CPU time can be reported apart from the
// client's: client-cpu-s/Mchanges is this process (Arrow to columns, the
// native protocol encoding), server-cpu-s/Mchanges the clickhouse-server
// process (parsing, sorting, writing parts, background merges).
//
//	go test -run '^$' -bench SinkWrite -benchtime 100x ./sinks/clickhouse
func BenchmarkSinkWrite(b *testing.B) {
	srv := chtest.StartPrivateServer(b)
	db := chtest.NewDatabaseAt(b, srv.Addr)
	s, _ := newSinkAt(b, srv.Addr, db)
	for _, n := range []int{1_000, 10_000, 50_000, 200_000} {
		b.Run(fmt.Sprintf("rows=%d", n), func(b *testing.B) {
			// Distinct batches, as a stream brings them; cycling through
			// them later writes replays, which cost the server the same.
			outs := make([]*pipeline.Output, 8)
			var size int64
			for i := range outs {
				outs[i] = benchOutput(b, n, int64(i)*int64(n))
				size = recordBytes(outs[i])
			}
			b.SetBytes(size)
			client0, server0 := testkit.ProcessCPU(), procCPU(srv.Pid())
			i := 0
			for b.Loop() {
				if err := s.Write(testkit.DetachedContext(b, 60*time.Second), outs[i%len(outs)]); err != nil {
					b.Fatal(err)
				}
				i++
			}
			changes := float64(n) * float64(b.N)
			b.ReportMetric(changes/b.Elapsed().Seconds(), "changes/s")
			b.ReportMetric((testkit.ProcessCPU()-client0).Seconds()/(changes/1e6), "client-cpu-s/Mchanges")
			if server0 >= 0 {
				b.ReportMetric((procCPU(srv.Pid())-server0).Seconds()/(changes/1e6), "server-cpu-s/Mchanges")
			}
		})
	}
}

// benchOutput is n changes in records of up to 1,000 ids (the API's limit),
// over 50 cohorts and a million users, one in ten a remove.
func benchOutput(b testing.TB, n int, base int64) *pipeline.Output {
	rng := rand.New(rand.NewPCG(uint64(base), 7))
	cb := schemas.NewChangesBuilder(nil)
	defer cb.Release()
	now := time.Now().UTC()
	for i := range n {
		offset := base + int64(i/1000)
		pos := i % 1000
		user := "user_" + strconv.Itoa(rng.IntN(1_000_000))
		cb.Append(schemas.ResolvedChange{
			Workspace: "bench", Partner: "mixpanel", CohortID: "cohort_" + strconv.FormatInt(offset%50, 10),
			UserID: user, IDKind: schemas.IDKindExternalID, IDValue: user,
			IsMember: rng.IntN(10) != 0, Version: schemas.Version(offset, pos),
			RecordID: "rec-" + strconv.FormatInt(offset, 10), Position: uint32(pos),
			EventTime: now, ReceivedAt: now, Partition: int32(offset % 12), Offset: offset,
		})
	}
	rec := cb.NewRecordBatch()
	b.Cleanup(rec.Release)
	return &pipeline.Output{Changes: rec, Rejections: pipeline.NewRejections()}
}

// recordBytes is the size of the batch's Arrow buffers: what a Write moves.
func recordBytes(out *pipeline.Output) int64 {
	var n int64
	for _, col := range out.Changes.Columns() {
		for _, buf := range col.Data().Buffers() {
			if buf != nil {
				n += int64(buf.Len())
			}
		}
	}
	return n
}

// procCPU is the user+system CPU time of pid from /proc, or -1 where there
// is no /proc.
func procCPU(pid int) time.Duration {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return -1
	}
	// Fields after the command name, which is in parentheses and may hold spaces.
	fields := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
	if len(fields) < 13 {
		return -1
	}
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	// Linux reports clock ticks of USER_HZ, 100 per second on every platform Go supports.
	return time.Duration(utime+stime) * (time.Second / 100)
}
