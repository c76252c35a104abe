package parquet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	pq "github.com/parquet-go/parquet-go"
)

// tableSnapshots is the folder of the member lists:
//
//	<root>/snapshots/workspace=W/partner=P/cohort_id=C/version=V.parquet
//
// V is the highest change version the list reflects, so a snapshot of an
// unchanged cohort has the name of the one before it and is not written
// again, and a rewrite of the same version holds the same members.
const tableSnapshots = "snapshots"

// CohortKey names one cohort.
type CohortKey struct{ Workspace, Partner, CohortID string }

func (k CohortKey) String() string { return k.Workspace + "/" + k.Partner + "/" + k.CohortID }

// snapshotRow is one member of a snapshot file.
// SnapshotAt is when the list was read from the state of record: the
// membership it shows is the one "as of" that time.
type snapshotRow struct {
	Workspace  string `parquet:"workspace,dict"`
	Partner    string `parquet:"partner,dict"`
	CohortID   string `parquet:"cohort_id,dict"`
	UserID     string `parquet:"user_id"`
	Version    int64  `parquet:"version"`
	SnapshotAt int64  `parquet:"snapshot_at,timestamp(microsecond:utc)"`
}

// snapshotChunk is how many members are buffered before they go to the
// Parquet writer, which keeps a cohort of any size in bounded memory.
const snapshotChunk = 64 << 10

// SnapshotFile is a snapshot written to disk.
type SnapshotFile struct {
	Cohort  CohortKey
	Version uint64
	// Path is the file's path under the sink's root (never the server's
	// absolute path, which API answers must not show).
	Path    string
	Members int64
	Bytes   int64
}

// SnapshotDir is the folder of one cohort's snapshots.
func (s *Sink) SnapshotDir(k CohortKey) string {
	return filepath.Join(s.cfg.Root, tableSnapshots,
		"workspace="+escapePartitionValue(k.Workspace),
		"partner="+escapePartitionValue(k.Partner),
		"cohort_id="+escapePartitionValue(k.CohortID))
}

// SnapshotPath is the path of k's snapshot at version under the root.
func (s *Sink) SnapshotPath(k CohortKey, version uint64) string {
	rel, err := filepath.Rel(s.cfg.Root, filepath.Join(s.SnapshotDir(k), snapshotName(version)))
	if err != nil {
		return filepath.Join(s.SnapshotDir(k), snapshotName(version))
	}
	return filepath.ToSlash(rel)
}

func snapshotName(version uint64) string { return fmt.Sprintf("version=%d.parquet", version) }

// WriteSnapshot writes the member list that members yields (in user id
// order) as the snapshot of k at version, atomically, then removes all but
// the newest cfg.SnapshotsKept snapshots of k. It does not take the batch
// lock: a large cohort must not hold up the stream's writes.
func (s *Sink) WriteSnapshot(ctx context.Context, k CohortKey, version uint64, members func(yield func(userID string) error) error) (SnapshotFile, error) {
	if version > math.MaxInt64 {
		return SnapshotFile{}, fmt.Errorf("parquet sink: snapshot of %s: version %d does not fit INT64", k, version)
	}
	at := s.now().UnixMicro()
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return SnapshotFile{}, ErrClosed
	}
	dir := s.SnapshotDir(k)
	name := snapshotName(version)
	out := SnapshotFile{Cohort: k, Version: version, Path: s.SnapshotPath(k, version)}
	n, err := s.writeParquet(ctx, dir, name, func(w io.Writer) error {
		pw := pq.NewGenericWriter[snapshotRow](w, s.snapshots.opts...)
		buf := make([]snapshotRow, 0, snapshotChunk)
		flush := func() error {
			if _, err := pw.Write(buf); err != nil {
				return err
			}
			clear(buf)
			buf = buf[:0]
			return nil
		}
		last := ""
		err := members(func(user string) error {
			if out.Members > 0 && user <= last {
				return fmt.Errorf("members out of order: %q after %q", user, last)
			}
			last = user
			buf = append(buf, snapshotRow{Workspace: k.Workspace, Partner: k.Partner, CohortID: k.CohortID, UserID: user, Version: int64(version), SnapshotAt: at})
			out.Members++
			if len(buf) == cap(buf) {
				return flush()
			}
			return nil
		})
		if err != nil {
			return err
		}
		if err := flush(); err != nil {
			return err
		}
		return pw.Close()
	})
	if err == nil {
		err = s.fs.SyncDir(dir)
	}
	if err != nil {
		s.m.errors.WithLabelValues(classify(err)).Inc()
		return SnapshotFile{}, fmt.Errorf("parquet sink: snapshot of %s at version %d: %w", k, version, err)
	}
	out.Bytes = n
	s.count(tableSnapshots, int(out.Members), n)
	if err := s.pruneSnapshots(dir); err != nil {
		// The new snapshot is durable; an old one left behind is only space.
		s.log.Warn("old snapshots not removed", "cohort", k.String(), "error", err)
	}
	return out, nil
}

// pruneSnapshots keeps the newest cfg.SnapshotsKept snapshots in dir.
func (s *Sink) pruneSnapshots(dir string) error {
	versions, err := snapshotVersions(dir)
	if err != nil || len(versions) <= s.cfg.SnapshotsKept {
		return err
	}
	var errs []error
	for _, v := range versions[:len(versions)-s.cfg.SnapshotsKept] {
		if err := s.fs.Remove(filepath.Join(dir, snapshotName(v))); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// snapshotVersions lists the versions of the snapshot files in dir, ascending.
func snapshotVersions(dir string) ([]uint64, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []uint64
	for _, e := range entries {
		v, ok := strings.CutPrefix(e.Name(), "version=")
		if !ok || e.IsDir() {
			continue
		}
		v, ok = strings.CutSuffix(v, ".parquet")
		if !ok {
			continue
		}
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			continue
		}
		out = append(out, n)
	}
	slices.Sort(out)
	return out, nil
}

// LatestSnapshot returns the newest snapshot version of k on disk, read
// from the file names, so a restart knows what is written; ok is false when
// k has none.
func (s *Sink) LatestSnapshot(k CohortKey) (version uint64, ok bool, err error) {
	versions, err := snapshotVersions(s.SnapshotDir(k))
	if err != nil {
		return 0, false, fmt.Errorf("parquet sink: list snapshots of %s: %w", k, err)
	}
	if len(versions) == 0 {
		return 0, false, nil
	}
	return versions[len(versions)-1], true, nil
}

type partitionDir struct{ path, value string }

// partitionDirs lists the Hive partition folders name=value under dir.
func partitionDirs(dir, name string) ([]partitionDir, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("parquet sink: list %s: %w", dir, err)
	}
	var out []partitionDir
	for _, e := range entries {
		v, ok := strings.CutPrefix(e.Name(), name+"=")
		if !ok || !e.IsDir() {
			continue
		}
		value, err := unescapePartitionValue(v)
		if err != nil {
			return nil, fmt.Errorf("parquet sink: folder %s: %w", filepath.Join(dir, e.Name()), err)
		}
		out = append(out, partitionDir{path: filepath.Join(dir, e.Name()), value: value})
	}
	return out, nil
}

// unescapePartitionValue reverses escapePartitionValue.
func unescapePartitionValue(v string) (string, error) {
	if v == "__HIVE_DEFAULT_PARTITION__" {
		return "", nil
	}
	if !strings.Contains(v, "%") {
		return v, nil
	}
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		if v[i] != '%' {
			b.WriteByte(v[i])
			continue
		}
		if i+2 >= len(v) {
			return "", fmt.Errorf("bad escape in %q", v)
		}
		n, err := strconv.ParseUint(v[i+1:i+3], 16, 8)
		if err != nil {
			return "", fmt.Errorf("bad escape in %q: %w", v, err)
		}
		b.WriteByte(byte(n))
		i += 2
	}
	return b.String(), nil
}
