package snapshot_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync/jobs/snapshot"
	"github.com/cohortsync/cohortsync/pipeline"
	"github.com/cohortsync/cohortsync/schemas"
	"github.com/cohortsync/cohortsync/sinks/parquet"
	"github.com/cohortsync/cohortsync/sinks/state"
)

// BenchmarkSnapshotFromState measures a full snapshot of one cohort read
// from the embedded store and written as Parquet; each op writes a new
// version, so nothing is skipped.
func BenchmarkSnapshotFromState(b *testing.B) {
	for _, members := range []int{10_000, 200_000} {
		b.Run(fmt.Sprintf("members=%d", members), func(b *testing.B) {
			st, err := state.Open(state.DefaultConfig(b.TempDir()), nil)
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			cfg := parquet.DefaultConfig()
			cfg.Root = b.TempDir()
			pq, err := parquet.New(cfg, parquet.Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer pq.Close()
			snap, err := snapshot.New(snapshot.DefaultConfig(), snapshot.FromState(st), pq, snapshot.Options{})
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			at := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
			offset := int64(0)
			write := func(users int, member bool) {
				for start := 0; start < users; start += 10_000 {
					cb := schemas.NewChangesBuilder(nil)
					for i := start; i < min(users, start+10_000); i++ {
						u := fmt.Sprintf("user-%09d", i)
						cb.Append(schemas.ResolvedChange{Workspace: "w", Partner: "mixpanel", CohortID: "big", UserID: u,
							IDKind: schemas.IDKindExternalID, IDValue: u, IsMember: member, Version: schemas.Version(offset, i-start),
							RecordID: fmt.Sprintf("r%d", offset), Position: uint32(i - start), EventTime: at, ReceivedAt: at, Offset: offset})
					}
					out := &pipeline.Output{Changes: cb.NewRecordBatch(), Rejections: pipeline.NewRejections(),
						Positions: map[int]pipeline.OffsetRange{0: {First: offset, Last: offset}}}
					cb.Release()
					if err := st.Write(ctx, out); err != nil {
						b.Fatal(err)
					}
					out.Changes.Release()
					offset++
				}
			}
			write(members, true)
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				write(1, true) // a new version, so the round writes a file
				b.StartTimer()
				res, err := snap.Snapshot(ctx, snapshot.Selection{})
				if err != nil || len(res) != 1 || !res[0].Written || res[0].Members != int64(members) {
					b.Fatalf("snapshot: %+v %v", res, err)
				}
			}
			b.ReportMetric(float64(members)*float64(b.N)/b.Elapsed().Seconds(), "members/s")
		})
	}
}
