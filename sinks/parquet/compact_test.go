package parquet

import (
	"errors"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	pq "github.com/parquet-go/parquet-go"

	"github.com/cohortsync/cohortsync/internal/testkit"
	"github.com/cohortsync/cohortsync/pipeline"
	"github.com/cohortsync/cohortsync/schemas"
)

// dataPointRowV1 is a datapoints/ row of format 1: day was the event day.
type dataPointRowV1 struct {
	Workspace string `parquet:"workspace"`
	Partner   string `parquet:"partner"`
	CohortID  string `parquet:"cohort_id"`
	Day       int32  `parquet:"day,date"`
	RecordID  string `parquet:"record_id"`
	Position  uint32 `parquet:"position"`
	IsMember  uint8  `parquet:"is_member"`
	UserID    string `parquet:"user_id"`
	EventTime int64  `parquet:"event_time,timestamp(microsecond:utc)"`
}

// writeV1 writes rows as a file of format 1, as the sink did before.
func writeV1[T any](t *testing.T, path string, rows []T) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w := pq.NewGenericWriter[T](f, pq.KeyValueMetadata("cohortsync.format_version", "1"))
	if _, err := w.Write(rows); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// v1Tree writes changes as format 1 did: one file per batch and event day,
// datapoints/ by event day, a replay cut at other offsets adding files that
// repeat rows, and a snapshot in a cohort= folder.
func v1Tree(t *testing.T, root string, changes []schemas.ResolvedChange) {
	t.Helper()
	write := func(name string, cs []schemas.ResolvedChange) {
		byFile := map[string][]changeRowV1{}
		dps := map[string][]dataPointRowV1{}
		for _, c := range cs {
			rel := filepath.Join("workspace="+escapePartitionValue(c.Workspace), "date="+c.EventTime.UTC().Format(time.DateOnly), name)
			var m uint8
			if c.IsMember {
				m = 1
			}
			byFile[rel] = append(byFile[rel], changeRowV1{
				Workspace: c.Workspace, Partner: c.Partner, CohortID: c.CohortID, UserID: c.UserID,
				IDKind: c.IDKind, IDValue: c.IDValue, IsMember: m, Version: c.Version, RecordID: c.RecordID,
				Position: c.Position, EventTime: c.EventTime.UnixMicro(), ReceivedAt: c.ReceivedAt.UnixMicro(),
				Partition: c.Partition, Offset: c.Offset,
			})
			dps[rel] = append(dps[rel], dataPointRowV1{
				Workspace: c.Workspace, Partner: c.Partner, CohortID: c.CohortID,
				Day: dayOf(arrowTS(c.EventTime)), RecordID: c.RecordID, Position: c.Position, IsMember: m,
				UserID: c.UserID, EventTime: c.EventTime.UnixMicro(),
			})
		}
		for rel, rows := range byFile {
			writeV1(t, filepath.Join(root, tableChanges, rel), rows)
			writeV1(t, filepath.Join(root, tableDataPoints, rel), dps[rel])
		}
	}
	write("part-p0000-o000000000100-000000000139.parquet", changes)
	var again []schemas.ResolvedChange
	for _, c := range changes {
		if c.Partition == 0 && c.Offset >= 110 && c.Offset <= 125 {
			again = append(again, c)
		}
	}
	write("part-p0000-o000000000110-000000000125.parquet", again)
	writeV1(t, filepath.Join(root, tableSnapshots, "workspace=acme", "partner=mixpanel", "cohort=c1", "version=7.parquet"),
		[]snapshotRow{{Workspace: "acme", Partner: "mixpanel", CohortID: "c1", UserID: "u1", Version: 7}})
}

func TestCompactRewritesFormat1Trees(t *testing.T) {
	t.Parallel()
	ctx := testkit.DetachedContext(t, 60*time.Second)
	spec := defaultSpec()
	// Landing days differ from event days for some rows.
	changes := generate(spec)
	for i := range changes {
		if changes[i].Offset%3 == 0 {
			changes[i].ReceivedAt = changes[i].EventTime.Add(30 * time.Hour)
		}
	}
	root := t.TempDir()
	v1Tree(t, root, changes)

	st, err := Compact(ctx, Config{Root: root}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !st.DataPointsRebuilt || st.RowsKept >= st.RowsRead || st.FilesAfter >= st.FilesBefore || st.SnapshotFoldersRenamed != 1 {
		t.Errorf("stats %+v: want datapoints rebuilt, duplicates dropped, fewer files, one snapshot folder renamed", st)
	}
	assertEachRowOnce(t, root, changes)
	for rel := range listFiles(t, root) {
		if filepath.Base(rel) != compactedName && filepath.Ext(rel) == ".parquet" && !slicesHasPrefix(rel, tableSnapshots) {
			t.Errorf("%s left beside the compacted files", rel)
		}
	}
	if _, err := os.Stat(filepath.Join(root, tableSnapshots, "workspace=acme", "partner=mixpanel", "cohort_id=c1", "version=7.parquet")); err != nil {
		t.Errorf("snapshot not moved to its cohort_id= folder: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, compactDir)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s left behind: %v", compactDir, err)
	}

	// A second run finds nothing to do and changes no file.
	before := listFiles(t, root)
	st, err = Compact(ctx, Config{Root: root}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.Partitions != 0 {
		t.Errorf("second compaction rewrote %d partitions", st.Partitions)
	}
	if after := listFiles(t, root); !sameFiles(after, before) {
		t.Errorf("second compaction changed files: %s", diffFiles(after, before))
	}

	// The sink goes on from the compacted tree: rows it holds stay skipped.
	s := newTestSink(t, root, Options{})
	relandedOut := relanded(changes, 1000)
	if err := writeAndRoll(ctx, s, buildOutput(t, relandedOut, map[int]pipeline.OffsetRange{0: {First: 1100, Last: 1139}, 3: {First: 1007, Last: 1031}})); err != nil {
		t.Fatal(err)
	}
	if keys, _ := treeRows(t, root, tableDataPoints); len(keys) != len(changes) || slices.Max(slices.Collect(maps.Values(keys))) != 1 {
		t.Errorf("after re-landing onto the compacted tree: %d keys (want %d), some twice", len(keys), len(changes))
	}
}

// TestCompactAndSinkExcludeEachOther: a compaction refuses a tree a sink
// has open, and a sink refuses a tree being compacted.
func TestCompactAndSinkExcludeEachOther(t *testing.T) {
	t.Parallel()
	ctx := testkit.DetachedContext(t, 30*time.Second)
	root := t.TempDir()
	s := newTestSink(t, root, Options{})
	if _, err := Compact(ctx, Config{Root: root}, nil); !errors.Is(err, ErrTreeLocked) {
		t.Fatalf("Compact with a sink open: %v, want ErrTreeLocked", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	lock, err := lockTree(root, true)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.release()
	if _, err := New(Config{Root: root}, Options{}); !errors.Is(err, ErrTreeLocked) {
		t.Fatalf("New during a compaction: %v, want ErrTreeLocked", err)
	}
}
