// Package parquet is the Parquet sink: it writes each batch's resolved
// membership changes and data points as Parquet files in Hive-style folders
// that DuckDB, Spark and ClickHouse read:
//
//	<root>/changes/workspace=W/date=D/part-<name>.parquet
//	<root>/datapoints/workspace=W/date=D/part-<name>.parquet
//	<root>/snapshots/workspace=W/partner=P/cohort=C/version=V.parquet
//
// D is the UTC date of the change's event_time. Partition values are escaped
// as Hive and Spark do (%XX for '/', '=', '%' and the like).
//
// # File names and replays
//
// A file's name comes from the source positions it holds: rows of Kafka
// partition p whose batch covered offsets first..last go to
// part-p<p>-o<first>-<last>.parquet (zero-padded). The content is a pure
// function of the batch (no clock, fixed created_by), so a redelivered batch
// rewrites the very same files byte for byte instead of adding new ones.
// A batch without positions (a backfill not read from Kafka) must be given
// a name by its caller through WriteNamed: part-<name>.parquet. A replay
// whose batches are cut at other offsets than the first delivery writes
// files with other names; readers that must be exact across such replays
// deduplicate on (record_id, position), which every row carries.
//
// # Durability
//
// Write returns nil only once every file of the batch is on disk: each is
// written under a temporary name (a leading dot, no .parquet suffix, so
// readers' globs skip it), fsynced, renamed into place, and its directory
// fsynced. On any error (a full disk included) the temporary file is
// removed and the error, wrapping the OS error, is returned; files of the
// batch already renamed are complete and are rewritten by the replay.
package parquet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	pq "github.com/parquet-go/parquet-go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cohortsync/cohortsync/pipeline"
)

// Table folders under the root.
const (
	tableChanges    = "changes"
	tableDataPoints = "datapoints"
)

// FormatVersion is written into every file's key-value metadata
// (cohortsync.format_version) and created_by; it changes when the columns do.
const FormatVersion = "1"

// ErrClosed is returned by writes after Close.
var ErrClosed = fmt.Errorf("parquet sink: %w", pipeline.ErrSinkClosed)

// ErrInvalidBatch is matched (errors.Is) by the errors of batches the sink
// refuses for what they hold: retrying such a batch cannot succeed.
var ErrInvalidBatch = errors.New("invalid batch")

// batchNameRE keeps a caller's batch name a single, portable file name part.
var batchNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// Options carries what a Sink needs besides its configuration.
type Options struct {
	// Logger receives write failures and the start-up sweep; nil discards.
	Logger *slog.Logger
	// Registerer receives the sink's metrics; nil keeps them unregistered.
	Registerer prometheus.Registerer
	// FS is where files are written; nil means the operating system's.
	FS FS
}

// Sink writes pipeline outputs as Parquet files. Writes are serialised; it
// is safe for concurrent use.
type Sink struct {
	cfg   Config
	fs    FS
	log   *slog.Logger
	m     *metrics
	codec *zstdCodec

	// mu serialises writes and guards closed and the fields below.
	mu     sync.Mutex
	closed bool
	// Row buffers reused from batch to batch.
	changes      tableWriter[changeRow]
	dataPoints   tableWriter[dataPointRow]
	snapshots    tableWriter[snapshotRow]
	changeBuf    []changeRow
	dataPointBuf []dataPointRow

	// stateMu guards lastErr apart from mu, so that Healthy does not wait
	// for a write in progress.
	stateMu sync.Mutex
	lastErr error
}

// tableWriter writes the files of one table. It makes a new parquet-go
// writer per file: a writer reused through Reset loses the sorting columns
// of the files after the first (parquet-go v0.32.0).
type tableWriter[T any] struct {
	opts      []pq.WriterOption
	pageBytes int
}

// Bounds of the page buffer of a small file; see tableWriter.write.
const (
	minPageBytes    = 16 << 10
	pageBytesPerRow = 64
)

func (t *tableWriter[T]) write(out io.Writer, rows []T) error {
	// Each column allocates its whole page buffer up front, which costs
	// more than the encoding of a file of a few hundred rows; such a file
	// gets a buffer sized to its rows instead. It depends on the row count
	// only, so a rewrite still produces the same bytes.
	page := min(t.pageBytes, max(minPageBytes, len(rows)*pageBytesPerRow))
	opts := append(t.opts[:len(t.opts):len(t.opts)], pq.PageBufferSize(page))
	w := pq.NewGenericWriter[T](out, opts...)
	if _, err := w.Write(rows); err != nil {
		return err
	}
	return w.Close()
}

// New returns a sink writing under cfg.Root (zero fields take their
// defaults). It removes temporary files older than cfg.StaleTempAge that a
// crash left under the root.
func New(cfg Config, opts Options) (*Sink, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("parquet sink: invalid configuration: %w", err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("sink", "parquet")
	fsys := opts.FS
	if fsys == nil {
		fsys = OSFS()
	}
	reg := opts.Registerer
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	if cfg.StaleTempAge > 0 {
		n, err := sweepTemp(fsys, cfg.Root, cfg.StaleTempAge, time.Now())
		if err != nil {
			return nil, fmt.Errorf("parquet sink: %w", err)
		}
		if n > 0 {
			log.Info("removed temporary files left by an interrupted write", "count", n, "root", cfg.Root)
		}
	}
	s := &Sink{cfg: cfg, fs: fsys, log: log}
	codec, err := newZstdCodec()
	if err != nil {
		return nil, fmt.Errorf("parquet sink: %w", err)
	}
	s.codec = codec
	common := []pq.WriterOption{
		pq.Compression(codec),
		pq.DictionaryMaxBytes(cfg.DictionaryMaxBytes),
		pq.MaxRowsPerRowGroup(cfg.MaxRowsPerRowGroup),
		// The default names parquet-go's build; a fixed value keeps a
		// rewritten file byte-identical whatever binary rewrites it.
		pq.CreatedBy("cohortsync", FormatVersion, "parquet-go"),
		pq.KeyValueMetadata("cohortsync.format_version", FormatVersion),
	}
	// The sorting columns are metadata only: groupRows orders the rows.
	s.changes.pageBytes, s.dataPoints.pageBytes = cfg.PageBufferBytes, cfg.PageBufferBytes
	s.changes.opts = append(slices.Clone(common),
		pq.KeyValueMetadata("cohortsync.table", tableChanges),
		pq.SortingWriterConfig(pq.SortingColumns(
			pq.Ascending("partner"), pq.Ascending("cohort_id"), pq.Ascending("user_id"), pq.Ascending("version"))),
	)
	// Data points are ordered by version too, but it is not a column, so
	// only the prefix is declared.
	s.dataPoints.opts = append(slices.Clone(common),
		pq.KeyValueMetadata("cohortsync.table", tableDataPoints),
		pq.SortingWriterConfig(pq.SortingColumns(
			pq.Ascending("partner"), pq.Ascending("cohort_id"), pq.Ascending("user_id"))),
	)
	s.snapshots.opts = append(slices.Clone(common),
		pq.KeyValueMetadata("cohortsync.table", tableSnapshots),
		pq.PageBufferSize(cfg.PageBufferBytes),
		pq.SortingWriterConfig(pq.SortingColumns(pq.Ascending("user_id"))),
	)
	// NewGenericWriter panics on a bad configuration; check it here instead.
	for _, o := range [][]pq.WriterOption{s.changes.opts, s.dataPoints.opts, s.snapshots.opts} {
		if _, err := pq.NewWriterConfig(o...); err != nil {
			_ = codec.close()
			return nil, fmt.Errorf("parquet sink: writer configuration: %w", err)
		}
	}
	if s.m, err = newMetrics(reg); err != nil {
		_ = codec.close()
		return nil, fmt.Errorf("parquet sink: metrics: %w", err)
	}
	return s, nil
}

// Name implements pipeline.Sink.
func (s *Sink) Name() string { return "parquet" }

// Root is the directory the sink writes under.
func (s *Sink) Root() string { return s.cfg.Root }

// Close waits for a write in progress and refuses later ones. Every
// successful write is already durable, so there is nothing to flush.
func (s *Sink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	s.m.unregister()
	if err := s.codec.close(); err != nil {
		return fmt.Errorf("parquet sink: close: %w", err)
	}
	return nil
}

// Healthy returns the error of the latest write that failed for the disk's
// sake, nil once a write succeeds (for /readyz: a full disk shows here until
// space is freed). A refused or cancelled batch says nothing about the disk
// and does not change it.
func (s *Sink) Healthy() error {
	s.stateMu.Lock()
	defer s.stateMu.Unlock()
	if s.lastErr != nil {
		return fmt.Errorf("parquet sink: last write failed: %w", s.lastErr)
	}
	return nil
}

// Write implements pipeline.Sink: it writes out's changes and data points and
// returns once they are durable. out.Positions names the files; a batch
// without positions is refused (use WriteNamed).
func (s *Sink) Write(ctx context.Context, out *pipeline.Output) error {
	return s.WriteNamed(ctx, out, "")
}

// WriteNamed is Write for batches that have no source positions, such as a
// file backfill: name (letters, digits, '.', '_', '-'; at most 128) replaces
// the offsets in the file names, giving one part-<name>.parquet per
// workspace and date and table. The caller must derive name from the
// batch's content or source (an export file and its chunk number, say) and
// not from the clock, so that rewriting the batch replaces its files. An
// empty name means Write's behaviour.
func (s *Sink) WriteNamed(ctx context.Context, out *pipeline.Output, name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	start := time.Now()
	err := s.write(ctx, out, name)
	s.m.duration.Observe(time.Since(start).Seconds())
	reason := ""
	if err != nil {
		reason = classify(err)
	}
	if reason == "" || reason == reasonDiskFull || reason == reasonIO {
		s.stateMu.Lock()
		s.lastErr = err
		s.stateMu.Unlock()
	}
	if err != nil {
		s.m.errors.WithLabelValues(reason).Inc()
		s.log.LogAttrs(ctx, slog.LevelError, "batch not written", slog.String("reason", reason), slog.Any("error", err))
		return fmt.Errorf("parquet sink: %w", err)
	}
	return nil
}

// inputError marks a batch the sink refuses for what it holds, which no
// retry will change.
type inputError struct{ err error }

func (e inputError) Error() string { return e.err.Error() }
func (e inputError) Unwrap() error { return e.err }
func (e inputError) Is(target error) bool {
	return target == ErrInvalidBatch
}

func classify(err error) string {
	var ie inputError
	switch {
	case errors.As(err, &ie):
		return reasonInput
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return reasonDiskFull
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return reasonCanceled
	default:
		return reasonIO
	}
}

func (s *Sink) write(ctx context.Context, out *pipeline.Output, name string) error {
	named := name != ""
	if named && !batchNameRE.MatchString(name) {
		return inputError{fmt.Errorf("batch name %q: want 1 to 128 of letters, digits, '.', '_', '-', starting with a letter or digit", name)}
	}
	if out == nil || out.Changes == nil || out.Changes.NumRows() == 0 {
		return nil
	}
	if !named && len(out.Positions) == 0 {
		return inputError{errors.New("batch has rows but no positions to name its files: use WriteNamed")}
	}
	cols, err := columnsOf(out.Changes)
	if err != nil {
		return inputError{err}
	}
	groups, err := groupRows(cols, int(out.Changes.NumRows()), out.Positions, named)
	if err != nil {
		return inputError{err}
	}
	dirs := map[string]struct{}{}
	for _, g := range groups {
		file := name
		if !named {
			r := out.Positions[int(g.key.partition)]
			file = fmt.Sprintf("p%04d-o%012d-%012d", g.key.partition, r.First, r.Last)
		}
		file = "part-" + file + ".parquet"
		rel := filepath.Join("workspace="+escapePartitionValue(g.key.workspace), "date="+dateString(g.key.day))

		dir := filepath.Join(s.cfg.Root, tableChanges, rel)
		s.changeBuf = changeRows(s.changeBuf, cols, g.rows)
		n, err := s.writeParquet(ctx, dir, file, func(w io.Writer) error {
			return s.changes.write(w, s.changeBuf)
		})
		if err != nil {
			return err
		}
		s.count(tableChanges, len(g.rows), n)
		dirs[dir] = struct{}{}

		dir = filepath.Join(s.cfg.Root, tableDataPoints, rel)
		s.dataPointBuf = dataPointRows(s.dataPointBuf, cols, g.rows)
		n, err = s.writeParquet(ctx, dir, file, func(w io.Writer) error {
			return s.dataPoints.write(w, s.dataPointBuf)
		})
		if err != nil {
			return err
		}
		s.count(tableDataPoints, len(g.rows), n)
		dirs[dir] = struct{}{}
	}
	// The renames are durable only once their directories are synced; one
	// sync per directory covers every file of the batch in it.
	for _, dir := range slices.Sorted(maps.Keys(dirs)) {
		if err := s.fs.SyncDir(dir); err != nil {
			return err
		}
	}
	// Drop the references into the batch's Arrow buffers, which the
	// caller may release now.
	clear(s.changeBuf)
	clear(s.dataPointBuf)
	return nil
}

func (s *Sink) count(table string, rows int, bytes int64) {
	s.m.files.WithLabelValues(table).Inc()
	s.m.rows.WithLabelValues(table).Add(float64(rows))
	s.m.bytes.WithLabelValues(table).Add(float64(bytes))
}

// writeParquet writes one file atomically (its directory is synced by the
// caller) and returns its size.
func (s *Sink) writeParquet(ctx context.Context, dir, name string, write func(io.Writer) error) (int64, error) {
	var n int64
	err := writeFileNoDirSync(ctx, s.fs, dir, name, func(w io.Writer) error {
		cw := &countingWriter{w: w}
		err := write(cw)
		n = cw.n
		return err
	})
	return n, err
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// escapePartitionValue escapes a Hive partition value the way Hive and
// Spark do, so that they (and DuckDB) read the value back and a value can
// never add a path level. The empty value has Hive's special name.
func escapePartitionValue(v string) string {
	if v == "" {
		return "__HIVE_DEFAULT_PARTITION__"
	}
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c < 0x20 || c == 0x7f || strings.IndexByte(`"#%'*/:=?\{[]^`, c) >= 0 {
			fmt.Fprintf(&b, "%%%02X", c)
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}
