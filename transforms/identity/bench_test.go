package identity_test

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync/pipeline"
	"github.com/cohortsync/cohortsync/schemas"
	"github.com/cohortsync/cohortsync/stores/identities"
	"github.com/cohortsync/cohortsync/transforms/identity"
)

const (
	benchUsers         = 1_000_000
	benchIDsPerRecord  = 1_000 // the partner API's limit per request
	benchRecordsPerOp  = 100   // one Resolve call: 100k ids
	benchDistinctBatch = 10    // batches rotated over, 1M distinct ids per kind
)

// Even users are identified (external id and an email alias), odd users are
// anonymous with one device, so that every looked-up id matches and emits a
// row: the expensive path.
func benchUserID(i int) string { return fmt.Sprintf("user-%07d", i) }
func benchExtID(i int) string  { return fmt.Sprintf("ext-%07d", i) }
func benchDevice(i int) string { return fmt.Sprintf("dev-%07d-5f1c", i) }
func benchAlias(i int) schemas.Alias {
	return schemas.Alias{Name: fmt.Sprintf("user%07d@example.com", i), Label: "email"}
}

// buildBenchIndex writes the directory the way the tail would, in batches
// of 20k records per transaction.
func buildBenchIndex(b *testing.B) *identities.Index {
	b.Helper()
	x, err := identities.OpenIndex(filepath.Join(b.TempDir(), identities.FileName), identities.IndexOptions{Topic: "ids"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = x.Close() })
	started := time.Now()
	const perTx = 20_000
	msgs := make([]identities.Message, 0, perTx)
	for i := range benchUsers {
		r := identities.Record{UserID: benchUserID(i)}
		if i%2 == 0 {
			a := benchAlias(i)
			r.ExternalID = benchExtID(i)
			r.Aliases = []identities.Alias{{Name: a.Name, Label: a.Label}}
		} else {
			r.DeviceIDs = []string{benchDevice(i)}
		}
		v, err := identities.EncodeValue("acme", r)
		if err != nil {
			b.Fatal(err)
		}
		msgs = append(msgs, identities.Message{Offset: int64(i), Key: identities.MessageKey("acme", r.UserID), Value: v})
		if len(msgs) == perTx {
			if _, err := x.Apply(0, msgs, 0); err != nil {
				b.Fatal(err)
			}
			msgs = msgs[:0]
		}
	}
	if _, err := x.Apply(0, msgs, 0); err != nil {
		b.Fatal(err)
	}
	b.Logf("directory of %d users built in %s", benchUsers, time.Since(started).Round(time.Millisecond))
	return x
}

// benchBatches returns batches of records whose ids are drawn at random
// from the directory by next, and the total bytes of those ids.
func benchBatches(seed uint64, next func(r *rand.Rand, c *schemas.Change) int) ([][]pipeline.Record, int64) {
	r := rand.New(rand.NewPCG(seed, 7))
	batches := make([][]pipeline.Record, benchDistinctBatch)
	var bytes int64
	offset := int64(0)
	for bi := range batches {
		recs := make([]pipeline.Record, benchRecordsPerOp)
		for ri := range recs {
			var c schemas.Change
			for range benchIDsPerRecord {
				bytes += int64(next(r, &c))
			}
			recs[ri] = changesRecord(offset, "acme", fmt.Sprintf("cohort-%d", ri%20), fmt.Sprintf("rec-%d-%d", bi, ri), c)
			offset++
		}
		batches[bi] = recs
	}
	return batches, bytes / benchDistinctBatch
}

// BenchmarkResolve resolves batches of 100 records × 1,000 ids against a
// directory of 1M users. Run with -benchtime=100x for 10M ids per kind.
func BenchmarkResolve(b *testing.B) {
	dir := buildBenchIndex(b)
	ext := func(r *rand.Rand, c *schemas.Change) int {
		id := benchExtID(2 * r.IntN(benchUsers/2))
		c.UserIDs = append(c.UserIDs, id)
		return len(id)
	}
	dev := func(r *rand.Rand, c *schemas.Change) int {
		id := benchDevice(2*r.IntN(benchUsers/2) + 1)
		c.DeviceIDs = append(c.DeviceIDs, id)
		return len(id)
	}
	alias := func(r *rand.Rand, c *schemas.Change) int {
		a := benchAlias(2 * r.IntN(benchUsers/2))
		c.Aliases = append(c.Aliases, a)
		return len(a.Name) + len(a.Label)
	}
	// mixed: a third of each kind, and one id in 20 unknown.
	mixed := func(r *rand.Rand, c *schemas.Change) int {
		if r.IntN(20) == 0 {
			id := fmt.Sprintf("ext-unknown-%d", r.IntN(1<<30))
			c.UserIDs = append(c.UserIDs, id)
			return len(id)
		}
		switch r.IntN(3) {
		case 0:
			return ext(r, c)
		case 1:
			return dev(r, c)
		default:
			return alias(r, c)
		}
	}
	for i, kind := range []struct {
		name string
		next func(*rand.Rand, *schemas.Change) int
	}{
		{"external_ids", ext}, {"device_ids", dev}, {"aliases", alias}, {"mixed", mixed},
	} {
		b.Run(kind.name, func(b *testing.B) {
			batches, bytesPerOp := benchBatches(uint64(i+1), kind.next)
			r, err := identity.New(identity.Options{Directory: dir})
			if err != nil {
				b.Fatal(err)
			}
			const idsPerOp = benchRecordsPerOp * benchIDsPerRecord
			b.SetBytes(bytesPerOp)
			b.ReportAllocs()
			var rows, rejected int64
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			b.ResetTimer()
			ops := 0
			for b.Loop() {
				rej := pipeline.NewRejections()
				out, err := r.Resolve(b.Context(), batches[ops%len(batches)], rej)
				ops++
				if err != nil {
					b.Fatal(err)
				}
				rows += out.NumRows()
				rejected += rej.TotalIDs()
				out.Release()
			}
			b.StopTimer()
			runtime.ReadMemStats(&after)
			ids := float64(ops) * idsPerOp
			if rows+rejected != int64(ids) {
				b.Fatalf("%d rows + %d rejected != %v ids", rows, rejected, ids)
			}
			b.ReportMetric(ids/b.Elapsed().Seconds(), "ids/s")
			b.ReportMetric(float64(after.Mallocs-before.Mallocs)/ids, "allocs/id")
			b.ReportMetric(float64(rows)/ids, "matched/id")
		})
	}
}
