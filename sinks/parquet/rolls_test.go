package parquet

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cohortsync/cohortsync/internal/testkit"
	"github.com/cohortsync/cohortsync/pipeline"
	"github.com/cohortsync/cohortsync/schemas"
)

// treeRows reads every row of one tree with Arrow and returns how often each
// (record_id, position) appears, and the data points per landing day.
func treeRows(t *testing.T, root, table string) (map[string]int, map[string]int) {
	t.Helper()
	keys, days := map[string]int{}, map[string]int{}
	for rel := range listFiles(t, root) {
		if !slicesHasPrefix(rel, table+"/") {
			continue
		}
		f := openArrow(t, filepath.Join(root, rel))
		switch table {
		case tableChanges:
			for _, c := range readChanges(t, f) {
				keys[fmt.Sprintf("%s/%d", c.RecordID, c.Position)]++
			}
		case tableDataPoints:
			for _, d := range readDataPoints(t, f) {
				keys[fmt.Sprintf("%s/%d", d.RecordID, d.Position)]++
				days[d.Workspace+" "+d.Day]++
			}
		}
	}
	return keys, days
}

// assertEachRowOnce checks that both trees hold each change of want exactly
// once, and datapoints/ the data points of want per workspace and landing day.
func assertEachRowOnce(t *testing.T, root string, want []schemas.ResolvedChange) {
	t.Helper()
	wantDays := map[string]int{}
	for _, c := range want {
		wantDays[c.Workspace+" "+c.ReceivedAt.UTC().Format(time.DateOnly)]++
	}
	for _, table := range []string{tableChanges, tableDataPoints} {
		keys, days := treeRows(t, root, table) // asserts the format 2 types
		if len(keys) != len(want) {
			t.Errorf("%s: %d distinct (record_id, position), want %d", table, len(keys), len(want))
		}
		for k, n := range keys {
			if n != 1 {
				t.Errorf("%s: %s appears %d times", table, k, n)
			}
		}
		if table == tableDataPoints && !maps.Equal(days, wantDays) {
			t.Errorf("data points per landing day %v, want %v", days, wantDays)
		}
	}
}

func slicesHasPrefix(s, p string) bool { return len(s) >= len(p) && s[:len(p)] == p }

// relanded is changes landed again at offsets shift later (a re-run
// backfill): same record ids, positions and times, new offsets and versions.
func relanded(changes []schemas.ResolvedChange, shift int64) []schemas.ResolvedChange {
	out := slices.Clone(changes)
	for i := range out {
		out[i].Offset += shift
		out[i].Version = schemas.Version(out[i].Offset, int(out[i].Position))
	}
	return out
}

// between is the changes of partition p with offsets in first..last, and
// the positions of such a batch.
func between(changes []schemas.ResolvedChange, p int32, first, last int64) ([]schemas.ResolvedChange, map[int]pipeline.OffsetRange) {
	var out []schemas.ResolvedChange
	for _, c := range changes {
		if c.Partition == p && c.Offset >= first && c.Offset <= last {
			out = append(out, c)
		}
	}
	return out, map[int]pipeline.OffsetRange{int(p): {First: first, Last: last}}
}

// TestEachRowOnceAcrossReplays: redelivery of the same batch, a redelivery
// cut at other offsets, a record landed again at new offsets (before and
// after its first copy was rolled, through a reopened sink and through a
// second sink on the same tree) all leave each (record_id, position)
// exactly once in changes/ and in datapoints/, and the data points per
// day equal the changes of the first landing.
func TestEachRowOnceAcrossReplays(t *testing.T) {
	t.Parallel()
	ctx := testkit.DetachedContext(t, 60*time.Second)
	spec := defaultSpec()
	changes := generate(spec)
	root := t.TempDir()

	s, err := New(Config{Root: root}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	write := func(s *Sink, c []schemas.ResolvedChange, pos map[int]pipeline.OffsetRange) {
		t.Helper()
		if err := s.Write(ctx, buildOutput(t, c, pos)); err != nil {
			t.Fatal(err)
		}
	}
	write(s, changes, spec.partitions)
	write(s, changes, spec.partitions) // redelivered as it was
	// Redelivered cut at other offsets: overlapping halves of partition 0.
	a, pa := between(changes, 0, 100, 125)
	b, pb := between(changes, 0, 110, 139)
	write(s, a, pa)
	write(s, b, pb)
	// Landed again while the first copy is still staged.
	again := relanded(changes, 1000)
	pAgain := map[int]pipeline.OffsetRange{0: {First: 1100, Last: 1139}, 3: {First: 1007, Last: 1031}}
	write(s, again, pAgain)
	if got := testutil.ToFloat64(s.m.skipped.WithLabelValues(skipAlreadyWritten)); got != float64(len(changes)) {
		t.Errorf("rows_skipped_total{already_written} = %v, want %d", got, len(changes))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// Reopened: the index comes from the trees now.
	s2 := newTestSink(t, root, Options{})
	write(s2, relanded(changes, 5000), map[int]pipeline.OffsetRange{0: {First: 5100, Last: 5139}, 3: {First: 5007, Last: 5031}})
	// A second sink on the same tree (an instance the partition moved to)
	// sees what the first staged: redelivery by offset is skipped.
	more := defaultSpec()
	more.seed = 9
	more.partitions = map[int]pipeline.OffsetRange{0: {First: 6000, Last: 6009}}
	moreChanges := generate(more)
	write(s2, moreChanges, more.partitions)
	s3 := newTestSink(t, root, Options{})
	write(s3, moreChanges, more.partitions)
	if got := testutil.ToFloat64(s3.m.skipped.WithLabelValues(skipRedelivered)); got != float64(len(moreChanges)) {
		t.Errorf("second sink: rows_skipped_total{redelivered} = %v, want %d", got, len(moreChanges))
	}
	if err := s2.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s3.Flush(ctx); err != nil {
		t.Fatal(err)
	}

	assertEachRowOnce(t, root, append(slices.Clone(changes), moreChanges...))
}

// TestRecordLandedTwiceInOneBatch: a producer retry can put both copies of
// a record (same record id and positions, other offsets) into one batch,
// where the index does not know either yet; a third copy lands in the next
// batch. Each (record_id, position) is written once.
func TestRecordLandedTwiceInOneBatch(t *testing.T) {
	t.Parallel()
	ctx := testkit.DetachedContext(t, 60*time.Second)
	spec := smallSpec()
	changes := generate(spec)
	root := t.TempDir()
	s := newTestSink(t, root, Options{})
	// Partition 0 holds offsets 100..119; its copies land at 120..139, in
	// the same batch, interleaved with the first copies' rows.
	first, _ := between(changes, 0, 100, 119)
	second := relanded(first, 20)
	var batch []schemas.ResolvedChange
	for off := int64(100); off <= 119; off++ {
		for _, c := range first {
			if c.Offset == off {
				batch = append(batch, c)
			}
		}
		for _, c := range second {
			if c.Offset == off+20 {
				batch = append(batch, c)
			}
		}
	}
	if err := s.Write(ctx, buildOutput(t, batch, map[int]pipeline.OffsetRange{0: {First: 100, Last: 139}})); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(s.m.skipped.WithLabelValues(skipAlreadyWritten)); got != float64(len(second)) {
		t.Errorf("rows_skipped_total{already_written} = %v after the batch, want %d (the second copies)", got, len(second))
	}
	third := relanded(first, 40)
	if err := s.Write(ctx, buildOutput(t, third, map[int]pipeline.OffsetRange{0: {First: 140, Last: 159}})); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(s.m.skipped.WithLabelValues(skipAlreadyWritten)); got != float64(2*len(second)) {
		t.Errorf("rows_skipped_total{already_written} = %v after the third copy, want %d", got, 2*len(second))
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	assertEachRowOnce(t, root, first)
}

// TestRollBySizeAndTime: a roll happens once RollRows rows are staged, and
// after RollInterval for a slow stream, without Flush or Close.
func TestRollBySizeAndTime(t *testing.T) {
	t.Parallel()
	ctx := testkit.DetachedContext(t, 60*time.Second)
	spec := smallSpec()
	changes := generate(spec)

	t.Run("size", func(t *testing.T) {
		t.Parallel()
		root := t.TempDir()
		// smallSpec: partition 0 holds 20 records of 5 ids, partition 3 10.
		s, err := New(Config{Root: root, RollRows: 60, RollInterval: time.Hour}, Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		first, pos := between(changes, 0, 100, 109)
		if err := s.Write(ctx, buildOutput(t, first, pos)); err != nil {
			t.Fatal(err)
		}
		if n := len(listFiles(t, root)); n != 0 {
			t.Fatalf("%d files before RollRows rows were staged", n)
		}
		if err := s.Write(ctx, buildOutput(t, changes, spec.partitions)); err != nil {
			t.Fatal(err)
		}
		// Partition 0 reached 100 staged rows and rolls (on the roller's
		// goroutine, not in Write); partition 3 has 50 and waits.
		waitFor(t, "partition 0's roll", func() bool { return testutil.ToFloat64(s.m.staged) == 50 })
		for rel := range listFiles(t, root) {
			if !strings.Contains(rel, "part-p0000-o000000000100-000000000119") {
				t.Errorf("unexpected file %s", rel)
			}
		}
		keys, _ := treeRows(t, root, tableDataPoints)
		if len(keys) != 100 {
			t.Errorf("%d rows in datapoints/, want partition 0's 100", len(keys))
		}
		if got := testutil.ToFloat64(s.m.staged); got != 50 {
			t.Errorf("staged_rows = %v, want partition 3's 50", got)
		}
	})
	t.Run("time", func(t *testing.T) {
		t.Parallel()
		root := t.TempDir()
		var now atomic.Int64
		now.Store(time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC).UnixNano())
		clock := func() time.Time { return time.Unix(0, now.Load()) }
		s, err := New(Config{Root: root, RollInterval: time.Second}, Options{Now: clock})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		if err := s.Write(ctx, buildOutput(t, changes, spec.partitions)); err != nil {
			t.Fatal(err)
		}
		// The timer ticks every 100 ms of real time; on the test's clock
		// the rows are not due yet.
		time.Sleep(300 * time.Millisecond)
		if n := len(listFiles(t, root)); n != 0 {
			t.Fatalf("%d files before RollInterval passed", n)
		}
		now.Add(int64(2 * time.Second))
		waitFor(t, "the timed roll", func() bool { return testutil.ToFloat64(s.m.staged) == 0 })
		if keys, _ := treeRows(t, root, tableDataPoints); len(keys) != len(changes) {
			t.Errorf("%d rows in datapoints/ after the timed roll, want %d", len(keys), len(changes))
		}
	})
}

// failRenames fails every rename into the trees after the first n.
type failRenames struct {
	FS
	mu sync.Mutex
	n  int
}

func (f *failRenames) Rename(oldpath, newpath string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !slicesHasPrefix(filepath.Base(newpath), "part-") {
		return f.FS.Rename(oldpath, newpath)
	}
	if f.n == 0 {
		return fmt.Errorf("rename: %w", syscall.EIO)
	}
	f.n--
	return f.FS.Rename(oldpath, newpath)
}

// TestInterruptedRollResumes: a roll that stops after some of its files
// are in the trees is finished by the next sink that opens the tree, with
// the same names and bytes as an uninterrupted roll, and batches staged
// in between do not join it.
func TestInterruptedRollResumes(t *testing.T) {
	t.Parallel()
	ctx := testkit.DetachedContext(t, 60*time.Second)
	spec := defaultSpec()
	changes := generate(spec)

	refRoot := t.TempDir()
	ref := newTestSink(t, refRoot, Options{})
	if err := writeAndRoll(ctx, ref, buildOutput(t, changes, spec.partitions)); err != nil {
		t.Fatal(err)
	}
	want := listFiles(t, refRoot)

	root := t.TempDir()
	ffs := &failRenames{FS: OSFS(), n: 2}
	s, err := New(Config{Root: root}, Options{FS: ffs})
	if err != nil {
		t.Fatal(err)
	}
	if err := writeAndRoll(ctx, s, buildOutput(t, changes, spec.partitions)); !errors.Is(err, syscall.EIO) {
		t.Fatalf("roll: %v, want EIO", err)
	}
	if got := len(listFiles(t, root)); got != 2 {
		t.Fatalf("%d files in the trees after the interrupted roll, want 2", got)
	}
	// Close tries the roll again and fails again: the rows stay staged.
	if err := s.Close(); err == nil {
		t.Fatal("Close: nil, want the roll's error")
	}

	s2 := newTestSink(t, root, Options{})
	later := defaultSpec()
	later.seed = 5
	later.partitions = map[int]pipeline.OffsetRange{0: {First: 140, Last: 149}}
	if err := s2.Write(ctx, buildOutput(t, generate(later), later.partitions)); err != nil {
		t.Fatal(err)
	}
	if err := s2.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	got := listFiles(t, root)
	for rel, b := range got {
		if strings.Contains(rel, "-o000000000140-") {
			delete(got, rel) // the later batch's own roll
			continue
		}
		if _, ok := want[rel]; !ok {
			t.Errorf("unexpected file %s (%d bytes)", rel, len(b))
		}
	}
	if !sameFiles(got, want) {
		t.Fatalf("resumed roll: %s", diffFiles(got, want))
	}
	entries, err := os.ReadDir(filepath.Join(root, stagingDir, "p0000"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() != rolledName {
			t.Errorf("staging area still holds %s", e.Name())
		}
	}
}

// TestRollWritesSortedRowGroups: a roll larger than a row group streams
// several row groups into one file per partition, each sorted on its own
// and declaring its sorting columns, and the file holds every row once.
func TestRollWritesSortedRowGroups(t *testing.T) {
	t.Parallel()
	ctx := testkit.DetachedContext(t, 60*time.Second)
	spec := defaultSpec()
	spec.workspaces = []string{"acme"}
	spec.days = 1
	spec.start = time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC)
	spec.partitions = map[int]pipeline.OffsetRange{0: {First: 0, Last: 99}}
	changes := generate(spec)
	root := t.TempDir()
	s, err := New(Config{Root: root, MaxRowsPerRowGroup: 128}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	// Two batches, so the roll reads two staged files.
	a, pa := between(changes, 0, 0, 49)
	b, pb := between(changes, 0, 50, 99)
	if err := s.Write(ctx, buildOutput(t, a, pa)); err != nil {
		t.Fatal(err)
	}
	if err := writeAndRoll(ctx, s, buildOutput(t, b, pb)); err != nil {
		t.Fatal(err)
	}
	files := listFiles(t, root)
	if len(files) != 2 {
		t.Fatalf("%d files, want one per tree: %v", len(files), slices.Sorted(maps.Keys(files)))
	}
	for rel := range files {
		f := openArrow(t, filepath.Join(root, rel))
		md := f.rdr.MetaData()
		if want := (len(changes) + 127) / 128; md.NumRowGroups() != want {
			t.Errorf("%s: %d row groups, want %d", rel, md.NumRowGroups(), want)
		}
		if !slicesHasPrefix(rel, tableChanges) {
			continue
		}
		got := readChanges(t, f)
		if len(got) != len(changes) {
			t.Fatalf("%s: %d rows, want %d", rel, len(got), len(changes))
		}
		start := 0
		for g := range md.NumRowGroups() {
			n := int(md.RowGroup(g).NumRows())
			group := got[start : start+n]
			if !slices.IsSortedFunc(group, func(x, y schemas.ResolvedChange) int {
				return cmp.Or(strings.Compare(x.Partner, y.Partner), strings.Compare(x.CohortID, y.CohortID),
					strings.Compare(x.UserID, y.UserID), cmp.Compare(x.Version, y.Version))
			}) {
				t.Errorf("%s: row group %d is not sorted", rel, g)
			}
			if len(md.RowGroup(g).SortingColumns()) != 4 {
				t.Errorf("%s: row group %d declares %d sorting columns", rel, g, len(md.RowGroup(g).SortingColumns()))
			}
			start += n
		}
		want := slices.Clone(changes)
		key := func(c schemas.ResolvedChange) string { return fmt.Sprintf("%s/%d", c.RecordID, c.Position) }
		slices.SortFunc(want, func(x, y schemas.ResolvedChange) int { return strings.Compare(key(x), key(y)) })
		slices.SortFunc(got, func(x, y schemas.ResolvedChange) int { return strings.Compare(key(x), key(y)) })
		if !slices.Equal(got, want) {
			t.Errorf("%s: the rows differ from the batches", rel)
		}
	}
}

// waitFor polls cond for up to 20 s: rolls run on the sink's own goroutine.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 20 s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSnapshotsOnlyLeavesTheStageAlone: a sink opened for snapshots beside
// a server neither rolls the server's staged rows nor accepts batches.
func TestSnapshotsOnlyLeavesTheStageAlone(t *testing.T) {
	t.Parallel()
	ctx := testkit.DetachedContext(t, 30*time.Second)
	spec := smallSpec()
	root := t.TempDir()
	server := newTestSink(t, root, Options{})
	if err := server.Write(ctx, buildOutput(t, generate(spec), spec.partitions)); err != nil {
		t.Fatal(err)
	}
	snap, err := New(Config{Root: root}, Options{SnapshotsOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := snap.Write(ctx, buildOutput(t, generate(spec), spec.partitions)); err == nil {
		t.Error("a snapshots-only sink accepted a batch")
	}
	if err := snap.Close(); err != nil {
		t.Fatal(err)
	}
	if files := listFiles(t, root); len(files) != 0 {
		t.Fatalf("the snapshots-only sink rolled the server's staged rows: %v", slices.Sorted(maps.Keys(files)))
	}
	if got := testutil.ToFloat64(server.m.staged); got == 0 {
		t.Error("the server's rows are no longer staged")
	}
}
