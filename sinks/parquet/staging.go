package parquet

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	pq "github.com/parquet-go/parquet-go"
)

// The staging area holds what the sink acknowledged but has not rolled into
// the trees yet, one folder per Kafka partition:
//
//	<root>/_staging/p<partition>/o<first>-<last>.staged    a staged batch
//	<root>/_staging/p<partition>/roll-o<first>-<last>      a roll in progress
//	<root>/_staging/p<partition>/rolled                    highest offset rolled
//
// The folder starts with '_', which Hive, Spark and DuckDB skip, and lies
// outside changes/ and datapoints/, so readers of the trees never see it.
const stagingDir = "_staging"

// stagedFile is one staged batch: the rows of one Kafka partition whose
// offsets lie in first..last that were not in the trees yet.
type stagedFile struct {
	first, last int64
}

func (f stagedFile) name() string {
	return fmt.Sprintf("o%012d-%012d%s", f.first, f.last, stagedSuffix)
}

// stagedSuffix ends a staged file's name; see stagecodec.go for its format.
const stagedSuffix = ".staged"

func rollIntentName(first, last int64) string { return fmt.Sprintf("roll-o%012d-%012d", first, last) }

const rolledName = "rolled"

// partitionStage is what a partition's staging folder says.
type partitionStage struct {
	dir    string
	files  []stagedFile // ascending, none at or below rolled
	rolled int64        // -1 before the first roll
	// intent is the range of a roll that started and did not finish.
	intent *stagedFile
	// stale are staged files at or below rolled: rolled already, left by
	// a roll interrupted before it removed them.
	stale []stagedFile
}

// highWater is the highest offset of the partition the sink has made
// durable (staged or rolled); -1 when none.
func (p *partitionStage) highWater() int64 {
	hw := p.rolled
	if n := len(p.files); n > 0 {
		hw = max(hw, p.files[n-1].last)
	}
	if p.intent != nil {
		hw = max(hw, p.intent.last)
	}
	return hw
}

func (s *Sink) stageDir(partition int32) string {
	return filepath.Join(s.cfg.Root, stagingDir, fmt.Sprintf("p%04d", partition))
}

// scanStage reads a partition's staging folder. It is read again at every
// batch rather than cached: after a rebalance another instance may have
// staged or rolled the partition on shared storage.
func scanStage(dir string) (*partitionStage, error) {
	p := &partitionStage{dir: dir, rolled: -1}
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return p, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", dir, err)
	}
	var files []stagedFile
	for _, e := range entries {
		name := e.Name()
		switch {
		case name == rolledName:
			b, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil {
				return nil, fmt.Errorf("read %s: %w", filepath.Join(dir, name), err)
			}
			v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
			if err != nil {
				return nil, fmt.Errorf("read %s: %w", filepath.Join(dir, name), err)
			}
			p.rolled = v
		case strings.HasPrefix(name, "roll-o"):
			if f, ok := parseRange(strings.TrimPrefix(name, "roll-o")); ok {
				p.intent = &f
			}
		case strings.HasPrefix(name, "o") && strings.HasSuffix(name, stagedSuffix):
			if f, ok := parseRange(strings.TrimSuffix(strings.TrimPrefix(name, "o"), stagedSuffix)); ok {
				files = append(files, f)
			}
		}
	}
	slices.SortFunc(files, func(a, b stagedFile) int { return cmp.Compare(a.first, b.first) })
	for _, f := range files {
		if f.last <= p.rolled {
			p.stale = append(p.stale, f)
		} else {
			p.files = append(p.files, f)
		}
	}
	return p, nil
}

func parseRange(s string) (stagedFile, bool) {
	a, b, ok := strings.Cut(s, "-")
	if !ok {
		return stagedFile{}, false
	}
	first, err1 := strconv.ParseInt(a, 10, 64)
	last, err2 := strconv.ParseInt(b, 10, 64)
	if err1 != nil || err2 != nil || first > last {
		return stagedFile{}, false
	}
	return stagedFile{first, last}, true
}

// stage writes one partition's new rows of a batch as a staged file and
// returns once it is durable.
func (s *Sink) stage(ctx context.Context, dir string, f stagedFile, rows []changeRow) (int64, error) {
	// The encoding buffer is the sink's, reused batch after batch (Write
	// holds s.mu): a batch's file is megabytes.
	s.stageBuf = appendStaged(s.stageBuf[:0], rows)
	n, err := s.writeParquet(ctx, dir, f.name(), func(w io.Writer) error {
		_, err := w.Write(s.stageBuf)
		return err
	})
	if err != nil {
		return 0, err
	}
	return n, s.fs.SyncDir(dir)
}

// partKey is one Hive partition of a tree.
type partKey struct {
	workspace string
	day       int32
}

func (k partKey) rel() string {
	return filepath.Join("workspace="+escapePartitionValue(k.workspace), "date="+dateString(k.day))
}

func comparePartKey(a, b partKey) int {
	if d := strings.Compare(a.workspace, b.workspace); d != 0 {
		return d
	}
	return cmp.Compare(a.day, b.day)
}

// roll moves what is staged for one Kafka partition into the trees: one
// file per Hive partition of each tree, named part-p<partition>-o<first>-<last>
// after the offsets it covers. The steps, each durable before the next, make
// a crash at any point harmless:
//
//  1. the intent roll-o<first>-<last> fixes which staged files this roll
//     covers, so a roll resumed after a crash (by this instance or the one
//     the partition moved to) writes the same files with the same names;
//  2. the tree files are written (temporary name, fsync, rename, fsync);
//  3. rolled records the range's last offset: from here the staged files are
//     known to be in the trees;
//  4. the staged files and the intent are removed.
//
// A reader sees each row once at every moment: a staged row is in no tree,
// and a rolled one in exactly one file, which a resumed roll rewrites in
// place byte for byte.
func (s *Sink) roll(ctx context.Context, partition int32) (int, error) {
	dir := s.stageDir(partition)
	st, err := scanStage(dir)
	if err != nil {
		return 0, err
	}
	var span stagedFile
	switch {
	case st.intent != nil:
		span = *st.intent
	case len(st.files) > 0:
		span = stagedFile{st.files[0].first, st.files[len(st.files)-1].last}
		if err := writeFileNoDirSync(ctx, s.fs, dir, rollIntentName(span.first, span.last), func(io.Writer) error { return nil }); err != nil {
			return 0, err
		}
		if err := s.fs.SyncDir(dir); err != nil {
			return 0, err
		}
	default:
		return 0, s.removeStale(dir, st.stale)
	}
	var files []stagedFile
	for _, f := range st.files {
		if f.first >= span.first && f.last <= span.last {
			files = append(files, f)
		}
	}
	// The roll streams: staged files are read one at a time, and each
	// Hive partition's rows go out as row groups of MaxRowsPerRowGroup rows,
	// each sorted on its own (the sorting columns are per row group). A
	// roll holds at most a row group per open partition, whatever
	// RollRows is, so files can be as large as engines like them.
	name := fmt.Sprintf("part-p%04d-o%012d-%012d.parquet", partition, span.first, span.last)
	chunk := int(s.cfg.MaxRowsPerRowGroup)
	changes := newTreeOut(s, tableChanges, name, &s.changes, chunk, sortChanges)
	points := newTreeOut(s, tableDataPoints, name, &s.dataPoints, chunk, sortDataPoints)
	defer changes.abort()
	defer points.abort()
	total := 0
	for _, f := range files {
		rows, err := readStaged(filepath.Join(dir, f.name()))
		if err != nil {
			return 0, err
		}
		for i := range rows {
			r := &rows[i]
			if err := changes.add(ctx, partKey{r.Workspace, dayOf(arrowTimestamp(r.EventTime))}, *r); err != nil {
				return 0, err
			}
			dp := dataPointOf(r)
			if err := points.add(ctx, partKey{dp.Workspace, dp.Day}, dp); err != nil {
				return 0, err
			}
		}
		total += len(rows)
	}
	dirs := map[string]struct{}{}
	if err := changes.finish(ctx, dirs); err != nil {
		return 0, err
	}
	if err := points.finish(ctx, dirs); err != nil {
		return 0, err
	}
	for _, d := range slices.Sorted(maps.Keys(dirs)) {
		if err := s.fs.SyncDir(d); err != nil {
			return 0, err
		}
	}
	rolled := max(span.last, st.rolled)
	if err := WriteFileAtomic(ctx, s.fs, dir, rolledName, func(w io.Writer) error {
		_, err := io.WriteString(w, strconv.FormatInt(rolled, 10)+"\n")
		return err
	}); err != nil {
		return 0, err
	}
	// From here the roll is complete; what follows only frees space, and a
	// later scan finds any leftover file stale.
	var errs []error
	for _, f := range append(files, st.stale...) {
		if err := s.fs.Remove(filepath.Join(dir, f.name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := s.fs.Remove(filepath.Join(dir, rollIntentName(span.first, span.last))); err != nil && !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		s.log.Warn("rolled staged files not removed", "partition", partition, "error", err)
	}
	s.m.rolls.Inc()
	if st.intent != nil && len(files) < len(st.files) {
		// That was a resumed roll; what was staged after it started gets
		// a roll of its own.
		n, err := s.roll(ctx, partition)
		return total + n, err
	}
	return total, nil
}

func (s *Sink) removeStale(dir string, stale []stagedFile) error {
	for _, f := range stale {
		if err := s.fs.Remove(filepath.Join(dir, f.name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

// stagedPartitions lists the Kafka partitions that have a staging folder.
func stagedPartitions(root string) ([]int32, error) {
	entries, err := os.ReadDir(filepath.Join(root, stagingDir))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list staging area: %w", err)
	}
	var out []int32
	for _, e := range entries {
		v, ok := strings.CutPrefix(e.Name(), "p")
		if !ok || !e.IsDir() {
			continue
		}
		n, err := strconv.ParseInt(v, 10, 32)
		if err != nil || n < 0 {
			continue
		}
		out = append(out, int32(n))
	}
	return out, nil
}

// recoverStaging runs at open: it remembers every staged row in the index
// (they are in no tree yet, so the trees' files do not tell) and marks the
// partitions that have staged files as due, with the age of their oldest
// file, so the roll timer moves them into the trees.
func (s *Sink) recoverStaging() error {
	parts, err := stagedPartitions(s.cfg.Root)
	if err != nil {
		return err
	}
	for _, p := range parts {
		dir := s.stageDir(p)
		st, err := scanStage(dir)
		if err != nil {
			return err
		}
		if len(st.files) == 0 && st.intent == nil {
			continue
		}
		oldest := time.Now()
		d := &dueRows{}
		for _, f := range st.files {
			rows, err := readStaged(filepath.Join(dir, f.name()))
			if err != nil {
				return err
			}
			for i := range rows {
				r := &rows[i]
				s.seen.pending(seenKey{r.Workspace, dayOf(arrowTimestamp(r.ReceivedAt))}).add(r.RecordID, r.Position)
			}
			s.stagedRows += len(rows)
			d.rows += len(rows)
			if info, err := os.Stat(filepath.Join(dir, f.name())); err == nil && info.ModTime().Before(oldest) {
				oldest = info.ModTime()
			}
		}
		d.since = oldest
		s.due[p] = d
	}
	return nil
}

// treeOut writes the files of one tree that a roll produces: one per Hive
// partition, each a pending file that finish commits.
type treeOut[T any] struct {
	s      *Sink
	table  string
	name   string
	writer *tableWriter[T]
	chunk  int
	sort   func([]T)
	files  map[partKey]*treeFile[T]
}

type treeFile[T any] struct {
	file *pendingFile
	w    *pq.GenericWriter[T]
	buf  []T
	rows int
}

func newTreeOut[T any](s *Sink, table, name string, w *tableWriter[T], chunk int, sort func([]T)) *treeOut[T] {
	return &treeOut[T]{s: s, table: table, name: name, writer: w, chunk: max(chunk, 1), sort: sort, files: map[partKey]*treeFile[T]{}}
}

func (t *treeOut[T]) add(ctx context.Context, k partKey, row T) error {
	f := t.files[k]
	if f == nil {
		f = &treeFile[T]{}
		t.files[k] = f
	}
	f.buf = append(f.buf, row)
	if len(f.buf) >= t.chunk {
		return t.flush(ctx, k, f)
	}
	return nil
}

// flush writes f's buffered rows as one sorted row group.
func (t *treeOut[T]) flush(ctx context.Context, k partKey, f *treeFile[T]) error {
	if len(f.buf) == 0 {
		return nil
	}
	if f.w == nil {
		p, err := createPending(ctx, t.s.fs, filepath.Join(t.s.cfg.Root, t.table, k.rel()), t.name)
		if err != nil {
			return err
		}
		f.file = p
		f.w = t.writer.newWriter(p, len(f.buf))
	}
	t.sort(f.buf)
	if _, err := f.w.Write(f.buf); err != nil {
		return fmt.Errorf("write %s: %w", f.file.final, err)
	}
	if err := f.w.Flush(); err != nil {
		return fmt.Errorf("write %s: %w", f.file.final, err)
	}
	f.rows += len(f.buf)
	clear(f.buf)
	f.buf = f.buf[:0]
	return nil
}

// finish writes what is buffered and commits every file, adding their
// folders to dirs, which the caller syncs.
func (t *treeOut[T]) finish(ctx context.Context, dirs map[string]struct{}) error {
	for _, k := range slices.SortedFunc(maps.Keys(t.files), comparePartKey) {
		f := t.files[k]
		if err := t.flush(ctx, k, f); err != nil {
			return err
		}
		if f.w == nil {
			continue
		}
		if err := f.w.Close(); err != nil {
			return fmt.Errorf("write %s: %w", f.file.final, err)
		}
		if err := f.file.commit(); err != nil {
			f.file = nil // commit removed it
			return err
		}
		t.s.count(t.table, f.rows, f.file.n)
		dirs[filepath.Dir(f.file.final)] = struct{}{}
		f.file = nil
	}
	return nil
}

// abort removes the files not committed.
func (t *treeOut[T]) abort() {
	for _, f := range t.files {
		if f.file != nil {
			f.file.abort()
			f.file = nil
		}
	}
}
