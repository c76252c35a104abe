package parquet

import (
	"fmt"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/cohortsync/cohortsync/internal/testkit"
	"github.com/cohortsync/cohortsync/pipeline"
)

// arrowBytes is the size of the batch's Arrow buffers: the input the sink reads.
func arrowBytes(rec arrow.RecordBatch) int64 {
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

// BenchmarkParquetWrite measures whole batches into the sink on the real
// file system, fsyncs included: a batch from 4 partitions of one workspace
// and one day, 100 ids per landed record, a million distinct users. "stage"
// is Write alone (what the runner waits for before the offset commit);
// "stage+roll" adds a roll of the batch into the trees (8 files: 4 per
// table), the work a roll does for roll_rows rows. Every op writes new
// offsets and record ids: a batch the trees hold already would be skipped.
func BenchmarkParquetWrite(b *testing.B) {
	for _, rows := range []int{10_000, 100_000} {
		for _, roll := range []bool{false, true} {
			name := fmt.Sprintf("rows=%d/stage", rows)
			if roll {
				name = fmt.Sprintf("rows=%d/stage+roll", rows)
			}
			b.Run(name, func(b *testing.B) {
				spec := defaultSpec()
				spec.workspaces = []string{"acme"}
				spec.idsPerRecord = 100
				spec.users = 1_000_000
				spec.days = 1
				spec.start = time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC)
				perPartition := int64(rows / spec.idsPerRecord / 4)
				spec.partitions = map[int]pipeline.OffsetRange{}
				for p := range 4 {
					spec.partitions[p] = pipeline.OffsetRange{First: 0, Last: perPartition - 1}
				}
				base := generate(spec)
				if len(base) != rows {
					b.Fatalf("generated %d rows, want %d", len(base), rows)
				}
				s, err := New(Config{Root: b.TempDir(), RollRows: 1 << 30, RollInterval: time.Hour}, Options{})
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { _ = s.Close() })
				ctx := testkit.DetachedContext(b, 10*time.Minute)
				b.ReportAllocs()
				shift := int64(0)
				for b.Loop() {
					b.StopTimer()
					shift += perPartition
					batch := relanded(base, shift)
					pos := map[int]pipeline.OffsetRange{}
					for p, r := range spec.partitions {
						pos[p] = pipeline.OffsetRange{First: r.First + shift, Last: r.Last + shift}
					}
					for i := range batch {
						batch[i].RecordID = fmt.Sprintf("%s+%d", batch[i].RecordID, shift)
					}
					out := buildOutput(b, batch, pos)
					b.SetBytes(arrowBytes(out.Changes))
					b.StartTimer()
					if err := s.Write(ctx, out); err != nil {
						b.Fatal(err)
					}
					if roll {
						if err := s.Flush(ctx); err != nil {
							b.Fatal(err)
						}
					}
				}
				b.ReportMetric(float64(rows)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
			})
		}
	}
}
