// Command parquettree measures the Parquet sink as the stream drives it: N
// changes in batches across Kafka partitions, staged and rolled with the
// sink's defaults (or the given roll size), fsyncs included. It reports the
// rows per second through the sink, its CPU, and the files the trees end up
// with, so that the file sizes a data engineer gets are written down next to
// the speed. It is a benchmark: it reports and never fails because a
// machine is slow.
//
//	go run ./bench/parquettree --changes 10000000 [--keep DIR]
//
// With --keep the tree stays in DIR for the DuckDB query benchmark of
// sinks/parquet/duckdbtest (COHORTSYNC_BENCH_PARQUET_ROOT=DIR/parquet).
package main

import (
	"context"
	"flag"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/cohortsync/cohortsync/pipeline"
	"github.com/cohortsync/cohortsync/schemas"
	"github.com/cohortsync/cohortsync/sinks/parquet"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "parquettree:", err)
		os.Exit(1)
	}
}

func run() error {
	changes := flag.Int("changes", 1_000_000, "changes to write")
	batchRows := flag.Int("batch", 10_000, "changes per batch (the runner's batch)")
	partitions := flag.Int("partitions", 12, "Kafka partitions the batches spread over")
	ids := flag.Int("ids", 50, "ids per landed record")
	cohorts := flag.Int("cohorts", 1000, "cohorts")
	users := flag.Int("users", 1_000_000, "distinct users")
	rollRows := flag.Int("roll-rows", 0, "parquet.roll_rows (0: the default)")
	keep := flag.String("keep", "", "write into this directory and keep it")
	profile := flag.String("cpuprofile", "", "write a CPU profile of the run to this file")
	heapAt := flag.String("heapprofile", "", "write a heap profile at the peak of the heap in use to this file")
	flag.Parse()
	if *heapAt != "" {
		go peakHeap(*heapAt)
	}
	if *profile != "" {
		f, err := os.Create(*profile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}

	dir := *keep
	if dir == "" {
		d, err := os.MkdirTemp("", "parquettree-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	root := filepath.Join(dir, "parquet")
	sink, err := parquet.New(parquet.Config{Root: root, RollRows: *rollRows}, parquet.Options{})
	if err != nil {
		return err
	}
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(1, 2))
	offsets := make([]int64, *partitions)
	day := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	var inSink time.Duration
	written := 0
	cpu0 := cpuSeconds()
	wall0 := time.Now()
	for written < *changes {
		b := schemas.NewChangesBuilder(nil)
		pos := map[int]pipeline.OffsetRange{}
		n := min(*batchRows, *changes-written)
		for b.Len() < n {
			p := rng.IntN(*partitions)
			off := offsets[p]
			offsets[p]++
			r := pos[p]
			if _, ok := pos[p]; !ok {
				r.First = off
			}
			r.Last = off
			pos[p] = r
			cohort := fmt.Sprintf("cohort-%04d", rng.IntN(*cohorts))
			at := day.Add(time.Duration(written) * 8 * time.Millisecond)
			add := rng.IntN(10) != 0
			for k := range min(*ids, n-b.Len()) {
				u := fmt.Sprintf("user-%07d", rng.IntN(*users))
				b.Append(schemas.ResolvedChange{Workspace: "acme", Partner: "mixpanel", CohortID: cohort, UserID: u,
					IDKind: schemas.IDKindExternalID, IDValue: u, IsMember: add, Version: schemas.Version(off, k),
					RecordID: fmt.Sprintf("rec-%d-%d", p, off), Position: uint32(k), EventTime: at, ReceivedAt: at,
					Partition: int32(p), Offset: off})
			}
		}
		out := &pipeline.Output{Changes: b.NewRecordBatch(), Rejections: pipeline.NewRejections(), Positions: pos}
		b.Release()
		start := time.Now()
		err := sink.Write(ctx, out)
		inSink += time.Since(start)
		written += int(out.Changes.NumRows())
		out.Changes.Release()
		if err != nil {
			return err
		}
	}
	// Everything into the trees before measuring them (Close alone rolls
	// for a bounded time only).
	start := time.Now()
	if err := sink.Flush(ctx); err != nil {
		return err
	}
	if err := sink.Close(); err != nil {
		return err
	}
	inSink += time.Since(start)
	wall := time.Since(wall0)
	cpu := cpuSeconds() - cpu0

	fmt.Printf("changes %d in batches of %d over %d partitions; roll_rows %d\n", written, *batchRows, *partitions, max(*rollRows, parquet.DefaultConfig().RollRows))
	fmt.Printf("wall %.1f s (generation included); in the sink %.1f s = %.0f rows/s; process CPU %.1f s\n",
		wall.Seconds(), inSink.Seconds(), float64(written)/inSink.Seconds(), cpu)
	for _, table := range []string{"changes", "datapoints"} {
		sizes, err := fileSizes(filepath.Join(root, table))
		if err != nil {
			return err
		}
		var total int64
		for _, s := range sizes {
			total += s
		}
		slices.Sort(sizes)
		fmt.Printf("%-10s %4d files, %7.1f MiB, median %.1f MiB, max %.1f MiB, %.1f bytes per change\n", table, len(sizes),
			mib(total), mib(sizes[len(sizes)/2]), mib(sizes[len(sizes)-1]), float64(total)/float64(written))
	}
	return nil
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

func fileSizes(tree string) ([]int64, error) {
	var out []int64
	err := filepath.WalkDir(tree, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".parquet") {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		out = append(out, info.Size())
		return nil
	})
	if len(out) == 0 && err == nil {
		err = fmt.Errorf("no files under %s", tree)
	}
	return out, err
}

func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// peakHeap rewrites a heap profile to path whenever the heap in use reaches
// a new high, so the profile shows what held memory at the peak.
func peakHeap(path string) {
	var peak uint64
	for range time.Tick(100 * time.Millisecond) {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		if ms.HeapInuse <= peak+peak/10 {
			continue
		}
		peak = ms.HeapInuse
		if f, err := os.Create(path); err == nil {
			_ = pprof.Lookup("heap").WriteTo(f, 0)
			_ = f.Close()
		}
	}
}
