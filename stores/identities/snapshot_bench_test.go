package identities

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync/internal/testkit"
)

// BenchmarkDirectoryStart times a fresh instance's Open over a topic of
// COHORTSYNC_BENCH_USERS users (default 200k): replaying the whole topic,
// and restoring a snapshot taken after the load.
//
//	go test -run '^$' -bench DirectoryStart -benchtime 3x ./stores/identities/
func BenchmarkDirectoryStart(b *testing.B) {
	users := testkit.EnvCount(b, "COHORTSYNC_BENCH_USERS", 200_000, 1)
	client := newTestClient(b)
	loader, err := NewLoader(client, DefaultConfig(b.TempDir()), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer loader.Close()
	var in strings.Builder
	for i := range users {
		fmt.Fprintf(&in, `{"user_id":"user-%07d","external_id":"ext-%07d"}`+"\n", i, i)
	}
	if _, err := loader.Load(testkit.DetachedContext(b, 10*time.Minute), "acme", strings.NewReader(in.String()), nil); err != nil {
		b.Fatal(err)
	}
	open := func(cfg Config) time.Duration {
		started := time.Now()
		d, err := Open(testkit.DetachedContext(b, 30*time.Minute), client, cfg, Options{})
		if err != nil {
			b.Fatal(err)
		}
		took := time.Since(started)
		if n := d.idx.Users(); n != int64(users) {
			b.Fatalf("%d users after open, want %d", n, users)
		}
		if err := d.Close(); err != nil {
			b.Fatal(err)
		}
		return took
	}
	snapshot := filepath.Join(b.TempDir(), "identities.snapshot")
	b.Run("replay", func(b *testing.B) {
		for b.Loop() {
			cfg := DefaultConfig(b.TempDir())
			open(cfg)
		}
		b.ReportMetric(float64(users)*float64(b.N)/b.Elapsed().Seconds(), "users/s")
	})
	// One replica, snapshotted once, for the restores.
	{
		cfg := DefaultConfig(b.TempDir())
		d, err := Open(testkit.DetachedContext(b, 30*time.Minute), client, cfg, Options{})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := d.idx.WriteSnapshot(snapshot); err != nil {
			b.Fatal(err)
		}
		_ = d.Close()
	}
	b.Run("snapshot", func(b *testing.B) {
		for b.Loop() {
			cfg := DefaultConfig(b.TempDir())
			cfg.SnapshotPath, cfg.SnapshotInterval = snapshot, 0
			open(cfg)
		}
		b.ReportMetric(float64(users)*float64(b.N)/b.Elapsed().Seconds(), "users/s")
	})
}
