package stateofrecord_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync/config"
	"github.com/cohortsync/cohortsync/internal/chtest"
	"github.com/cohortsync/cohortsync/internal/testkit"
	"github.com/cohortsync/cohortsync/service/stateofrecord"
	"github.com/cohortsync/cohortsync/sinks/parquet"
	"github.com/cohortsync/cohortsync/sinks/sinktest"
)

// TestBothKindsAnswerAlike writes the same batch through each kind's Sink
// and reads it back through every other face of the Store: the member
// callback, the snapshot source and the segments engine must all agree.
func TestBothKindsAnswerAlike(t *testing.T) {
	for _, kind := range []string{stateofrecord.KindEmbedded, stateofrecord.KindClickHouse} {
		t.Run(kind, func(t *testing.T) {
			ctx := testkit.Context(t, time.Minute)
			cfg := config.Default()
			cfg.Embedded.KafkaAddr = "127.0.0.1:0" // tests run in parallel: any free port
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
			if err := rec.Sink().Write(ctx, sinktest.Batch(t, 100)); err != nil {
				t.Fatal(err)
			}
			if err := rec.Healthy(); err != nil {
				t.Errorf("Healthy() = %v after a successful write", err)
			}
			// sinktest.Batch adds three users to churn and removes the second.
			want := []string{"u100-1", "u100-3"}

			var got []string
			if err := rec.ForEachMember(ctx, "acme", "mixpanel", "churn", func(u string) error { got = append(got, u); return nil }); err != nil {
				t.Fatal(err)
			}
			slices.Sort(got)
			if !slices.Equal(got, want) {
				t.Errorf("ForEachMember = %v, want %v", got, want)
			}

			var snap []string
			if _, err := rec.SnapshotSource().Members(ctx, parquet.CohortKey{Workspace: "acme", Partner: "mixpanel", CohortID: "churn"}, func(u string) error { snap = append(snap, u); return nil }); err != nil {
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
			filter := []byte(`{"cohort":{"partner":"mixpanel","id":"churn"}}`)
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
	cfg.Embedded.KafkaAddr = "127.0.0.1:0" // tests run in parallel: any free port
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
