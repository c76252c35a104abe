package parquet

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	pq "github.com/parquet-go/parquet-go"
	"golang.org/x/sys/unix"
)

// compactDir is where a compaction builds the new partitions, inside the
// root (so an exchange never crosses file systems) and outside the trees.
const compactDir = "_compact"

// compactedName is the one file of a compacted partition.
const compactedName = "part-compacted.parquet"

// CompactStats says what a compaction did.
type CompactStats struct {
	// Partitions rewritten, of both trees; those already one file of the
	// current format are left alone.
	Partitions int `json:"partitions"`
	// FilesBefore and FilesAfter count the files of those partitions.
	FilesBefore int `json:"files_before"`
	FilesAfter  int `json:"files_after"`
	// Rows read, and rows kept: each (record_id, position) once.
	RowsRead int64 `json:"rows_read"`
	RowsKept int64 `json:"rows_kept"`
	// DataPointsRebuilt is set when datapoints/ held files of format 1
	// (partitioned by event day) and was derived again from changes/.
	DataPointsRebuilt bool `json:"datapoints_rebuilt"`
	// SnapshotFoldersRenamed counts cohort= folders renamed cohort_id=.
	SnapshotFoldersRenamed int `json:"snapshot_folders_renamed"`
}

// changeRowV1 is a changes/ row of format 1, for reading older trees.
type changeRowV1 struct {
	Workspace  string `parquet:"workspace"`
	Partner    string `parquet:"partner"`
	CohortID   string `parquet:"cohort_id"`
	UserID     string `parquet:"user_id"`
	IDKind     string `parquet:"id_kind"`
	IDValue    string `parquet:"id_value"`
	IsMember   uint8  `parquet:"is_member"`
	Version    uint64 `parquet:"version"`
	RecordID   string `parquet:"record_id"`
	Position   uint32 `parquet:"position"`
	EventTime  int64  `parquet:"event_time,timestamp(microsecond:utc)"`
	ReceivedAt int64  `parquet:"received_at,timestamp(microsecond:utc)"`
	Partition  int32  `parquet:"partition"`
	Offset     int64  `parquet:"offset"`
}

// Compact rewrites the trees under cfg.Root into the current format: every
// Hive partition of changes/ and datapoints/ becomes one file holding each
// (record_id, position) once (the lowest Kafka position wins), and snapshot
// folders named cohort= are renamed cohort_id=. Each partition is replaced
// atomically (see exchangeDirs). It first rolls anything left staged, then
// holds the tree exclusively: it fails with ErrTreeLocked while a sink has
// the tree open.
func Compact(ctx context.Context, cfg Config, log *slog.Logger) (CompactStats, error) {
	var st CompactStats
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return st, fmt.Errorf("parquet compact: invalid configuration: %w", err)
	}
	// The tree's lock first, exclusive: a server must not be writing, and
	// the staged rows rolled next must be nobody else's to roll.
	if err := MkdirAllSync(OSFS(), cfg.Root); err != nil {
		return st, fmt.Errorf("parquet compact: %w", err)
	}
	lock, err := lockTree(cfg.Root, true)
	if err != nil {
		return st, fmt.Errorf("parquet compact: %w", err)
	}
	defer lock.release()
	// Rows a crash left staged belong in the trees before they are rewritten.
	s, err := open(cfg, Options{Logger: log}, lock)
	if err != nil {
		return st, fmt.Errorf("parquet compact: %w", err)
	}
	flushErr := s.Flush(ctx)
	if err := errors.Join(flushErr, s.Close()); err != nil {
		return st, fmt.Errorf("parquet compact: roll the staged rows: %w", err)
	}
	codec, err := newZstdCodec()
	if err != nil {
		return st, fmt.Errorf("parquet compact: %w", err)
	}
	defer codec.close()
	w := &Sink{cfg: cfg, fs: OSFS(), log: log, codec: codec}
	if err := w.setupWriters(); err != nil {
		return st, fmt.Errorf("parquet compact: %w", err)
	}
	c := &compactor{cfg: cfg, log: log, s: w, st: &st}
	if err := os.RemoveAll(filepath.Join(cfg.Root, compactDir)); err != nil {
		return st, fmt.Errorf("parquet compact: remove the leftovers of an interrupted compaction: %w", err)
	}
	if err := c.run(ctx); err != nil {
		return st, fmt.Errorf("parquet compact: %w", err)
	}
	if err := os.RemoveAll(filepath.Join(cfg.Root, compactDir)); err != nil {
		return st, fmt.Errorf("parquet compact: %w", err)
	}
	return st, nil
}

type compactor struct {
	cfg Config
	log *slog.Logger
	s   *Sink // not opened: only its writers and file system are used
	st  *CompactStats
}

func (c *compactor) run(ctx context.Context) error {
	v1Points, err := treeHasFormat1(filepath.Join(c.cfg.Root, tableDataPoints))
	if err != nil {
		return err
	}
	if err := c.compactChanges(ctx); err != nil {
		return err
	}
	if v1Points {
		if err := c.rebuildDataPoints(ctx); err != nil {
			return err
		}
	} else if err := c.compactDataPoints(ctx); err != nil {
		return err
	}
	return c.renameSnapshotFolders()
}

// partitions lists the workspace=W/date=D folders of a tree, relative to it.
func partitions(tree string) ([]string, error) {
	var out []string
	wss, err := partitionDirs(tree, "workspace")
	if err != nil {
		return nil, err
	}
	for _, ws := range wss {
		days, err := partitionDirs(ws.path, "date")
		if err != nil {
			return nil, err
		}
		for _, d := range days {
			rel, err := filepath.Rel(tree, d.path)
			if err != nil {
				return nil, err
			}
			out = append(out, rel)
		}
	}
	slices.Sort(out)
	return out, nil
}

// dataFiles lists the Parquet files of one partition folder.
func dataFiles(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		if !e.IsDir() && strings.HasSuffix(e.Name(), ".parquet") && !strings.HasPrefix(e.Name(), ".") {
			out = append(out, filepath.Join(dir, e.Name()))
		}
	}
	return out, nil
}

// fileFormat is a file's cohortsync.format_version ("1" when absent).
func fileFormat(pf *pq.File) string {
	if v, ok := pf.Lookup("cohortsync.format_version"); ok {
		return v
	}
	return "1"
}

func openParquet(path string) (*pq.File, *os.File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	info, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, nil, err
	}
	pf, err := pq.OpenFile(f, info.Size())
	if err != nil {
		_ = f.Close()
		return nil, nil, fmt.Errorf("read %s: %w", path, err)
	}
	return pf, f, nil
}

// eachFile calls fn with every .parquet file of every Hive partition of a
// tree, partition by partition.
func eachFile(tree string, fn func(path string) error) error {
	parts, err := partitions(tree)
	if err != nil {
		return err
	}
	for _, p := range parts {
		files, err := dataFiles(filepath.Join(tree, p))
		if err != nil {
			return err
		}
		for _, path := range files {
			if err := fn(path); err != nil {
				return err
			}
		}
	}
	return nil
}

// errFound stops eachFile early.
var errFound = errors.New("found")

func treeHasFormat1(tree string) (bool, error) {
	err := eachFile(tree, func(path string) error {
		pf, f, err := openParquet(path)
		if err != nil {
			return err
		}
		defer f.Close()
		if fileFormat(pf) == "1" {
			return errFound
		}
		return nil
	})
	if errors.Is(err, errFound) {
		return true, nil
	}
	return false, err
}

// readRows reads every row of a file of either format into T's rows.
func readRows[T any](pf *pq.File) ([]T, error) {
	r := pq.NewGenericReader[T](pf)
	defer r.Close()
	rows := make([]T, pf.NumRows())
	n, err := r.Read(rows)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	if int64(n) != pf.NumRows() {
		return nil, fmt.Errorf("%d of %d rows read", n, pf.NumRows())
	}
	return rows, nil
}

// readChangeFile reads a changes/ file of format 1 or 2.
func readChangeFile(path string) ([]changeRow, error) {
	pf, f, err := openParquet(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if fileFormat(pf) != "1" {
		rows, err := readRows[changeRow](pf)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", path, err)
		}
		return rows, nil
	}
	old, err := readRows[changeRowV1](pf)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	rows := make([]changeRow, len(old))
	for i, o := range old {
		rows[i] = changeRow{
			Workspace: o.Workspace, Partner: o.Partner, CohortID: o.CohortID, UserID: o.UserID,
			IDKind: o.IDKind, IDValue: o.IDValue, IsMember: o.IsMember != 0, Version: int64(o.Version),
			RecordID: o.RecordID, Position: int32(o.Position), EventTime: o.EventTime, ReceivedAt: o.ReceivedAt,
			Partition: o.Partition, Offset: o.Offset,
		}
	}
	return rows, nil
}

type rowKey struct {
	record string
	pos    int32
}

// dedupChanges keeps each (record_id, position) once, the copy landed first.
func dedupChanges(rows []changeRow) []changeRow {
	slices.SortFunc(rows, func(a, b changeRow) int {
		return cmp.Or(strings.Compare(a.RecordID, b.RecordID), cmp.Compare(a.Position, b.Position),
			cmp.Compare(a.Partition, b.Partition), cmp.Compare(a.Offset, b.Offset))
	})
	return slices.CompactFunc(rows, func(a, b changeRow) bool { return a.RecordID == b.RecordID && a.Position == b.Position })
}

func (c *compactor) compactChanges(ctx context.Context) error {
	return compactTree(ctx, c, tableChanges, readChangeFile, func(rows []changeRow) []changeRow {
		rows = dedupChanges(rows)
		sortChanges(rows)
		return rows
	}, &c.s.changes)
}

func (c *compactor) compactDataPoints(ctx context.Context) error {
	return compactTree(ctx, c, tableDataPoints, readDataPointFile, func(rows []dataPointRow) []dataPointRow {
		sortDataPoints(rows)
		return slices.CompactFunc(rows, func(a, b dataPointRow) bool { return a.RecordID == b.RecordID && a.Position == b.Position })
	}, &c.s.dataPoints)
}

// compactTree rewrites every partition of one tree that is not compacted
// yet: its files read with read, their rows made unique and ordered by
// tidy, written as one file and exchanged with the partition.
func compactTree[T any](ctx context.Context, c *compactor, table string, read func(string) ([]T, error), tidy func([]T) []T, w *tableWriter[T]) error {
	tree := filepath.Join(c.cfg.Root, table)
	parts, err := partitions(tree)
	if err != nil {
		return err
	}
	for _, p := range parts {
		if err := ctx.Err(); err != nil {
			return err
		}
		files, err := dataFiles(filepath.Join(tree, p))
		if err != nil {
			return err
		}
		done, err := compacted(files)
		if err != nil {
			return err
		}
		if done {
			continue
		}
		var rows []T
		for _, path := range files {
			r, err := read(path)
			if err != nil {
				return err
			}
			rows = append(rows, r...)
		}
		n := len(rows)
		rows = tidy(rows)
		if err := c.replace(ctx, table, p, func(out io.Writer) error { return w.write(out, rows) }); err != nil {
			return err
		}
		c.count(len(files), n, len(rows))
	}
	return nil
}

// readDataPointFile reads a datapoints/ file of format 2 (format 1's are
// rebuilt from changes/ instead).
func readDataPointFile(path string) ([]dataPointRow, error) {
	pf, f, err := openParquet(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	rows, err := readRows[dataPointRow](pf)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return rows, nil
}

// compacted says a partition is one file of the current format already.
func compacted(files []string) (bool, error) {
	if len(files) != 1 || filepath.Base(files[0]) != compactedName {
		return false, nil
	}
	pf, f, err := openParquet(files[0])
	if err != nil {
		return false, err
	}
	defer f.Close()
	return fileFormat(pf) == FormatVersion, nil
}

func (c *compactor) count(files, read, kept int) {
	c.st.Partitions++
	c.st.FilesBefore += files
	c.st.FilesAfter++
	c.st.RowsRead += int64(read)
	c.st.RowsKept += int64(kept)
}

// rebuildDataPoints derives datapoints/ from the compacted changes/ (one
// data point per change row, by landing day) into a new tree and exchanges
// the whole tree at once: format 1 partitioned it by event day, so no
// partition of the old tree maps onto one of the new.
func (c *compactor) rebuildDataPoints(ctx context.Context) error {
	byDay := map[partKey][]dataPointRow{}
	err := eachFile(filepath.Join(c.cfg.Root, tableChanges), func(path string) error {
		rows, err := readChangeFile(path)
		for i := range rows {
			dp := dataPointOf(&rows[i])
			k := partKey{dp.Workspace, dp.Day}
			byDay[k] = append(byDay[k], dp)
		}
		return err
	})
	if err != nil {
		return err
	}
	oldFiles, oldRows, err := countTree(filepath.Join(c.cfg.Root, tableDataPoints))
	if err != nil {
		return err
	}
	newTree := filepath.Join(c.cfg.Root, compactDir, tableDataPoints)
	var kept int
	for _, k := range slices.SortedFunc(maps.Keys(byDay), comparePartKey) {
		if err := ctx.Err(); err != nil {
			return err
		}
		rows := byDay[k]
		sortDataPoints(rows)
		if err := WriteFileAtomic(ctx, c.s.fs, filepath.Join(newTree, k.rel()), compactedName, func(w io.Writer) error {
			return c.s.dataPoints.write(w, rows)
		}); err != nil {
			return err
		}
		kept += len(rows)
		c.st.Partitions++
		c.st.FilesAfter++
	}
	c.st.FilesBefore += oldFiles
	c.st.RowsRead += oldRows
	c.st.RowsKept += int64(kept)
	tree := filepath.Join(c.cfg.Root, tableDataPoints)
	if err := MkdirAllSync(c.s.fs, tree); err != nil {
		return err
	}
	if err := MkdirAllSync(c.s.fs, newTree); err != nil {
		return err
	}
	if err := exchangeDirs(c.s.fs, newTree, tree, c.log); err != nil {
		return err
	}
	c.st.DataPointsRebuilt = true
	return os.RemoveAll(newTree)
}

func countTree(tree string) (files int, rows int64, err error) {
	err = eachFile(tree, func(path string) error {
		pf, f, err := openParquet(path)
		if err != nil {
			return err
		}
		defer f.Close()
		files++
		rows += pf.NumRows()
		return nil
	})
	return files, rows, err
}

// replace writes the new content of one partition into a folder of its own
// and exchanges it with the partition's folder.
func (c *compactor) replace(ctx context.Context, table, rel string, write func(io.Writer) error) error {
	dir := filepath.Join(c.cfg.Root, table, rel)
	staged := filepath.Join(c.cfg.Root, compactDir, table, rel)
	if err := WriteFileAtomic(ctx, c.s.fs, staged, compactedName, write); err != nil {
		return err
	}
	if err := exchangeDirs(c.s.fs, staged, dir, c.log); err != nil {
		return err
	}
	// staged now holds the old files.
	return os.RemoveAll(staged)
}

// exchangeDirs swaps the folders a and b in one step (renameat2 with
// RENAME_EXCHANGE): a reader listing b sees the old files or the new ones,
// never both and never neither. Where the file system cannot exchange
// (EINVAL, ENOSYS: some network file systems), it falls back to two
// renames and says so: for a moment b is missing.
func exchangeDirs(fsys FS, a, b string, log *slog.Logger) error {
	err := unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, b, unix.RENAME_EXCHANGE)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
		log.Warn("this file system cannot exchange folders atomically: the partition is missing for a moment", "partition", b)
		old := b + ".old"
		if err := fsys.Rename(b, old); err != nil {
			return err
		}
		if err := fsys.Rename(a, b); err != nil {
			return errors.Join(err, fsys.Rename(old, b))
		}
		err = fsys.Rename(old, a)
	}
	if err != nil {
		return fmt.Errorf("exchange %s and %s: %w", a, b, err)
	}
	if err := fsys.SyncDir(filepath.Dir(a)); err != nil {
		return err
	}
	return fsys.SyncDir(filepath.Dir(b))
}

// renameSnapshotFolders renames format 1's cohort=C folders cohort_id=C,
// moving their files into an existing cohort_id=C folder if there is one.
func (c *compactor) renameSnapshotFolders() error {
	root := filepath.Join(c.cfg.Root, tableSnapshots)
	wss, err := partitionDirs(root, "workspace")
	if err != nil {
		return err
	}
	for _, ws := range wss {
		ps, err := partitionDirs(ws.path, "partner")
		if err != nil {
			return err
		}
		for _, p := range ps {
			old, err := partitionDirs(p.path, "cohort")
			if err != nil {
				return err
			}
			for _, o := range old {
				dst := filepath.Join(p.path, "cohort_id="+escapePartitionValue(o.value))
				if _, err := os.Stat(dst); errors.Is(err, fs.ErrNotExist) {
					if err := c.s.fs.Rename(o.path, dst); err != nil {
						return err
					}
				} else {
					entries, err := os.ReadDir(o.path)
					if err != nil {
						return err
					}
					for _, e := range entries {
						if _, err := os.Stat(filepath.Join(dst, e.Name())); err == nil {
							continue // the newer folder has this version already
						}
						if err := c.s.fs.Rename(filepath.Join(o.path, e.Name()), filepath.Join(dst, e.Name())); err != nil {
							return err
						}
					}
					if err := os.RemoveAll(o.path); err != nil {
						return err
					}
				}
				if err := c.s.fs.SyncDir(p.path); err != nil {
					return err
				}
				c.st.SnapshotFoldersRenamed++
			}
		}
	}
	return nil
}
