package main

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync/internal/testkit"
	"github.com/cohortsync/cohortsync/pipeline"
	"github.com/cohortsync/cohortsync/schemas"
	"github.com/cohortsync/cohortsync/sinks/parquet"
)

// TestParquetCompactCommand: the command compacts a tree of several rolls
// into one file per partition, and refuses while a sink holds the tree.
func TestParquetCompactCommand(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ctx := testkit.Context(t, time.Minute)
	sink, err := parquet.New(parquet.Config{Root: filepath.Join(dir, "parquet")}, parquet.Options{})
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	for off := int64(0); off < 3; off++ {
		b := schemas.NewChangesBuilder(nil)
		for i, u := range []string{"u1", "u2"} {
			b.Append(schemas.ResolvedChange{Workspace: "default", Partner: "mixpanel", CohortID: "c1", UserID: u,
				IDKind: schemas.IDKindExternalID, IDValue: u, IsMember: true, Version: schemas.Version(off, i),
				RecordID: "r" + string(rune('a'+off)), Position: uint32(i), EventTime: at, ReceivedAt: at, Offset: off})
		}
		out := &pipeline.Output{Changes: b.NewRecordBatch(), Rejections: pipeline.NewRejections(), Positions: map[int]pipeline.OffsetRange{0: {First: off, Last: off}}}
		b.Release()
		err := sink.Write(ctx, out)
		if err == nil {
			err = sink.Flush(ctx) // one roll, so one file, per batch
		}
		out.Changes.Release()
		if err != nil {
			t.Fatal(err)
		}
	}

	r := execute(t, ctx, nil, nil, "parquet", "compact", "--data-dir", dir)
	if r.code != exitFailure || !strings.Contains(r.stderr, "stop the server") {
		t.Fatalf("compact while a sink holds the tree: exit %d, stderr %q", r.code, r.stderr)
	}
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}
	r = execute(t, ctx, nil, nil, "parquet", "compact", "--data-dir", dir)
	if r.code != exitOK || !strings.Contains(r.stdout, "compacted 2 partitions: 6 files into 2, 12 rows read, 12 kept") {
		t.Fatalf("compact: exit %d\nstdout %q\nstderr %q", r.code, r.stdout, r.stderr)
	}
	r = execute(t, ctx, nil, nil, "parquet", "compact", "--data-dir", dir, "--format", "json")
	if r.code != exitOK || !strings.Contains(r.stdout, `"partitions": 0`) {
		t.Fatalf("second compact: exit %d\nstdout %q\nstderr %q", r.code, r.stdout, r.stderr)
	}
}
