package state

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	bolt "go.etcd.io/bbolt"

	"github.com/cohortsync/cohortsync/pipeline"
	"github.com/cohortsync/cohortsync/schemas"
)

// Write stores one batch in one transaction and returns once it is fsynced.
// Writing the same Output again changes nothing.
func (s *Store) Write(ctx context.Context, out *pipeline.Output) error {
	start := time.Now()
	err := s.write(ctx, out)
	s.m.writeDuration.Observe(time.Since(start).Seconds())
	s.measureFile()
	if err != nil {
		s.m.writeErrors.Inc()
		return fmt.Errorf("state: write: %w", err)
	}
	return nil
}

func (s *Store) write(ctx context.Context, out *pipeline.Output) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.closed.Load() {
		return pipeline.ErrSinkClosed
	}
	if out == nil {
		return nil
	}
	cols, err := readColumns(out.Changes)
	if err != nil {
		return err
	}
	w := &batchWriter{ctx: ctx, cols: cols, out: out, effective: make([]bool, cols.n),
		fresh: make([]bool, cols.n), appliedRow: make([]bool, cols.n)}
	w.sortRows()
	if err := s.db.Update(w.run); err != nil {
		return err
	}
	s.m.changes.WithLabelValues(resultApplied).Add(float64(w.applied))
	s.m.changes.WithLabelValues(resultStale).Add(float64(w.stale))
	s.m.points.WithLabelValues(resultNew).Add(float64(w.newPoints))
	s.m.points.WithLabelValues(resultReplayed).Add(float64(w.replayed))
	return nil
}

// changeCols are the columns of a ChangesSchema batch the store reads.
type changeCols struct {
	n                              int
	ws, partner, cohort, user, rid *array.String
	member                         *array.Uint8
	version                        *array.Uint64
	pos                            *array.Uint32
	event, received                *array.Timestamp
}

func readColumns(rec arrow.RecordBatch) (changeCols, error) {
	if rec == nil || rec.NumRows() == 0 {
		return changeCols{}, nil
	}
	if !rec.Schema().Equal(schemas.ChangesSchema) {
		return changeCols{}, fmt.Errorf("changes batch does not have schemas.ChangesSchema: %s", rec.Schema())
	}
	for i, col := range rec.Columns() {
		if col.NullN() > 0 {
			return changeCols{}, fmt.Errorf("column %s has %d nulls", rec.Schema().Field(i).Name, col.NullN())
		}
	}
	var bad []string
	str := func(i int) *array.String {
		a, ok := rec.Column(i).(*array.String)
		if !ok {
			bad = append(bad, rec.Schema().Field(i).Name)
		}
		return a
	}
	c := changeCols{
		n:       int(rec.NumRows()),
		ws:      str(schemas.ColWorkspace),
		partner: str(schemas.ColPartner),
		cohort:  str(schemas.ColCohortID),
		user:    str(schemas.ColUserID),
		rid:     str(schemas.ColRecordID),
	}
	var ok bool
	if c.member, ok = rec.Column(schemas.ColIsMember).(*array.Uint8); !ok {
		bad = append(bad, "is_member")
	}
	if c.version, ok = rec.Column(schemas.ColVersion).(*array.Uint64); !ok {
		bad = append(bad, "version")
	}
	if c.pos, ok = rec.Column(schemas.ColPosition).(*array.Uint32); !ok {
		bad = append(bad, "position")
	}
	if c.event, ok = rec.Column(schemas.ColEventTime).(*array.Timestamp); !ok {
		bad = append(bad, "event_time")
	}
	if c.received, ok = rec.Column(schemas.ColReceivedAt).(*array.Timestamp); !ok {
		bad = append(bad, "received_at")
	}
	if len(bad) > 0 {
		return changeCols{}, fmt.Errorf("changes batch columns of unexpected array types: %s", strings.Join(bad, ", "))
	}
	return c, nil
}

// batchWriter applies one Output inside one transaction.
type batchWriter struct {
	ctx  context.Context
	cols changeCols
	out  *pipeline.Output

	// order holds row indexes sorted by (workspace, partner, cohort, user,
	// version): a cohort's rows are contiguous, one bucket lookup serves
	// them, and each user's changes are applied in version order.
	order []int32
	// effective[row] says the row changed is_member at its first application.
	effective []bool
	// fresh[row] says the row's data point is new: not a redelivery.
	// appliedRow[row] says its version was newer than the stored one.
	fresh, appliedRow []bool
	scratch           []int32
	days              map[int32]dayCount
	secs              []int64
	// seq is the transaction id, the change sequence of what it touches;
	// touched are the workspaces whose sequence it sets.
	seq     []byte
	touched map[string]bool

	tx         *bolt.Tx
	workspaces map[string]*bolt.Bucket
	arena      arena

	applied, stale, newPoints, replayed int
}

func (w *batchWriter) sortRows() {
	c := w.cols
	w.order = make([]int32, c.n)
	for i := range w.order {
		w.order[i] = int32(i)
	}
	slices.SortFunc(w.order, func(a, b int32) int {
		i, j := int(a), int(b)
		if r := strings.Compare(c.ws.Value(i), c.ws.Value(j)); r != 0 {
			return r
		}
		if r := strings.Compare(c.partner.Value(i), c.partner.Value(j)); r != 0 {
			return r
		}
		if r := strings.Compare(c.cohort.Value(i), c.cohort.Value(j)); r != 0 {
			return r
		}
		if r := strings.Compare(c.user.Value(i), c.user.Value(j)); r != 0 {
			return r
		}
		return cmp.Compare(c.version.Value(i), c.version.Value(j))
	})
}

func (w *batchWriter) run(tx *bolt.Tx) error {
	w.tx = tx
	w.workspaces = map[string]*bolt.Bucket{}
	w.seq = binary.BigEndian.AppendUint64(nil, uint64(tx.ID()))
	w.touched = map[string]bool{}
	w.days = map[int32]dayCount{}
	c := w.cols
	for i := 0; i < len(w.order); {
		if err := w.ctx.Err(); err != nil {
			return err
		}
		first := int(w.order[i])
		ws, partner, cohort := c.ws.Value(first), c.partner.Value(first), c.cohort.Value(first)
		j := i + 1
		for j < len(w.order) {
			r := int(w.order[j])
			if c.cohort.Value(r) != cohort || c.partner.Value(r) != partner || c.ws.Value(r) != ws {
				break
			}
			j++
		}
		if err := w.applyCohort(ws, partner, cohort, w.order[i:j]); err != nil {
			return fmt.Errorf("workspace %q partner %q cohort %q: %w", ws, partner, cohort, err)
		}
		i = j
	}
	if err := w.applyCohortRecords(); err != nil {
		return err
	}
	if err := w.applyRejections(); err != nil {
		return err
	}
	for ws := range w.touched {
		if err := w.workspaces[ws].Put(keySeq, w.seq); err != nil {
			return err
		}
	}
	return w.applyPositions()
}

func (w *batchWriter) workspace(ws string) (*bolt.Bucket, error) {
	if b, ok := w.workspaces[ws]; ok {
		return b, nil
	}
	b, err := w.tx.Bucket(bucketWorkspaces).CreateBucketIfNotExists(tuple(ws))
	if err != nil {
		return nil, err
	}
	for _, name := range [][]byte{bucketCohorts, bucketRejections} {
		if _, err := b.CreateBucketIfNotExists(name); err != nil {
			return nil, err
		}
	}
	w.workspaces[ws] = b
	return b, nil
}

func (w *batchWriter) cohortBucket(ws, partner, cohort string) (*bolt.Bucket, error) {
	wb, err := w.workspace(ws)
	if err != nil {
		return nil, err
	}
	cb, err := wb.Bucket(bucketCohorts).CreateBucketIfNotExists(tuple(partner, cohort))
	if err != nil {
		return nil, err
	}
	for _, name := range [][]byte{bucketMembers, bucketPoints, bucketDays, bucketHistory, bucketSyncs} {
		if _, err := cb.CreateBucketIfNotExists(name); err != nil {
			return nil, err
		}
	}
	return cb, nil
}

// applyCohort applies the rows of one cohort: membership in (user, version)
// order, then data points in (record id, position) order, then the history
// of the new ones in (user, version) order, the per-day counters, the
// landing times and the cohort's bookkeeping.
func (w *batchWriter) applyCohort(ws, partner, cohort string, rows []int32) error {
	c := w.cols
	cb, err := w.cohortBucket(ws, partner, cohort)
	if err != nil {
		return err
	}
	mb, pb, db := cb.Bucket(bucketMembers), cb.Bucket(bucketPoints), cb.Bucket(bucketDays)
	// Lookups go through one cursor per bucket: Bucket.Get makes a new
	// cursor, and so a new search stack, on every call.
	mc, pc := mb.Cursor(), pb.Cursor()

	var members, lastSync int64
	var maxVersion uint64
	applied := w.applied
	for i := 0; i < len(rows); {
		user := c.user.Value(int(rows[i]))
		if user == "" || len(user) > bolt.MaxKeySize {
			return fmt.Errorf("row %d: user_id of %d bytes is not storable", rows[i], len(user))
		}
		j := i + 1
		for j < len(rows) && c.user.Value(int(rows[j])) == user {
			j++
		}
		key := w.arena.copyString(user)
		var cur struct {
			exists, isMember bool
			version          uint64
		}
		if v := get(mc, key); v != nil {
			if len(v) < memberFixed {
				return errors.New("corrupt membership value")
			}
			cur.exists, cur.isMember, cur.version = true, v[0] == 1, binary.BigEndian.Uint64(v[1:9])
		}
		wasMember := cur.isMember
		winner := -1
		for _, r := range rows[i:j] {
			row := int(r)
			ver, isMember := c.version.Value(row), c.member.Value(row) == 1
			lastSync = max(lastSync, int64(c.received.Value(row)))
			if cur.exists && ver <= cur.version {
				w.stale++
				continue
			}
			w.effective[row] = isMember != cur.isMember
			w.appliedRow[row] = true
			cur.exists, cur.isMember, cur.version = true, isMember, ver
			maxVersion = max(maxVersion, ver)
			winner = row
			w.applied++
		}
		if winner >= 0 {
			st := memberState{
				isMember:  cur.isMember,
				version:   cur.version,
				eventTime: int64(c.event.Value(winner)),
				recordID:  c.rid.Value(winner),
			}
			if err := mb.Put(key, st.appendTo(w.arena.alloc(st.size())[:0])); err != nil {
				return err
			}
		}
		members += b2i(cur.isMember) - b2i(wasMember)
		i = j
	}

	pts := append(w.scratch[:0], rows...)
	w.scratch = pts
	samePoint := func(a, b int32) int {
		if r := strings.Compare(c.rid.Value(int(a)), c.rid.Value(int(b))); r != 0 {
			return r
		}
		return cmp.Compare(c.pos.Value(int(a)), c.pos.Value(int(b)))
	}
	slices.SortFunc(pts, func(a, b int32) int {
		if r := samePoint(a, b); r != 0 {
			return r
		}
		return cmp.Compare(c.version.Value(int(a)), c.version.Value(int(b)))
	})
	clear(w.days)
	for k, r := range pts {
		row := int(r)
		if k > 0 && samePoint(pts[k-1], r) == 0 {
			// A producer retry landed the record twice and both copies are
			// in this batch: one data point, and a transition if either
			// copy made one (only the first applied copy can).
			w.replayed++
			continue
		}
		for _, dup := range pts[k+1:] {
			if samePoint(dup, r) != 0 {
				break
			}
			w.effective[row] = w.effective[row] || w.effective[dup]
		}
		rid := c.rid.Value(row)
		key := appendTuple(w.arena.alloc(tupleLen(rid) + posBytes)[:0], rid)
		key = binary.BigEndian.AppendUint32(key, c.pos.Value(row))
		if get(pc, key) != nil {
			w.replayed++
			continue
		}
		// The billing day is the UTC landing day, as in ClickHouse's data_points.
		day := dayOfMicros(int64(c.received.Value(row)))
		user := c.user.Value(row)
		var flags byte
		if c.member.Value(row) == 1 {
			flags |= pointAdd
		}
		if w.effective[row] {
			flags |= pointEffective
		}
		val := append(w.arena.alloc(pointFixed + len(user))[:0], flags)
		val = appendDay(val, day)
		val = binary.BigEndian.AppendUint64(val, c.version.Value(row))
		val = append(val, user...)
		if err := pb.Put(key, val); err != nil {
			return err
		}
		w.fresh[row] = true
		w.newPoints++
		n := w.days[day]
		n.billable++
		n.effective += b2i(w.effective[row])
		w.days[day] = n
	}
	if err := w.applyHistory(cb, rows); err != nil {
		return err
	}
	if err := w.applySyncs(cb); err != nil {
		return err
	}
	if w.applied > applied {
		if err := cb.Put(keySeq, w.seq); err != nil {
			return err
		}
		w.touched[ws] = true
	}

	days := make([]int32, 0, len(w.days))
	for d := range w.days {
		days = append(days, d)
	}
	slices.Sort(days)
	for _, d := range days {
		key := appendDay(w.arena.alloc(dayBytes)[:0], d)
		billable, effective, err := readPair(db.Get(key))
		if err != nil {
			return err
		}
		add := w.days[d]
		val := appendPair(w.arena.alloc(pairBytes)[:0], billable+add.billable, effective+add.effective)
		if err := db.Put(key, val); err != nil {
			return err
		}
	}

	info, err := readInfo(cb)
	if err != nil {
		return err
	}
	sync := time.UnixMicro(lastSync).UTC()
	if members == 0 && !sync.After(info.LastSync) && maxVersion <= info.MaxVersion {
		return nil
	}
	info.Members += members
	info.MaxVersion = max(info.MaxVersion, maxVersion)
	if sync.After(info.LastSync) {
		info.LastSync = sync
	}
	return putInfo(cb, info)
}

// applyHistory stores the rows whose data point is new or whose version
// was applied, rows being in (user, version) order so the inserts walk the
// bucket forward. A redelivered row is neither: it is already there, stored
// with its data point. A record that a producer retry landed twice is new
// history at its second offset (a new version) though not a new data point.
func (w *batchWriter) applyHistory(cb *bolt.Bucket, rows []int32) error {
	c := w.cols
	hb := cb.Bucket(bucketHistory)
	w.secs = w.secs[:0]
	for _, r := range rows {
		row := int(r)
		if !w.fresh[row] && !w.appliedRow[row] {
			continue
		}
		if sec := secondOfMicros(int64(c.received.Value(row))); len(w.secs) == 0 || w.secs[len(w.secs)-1] != sec {
			w.secs = append(w.secs, sec)
		}
		user, rid := c.user.Value(row), c.rid.Value(row)
		key := appendTuple(w.arena.alloc(tupleLen(user) + 8)[:0], user)
		key = binary.BigEndian.AppendUint64(key, c.version.Value(row))
		h := historyValue{
			isMember:   c.member.Value(row) == 1,
			eventTime:  int64(c.event.Value(row)),
			receivedAt: int64(c.received.Value(row)),
			recordID:   rid,
		}
		if err := hb.Put(key, h.appendTo(w.arena.alloc(h.size())[:0])); err != nil {
			return err
		}
	}
	return nil
}

// applySyncs records the landing seconds of the new data points.
func (w *batchWriter) applySyncs(cb *bolt.Bucket) error {
	slices.Sort(w.secs)
	sb := cb.Bucket(bucketSyncs)
	for i, sec := range w.secs {
		if i > 0 && w.secs[i-1] == sec {
			continue
		}
		key := appendSecond(w.arena.alloc(8)[:0], sec)
		if sb.Get(key) != nil {
			continue
		}
		if err := sb.Put(key, []byte{}); err != nil {
			return err
		}
	}
	return nil
}

// get is Bucket.Get through a reused cursor. The buckets it reads hold no
// nested buckets, so a nil value always means "absent".
func get(c *bolt.Cursor, key []byte) []byte {
	k, v := c.Seek(key)
	if !bytes.Equal(k, key) {
		return nil
	}
	return v
}

type dayCount struct{ billable, effective int64 }

func b2i(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// cohortInfo is the cohort's metadata as the partner sent it, plus the
// bookkeeping the store maintains. JSON, because it is written at most once
// per cohort per batch and may gain fields.
type cohortInfo struct {
	Name       string    `json:"name,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
	ReceivedAt time.Time `json:"received_at"`
	// MetaVersion is schemas.Version(offset, 0) of the metadata record
	// stored, so an older rename redelivered late does not win.
	MetaVersion uint64 `json:"meta_version,omitempty"`
	// LastSync is the latest received_at of an accepted change.
	LastSync time.Time `json:"last_sync"`
	Members  int64     `json:"members"`
	// MaxVersion is the highest version of an applied change: a snapshot of
	// the members is "as of" it, and a cohort whose MaxVersion has not moved
	// needs no new snapshot.
	MaxVersion uint64 `json:"max_version,omitempty"`
}

func readInfo(cb *bolt.Bucket) (cohortInfo, error) {
	var info cohortInfo
	if v := cb.Get(keyInfo); v != nil {
		if err := json.Unmarshal(v, &info); err != nil {
			return cohortInfo{}, fmt.Errorf("corrupt cohort info: %w", err)
		}
	}
	return info, nil
}

func putInfo(cb *bolt.Bucket, info cohortInfo) error {
	v, err := json.Marshal(info)
	if err != nil {
		return err
	}
	return cb.Put(keyInfo, v)
}

func (w *batchWriter) applyCohortRecords() error {
	for _, rec := range w.out.Cohorts {
		e := rec.Envelope
		var p schemas.CohortPayload
		switch v := e.Payload.(type) {
		case schemas.CohortPayload:
			p = v
		case *schemas.CohortPayload:
			if v == nil {
				return fmt.Errorf("cohort record %s@%d: nil payload", e.RecordID, rec.Offset)
			}
			p = *v
		default:
			return fmt.Errorf("cohort record %s@%d: payload is %T, not a cohort", e.RecordID, rec.Offset, e.Payload)
		}
		cb, err := w.cohortBucket(e.Workspace, e.Partner, p.CohortID)
		if err != nil {
			return err
		}
		info, err := readInfo(cb)
		if err != nil {
			return err
		}
		v := schemas.Version(rec.Offset, 0)
		if v <= info.MetaVersion {
			continue
		}
		info.Name, info.CreatedAt, info.ReceivedAt, info.MetaVersion = p.Name, p.CreatedAt.UTC(), e.ReceivedAt.UTC(), v
		if err := putInfo(cb, info); err != nil {
			return err
		}
		w.touched[e.Workspace] = true
	}
	return nil
}

func (w *batchWriter) applyRejections() error {
	if w.out.Rejections == nil {
		return nil
	}
	for _, r := range w.out.Rejections.Rows() {
		wb, err := w.workspace(r.Workspace)
		if err != nil {
			return err
		}
		key := tuple(r.Partner, r.CohortID, r.RecordID, r.Reason)
		val := appendPair(make([]byte, 0, pairBytes), r.IDs, r.Records)
		if err := wb.Bucket(bucketRejections).Put(key, val); err != nil {
			return err
		}
	}
	return nil
}

func (w *batchWriter) applyPositions() error {
	b := w.tx.Bucket(bucketPositions)
	for p, r := range w.out.Positions {
		key := binary.BigEndian.AppendUint32(make([]byte, 0, 4), uint32(p))
		if v := b.Get(key); len(v) == 8 && int64(binary.BigEndian.Uint64(v)) >= r.Last {
			continue
		}
		if err := b.Put(key, binary.BigEndian.AppendUint64(make([]byte, 0, 8), uint64(r.Last))); err != nil {
			return err
		}
	}
	return nil
}

// arena hands out byte slices for keys and values. bbolt keeps the slices
// given to Put until the transaction commits, so each needs its own memory;
// carving them from large chunks turns thousands of allocations into a few.
type arena struct{ buf []byte }

const arenaChunk = 256 << 10

func (a *arena) alloc(n int) []byte {
	if cap(a.buf)-len(a.buf) < n {
		a.buf = make([]byte, 0, max(arenaChunk, n))
	}
	l := len(a.buf)
	a.buf = a.buf[:l+n]
	return a.buf[l : l+n : l+n]
}

func (a *arena) copyString(s string) []byte {
	b := a.alloc(len(s))
	copy(b, s)
	return b
}
