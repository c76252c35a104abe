package identities

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	kafkago "github.com/segmentio/kafka-go"

	"github.com/cohortsync/cohortsync/kafka"
	"github.com/cohortsync/cohortsync/stores/keys"
)

// ErrInvalidWorkspace is returned for a workspace name that keys.ValidWorkspace refuses.
var ErrInvalidWorkspace = errors.New("identities: invalid workspace")

const (
	// A load writes this many records (or bytes) per WriteMessages call and
	// waits for their acks before reading on, which bounds its memory
	// whatever the size of the input. Each call is a produce, and an fsync
	// on the embedded broker, per partition it touches: at 500 records over
	// 12 partitions those fsyncs held a load to about 35k users/s, at 10,000
	// it lands about 115k/s (docs/PERFORMANCE.md).
	loadBatchRecords = 10_000
	loadBatchBytes   = 4 << 20
	// recordFraming is room, beyond the line itself, that the topic value
	// (version, workspace) and the Kafka batch framing need.
	recordFraming = 4 << 10
)

// LineError is an NDJSON line that was not landed, with its 1-based number.
type LineError struct {
	Line  int64  `json:"line"`
	Error string `json:"error"`
}

// LoadStats counts the lines of a load. Blank lines are skipped and counted
// nowhere, so Lines == Accepted + Rejected once a load has finished.
type LoadStats struct {
	Lines    int64
	Accepted int64
	Rejected int64
}

// Loader lands NDJSON identity records on the identities topic. It is safe
// for concurrent use.
type Loader struct {
	w           *kafkago.Writer
	maxLine     int
	landTimeout time.Duration
	m           *loaderMetrics
}

// NewLoader returns a Loader writing to the client's identities topic with
// acks from every in-sync replica. Its metrics go to reg (nil: not registered).
func NewLoader(client *kafka.Client, cfg Config, reg prometheus.Registerer) (*Loader, error) {
	if client == nil {
		return nil, errors.New("identities: loader: nil kafka client")
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("identities: loader: %w", err)
	}
	kc := client.Config()
	if kc.Topics.Identities == "" {
		return nil, errors.New("identities: loader: no identities topic configured")
	}
	if cfg.MaxLineBytes+recordFraming > kc.MaxMessageBytes {
		return nil, fmt.Errorf("identities: loader: max_line_bytes %d does not fit kafka.max_message_bytes %d with %d bytes of framing",
			cfg.MaxLineBytes, kc.MaxMessageBytes, recordFraming)
	}
	l := &Loader{w: client.Writer(kc.Topics.Identities), maxLine: cfg.MaxLineBytes, landTimeout: cfg.LandTimeout, m: newLoaderMetrics()}
	if err := l.m.register(reg); err != nil {
		_ = l.w.Close()
		return nil, fmt.Errorf("identities: loader: %w", err)
	}
	return l, nil
}

// Close flushes and closes the writer and unregisters the metrics.
func (l *Loader) Close() error {
	l.m.Unregister()
	if err := l.w.Close(); err != nil {
		return fmt.Errorf("identities: close loader: %w", err)
	}
	return nil
}

// Load reads NDJSON identity records from r, one per line, and lands the
// valid ones in workspace. Each invalid line is passed to onReject (which
// may be nil) and the load goes on. Load reads r as a stream and keeps at
// most one batch in memory.
//
// Accepted counts only records whose batch was acknowledged. On an error
// (Kafka unavailable, ctx done, r failing) the load stops: records of the
// failed batch may or may not have landed. Loading the same input again is
// safe, because a record replaces the previous record of its user.
func (l *Loader) Load(ctx context.Context, workspace string, r io.Reader, onReject func(LineError)) (LoadStats, error) {
	var st LoadStats
	if !keys.ValidWorkspace(workspace) {
		return st, fmt.Errorf("%w: %q", ErrInvalidWorkspace, truncate(workspace))
	}
	reject := func(line int64, msg string) {
		st.Rejected++
		l.m.lines.WithLabelValues("rejected").Inc()
		if onReject != nil {
			onReject(LineError{Line: line, Error: msg})
		}
	}
	batch := make([]kafkago.Message, 0, loadBatchRecords)
	var batchBytes int
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		wctx, cancel := context.WithTimeout(ctx, l.landTimeout)
		err := l.w.WriteMessages(wctx, batch...)
		cancel()
		if err != nil {
			return fmt.Errorf("identities: land %d records on %s: %w", len(batch), l.w.Topic, err)
		}
		st.Accepted += int64(len(batch))
		l.m.lines.WithLabelValues("landed").Add(float64(len(batch)))
		clear(batch)
		batch, batchBytes = batch[:0], 0
		return nil
	}
	lr := newLineReader(r, l.maxLine)
	for {
		line, tooLong, err := lr.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return st, fmt.Errorf("identities: read line %d: %w", lr.line+1, err)
		}
		if !tooLong && len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		st.Lines++
		if tooLong {
			reject(lr.line, fmt.Sprintf("line longer than %d bytes", l.maxLine))
			continue
		}
		rec, err := ParseLine(line)
		if err != nil {
			reject(lr.line, oneLine(err))
			continue
		}
		val, err := EncodeValue(workspace, rec)
		if err != nil {
			reject(lr.line, oneLine(err))
			continue
		}
		batch = append(batch, kafkago.Message{Key: MessageKey(workspace, rec.UserID), Value: val})
		batchBytes += len(val)
		if len(batch) >= loadBatchRecords || batchBytes >= loadBatchBytes {
			if err := flush(); err != nil {
				return st, err
			}
		}
	}
	if err := flush(); err != nil {
		return st, err
	}
	return st, nil
}

// oneLine joins the lines of a multi-error, for an answer that is one JSON string.
func oneLine(err error) string { return strings.ReplaceAll(err.Error(), "\n", "; ") }

// lineReader splits a stream into lines of at most max bytes without ever
// holding more than one line: a longer line is skipped and reported.
type lineReader struct {
	br   *bufio.Reader
	max  int
	line int64 // number of the line last returned, 1-based
}

func newLineReader(r io.Reader, limit int) *lineReader {
	// Room for the line, "\r\n", and one byte to tell "too long" apart.
	return &lineReader{br: bufio.NewReaderSize(r, limit+3), max: limit}
}

// next returns the next line without its line ending. The slice is valid
// until the following call. tooLong reports a line over the limit, whose
// content is dropped. At the end of the stream it returns io.EOF.
func (lr *lineReader) next() (line []byte, tooLong bool, err error) {
	s, err := lr.br.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		for errors.Is(err, bufio.ErrBufferFull) {
			_, err = lr.br.ReadSlice('\n')
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, false, err
		}
		lr.line++
		return nil, true, nil
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, false, err
	}
	if errors.Is(err, io.EOF) && len(s) == 0 {
		return nil, false, io.EOF
	}
	lr.line++
	s = bytes.TrimSuffix(s, []byte("\n"))
	s = bytes.TrimSuffix(s, []byte("\r"))
	if len(s) > lr.max {
		return nil, true, nil
	}
	return s, false, nil
}
