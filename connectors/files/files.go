// Package files reads backfill files and turns them into landing envelopes
// (schemas.Envelope), the same records a partner push lands, so that a
// backfill goes through the stream's own transforms and sinks.
//
// # Formats
//
// The format follows from the file name; a .gz or .zst suffix may follow it,
// and the compression is recognised from the magic bytes in any case:
//
//   - .ndjson, .jsonl, .json: one JSON object per line, either a landing
//     envelope (it has schema_version; its record id and times are kept)
//     or a partner API body: a /cohorts body (name, created_at) or a
//     /cohorts/users body (cohort_changes), checked by the very rules of
//     the HTTP API (partnerapi.ParseCohortBody, ParseChangesBody). A body
//     may carry a top-level "event_time" (RFC 3339). Credentials in a body
//     are ignored and never logged or echoed. Blank lines are skipped.
//   - .csv with the header workspace,partner,cohort_id,id_kind,id,action,event_time.
//     Consecutive rows with the same workspace, partner, cohort, action and
//     event time become one cohort_changes envelope of at most
//     Options.MaxIDsPerRecord ids, in row order.
//   - .parquet in the changes/ layout of sinks/parquet: one envelope per
//     original record, rebuilt from its rows (see parquet.go).
//
// # Determinism
//
// A backfill must be safe to run twice, so everything an envelope holds is
// a function of the file's content: record ids of bodies and CSV groups are
// a hash of the format, workspace, partner, cohort, line number and content
// (not the path, not the clock), and their received_at is their event time:
// the line's own, else the file's modification time. Envelopes, and the
// order they come in, are the same on every read of the same file.
//
// # Errors
//
// A bad line is a *LineError from Next: the caller counts it and calls Next
// again. Any other error ends the reading.
//
// # Memory
//
// NDJSON and CSV are read line by line (a line may have up to
// Options.MaxLineBytes); memory does not grow with the file. See parquet.go
// for what a Parquet file holds in memory.
package files

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/cohortsync/cohortsync/connectors/partnerapi"
	"github.com/cohortsync/cohortsync/schemas"
)

// Defaults of Options.
const (
	// DefaultMaxIDsPerRecord is the partner API's limit per request, so a
	// CSV backfill lands records of the size the stream is used to.
	DefaultMaxIDsPerRecord = partnerapi.MaxIDsPerRequest
	// DefaultMaxLineBytes bounds one line: the largest envelope or body
	// line, and the memory one line can take.
	DefaultMaxLineBytes = 16 << 20
	// maxIDsLimit is what a record's positions can number (schemas.Version).
	maxIDsLimit = 1 << schemas.PositionBits
	// readBufferBytes is the size of the buffers between the file, the
	// decompressor and the line splitter: most lines fit in one, which
	// spares a copy.
	readBufferBytes = 256 << 10
)

// ErrNoWorkspace is returned (not as a LineError: every other body line
// would fail the same way) when a partner API body is read without
// Options.Workspace and Options.Partner, which bodies do not carry.
var ErrNoWorkspace = errors.New("partner API bodies need a workspace and a partner")

// Options configure a Reader.
type Options struct {
	// Workspace and Partner are what partner API bodies are landed under
	// (bodies carry neither), and fill empty workspace or partner cells of
	// a CSV file.
	Workspace, Partner string
	// MaxIDsPerRecord is the group size for CSV: default 1000, the API's
	// limit; at most 65536, what a record's positions can number.
	MaxIDsPerRecord int
	// MaxLineBytes is the longest line of NDJSON or CSV; a longer one is a
	// LineError. Default 16 MiB.
	MaxLineBytes int
	// TempDir is where a compressed Parquet file is decompressed to (it
	// must be read at random); empty means os.TempDir().
	TempDir string
}

func (o Options) withDefaults() (Options, error) {
	if o.MaxIDsPerRecord == 0 {
		o.MaxIDsPerRecord = DefaultMaxIDsPerRecord
	}
	if o.MaxLineBytes == 0 {
		o.MaxLineBytes = DefaultMaxLineBytes
	}
	var errs []error
	if o.MaxIDsPerRecord < 1 || o.MaxIDsPerRecord > maxIDsLimit {
		errs = append(errs, fmt.Errorf("max_ids_per_record: must be 1..%d, got %d", maxIDsLimit, o.MaxIDsPerRecord))
	}
	if o.MaxLineBytes < 1 {
		errs = append(errs, fmt.Errorf("max_line_bytes: must be positive, got %d", o.MaxLineBytes))
	}
	return o, errors.Join(errs...)
}

// Item is one envelope and where it came from.
type Item struct {
	Envelope schemas.Envelope
	// Line is the first input line (1-based) the envelope came from; for
	// Parquet, the first row (1-based, in file order) of its record.
	Line int64
}

// LineError is one bad line (or Parquet record). It is not fatal: the
// reader has moved past it and Next may be called again.
type LineError struct {
	Path string
	Line int64
	Err  error
}

func (e *LineError) Error() string { return fmt.Sprintf("%s:%d: %v", e.Path, e.Line, e.Err) }
func (e *LineError) Unwrap() error { return e.Err }

// IsLineError reports whether err is a bad line that the caller may count
// and read past.
func IsLineError(err error) bool {
	_, ok := errors.AsType[*LineError](err)
	return ok
}

type format int

const (
	formatNDJSON format = iota + 1
	formatCSV
	formatParquet
)

type compression int

const (
	compressionNone compression = iota
	compressionGzip
	compressionZstd
)

// formatOf names the format of path from its extension, ignoring a
// compression suffix.
func formatOf(path string) (format, error) {
	name := strings.ToLower(filepath.Base(path))
	for _, suffix := range []string{".gz", ".gzip", ".zst", ".zstd"} {
		if trimmed, ok := strings.CutSuffix(name, suffix); ok {
			name = trimmed
			break
		}
	}
	switch filepath.Ext(name) {
	case ".ndjson", ".jsonl", ".json":
		return formatNDJSON, nil
	case ".csv":
		return formatCSV, nil
	case ".parquet":
		return formatParquet, nil
	default:
		return 0, fmt.Errorf("%s: unknown format: want .ndjson, .jsonl, .json, .csv or .parquet, optionally followed by .gz or .zst", path)
	}
}

// sniff recognises gzip and zstd from their magic bytes, whatever the name says.
func sniff(magic []byte) compression {
	switch {
	case len(magic) >= 2 && magic[0] == 0x1f && magic[1] == 0x8b:
		return compressionGzip
	case len(magic) >= 4 && magic[0] == 0x28 && magic[1] == 0xb5 && magic[2] == 0x2f && magic[3] == 0xfd:
		return compressionZstd
	default:
		return compressionNone
	}
}

// Reader reads one file. Next and Close are not safe for concurrent use;
// Progress is, so that a progress display can poll it.
type Reader struct {
	path    string
	opts    Options
	format  format
	file    *os.File
	size    int64
	modTime time.Time
	// done is the input bytes consumed, for Progress.
	done atomic.Int64
	// closers release what reading needs besides the file, in order.
	closers []func() error
	closed  bool
	// err is a fatal error, returned again by every later Next.
	err error
	ids *idHasher

	lines *lineReader // NDJSON and CSV
	csv   *csvState
	pq    *parquetState
}

// Open opens path for reading; its format follows from the name. For CSV
// the header is read and checked here, so a wrong file fails at once.
func Open(path string, opts Options) (*Reader, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("files: invalid options: %w", err)
	}
	f, err := formatOf(path)
	if err != nil {
		return nil, fmt.Errorf("files: %w", err)
	}
	file, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("files: %w", err)
	}
	st, err := file.Stat()
	if err != nil {
		_ = file.Close()
		return nil, fmt.Errorf("files: %w", err)
	}
	if !st.Mode().IsRegular() {
		_ = file.Close()
		return nil, fmt.Errorf("files: %s: not a regular file", path)
	}
	r := &Reader{
		path: path, opts: opts, format: f, file: file,
		size: st.Size(), modTime: st.ModTime().UTC(), ids: newIDHasher(),
	}
	if err := r.open(); err != nil {
		_ = r.Close()
		return nil, fmt.Errorf("files: %s: %w", path, err)
	}
	return r, nil
}

func (r *Reader) open() error {
	counted := bufio.NewReaderSize(&countingReader{r: r.file, n: &r.done}, readBufferBytes)
	// Peek fails on a file shorter than the magic; such a file is plain.
	magic, _ := counted.Peek(4)
	comp := sniff(magic)
	if r.format == formatParquet {
		return r.openParquet(comp, counted)
	}
	var src io.Reader = counted
	switch comp {
	case compressionGzip:
		zr, err := gzip.NewReader(counted)
		if err != nil {
			return fmt.Errorf("gzip: %w", err)
		}
		r.closers = append(r.closers, zr.Close)
		src = zr
	case compressionZstd:
		// One decoder goroutine: a file is read sequentially, and the
		// backfill reads several files at once if it wants parallelism.
		zr, err := zstd.NewReader(counted, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return fmt.Errorf("zstd: %w", err)
		}
		r.closers = append(r.closers, func() error { zr.Close(); return nil })
		src = zr
	}
	r.lines = newLineReader(src, readBufferBytes, r.opts.MaxLineBytes)
	if r.format == formatCSV {
		return r.openCSV()
	}
	return nil
}

// Next returns the next envelope, a *LineError for a bad line (call Next
// again), io.EOF at the end of the file, or another error that ends the
// reading.
func (r *Reader) Next(ctx context.Context) (Item, error) {
	if r.closed {
		return Item{}, fmt.Errorf("files: %s: reader is closed", r.path)
	}
	if r.err != nil {
		return Item{}, r.err
	}
	if err := ctx.Err(); err != nil {
		return Item{}, err
	}
	var it Item
	var err error
	switch r.format {
	case formatNDJSON:
		it, err = r.nextNDJSON(ctx)
	case formatCSV:
		it, err = r.nextCSV(ctx)
	default:
		it, err = r.nextParquet(ctx)
	}
	if err != nil && err != io.EOF && !IsLineError(err) && ctx.Err() == nil {
		// Sticky, so that a caller that retries gets the cause again
		// rather than a confusing error from a reader in a broken state.
		r.err = err
	}
	return it, err
}

// lineError builds the LineError of line n.
func (r *Reader) lineError(n int64, err error) error {
	return &LineError{Path: r.path, Line: n, Err: err}
}

// item checks e before handing it out: an envelope that the stream would
// dead-letter is a bad line here.
func (r *Reader) item(e schemas.Envelope, line int64) (Item, error) {
	if err := e.Validate(); err != nil {
		return Item{}, r.lineError(line, err)
	}
	return Item{Envelope: e, Line: line}, nil
}

// Progress returns the input bytes consumed (compressed, as on disk) and
// the file size, for an ETA. For Parquet, done is the share of rows read.
func (r *Reader) Progress() (done, total int64) {
	return min(r.done.Load(), r.size), r.size
}

// Close releases the file and whatever reading it needed (a decompressed
// Parquet copy is removed). It may be called more than once.
func (r *Reader) Close() error {
	if r.closed {
		return nil
	}
	r.closed = true
	var errs []error
	for i := len(r.closers) - 1; i >= 0; i-- {
		errs = append(errs, r.closers[i]())
	}
	errs = append(errs, r.file.Close())
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("files: close %s: %w", r.path, err)
	}
	return nil
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}
