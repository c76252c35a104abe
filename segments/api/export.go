package api

import (
	"bufio"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	pq "github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/compress/zstd"

	"github.com/cohortsync/cohortsync/segments/saved"
)

// exportRowGroup is the row count after which a Parquet export flushes a
// row group, which bounds the memory one export holds.
const exportRowGroup = 256 << 10

// ExportRow is the one column of a Parquet member export.
type ExportRow struct {
	UserID string `parquet:"user_id"`
}

// memberWriter writes one export format.
type memberWriter interface {
	write(userID string) error
	close() error
}

type csvMembers struct{ w *csv.Writer }

func (c *csvMembers) write(id string) error { return c.w.Write([]string{id}) }
func (c *csvMembers) close() error          { c.w.Flush(); return c.w.Error() }

type ndjsonMembers struct {
	w   io.Writer
	buf []byte
}

func (n *ndjsonMembers) write(id string) error {
	v, err := json.Marshal(id)
	if err != nil {
		return err
	}
	n.buf = append(append(append(n.buf[:0], `{"user_id":`...), v...), "}\n"...)
	_, err = n.w.Write(n.buf)
	return err
}
func (n *ndjsonMembers) close() error { return nil }

type parquetMembers struct {
	w    *pq.GenericWriter[ExportRow]
	rows []ExportRow
}

func (p *parquetMembers) write(id string) error {
	p.rows = append(p.rows, ExportRow{UserID: id})
	if len(p.rows) < 4096 {
		return nil
	}
	return p.flushRows()
}

func (p *parquetMembers) flushRows() error {
	_, err := p.w.Write(p.rows)
	p.rows = p.rows[:0]
	return err
}

func (p *parquetMembers) close() error {
	if err := p.flushRows(); err != nil {
		return err
	}
	return p.w.Close()
}

func newMemberWriter(format string, w io.Writer) (memberWriter, string) {
	switch format {
	case "csv":
		cw := csv.NewWriter(w)
		_ = cw.Write([]string{"user_id"}) // buffered; errors surface at close
		return &csvMembers{w: cw}, "text/csv; charset=utf-8"
	case "ndjson":
		return &ndjsonMembers{w: w}, "application/x-ndjson"
	default:
		pw := pq.NewGenericWriter[ExportRow](w, pq.Compression(&zstd.Codec{}), pq.MaxRowsPerRowGroup(exportRowGroup))
		return &parquetMembers{w: pw}, "application/vnd.apache.parquet"
	}
}

// lazyHeader sends the success headers with the first byte of the body, so
// that an engine error before any member still gets a proper error status.
type lazyHeader struct {
	w           http.ResponseWriter
	contentType string
	filename    string
	started     bool
}

func (l *lazyHeader) Write(b []byte) (int, error) {
	if !l.started {
		l.started = true
		h := l.w.Header()
		h.Set("Content-Type", l.contentType)
		h.Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", l.filename))
		h.Set("Cache-Control", "no-store")
		l.w.WriteHeader(http.StatusOK)
	}
	return l.w.Write(b)
}

// exportMembers streams every member of seg. The body is buffered, so an
// error that comes before the first 64 KiB is answered with an error
// status; one after that can only cut the connection.
func (a *API) exportMembers(w http.ResponseWriter, r *http.Request, ws string, seg saved.Segment, format string, asOf time.Time) {
	// An export of millions of members outlives the server's write timeout.
	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Now().Add(a.export))
	ctx, cancel := context.WithTimeout(r.Context(), a.export)
	defer cancel()

	started := time.Now()
	lazy := &lazyHeader{w: w, filename: fmt.Sprintf("segment-%s.%s", seg.ID, format)}
	buf := bufio.NewWriterSize(lazy, 64<<10)
	mw, ctype := newMemberWriter(format, buf)
	lazy.contentType = ctype
	var n int64
	err := a.engine.Export(ctx, ws, seg.Filter, asOf, func(id string) error {
		n++
		return mw.write(id)
	})
	if err == nil {
		err = mw.close()
	}
	if err == nil {
		err = buf.Flush()
	}
	a.metrics.exported.WithLabelValues(format).Add(float64(n))
	if err == nil {
		if !lazy.started {
			// Nothing was written at all (cannot happen with a header row
			// or a footer, but an empty body must still say what it is).
			_, _ = lazy.Write(nil)
		}
		a.log.InfoContext(r.Context(), "segment exported", "workspace", ws, "segment_id", seg.ID, "format", format,
			"members", n, "took", time.Since(started).Round(time.Millisecond))
		return
	}
	if !lazy.started {
		a.engineError(w, r, "export", err)
		return
	}
	a.log.ErrorContext(r.Context(), "segment export failed after it started; cutting the connection", "workspace", ws,
		"segment_id", seg.ID, "format", format, "members_sent", n, "error", err)
	// A cut connection is the only way to tell a client that the 200 it
	// got holds a partial file; ending the body normally would pass a
	// truncated CSV off as complete.
	cutConnection(rc, a.log)
}

// cutConnection closes the connection under a response already under way,
// without the end of its chunked body, so the client reads an unexpected
// EOF. Hijack flushes what was written first.
func cutConnection(rc *http.ResponseController, log *slog.Logger) {
	conn, _, err := rc.Hijack()
	if err != nil {
		// Only HTTP/2, which this server does not speak, cannot be hijacked.
		log.Error("cannot cut the connection of a failed export", "error", err)
		return
	}
	if err := conn.Close(); err != nil {
		log.Warn("close the connection of a failed export", "error", err)
	}
}
