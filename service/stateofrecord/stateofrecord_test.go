package stateofrecord_test

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync/config"
	"github.com/cohortsync/cohortsync/internal/chtest"
	"github.com/cohortsync/cohortsync/internal/testkit"
	"github.com/cohortsync/cohortsync/pipeline"
	"github.com/cohortsync/cohortsync/schemas"
	"github.com/cohortsync/cohortsync/service/stateofrecord"
	"github.com/cohortsync/cohortsync/sinks/parquet"
)

// batch adds u1, u2 and u3 to cohort c1, then removes u2 with a later
// version, all in one batch.
func batch(t *testing.T) *pipeline.Output {
	t.Helper()
	at := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	b := schemas.NewChangesBuilder(nil)
	defer b.Release()
	out := &pipeline.Output{Rejections: pipeline.NewRejections(), Positions: map[int]pipeline.OffsetRange{0: {First: 1, Last: 2}}}
	add := func(user string, member bool, offset int64, pos int) {
		b.Append(schemas.ResolvedChange{
			Workspace: "acme", Partner: "mixpanel", CohortID: "c1", UserID: user,
			IDKind: schemas.IDKindExternalID, IDValue: "ext-" + user, IsMember: member,
			Version: schemas.Version(offset, pos), RecordID: fmt.Sprintf("rec-%d", offset), Position: uint32(pos),
			EventTime: at, ReceivedAt: at, Offset: offset,
		})
	}
	add("u1", true, 1, 0)
	add("u2", true, 1, 1)
	add("u3", true, 1, 2)
	add("u2", false, 2, 0)
	out.Changes = b.NewRecordBatch()
	t.Cleanup(out.Changes.Release)
	return out
}

// TestBothKindsAnswerAlike writes the same batch through each kind's Sink
// and reads it back through every other face of the Store: the member
// callback, the snapshot source and the segments engine must all agree.
func TestBothKindsAnswerAlike(t *testing.T) {
	for _, kind := range []string{stateofrecord.KindEmbedded, stateofrecord.KindClickHouse} {
		t.Run(kind, func(t *testing.T) {
			ctx := testkit.Context(t, time.Minute)
			cfg := config.Default()
			cfg.DataDir = t.TempDir()
			if kind == stateofrecord.KindClickHouse {
				cfg.ClickHouse.Addr, cfg.ClickHouse.Database = chtest.NewDatabase(t)
			}
			rec, err := stateofrecord.Open(ctx, cfg, stateofrecord.Options{Migrate: true})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = rec.Close() })
			if rec.Kind() != kind {
				t.Fatalf("Kind() = %q, want %q", rec.Kind(), kind)
			}
			if err := rec.Sink().Write(ctx, batch(t)); err != nil {
				t.Fatal(err)
			}
			if err := rec.Healthy(); err != nil {
				t.Errorf("Healthy() = %v after a successful write", err)
			}
			want := []string{"u1", "u3"}

			var got []string
			if err := rec.ForEachMember(ctx, "acme", "mixpanel", "c1", func(u string) error { got = append(got, u); return nil }); err != nil {
				t.Fatal(err)
			}
			slices.Sort(got)
			if !slices.Equal(got, want) {
				t.Errorf("ForEachMember = %v, want %v", got, want)
			}

			var snap []string
			if _, err := rec.SnapshotSource().Members(ctx, parquet.CohortKey{Workspace: "acme", Partner: "mixpanel", CohortID: "c1"}, func(u string) error { snap = append(snap, u); return nil }); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(snap, want) {
				t.Errorf("snapshot members = %v, want %v (in user id order)", snap, want)
			}

			eng, closeEngine, err := rec.Engine(stateofrecord.EngineOptions{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = closeEngine() })
			var seg []string
			filter := []byte(`{"cohort":{"partner":"mixpanel","id":"c1"}}`)
			if err := eng.Export(ctx, "acme", filter, time.Time{}, func(u string) error { seg = append(seg, u); return nil }); err != nil {
				t.Fatal(err)
			}
			slices.Sort(seg)
			if !slices.Equal(seg, want) {
				t.Errorf("segment members = %v, want %v", seg, want)
			}
		})
	}
}

func TestEmbeddedHeldByAnotherProcessIsErrLocked(t *testing.T) {
	ctx := testkit.Context(t, 30*time.Second)
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	first, err := stateofrecord.Open(ctx, cfg, stateofrecord.Options{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = stateofrecord.Open(ctx, cfg, stateofrecord.Options{LockTimeout: 100 * time.Millisecond})
	if !errors.Is(err, stateofrecord.ErrLocked) {
		t.Fatalf("second Open = %v, want ErrLocked", err)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	again, err := stateofrecord.Open(ctx, cfg, stateofrecord.Options{LockTimeout: time.Second})
	if err != nil {
		t.Fatalf("Open after the holder closed: %v", err)
	}
	if again.Kind() != stateofrecord.KindEmbedded {
		t.Errorf("Kind() = %q", again.Kind())
	}
	_ = again.Close()
}
