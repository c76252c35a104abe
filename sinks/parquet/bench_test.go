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
// file system, fsyncs included: a batch from 4 partitions of one
// workspace and one day, 100 ids per landed record, a million distinct
// users, so 8 files (4 per table) per batch.
func BenchmarkParquetWrite(b *testing.B) {
	for _, rows := range []int{10_000, 100_000} {
		b.Run(fmt.Sprintf("rows=%d", rows), func(b *testing.B) {
			spec := defaultSpec()
			spec.workspaces = []string{"acme"}
			spec.idsPerRecord = 100
			spec.users = 1_000_000
			spec.days = 1
			spec.start = time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC)
			perPartition := int64(rows / spec.idsPerRecord / 4)
			spec.partitions = map[int]pipeline.OffsetRange{}
			for p := range 4 {
				spec.partitions[p] = pipeline.OffsetRange{First: 1000, Last: 1000 + perPartition - 1}
			}
			out := buildOutput(b, generate(spec), spec.partitions)
			if n := int(out.Changes.NumRows()); n != rows {
				b.Fatalf("generated %d rows, want %d", n, rows)
			}
			s := newTestSink(b, b.TempDir(), Options{})
			ctx := testkit.DetachedContext(b, 30*time.Second)
			b.SetBytes(arrowBytes(out.Changes))
			b.ReportAllocs()
			for b.Loop() {
				if err := s.Write(ctx, out); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(rows)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}
