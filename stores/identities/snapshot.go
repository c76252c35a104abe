package identities

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/cohortsync/cohortsync/internal/atomicfile"
	"github.com/cohortsync/cohortsync/internal/retry"
)

// Snapshots of the replica on storage the instances share let a new
// instance start from a recent copy and replay only the topic's tail after
// it, instead of the whole topic into its own file: bbolt's single writer
// applies a large directory at tens of thousands of users a second, while a
// copy is a sequential file read. The replica keeps each partition's offset
// in the same transactions as the users, so any copy taken in one read
// transaction is consistent: opening it resumes from its own offsets.
//
// A snapshot older than the topic's tombstone retention could miss a user's
// deletion that compaction has since removed from the topic; SnapshotMaxAge
// refuses older copies (keep it below the identities topic's
// delete.retention.ms, 24 h by default).

// WriteSnapshot writes a consistent copy of the replica to path, replacing
// the previous one only once the new one is complete and durable. It returns
// the bytes written.
func (x *Index) WriteSnapshot(path string) (int64, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return 0, fmt.Errorf("identities: snapshot: %w", err)
	}
	var n int64
	err := atomicfile.Write(path, func(w io.Writer) error {
		return x.db.View(func(tx *bolt.Tx) error {
			var err error
			n, err = tx.WriteTo(w)
			return err
		})
	})
	if err != nil {
		return 0, fmt.Errorf("identities: snapshot to %s: %w", path, err)
	}
	return n, nil
}

// restoreSnapshot copies the snapshot at src to dst when dst does not exist
// yet and the snapshot is younger than maxAge. It reports whether it did; a
// snapshot that is missing or too old is no error, the topic replays instead.
func restoreSnapshot(src, dst string, maxAge time.Duration, now time.Time) (bool, string, error) {
	if _, err := os.Stat(dst); err == nil || !errors.Is(err, fs.ErrNotExist) {
		return false, "the replica exists", nil
	}
	st, err := os.Stat(src)
	if errors.Is(err, fs.ErrNotExist) {
		return false, "no snapshot", nil
	}
	if err != nil {
		return false, "", fmt.Errorf("identities: snapshot %s: %w", src, err)
	}
	if age := now.Sub(st.ModTime()); age > maxAge {
		return false, fmt.Sprintf("snapshot is %s old, over snapshot_max_age %s", age.Round(time.Second), maxAge), nil
	}
	in, err := os.Open(src)
	if err != nil {
		return false, "", fmt.Errorf("identities: snapshot %s: %w", src, err)
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return false, "", fmt.Errorf("identities: restore snapshot: %w", err)
	}
	err = atomicfile.Write(dst, func(w io.Writer) error {
		_, err := io.Copy(w, in)
		return err
	})
	if err != nil {
		return false, "", fmt.Errorf("identities: restore snapshot %s to %s: %w", src, dst, err)
	}
	return true, "", nil
}

// snapshotLoop writes a snapshot every interval while the directory is
// caught up, until ctx ends.
func (d *Directory) snapshotLoop(ctx context.Context, path string, interval time.Duration) {
	for retry.Sleep(ctx, interval) == nil {
		if !d.CaughtUp() {
			continue // a copy of a replica behind the topic helps nobody start faster
		}
		started := time.Now()
		n, err := d.idx.WriteSnapshot(path)
		if err != nil {
			d.metrics.snapshots.WithLabelValues("failed").Inc()
			d.log.Error("identity snapshot failed", "path", path, "err", err)
			continue
		}
		d.metrics.snapshots.WithLabelValues("written").Inc()
		d.metrics.snapshotTime.SetToCurrentTime()
		d.log.Info("identity snapshot written", "path", path, "bytes", n,
			"took", time.Since(started).Round(time.Millisecond).String())
	}
}
