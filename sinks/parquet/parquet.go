// Package parquet is the Parquet sink: it writes the resolved membership
// changes and data points as Parquet files in Hive-style folders that DuckDB,
// Spark and ClickHouse read, and the member-list snapshots:
//
//	<root>/changes/workspace=W/date=D/part-p<partition>-o<first>-<last>.parquet
//	<root>/datapoints/workspace=W/date=D/part-p<partition>-o<first>-<last>.parquet
//	<root>/snapshots/workspace=W/partner=P/cohort_id=C/version=V.parquet
//
// D is the UTC date of the change's event_time in changes/ and of its landing
// (received_at, the billing day) in datapoints/. Partition values are escaped
// as Hive and Spark do (%XX for '/', '=', '%' and the like); a value too long
// for a file name is cut and suffixed with a hash of the whole.
// docs/PARQUET.md describes every column and the queries that read them.
//
// # Each row once
//
// A batch is not written into the trees directly. Its rows go, per Kafka
// partition, into a staged file under <root>/_staging (durable before Write
// returns, so the batch can be acknowledged), and a roll moves the staged
// rows of a partition into one file per Hive partition once RollRows rows
// are staged or the oldest has waited RollInterval. That is the Kafka
// Connect S3 sink's model (flush.size, rotate.interval.ms) without its
// weakness: offsets are committed as soon as a batch is staged, not when a
// file closes, and nothing acknowledged is only in memory.
//
// Rows already in the trees are not staged again. Per Kafka partition the
// staging folder records the highest offset made durable, so a redelivery
// (a crash before the offset commit, a rebalance) is skipped by offset; and
// per workspace and landing day the sink remembers the (record_id, position)
// pairs written, so a record landed a second time at other offsets (a re-run
// or resumed backfill, backfill --from kafka) is skipped by identity. Each
// (record_id, position) therefore appears once in changes/ and once in
// datapoints/, and count(*) or sum() over a tree equals the API's figures.
//
// # Durability
//
// Every file, staged or rolled, is written under a temporary name (a leading
// dot, no .parquet suffix, so readers' globs skip it), fsynced, renamed into
// place, and its directory fsynced. On any error (a full disk included) the
// temporary file is removed and the error, wrapping the OS error, returned.
package parquet

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
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
const FormatVersion = "2"

// ErrClosed is returned by writes after Close.
var ErrClosed = fmt.Errorf("parquet sink: %w", pipeline.ErrSinkClosed)

// ErrInvalidBatch is matched (errors.Is) by the errors of batches the sink
// refuses for what they hold: retrying such a batch cannot succeed.
var ErrInvalidBatch = errors.New("invalid batch")

// Options carries what a Sink needs besides its configuration.
type Options struct {
	// Logger receives write failures and the start-up sweep; nil discards.
	Logger *slog.Logger
	// Registerer receives the sink's metrics; nil keeps them unregistered.
	Registerer prometheus.Registerer
	// FS is where files are written; nil means the operating system's.
	FS FS
	// Now is the clock of the roll timer and the snapshots; nil is time.Now.
	Now func() time.Time
	// SnapshotsOnly opens the sink for WriteSnapshot alone, beside a
	// server that writes the trees (`cohortsync snapshot` without
	// --server): it neither reads nor rolls the staging area, and Write
	// refuses batches.
	SnapshotsOnly bool
}

// Sink writes pipeline outputs as Parquet files. Writes are serialised; it
// is safe for concurrent use.
type Sink struct {
	cfg   Config
	fs    FS
	log   *slog.Logger
	m     *metrics
	codec *zstdCodec
	now   func() time.Time
	lock  *treeLock // nil when the caller holds it
	// snapshotsOnly: see Options.SnapshotsOnly.
	snapshotsOnly bool

	// mu serialises writes and rolls and guards the fields below.
	mu     sync.Mutex
	closed bool
	// Writers of each table's files.
	changes    tableWriter[changeRow]
	dataPoints tableWriter[dataPointRow]
	snapshots  tableWriter[snapshotRow]
	seen       *seenIndex
	// due holds the Kafka partitions with staged rows: when the oldest
	// was made durable, and how many there are.
	due        map[int32]*dueRows
	stagedRows int // the sum over due
	rolls      uint64
	rowBuf     []changeRow
	stageBuf   []byte // a staged file's encoding, reused (stage)

	// rollMu keeps rolls one at a time. A roll does not hold mu: batches
	// go on being staged while it runs, into its partition too (its intent
	// fixes which staged files it covers).
	rollMu sync.Mutex
	// kick wakes the roller when a batch made a partition due by size.
	kick      chan struct{}
	stopTimer context.CancelFunc
	timerDone chan struct{}

	// stateMu guards lastErr apart from mu, so that Healthy does not wait
	// for a write in progress.
	stateMu sync.Mutex
	lastErr error
}

// dueRows is what one Kafka partition has staged.
type dueRows struct {
	since time.Time
	rows  int
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
	w := t.newWriter(out, len(rows))
	if _, err := w.Write(rows); err != nil {
		return err
	}
	return w.Close()
}

// newWriter returns a writer for a file whose first row group has rows
// rows. Each column allocates its whole page buffer up front, which costs
// more than the encoding of a file of a few hundred rows; such a file gets
// a buffer sized to its rows instead. It depends on the row count only, so
// a rewrite still produces the same bytes.
func (t *tableWriter[T]) newWriter(out io.Writer, rows int) *pq.GenericWriter[T] {
	page := min(t.pageBytes, max(minPageBytes, rows*pageBytesPerRow))
	opts := append(t.opts[:len(t.opts):len(t.opts)], pq.PageBufferSize(page))
	return pq.NewGenericWriter[T](out, opts...)
}

// New returns a sink writing under cfg.Root (zero fields take their
// defaults). It removes temporary files older than cfg.StaleTempAge that a
// crash left under the root, remembers what is staged, and starts the roll
// timer. It fails with ErrTreeLocked while `cohortsync parquet compact`
// rewrites the tree.
func New(cfg Config, opts Options) (*Sink, error) {
	return open(cfg, opts, nil)
}

// open is New; held, when not nil, is the tree's lock taken by the caller
// (a compaction, which holds it exclusive).
func open(cfg Config, opts Options, held *treeLock) (*Sink, error) {
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
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	if err := MkdirAllSync(fsys, cfg.Root); err != nil {
		return nil, fmt.Errorf("parquet sink: %w", err)
	}
	lock := held
	if lock == nil {
		var err error
		if lock, err = lockTree(cfg.Root, false); err != nil {
			return nil, fmt.Errorf("parquet sink: %w", err)
		}
	}
	// A lock the caller holds is the caller's to release.
	release := func() {
		if held == nil {
			lock.release()
		}
	}
	if cfg.StaleTempAge > 0 {
		n, err := sweepTemp(fsys, cfg.Root, cfg.StaleTempAge, time.Now())
		if err != nil {
			release()
			return nil, fmt.Errorf("parquet sink: %w", err)
		}
		if n > 0 {
			log.Info("removed temporary files left by an interrupted write", "count", n, "root", cfg.Root)
		}
	}
	s := &Sink{cfg: cfg, fs: fsys, log: log, now: now, seen: newSeenIndex(cfg.Root), due: map[int32]*dueRows{}, snapshotsOnly: opts.SnapshotsOnly}
	if held == nil {
		s.lock = lock
	}
	codec, err := newZstdCodec()
	if err != nil {
		release()
		return nil, fmt.Errorf("parquet sink: %w", err)
	}
	s.codec = codec
	fail := func(err error) (*Sink, error) {
		_ = codec.close()
		release()
		return nil, fmt.Errorf("parquet sink: %w", err)
	}
	if err := s.setupWriters(); err != nil {
		return fail(err)
	}
	if !s.snapshotsOnly {
		if err := s.recoverStaging(); err != nil {
			return fail(fmt.Errorf("read the staging area: %w", err))
		}
	}
	if s.m, err = newMetrics(reg); err != nil {
		return fail(fmt.Errorf("metrics: %w", err))
	}
	s.m.staged.Set(float64(s.stagedRows))
	ctx, cancel := context.WithCancel(context.Background())
	s.stopTimer, s.timerDone, s.kick = cancel, make(chan struct{}), make(chan struct{}, 1)
	go s.rollTimer(ctx)
	return s, nil
}

// setupWriters configures the writers of every table from s.cfg and s.codec.
func (s *Sink) setupWriters() error {
	common := []pq.WriterOption{
		pq.Compression(s.codec),
		pq.DictionaryMaxBytes(s.cfg.DictionaryMaxBytes),
		pq.MaxRowsPerRowGroup(s.cfg.MaxRowsPerRowGroup),
		// The default names parquet-go's build; a fixed value keeps a
		// rewritten file byte-identical whatever binary rewrites it.
		pq.CreatedBy("cohortsync", FormatVersion, "parquet-go"),
		pq.KeyValueMetadata("cohortsync.format_version", FormatVersion),
	}
	// The sorting columns are metadata only: the roll orders the rows.
	s.changes.pageBytes, s.dataPoints.pageBytes = s.cfg.PageBufferBytes, s.cfg.PageBufferBytes
	s.changes.opts = append(slices.Clone(common),
		pq.KeyValueMetadata("cohortsync.table", tableChanges),
		pq.SortingWriterConfig(pq.SortingColumns(
			pq.Ascending("partner"), pq.Ascending("cohort_id"), pq.Ascending("user_id"), pq.Ascending("version"))),
	)
	s.dataPoints.opts = append(slices.Clone(common),
		pq.KeyValueMetadata("cohortsync.table", tableDataPoints),
		pq.SortingWriterConfig(pq.SortingColumns(
			pq.Ascending("partner"), pq.Ascending("cohort_id"), pq.Ascending("record_id"), pq.Ascending("position"))),
	)
	s.snapshots.opts = append(slices.Clone(common),
		pq.KeyValueMetadata("cohortsync.table", tableSnapshots),
		pq.PageBufferSize(s.cfg.PageBufferBytes),
		pq.SortingWriterConfig(pq.SortingColumns(pq.Ascending("user_id"))),
	)
	// NewGenericWriter panics on a bad configuration; check it here instead.
	for _, o := range [][]pq.WriterOption{s.changes.opts, s.dataPoints.opts, s.snapshots.opts} {
		if _, err := pq.NewWriterConfig(o...); err != nil {
			return fmt.Errorf("writer configuration: %w", err)
		}
	}
	return nil
}

// Name implements pipeline.Sink.
func (s *Sink) Name() string { return "parquet" }

// Root is the directory the sink writes under.
func (s *Sink) Root() string { return s.cfg.Root }

// closeRollTimeout bounds the roll Close does, so that a large stage or a
// stuck disk cannot hold a shutdown past a pod's grace period: what is not
// rolled stays staged, durable, and is rolled after the next start. Callers
// that want everything in the trees (a backfill's end, compact) Flush first.
const closeRollTimeout = 20 * time.Second

// Close waits for a write in progress, rolls what is staged into the trees
// (for at most closeRollTimeout), and refuses later writes. Every
// successful write is durable already; what is not rolled here stays staged
// for the next start, and Close reports it.
func (s *Sink) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.stopTimer()
	<-s.timerDone
	ctx, cancel := context.WithTimeout(context.Background(), closeRollTimeout)
	defer cancel()
	rollErr := s.rollDue(ctx, true)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m.unregister()
	var errs []error
	if rollErr != nil {
		errs = append(errs, fmt.Errorf("roll at close (rows stay staged for the next start): %w", rollErr))
	}
	if err := s.codec.close(); err != nil {
		errs = append(errs, err)
	}
	s.lock.release()
	if err := errors.Join(errs...); err != nil {
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

// Write implements pipeline.Sink: it stages out's new rows and returns once
// they are durable; rows the trees already hold are skipped. A batch whose
// rows lie outside out.Positions is refused.
func (s *Sink) Write(ctx context.Context, out *pipeline.Output) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if s.snapshotsOnly {
		return fmt.Errorf("parquet sink: %w", inputError{errors.New("opened for snapshots only: batches go through the server")})
	}
	start := time.Now()
	err := s.write(ctx, out)
	s.m.duration.Observe(time.Since(start).Seconds())
	s.record(ctx, err, "batch not written")
	if err != nil {
		return fmt.Errorf("parquet sink: %w", err)
	}
	return nil
}

// Flush rolls everything staged into the trees now, for a backfill that
// wants its files in place when it ends, and for tests.
func (s *Sink) Flush(ctx context.Context) error {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return ErrClosed
	}
	err := s.rollDue(ctx, true)
	s.record(ctx, err, "roll failed")
	if err != nil {
		return fmt.Errorf("parquet sink: %w", err)
	}
	return nil
}

// record keeps the health state and counts an error by reason.
func (s *Sink) record(ctx context.Context, err error, msg string) {
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
		s.log.LogAttrs(ctx, slog.LevelError, msg, slog.String("reason", reason), slog.Any("error", err))
	}
}

func (s *Sink) rollFailed(ctx context.Context, err error) {
	s.m.rollErrors.Inc()
	s.log.LogAttrs(ctx, slog.LevelError, "roll failed; the rows stay staged and the roll is tried again",
		slog.String("reason", classify(err)), slog.Any("error", err))
}

// rollTimerTick is how often the timer looks for staged rows past
// RollInterval; a tenth of the interval, within bounds.
func (s *Sink) rollTimerTick() time.Duration {
	return min(max(s.cfg.RollInterval/10, 100*time.Millisecond), 10*time.Second)
}

func (s *Sink) rollTimer(ctx context.Context) {
	defer close(s.timerDone)
	t := time.NewTicker(s.rollTimerTick())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.kick:
		}
		if err := s.rollDue(ctx, false); err != nil && ctx.Err() == nil {
			s.rollFailed(ctx, err)
		}
	}
}

// rollDue rolls the partitions that have RollRows rows staged or whose
// oldest staged row has waited RollInterval, or every staged partition when
// all is set. A file holds one Kafka partition's rows (as Kafka Connect's
// do), so the size is counted per partition. It runs on the roller's
// goroutine (or in Flush and Close), not in Write: a roll of a million rows
// takes seconds, which the stream does not wait for. Called without mu.
func (s *Sink) rollDue(ctx context.Context, all bool) error {
	s.mu.Lock()
	now := s.now()
	var parts []int32
	for p, d := range s.due {
		if all || d.rows >= s.cfg.RollRows || now.Sub(d.since) >= s.cfg.RollInterval {
			parts = append(parts, p)
		}
	}
	s.mu.Unlock()
	slices.Sort(parts)
	var errs []error
	for _, p := range parts {
		s.rollMu.Lock()
		started := s.now()
		n, err := s.roll(ctx, p)
		s.rollMu.Unlock()
		if err != nil {
			errs = append(errs, fmt.Errorf("roll partition %d: %w", p, err))
			continue
		}
		// Another instance may have rolled some of the partition's rows
		// (after a rebalance): what the folder still holds decides.
		st, serr := scanStage(s.stageDir(p))
		s.mu.Lock()
		if d := s.due[p]; d != nil {
			left := d.rows - n
			if serr == nil && len(st.files) == 0 && st.intent == nil {
				left = 0
			}
			s.stagedRows -= d.rows - max(left, 0)
			if left <= 0 {
				delete(s.due, p)
			} else {
				// Rows staged while the roll ran are still staged; they
				// are no older than its start.
				d.rows, d.since = left, started
			}
		}
		s.rolls++
		s.mu.Unlock()
	}
	s.mu.Lock()
	if len(s.due) == 0 {
		s.stagedRows = 0
		// Nothing is staged, so every day the index forgets can be read
		// back from the trees.
		s.seen.evict(seenDaysKept)
	}
	s.m.staged.Set(float64(s.stagedRows))
	s.mu.Unlock()
	return errors.Join(errs...)
}

// seenDaysKept is how many (workspace, landing day) entries the index keeps
// once nothing is staged: today's and yesterday's for many workspaces, or a
// backfill's recent days.
const seenDaysKept = 64

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

func (s *Sink) write(ctx context.Context, out *pipeline.Output) error {
	if out == nil || out.Changes == nil || out.Changes.NumRows() == 0 {
		return nil
	}
	if len(out.Positions) == 0 {
		return inputError{errors.New("batch has rows but no source positions")}
	}
	cols, err := columnsOf(out.Changes)
	if err != nil {
		return inputError{err}
	}
	n := int(out.Changes.NumRows())
	byPartition := map[int32][]int{}
	for i := range n {
		p, off := cols.partition[i], cols.offset[i]
		r, ok := out.Positions[int(p)]
		if !ok {
			return inputError{fmt.Errorf("row %d: partition %d is not in the batch positions", i, p)}
		}
		if off < r.First || off > r.Last {
			return inputError{fmt.Errorf("row %d: offset %d of partition %d is outside the batch range %d..%d", i, off, p, r.First, r.Last)}
		}
		byPartition[p] = append(byPartition[p], i)
	}
	for _, p := range slices.Sorted(maps.Keys(byPartition)) {
		if err := s.stagePartition(ctx, &cols, p, out.Positions[int(p)], byPartition[p]); err != nil {
			return err
		}
	}
	return nil
}

// stagePartition stages the rows of one Kafka partition of a batch that the
// trees do not hold yet.
func (s *Sink) stagePartition(ctx context.Context, cols *changeCols, p int32, r pipeline.OffsetRange, rows []int) error {
	dir := s.stageDir(p)
	st, err := scanStage(dir)
	if err != nil {
		return err
	}
	hw := st.highWater()
	if r.Last <= hw {
		s.m.skipped.WithLabelValues(skipRedelivered).Add(float64(len(rows)))
		return nil
	}
	// The resolver emits a record's rows together, so the rows come in runs
	// of one record id and offset: the record's day and what the index
	// knows of it are looked up once per run, not once per row. A record
	// landed twice within one batch comes in twice, as a second run at
	// another offset, which the index does not know yet: only such a run is
	// checked against the rows kept from the record's earlier runs.
	firstOffset := map[string]int64{}
	var (
		run     runKey
		inRun   bool
		known   []uint64 // the index's positions of run's record
		earlier []uint64 // positions kept from the record's earlier copies in this batch
	)
	kept := s.rowBuf[:0]
	redelivered, already := 0, 0
	for _, i := range rows {
		if cols.offset[i] <= hw {
			redelivered++
			continue
		}
		row := rowOf(cols, i)
		if k := (runKey{row.RecordID, row.Offset}); !inRun || k != run {
			run, inRun = k, true
			d, err := s.seen.day(seenKey{row.Workspace, dayOf(arrowTimestamp(row.ReceivedAt))}, s.rolls)
			if err != nil {
				return err
			}
			known, earlier = d.recs[row.RecordID], nil
			if off, seen := firstOffset[row.RecordID]; !seen {
				firstOffset[row.RecordID] = row.Offset
			} else if off != row.Offset {
				earlier = positionsOf(kept, row.RecordID)
			}
		}
		if hasBit(known, row.Position) || hasBit(earlier, row.Position) {
			already++
			continue
		}
		kept = append(kept, row)
	}
	// Even a batch of rows all skipped is staged (as an empty file) when it
	// moves the high-water mark, so that a later redelivery is skipped by
	// offset on any instance.
	file := stagedFile{first: max(r.First, hw+1), last: r.Last}
	nb, err := s.stage(ctx, dir, file, kept)
	if err == nil {
		// Durable: the index may say so now. Every day was read in above.
		s.seen.addRows(kept)
	}
	clear(kept)
	s.rowBuf = kept
	if err != nil {
		return err
	}
	d := s.due[p]
	if d == nil {
		d = &dueRows{since: s.now()}
		s.due[p] = d
	}
	d.rows += len(kept)
	s.stagedRows += len(kept)
	if d.rows >= s.cfg.RollRows {
		select {
		case s.kick <- struct{}{}:
		default: // the roller is awake already
		}
	}
	s.m.staged.Set(float64(s.stagedRows))
	s.m.skipped.WithLabelValues(skipRedelivered).Add(float64(redelivered))
	s.m.skipped.WithLabelValues(skipAlreadyWritten).Add(float64(already))
	s.m.stagedFiles.Inc()
	s.m.stagedBytes.Add(float64(nb))
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

// maxPartitionValue bounds an escaped partition value, so that a folder name
// (with its "cohort_id=" prefix) stays within the 255 bytes file systems
// allow, whatever the partner sent as an id.
const maxPartitionValue = 200

// escapePartitionValue escapes a Hive partition value the way Hive and
// Spark do, so that they (and DuckDB) read the value back and a value can
// never add a path level. The empty value has Hive's special name. A value
// whose escaped form is longer than maxPartitionValue keeps a prefix and
// gets "~" and 16 hex digits of its SHA-256: still one folder per value,
// and the full value is in the files' columns. '~' is escaped in values, so
// a cut name never equals a whole one.
func escapePartitionValue(v string) string {
	if v == "" {
		return "__HIVE_DEFAULT_PARTITION__"
	}
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c < 0x20 || c == 0x7f || strings.IndexByte(`"#%'*/:=?\{[]^~`, c) >= 0 {
			fmt.Fprintf(&b, "%%%02X", c)
			continue
		}
		b.WriteByte(c)
	}
	out := b.String()
	if len(out) <= maxPartitionValue {
		return out
	}
	cut := maxPartitionValue - 17
	// Do not cut an escape in two.
	if i := strings.LastIndexByte(out[:cut], '%'); i >= cut-2 {
		cut = i
	}
	sum := sha256.Sum256([]byte(v))
	return out[:cut] + "~" + hex.EncodeToString(sum[:8])
}
