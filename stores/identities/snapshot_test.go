package identities

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cohortsync/cohortsync/kafka"
)

// openWithSnapshot opens a directory on a new replica path with snapshots
// at snapshot, written every interval (0: read only).
func openWithSnapshot(t *testing.T, client *kafka.Client, snapshot string, interval time.Duration) openedDir {
	t.Helper()
	cfg := testConfig(t)
	cfg.Path = dirPath(t)
	cfg.SnapshotPath, cfg.SnapshotInterval = snapshot, interval
	return openDirWith(t, client, cfg)
}

// TestSnapshotStartsAFreshInstance: one instance writes snapshots; a new
// instance starts from the snapshot and replays only what landed after it,
// and ends with the same directory as a full replay. A snapshot that does
// not open, or is too old, is passed over for a full replay.
func TestSnapshotStartsAFreshInstance(t *testing.T) {
	t.Parallel()
	client := newTestClient(t)
	loader := newTestLoader(t, client)
	land(t, loader, "acme",
		`{"user_id":"u1","external_id":"ext-1"}`,
		`{"user_id":"u2","device_ids":["dev-2"]}`,
		`{"user_id":"u3","aliases":[{"alias_name":"c@x.io","alias_label":"email"}]}`,
	)
	snapshot := filepath.Join(t.TempDir(), "shared", "identities.snapshot")
	writer := openWithSnapshot(t, client, snapshot, 50*time.Millisecond)
	deadline := time.Now().Add(10 * time.Second)
	for testutil.ToFloat64(writer.metrics.snapshots.WithLabelValues("written")) < 1 {
		if time.Now().After(deadline) {
			t.Fatalf("no snapshot written; logs:\n%s", writer.logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := writer.Close(); err != nil {
		t.Fatal(err)
	}
	if testutil.ToFloat64(writer.metrics.snapshotTime) == 0 {
		t.Error("snapshot_last_written_timestamp_seconds still 0")
	}

	// After the snapshot: two new users, and u1 moves to another external id.
	land(t, loader, "acme",
		`{"user_id":"u4","external_id":"ext-4"}`,
		`{"user_id":"u5","device_ids":["dev-5"]}`,
		`{"user_id":"u1","external_id":"ext-1b"}`,
	)
	check := func(name string, d openedDir) {
		t.Helper()
		for id, want := range map[string]match{
			"ext-1": none, "ext-1b": {"u1", true, true}, "ext-4": {"u4", true, true},
		} {
			if got := match2(d.LookupExternalID("acme", id)); got != want {
				t.Errorf("%s: external id %s = %+v, want %+v", name, id, got, want)
			}
		}
		if got := match2(d.LookupDevice("acme", "dev-5")); got != (match{"u5", false, true}) {
			t.Errorf("%s: device dev-5 = %+v", name, got)
		}
		if got := match2(d.LookupAlias("acme", "c@x.io", "email")); got != (match{"u3", false, true}) {
			t.Errorf("%s: alias = %+v", name, got)
		}
		if n := d.idx.Users(); n != 5 {
			t.Errorf("%s: %d users, want 5", name, n)
		}
	}
	applied := func(d openedDir) float64 { return testutil.ToFloat64(d.metrics.applied) }

	restored := openWithSnapshot(t, client, snapshot, 0)
	check("from the snapshot", restored)
	if !strings.Contains(restored.logs.String(), "identity replica restored from snapshot") {
		t.Errorf("no restore logged:\n%s", restored.logs)
	}
	// Only the three records after the snapshot were read and applied.
	if n := applied(restored); n != 3 {
		t.Errorf("restored instance applied %v records, want the 3 after the snapshot", n)
	}

	full := openDir(t, client, dirPath(t))
	check("full replay", full)
	if n := applied(full); n != 6 {
		t.Errorf("full replay applied %v records, want 6", n)
	}

	// Too old: passed over.
	old := time.Now().Add(-13 * time.Hour)
	if err := os.Chtimes(snapshot, old, old); err != nil {
		t.Fatal(err)
	}
	stale := openWithSnapshot(t, client, snapshot, 0)
	check("stale snapshot", stale)
	if n := applied(stale); n != 6 || !strings.Contains(stale.logs.String(), "over snapshot_max_age") {
		t.Errorf("stale snapshot: applied %v, want a full replay of 6; logs:\n%s", n, stale.logs)
	}

	// Not a bbolt file: removed, and the topic replayed.
	if err := os.WriteFile(snapshot, []byte("not a database"), 0o600); err != nil {
		t.Fatal(err)
	}
	broken := openWithSnapshot(t, client, snapshot, 0)
	check("broken snapshot", broken)
	if n := applied(broken); n != 6 || !strings.Contains(broken.logs.String(), "does not open") {
		t.Errorf("broken snapshot: applied %v, want a full replay of 6; logs:\n%s", n, broken.logs)
	}
}
