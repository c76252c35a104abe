package files

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	pq "github.com/parquet-go/parquet-go"

	"github.com/cohortsync/cohortsync/schemas"
)

// Parquet files in the changes/ layout of sinks/parquet hold one row per
// resolved id, sorted by (partner, cohort_id, user_id, version): the rows of
// one landed record are scattered over the file. Rebuilding a record takes
// two passes:
//
//  1. record_id, partition and offset of every row: how many records there
//     are, which row of the file is each one's last, and their order.
//  2. the rows, read in order; a record is rebuilt once its last row is
//     read, and handed out in the order of the original log (partition,
//     offset), which keeps one cohort's records in the order the stream
//     applied them.
//
// Memory: pass 1 keeps a few dozen bytes per record of the file. Pass 2
// keeps the ids of the records read in part, and of complete records
// waiting for an earlier one: at worst the whole file for a sink-written
// one (sorted by user), at best a read buffer for a file in record order.
// Either way it is bounded by one file, and the sink bounds its files by
// the batch it wrote them from; many files read one after the other do
// not add up.
//
// Record ids: rows carry (record_id, position), which identify a data
// point across replays (the sinks replace on them). Positions count every
// id of the original record, the ones identity resolution refused
// included, and only resolved ids have rows. When a record's positions are
// exactly 0..n-1, the rebuilt record numbers its ids the same way, so it
// keeps its original id: replaying it rewrites the same data points, and
// is idempotent with the live path. When positions have gaps (refused ids)
// or repeats, the rebuilt record numbers its ids 0..n-1 anew, and under the
// original id those positions would name other ids' data points; such a
// record gets a new id derived from the original id and its rows, so that
// it is still the same on every run.

// Columns read, in the order of the cursors of each pass.
var (
	pass1Columns = []string{"record_id", "partition", "offset"}
	pass2Columns = []string{"record_id", "workspace", "partner", "cohort_id", "event_time", "received_at",
		"id_kind", "id_value", "is_member", "position"}
)

// Indexes into pass1Columns and pass2Columns.
const (
	p1RecordID = iota
	p1Partition
	p1Offset
)

const (
	p2RecordID = iota
	p2Workspace
	p2Partner
	p2CohortID
	p2EventTime
	p2ReceivedAt
	p2IDKind
	p2IDValue
	p2IsMember
	p2Position
)

// requiredColumns are the changes/ columns read, with the physical kinds
// accepted: is_member is BOOLEAN from format 2 on and was UINT_8 (INT32)
// in format 1, and trees of either are read.
var requiredColumns = map[string][]pq.Kind{
	"workspace": {pq.ByteArray}, "partner": {pq.ByteArray}, "cohort_id": {pq.ByteArray},
	"id_kind": {pq.ByteArray}, "id_value": {pq.ByteArray}, "record_id": {pq.ByteArray},
	"is_member": {pq.Boolean, pq.Int32}, "position": {pq.Int32}, "event_time": {pq.Int64},
	"received_at": {pq.Int64}, "partition": {pq.Int32}, "offset": {pq.Int64},
}

// memberValue reads is_member of either format as 1 or 0 (or the bad
// INT32 value, which the caller refuses).
func memberValue(v pq.Value) int32 {
	if v.Kind() == pq.Boolean {
		if v.Boolean() {
			return 1
		}
		return 0
	}
	return v.Int32()
}

// pqID is one id of a record being rebuilt.
type pqID struct {
	position uint32
	member   int32
	kind     string
	value    string
}

// pqHead is what every row of a record has in common.
type pqHead struct {
	workspace, partner, cohortID string
	eventTime, receivedAt        int64
}

// pqRecord is a record of the file: what pass 1 learnt, and the rows pass
// 2 has gathered so far.
type pqRecord struct {
	id        string
	partition int32
	offset    int64
	firstRow  int64 // 0-based
	lastRow   int64
	started   bool
	head      pqHead // from the first row read
	ids       []pqID
	// bad is the first inconsistency found between the rows.
	bad error
}

type parquetState struct {
	comp  compression
	src   io.Reader // the file, for a compressed one
	file  *os.File  // what is read: the file, or its decompressed copy
	pf    *pq.File
	rows  int64
	ready bool
	recs  []pqRecord
	index map[string]int32
	order []int32
	next  int
	// pass 2 position: the row group being read and its column cursors.
	group int
	cols  *columnCursors
	read  int64
	eof   bool
}

func (r *Reader) openParquet(comp compression, src io.Reader) error {
	r.pq = &parquetState{comp: comp, src: src, file: r.file}
	return nil
}

// prepareParquet decompresses (if needed), opens and plans the file.
func (r *Reader) prepareParquet(ctx context.Context) error {
	s := r.pq
	size := r.size
	if s.comp != compressionNone {
		n, err := r.decompressParquet(ctx)
		if err != nil {
			return err
		}
		size = n
	}
	err := guard(func() error {
		pf, err := pq.OpenFile(s.file, size, pq.SkipPageIndex(true), pq.SkipBloomFilters(true))
		if err != nil {
			return err
		}
		s.pf = pf
		return nil
	})
	if err != nil {
		return fmt.Errorf("files: %s: not a readable Parquet file: %w", r.path, err)
	}
	if err := checkSchema(s.pf.Schema()); err != nil {
		return fmt.Errorf("files: %s: not in the changes/ layout: %w", r.path, err)
	}
	s.rows = s.pf.NumRows()
	if err := r.planParquet(ctx); err != nil {
		return err
	}
	r.closers = append(r.closers, func() error {
		if s.cols != nil {
			return s.cols.close()
		}
		return nil
	})
	s.ready = true
	return nil
}

// checkSchema makes sure the file has the columns read, of the right kind.
func checkSchema(sch *pq.Schema) error {
	var errs []error
	names := make([]string, 0, len(requiredColumns))
	for name := range requiredColumns {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		leaf, ok := sch.Lookup(name)
		if !ok {
			errs = append(errs, fmt.Errorf("column %s is missing", name))
			continue
		}
		if k := leaf.Node.Type().Kind(); !slices.Contains(requiredColumns[name], k) {
			errs = append(errs, fmt.Errorf("column %s is %s, want %s", name, k, requiredColumns[name][0]))
		}
		if leaf.MaxRepetitionLevel != 0 {
			errs = append(errs, fmt.Errorf("column %s is repeated", name))
		}
	}
	return errors.Join(errs...)
}

// decompressParquet copies a compressed file to a temporary file, which
// Parquet's random access needs, and returns its size. Close removes it.
func (r *Reader) decompressParquet(ctx context.Context) (int64, error) {
	s := r.pq
	var src io.Reader
	switch s.comp {
	case compressionGzip:
		zr, err := gzip.NewReader(s.src)
		if err != nil {
			return 0, fmt.Errorf("files: %s: gzip: %w", r.path, err)
		}
		defer zr.Close()
		src = zr
	default:
		zr, err := zstd.NewReader(s.src)
		if err != nil {
			return 0, fmt.Errorf("files: %s: zstd: %w", r.path, err)
		}
		defer zr.Close()
		src = zr
	}
	tmp, err := os.CreateTemp(r.opts.TempDir, ".cohortsync-backfill-*.parquet")
	if err != nil {
		return 0, fmt.Errorf("files: %s: decompress: %w", r.path, err)
	}
	name := tmp.Name()
	r.closers = append(r.closers, func() error {
		err := tmp.Close()
		if rmErr := os.Remove(name); rmErr != nil && !errors.Is(rmErr, os.ErrNotExist) {
			err = errors.Join(err, rmErr)
		}
		return err
	})
	bw := bufio.NewWriterSize(tmp, readBufferBytes)
	n, err := io.Copy(bw, &ctxReader{ctx: ctx, r: src})
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		return 0, fmt.Errorf("files: %s: decompress to %s: %w", r.path, name, err)
	}
	s.file = tmp
	return n, nil
}

// planParquet is pass 1.
func (r *Reader) planParquet(ctx context.Context) error {
	s := r.pq
	s.index = map[string]int32{}
	var row int64
	for g := range s.pf.RowGroups() {
		cols, err := r.openColumns(g, pass1Columns)
		if err != nil {
			return err
		}
		for {
			if err := ctx.Err(); err != nil {
				_ = cols.close()
				return err
			}
			vals, n, err := cols.next()
			if err == io.EOF {
				break
			}
			if err != nil {
				_ = cols.close()
				return fmt.Errorf("files: %s: read row %d: %w", r.path, row+1, err)
			}
			for k := range n {
				id := vals[p1RecordID][k].ByteArray()
				part, off := vals[p1Partition][k].Int32(), vals[p1Offset][k].Int64()
				// The conversion in a map index does not allocate.
				i, ok := s.index[string(id)]
				if !ok {
					i = int32(len(s.recs))
					s.index[string(id)] = i
					s.recs = append(s.recs, pqRecord{id: string(id), partition: part, offset: off, firstRow: row})
				}
				rec := &s.recs[i]
				rec.lastRow = row
				if rec.bad == nil && (rec.partition != part || rec.offset != off) {
					rec.bad = fmt.Errorf("rows of record %q disagree on their source position", clip(rec.id))
				}
				row++
			}
			cols.advance(n)
		}
		if err := cols.close(); err != nil {
			return fmt.Errorf("files: %s: %w", r.path, err)
		}
	}
	if row != s.rows {
		return fmt.Errorf("files: %s: read %d rows, the footer says %d", r.path, row, s.rows)
	}
	s.order = make([]int32, len(s.recs))
	for i := range s.order {
		s.order[i] = int32(i)
	}
	slices.SortFunc(s.order, func(a, b int32) int {
		x, y := &s.recs[a], &s.recs[b]
		return cmp.Or(cmp.Compare(x.partition, y.partition), cmp.Compare(x.offset, y.offset),
			strings.Compare(x.id, y.id))
	})
	return nil
}

// nextParquet is pass 2.
func (r *Reader) nextParquet(ctx context.Context) (Item, error) {
	s := r.pq
	if !s.ready {
		if err := r.prepareParquet(ctx); err != nil {
			return Item{}, err
		}
	}
	for {
		if s.next < len(s.order) {
			i := s.order[s.next]
			if s.recs[i].lastRow < s.read {
				s.next++
				return r.buildRecord(&s.recs[i])
			}
		}
		if s.eof {
			if s.next < len(s.order) {
				return Item{}, fmt.Errorf("files: %s: record %q was not complete at the end of the file", r.path, clip(s.recs[s.order[s.next]].id))
			}
			return Item{}, io.EOF
		}
		if err := ctx.Err(); err != nil {
			return Item{}, err
		}
		if err := r.readRows(); err != nil {
			return Item{}, err
		}
		if s.rows > 0 {
			// Monotonic: decompressing a copy already counted its input.
			if v := int64(float64(r.size) * float64(s.read) / float64(s.rows)); v > r.done.Load() {
				r.done.Store(v)
			}
		}
	}
}

// readRows gathers the rows of one page (of the column whose page ends
// first), moving on to the next row group at the end of one.
func (r *Reader) readRows() error {
	s := r.pq
	for s.cols == nil {
		if s.group == len(s.pf.RowGroups()) {
			s.eof = true
			return nil
		}
		cols, err := r.openColumns(s.group, pass2Columns)
		if err != nil {
			return err
		}
		s.cols = cols
		s.group++
	}
	vals, n, err := s.cols.next()
	if err == io.EOF {
		err = s.cols.close()
		s.cols = nil
		if err != nil {
			return fmt.Errorf("files: %s: %w", r.path, err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("files: %s: read row %d: %w", r.path, s.read+1, err)
	}
	for k := range n {
		if err := r.gatherRow(vals, k); err != nil {
			return err
		}
	}
	s.cols.advance(n)
	s.read += int64(n)
	return nil
}

// gatherRow adds row k of vals to its record, keeping only what differs
// from row to row of a record.
func (r *Reader) gatherRow(vals [][]pq.Value, k int) error {
	s := r.pq
	i, ok := s.index[string(vals[p2RecordID][k].ByteArray())]
	if !ok {
		// Pass 1 saw every record id; a new one means the file changed.
		return fmt.Errorf("files: %s: a record appeared between two reads: the file changed", r.path)
	}
	rec := &s.recs[i]
	ws, partner, cohort := vals[p2Workspace][k].ByteArray(), vals[p2Partner][k].ByteArray(), vals[p2CohortID][k].ByteArray()
	event, received := vals[p2EventTime][k].Int64(), vals[p2ReceivedAt][k].Int64()
	if !rec.started {
		rec.started = true
		rec.head = pqHead{workspace: string(ws), partner: string(partner), cohortID: string(cohort), eventTime: event, receivedAt: received}
	} else if rec.bad == nil {
		h := &rec.head
		if h.workspace != string(ws) || h.partner != string(partner) || h.cohortID != string(cohort) ||
			h.eventTime != event || h.receivedAt != received {
			rec.bad = fmt.Errorf("rows of record %q disagree on workspace, partner, cohort_id, event_time or received_at", clip(rec.id))
		}
	}
	if rec.bad != nil {
		return nil
	}
	var kind string
	switch b := vals[p2IDKind][k].ByteArray(); string(b) {
	case schemas.IDKindExternalID:
		kind = schemas.IDKindExternalID
	case schemas.IDKindDeviceID:
		kind = schemas.IDKindDeviceID
	case schemas.IDKindAlias:
		kind = schemas.IDKindAlias
	default:
		kind = clip(string(b))
	}
	rec.ids = append(rec.ids, pqID{
		position: uint32(vals[p2Position][k].Int32()),
		member:   memberValue(vals[p2IsMember][k]),
		kind:     kind,
		value:    string(vals[p2IDValue][k].ByteArray()),
	})
	return nil
}

// buildRecord rebuilds the envelope of a complete record and frees its rows.
func (r *Reader) buildRecord(rec *pqRecord) (Item, error) {
	line := rec.firstRow + 1
	ids := rec.ids
	rec.ids = nil
	if rec.bad != nil {
		return Item{}, r.lineError(line, rec.bad)
	}
	if rec.id == "" {
		return Item{}, r.lineError(line, errors.New("record_id is empty"))
	}
	slices.SortStableFunc(ids, func(a, b pqID) int { return cmp.Compare(a.position, b.position) })
	h := rec.head
	var changes []schemas.Change
	rank := 0
	contiguous := true
	for k, id := range ids {
		if id.position != uint32(k) {
			contiguous = false
		}
		if id.member > 1 {
			return Item{}, r.lineError(line, fmt.Errorf("record %q position %d: is_member %d, want 0 or 1", clip(rec.id), id.position, id.member))
		}
		remove := id.member == 0
		kr := kindRank(id.kind)
		if len(changes) == 0 || changes[len(changes)-1].ShouldRemove != remove || kr < rank {
			changes = append(changes, schemas.Change{ShouldRemove: remove})
		}
		rank = kr
		c := &changes[len(changes)-1]
		switch id.kind {
		case schemas.IDKindExternalID:
			c.UserIDs = append(c.UserIDs, id.value)
		case schemas.IDKindDeviceID:
			c.DeviceIDs = append(c.DeviceIDs, id.value)
		case schemas.IDKindAlias:
			// identity.AliasValue writes label:name; a label holds no ':'.
			label, name, ok := strings.Cut(id.value, ":")
			if !ok {
				return Item{}, r.lineError(line, fmt.Errorf("record %q position %d: alias id_value is not alias_label:alias_name", clip(rec.id), id.position))
			}
			c.Aliases = append(c.Aliases, schemas.Alias{Name: name, Label: label})
		default:
			return Item{}, r.lineError(line, fmt.Errorf("record %q position %d: id_kind %q is unknown", clip(rec.id), id.position, clip(id.kind)))
		}
	}
	e := schemas.Envelope{
		SchemaVersion: schemas.CurrentVersion,
		RecordID:      rec.id,
		Workspace:     h.workspace,
		Partner:       h.partner,
		ReceivedAt:    time.UnixMicro(h.receivedAt).UTC(),
		EventTime:     time.UnixMicro(h.eventTime).UTC(),
		Payload:       schemas.CohortChangesPayload{CohortID: h.cohortID, Changes: changes},
	}
	if !contiguous {
		r.ids.start(tagParquetPart)
		r.ids.str(rec.id)
		for _, id := range ids {
			r.ids.int(int64(id.position))
		}
		r.ids.payload(e.Payload)
		e.RecordID = r.ids.id()
	}
	return r.item(e, line)
}

// columnCursors read some columns of one row group side by side, a page
// at a time, without assembling rows: only the columns needed are decoded,
// and byte arrays are looked at in place instead of copied into strings.
type columnCursors struct {
	cursors []*columnCursor
	vals    [][]pq.Value
}

type columnCursor struct {
	pages pq.Pages
	page  pq.Page
	vals  []pq.Value // the current page's values
	pos   int
}

func (r *Reader) openColumns(group int, names []string) (*columnCursors, error) {
	s := r.pq
	rg := s.pf.RowGroups()[group]
	chunks := rg.ColumnChunks()
	cs := &columnCursors{vals: make([][]pq.Value, len(names))}
	for _, name := range names {
		leaf, _ := s.pf.Schema().Lookup(name) // checkSchema made sure it is there
		if leaf.ColumnIndex >= len(chunks) {
			_ = cs.close()
			return nil, fmt.Errorf("files: %s: row group %d has no column %s", r.path, group, name)
		}
		var pages pq.Pages
		err := guard(func() error {
			pages = chunks[leaf.ColumnIndex].Pages()
			return nil
		})
		if err != nil {
			_ = cs.close()
			return nil, fmt.Errorf("files: %s: row group %d column %s: %w", r.path, group, name, err)
		}
		cs.cursors = append(cs.cursors, &columnCursor{pages: pages})
	}
	return cs, nil
}

// next returns, for each column, the values of the same rows: as many as
// remain in the page of the column whose page ends first. io.EOF at the end
// of the row group.
func (cs *columnCursors) next() ([][]pq.Value, int, error) {
	n := -1
	eof := 0
	for i, c := range cs.cursors {
		v, err := c.avail()
		if err == io.EOF {
			eof++
			continue
		}
		if err != nil {
			return nil, 0, err
		}
		cs.vals[i] = v
		if n < 0 || len(v) < n {
			n = len(v)
		}
	}
	switch eof {
	case 0:
		return cs.vals, n, nil
	case len(cs.cursors):
		return nil, 0, io.EOF
	default:
		return nil, 0, errors.New("columns of one row group end at different rows")
	}
}

func (cs *columnCursors) advance(n int) {
	for _, c := range cs.cursors {
		c.pos += n
	}
}

func (cs *columnCursors) close() error {
	var errs []error
	for _, c := range cs.cursors {
		if c.page != nil {
			pq.Release(c.page)
			c.page = nil
		}
		errs = append(errs, c.pages.Close())
	}
	return errors.Join(errs...)
}

// avail returns the unread values of the current page, reading the next
// page when it is used up.
func (c *columnCursor) avail() ([]pq.Value, error) {
	for c.pos >= len(c.vals) {
		err := guard(func() error {
			// Every value of the page before has been used (and what is
			// kept, copied): its buffers can go back to parquet-go's pool.
			if c.page != nil {
				pq.Release(c.page)
				c.page = nil
			}
			page, err := c.pages.ReadPage()
			if err != nil {
				return err
			}
			c.page = page
			c.vals = slices.Grow(c.vals[:0], int(page.NumValues()))[:page.NumValues()]
			c.pos = 0
			vr := page.Values()
			read := 0
			for read < len(c.vals) {
				n, err := vr.ReadValues(c.vals[read:])
				read += n
				if err == io.EOF {
					break
				}
				if err != nil {
					return err
				}
				if n == 0 {
					return errors.New("page returned no values")
				}
			}
			c.vals = c.vals[:read]
			for _, v := range c.vals {
				if v.IsNull() {
					return errors.New("null value in a column that must not have any")
				}
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return c.vals[c.pos:], nil
}

// guard turns a panic of parquet-go into an error. parquet-go panics on
// some malformed input (and its reader constructors on any error); a
// backfill must report a bad file, not crash.
func guard(f func() error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("parquet: %v", p)
		}
	}()
	return f()
}

// ctxReader stops a long copy when ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
