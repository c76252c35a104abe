package state

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/cohortsync/cohortsync/pipeline"
	"github.com/cohortsync/cohortsync/schemas"
)

// benchBatch builds the batch of op n: records of 1,000 ids each over 20
// cohorts of a 100k-user workspace, 80% adds and 20% removes, each record on
// its own offset so every batch brings new data points.
func benchBatch(b *testing.B, n, changes int) *pipeline.Output {
	const perRecord, cohorts, users = 1000, 20, 100_000
	rng := rand.New(rand.NewPCG(uint64(n), 7))
	cb := schemas.NewChangesBuilder(nil)
	defer cb.Release()
	event := time.Date(2024, 11, 5, 9, 30, 0, 0, time.UTC).Add(time.Duration(n) * time.Minute)
	records := changes / perRecord
	for r := range records {
		offset := int64(n*records + r)
		rid := fmt.Sprintf("0193a6f0-8a4e-7c1d-%04x-%012x", n&0xffff, offset)
		cohort := fmt.Sprintf("cohort-%d", offset%cohorts)
		for pos := range perRecord {
			user := fmt.Sprintf("%08x-4e2b-4c1a-9d3f-%012x", rng.IntN(users)*2654435761, 0)
			cb.Append(schemas.ResolvedChange{
				Workspace: "acme", Partner: "mixpanel", CohortID: cohort, UserID: user,
				IDKind: schemas.IDKindExternalID, IDValue: user, IsMember: pos%5 != 0,
				Version: schemas.Version(offset, pos), RecordID: rid, Position: uint32(pos),
				EventTime: event, ReceivedAt: event, Partition: int32(offset % 12), Offset: offset,
			})
		}
	}
	out := &pipeline.Output{Changes: cb.NewRecordBatch(), Rejections: pipeline.NewRejections()}
	b.Cleanup(out.Changes.Release)
	return out
}

// BenchmarkStateWrite measures changes/s into the store, each batch one
// fsynced transaction. "new" writes fresh batches (a growing store), "replay"
// writes one batch again and again, the redelivery path.
func BenchmarkStateWrite(b *testing.B) {
	for _, mode := range []string{"new", "replay"} {
		for _, changes := range []int{1000, 10_000} {
			b.Run(fmt.Sprintf("%s/changes=%d", mode, changes), func(b *testing.B) {
				s, err := Open(DefaultConfig(b.TempDir()), nil)
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				ctx := context.Background()
				replay := benchBatch(b, 0, changes)
				if mode == "replay" {
					if err := s.Write(ctx, replay); err != nil {
						b.Fatal(err)
					}
				}
				b.SetBytes(batchBytes(replay.Changes))
				var mallocs uint64
				var ms runtime.MemStats
				n := 0
				for b.Loop() {
					out := replay
					if mode == "new" {
						b.StopTimer()
						out = benchBatch(b, n+1, changes)
						b.StartTimer()
					}
					runtime.ReadMemStats(&ms)
					before := ms.Mallocs
					if err := s.Write(ctx, out); err != nil {
						b.Fatal(err)
					}
					runtime.ReadMemStats(&ms)
					mallocs += ms.Mallocs - before
					if mode == "new" {
						out.Changes.Release()
						out.Changes = nil
					}
					n++
				}
				total := float64(n) * float64(changes)
				b.ReportMetric(total/b.Elapsed().Seconds(), "changes/s")
				b.ReportMetric(float64(mallocs)/total, "allocs/change")
			})
		}
	}
}

func batchBytes(rec arrow.RecordBatch) int64 {
	var n int64
	for _, col := range rec.Columns() {
		for _, buf := range col.Data().Buffers() {
			if buf != nil {
				n += int64(buf.Len())
			}
		}
	}
	return n
}
