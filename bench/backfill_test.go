package bench

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/klauspost/compress/zstd"

	"github.com/cohortsync/cohortsync/config"
	"github.com/cohortsync/cohortsync/connectors/backfill"
	"github.com/cohortsync/cohortsync/connectors/files"
	"github.com/cohortsync/cohortsync/internal/testkit"
	"github.com/cohortsync/cohortsync/pipeline"
	"github.com/cohortsync/cohortsync/schemas"
	"github.com/cohortsync/cohortsync/service"
	sinkpq "github.com/cohortsync/cohortsync/sinks/parquet"
	"github.com/cohortsync/cohortsync/stores/identities"
)

// Backfill inputs: records of 1,000 ids over a pool of identified users.
const (
	bfIDsPerRecord = 1000
	bfUsers        = 100_000
	bfRecordsPerPQ = 100 // records per Parquet file, as the sink writes batches
)

func bfChanges(b *testing.B) int {
	n := testkit.EnvCount(b, "COHORTSYNC_BENCH_CHANGES", 1_000_000, bfIDsPerRecord)
	return n / bfIDsPerRecord * bfIDsPerRecord
}

func bfEnvelope(i int) schemas.Envelope {
	ids := make([]string, bfIDsPerRecord)
	for j := range ids {
		ids[j] = "ext-" + strconv.Itoa((i*bfIDsPerRecord+j*7)%bfUsers)
	}
	at := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Second)
	return schemas.Envelope{
		SchemaVersion: schemas.CurrentVersion,
		RecordID:      fmt.Sprintf("0190f5a2-7b1c-7def-8abc-%012d", i),
		Workspace:     "acme", Partner: "mixpanel", ReceivedAt: at, EventTime: at,
		Payload: schemas.CohortChangesPayload{CohortID: "c" + strconv.Itoa(i%50), Changes: []schemas.Change{{UserIDs: ids, ShouldRemove: i%3 == 0}}},
	}
}

// bfDirectory is an identity replica holding the user pool.
func bfDirectory(b *testing.B) *identities.Index {
	x, err := identities.OpenIndex(filepath.Join(b.TempDir(), "ids.db"), identities.IndexOptions{Topic: "ids"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = x.Close() })
	var msgs []identities.Message
	for u := range bfUsers {
		v, err := identities.EncodeValue("acme", identities.Record{UserID: "u" + strconv.Itoa(u), ExternalID: "ext-" + strconv.Itoa(u)})
		if err != nil {
			b.Fatal(err)
		}
		msgs = append(msgs, identities.Message{Offset: int64(u), Key: identities.MessageKey("acme", "u"+strconv.Itoa(u)), Value: v})
	}
	if _, err := x.Apply(0, msgs, int64(len(msgs))); err != nil {
		b.Fatal(err)
	}
	return x
}

// bfNDJSON writes the envelopes zstd-compressed, streaming.
func bfNDJSON(b *testing.B, dir string, records int) string {
	path := filepath.Join(dir, "export.ndjson.zst")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	zw, err := zstd.NewWriter(f, zstd.WithEncoderLevel(zstd.SpeedFastest))
	if err != nil {
		b.Fatal(err)
	}
	bw := bufio.NewWriterSize(zw, 1<<20)
	for i := range records {
		raw, err := schemas.Encode(bfEnvelope(i))
		if err != nil {
			b.Fatal(err)
		}
		bw.Write(raw)
		bw.WriteByte('\n')
	}
	if err := bw.Flush(); err != nil {
		b.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		b.Fatal(err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	return path
}

// bfParquet writes the changes/ layout through the real Parquet sink, one
// file per bfRecordsPerPQ records, as the stream writes its batches.
func bfParquet(b *testing.B, dir string, records int) []string {
	sink, err := sinkpq.New(sinkpq.Config{Root: dir}, sinkpq.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer sink.Close()
	ctx := context.Background()
	for first := 0; first < records; first += bfRecordsPerPQ {
		cb := schemas.NewChangesBuilder(memory.NewGoAllocator())
		last := min(first+bfRecordsPerPQ, records) - 1
		for i := first; i <= last; i++ {
			e := bfEnvelope(i)
			p := e.Payload.(schemas.CohortChangesPayload)
			for pos, id := range p.Changes[0].UserIDs {
				cb.Append(schemas.ResolvedChange{
					Workspace: e.Workspace, Partner: e.Partner, CohortID: p.CohortID,
					UserID: "u" + strings.TrimPrefix(id, "ext-"), IDKind: schemas.IDKindExternalID, IDValue: id,
					IsMember: !p.Changes[0].ShouldRemove, Version: schemas.Version(int64(i), pos),
					RecordID: e.RecordID, Position: uint32(pos), EventTime: e.EventTime, ReceivedAt: e.ReceivedAt,
					Offset: int64(i),
				})
			}
		}
		batch := cb.NewRecordBatch()
		out := &pipeline.Output{Changes: batch, Rejections: pipeline.NewRejections(),
			Positions: map[int]pipeline.OffsetRange{0: {First: int64(first), Last: int64(last)}}}
		if err := sink.Write(ctx, out); err != nil {
			b.Fatal(err)
		}
		batch.Release()
		cb.Release()
	}
	paths, err := filepath.Glob(filepath.Join(dir, "changes", "*", "*", "*.parquet"))
	if err != nil || len(paths) == 0 {
		b.Fatalf("sink wrote %v (%v)", paths, err)
	}
	return paths
}

// peakRSS reads the process's high-water resident set (VmHWM) in bytes.
func peakRSS(b *testing.B) int64 {
	raw, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// resetPeakRSS starts a new high-water mark, so input generation does not count.
func resetPeakRSS() { _ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) }

// BenchmarkBackfillFile runs backfill.Run on generated exports through the
// stream's own retention and identity stages and the record encoding, as
// `cohortsync backfill --dry-run` does: everything but the Kafka write. It
// reports changes/s and the peak RSS of the run.
//
//	go test -run '^$' -bench BackfillFile -benchtime 1x ./bench
//	COHORTSYNC_BENCH_CHANGES=100000000 go test -run '^$' -bench BackfillFile -benchtime 1x -timeout 3h ./bench
func BenchmarkBackfillFile(b *testing.B) {
	changes := bfChanges(b)
	records := changes / bfIDsPerRecord
	dir := bfDirectory(b)
	dest, err := service.BackfillDestination(config.Default(), dir, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	for _, format := range []string{"ndjson.zst", "parquet"} {
		b.Run(fmt.Sprintf("changes=%d/format=%s", changes, format), func(b *testing.B) {
			in := b.TempDir()
			var paths []string
			if format == "parquet" {
				paths = bfParquet(b, in, records)
			} else {
				paths = []string{bfNDJSON(b, in, records)}
			}
			sources, err := backfill.FileSources(paths, files.Options{})
			if err != nil {
				b.Fatal(err)
			}
			var size int64
			for _, src := range sources {
				size += src.Size
			}
			b.ResetTimer()
			for range b.N {
				resetPeakRSS()
				sum, err := backfill.Run(context.Background(), backfill.Options{
					Sources: sources, IsBadInput: files.IsLineError, Destination: dest, DryRun: true, BatchRecords: 100,
				})
				if err != nil {
					b.Fatal(err)
				}
				if sum.Read != int64(records) || sum.DataPoints != int64(changes) {
					b.Fatalf("read %d records, %d data points; want %d and %d", sum.Read, sum.DataPoints, records, changes)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(changes)*float64(b.N)/b.Elapsed().Seconds(), "changes/s")
			b.ReportMetric(float64(peakRSS(b))/(1<<20), "peak-RSS-MiB")
			b.ReportMetric(float64(size)/(1<<20), "input-MiB")
		})
	}
}
