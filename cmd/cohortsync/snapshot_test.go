package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync/internal/testkit"
	"github.com/cohortsync/cohortsync/pipeline"
	"github.com/cohortsync/cohortsync/schemas"
	"github.com/cohortsync/cohortsync/sinks/state"
)

// TestSnapshotCommandOnDataDir writes a cohort into the data directory's
// state store and snapshots it with the command, twice: the second run finds
// nothing changed.
func TestSnapshotCommandOnDataDir(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	st, err := state.Open(state.DefaultConfig(dir), nil)
	if err != nil {
		t.Fatal(err)
	}
	b := schemas.NewChangesBuilder(nil)
	at := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	for i, u := range []string{"u2", "u1", "u3"} {
		b.Append(schemas.ResolvedChange{Workspace: "default", Partner: "mixpanel", CohortID: "c/1", UserID: u,
			IDKind: schemas.IDKindExternalID, IDValue: "x" + u, IsMember: u != "u3", Version: schemas.Version(7, i),
			RecordID: "r7", Position: uint32(i), EventTime: at, ReceivedAt: at, Offset: 7})
	}
	out := &pipeline.Output{Changes: b.NewRecordBatch(), Rejections: pipeline.NewRejections(), Positions: map[int]pipeline.OffsetRange{0: {First: 7, Last: 7}}}
	b.Release()
	defer out.Changes.Release()
	if err := st.Write(context.Background(), out); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	r := execute(t, testkit.Context(t, 10*time.Second), nil, nil, "snapshot", "--data-dir", dir, "--cohort", "mixpanel/c/1")
	if r.code != exitOK {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	want := []string{"mixpanel", "c/1", fmt.Sprint(schemas.Version(7, 2)), "2", "true"}
	if len(lines) != 2 || len(strings.Fields(lines[1])) != 6 || strings.Join(strings.Fields(lines[1])[:5], " ") != strings.Join(want, " ") ||
		!strings.HasSuffix(lines[1], fmt.Sprintf("snapshots/workspace=default/partner=mixpanel/cohort_id=c%%2F1/version=%d.parquet", schemas.Version(7, 2))) {
		t.Fatalf("first run printed:\n%s\nwant one row %v and its path", r.stdout, want)
	}
	r = execute(t, testkit.Context(t, 10*time.Second), nil, nil, "snapshot", "--data-dir", dir, "--format", "json")
	if r.code != exitOK || !strings.Contains(r.stdout, `"written": false`) {
		t.Fatalf("second run: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = execute(t, testkit.Context(t, 10*time.Second), nil, nil, "snapshot", "--data-dir", dir, "--cohort", "nopartner")
	if r.code != exitUsage || !strings.Contains(r.stderr, "PARTNER/COHORT_ID") {
		t.Fatalf("bad --cohort: exit %d, stderr %q", r.code, r.stderr)
	}
}
