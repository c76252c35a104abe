package embedded

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/RoaringBitmap/roaring/v2"

	"github.com/cohortsync/cohortsync/segments"
	"github.com/cohortsync/cohortsync/segments/filter"
	"github.com/cohortsync/cohortsync/sinks/state"
)

// plan is a parsed and resolved filter.
type plan struct {
	node    filter.Node
	cohorts []cohortKey // distinct, in order of appearance
	names   map[cohortKey]string
	past    bool
	asOf    int64 // unix second, for past
}

// prepare resolves node's cohort names and ids against the workspace's
// cohorts. The caller holds c.mu.
func (e *Engine) prepare(tx *state.ReadTx, c *wsCache, ws string, node filter.Node, asOf time.Time) (plan, error) {
	if seq := tx.WorkspaceSeq(ws); c.cohorts == nil || c.namesSeq != seq {
		cohorts := map[cohortKey]string{}
		err := tx.ForEachCohort(ws, func(co state.Cohort, _ uint64) error {
			cohorts[cohortKey{co.Partner, co.CohortID}] = co.Name
			return nil
		})
		if err != nil {
			return plan{}, err
		}
		c.cohorts, c.namesSeq = cohorts, seq
	}
	resolved, err := filter.Resolve(node, func(partner, idOrName string) []string {
		var ids []string
		if _, ok := c.cohorts[cohortKey{partner, idOrName}]; ok {
			ids = append(ids, idOrName)
		}
		for k, name := range c.cohorts {
			if k.partner == partner && name == idOrName && k.id != idOrName {
				ids = append(ids, k.id)
			}
		}
		return ids
	})
	if err != nil {
		return plan{}, err
	}
	p := plan{node: resolved, names: map[cohortKey]string{}}
	for _, ref := range resolved.Cohorts() {
		k := cohortKey{ref.Partner, ref.ID}
		if _, ok := p.names[k]; ok {
			continue
		}
		p.cohorts = append(p.cohorts, k)
		p.names[k] = c.cohorts[k]
	}
	if !asOf.IsZero() {
		p.past, p.asOf = true, max(asOf.Unix(), 0)
	}
	return p, nil
}

// holds evaluates n for one user, in telling whether the user is in a cohort.
func holds(n filter.Node, in func(cohortKey) bool) bool {
	switch n.Op {
	case filter.OpCohort:
		return in(cohortKey{n.Cohort.Partner, n.Cohort.ID})
	case filter.OpNot:
		return !holds(n.Args[0], in)
	case filter.OpAnd:
		for _, a := range n.Args {
			if !holds(a, in) {
				return false
			}
		}
		return true
	default:
		for _, a := range n.Args {
			if holds(a, in) {
				return true
			}
		}
		return false
	}
}

// needsUniverse tells whether a user in none of the named cohorts can match.
func needsUniverse(n filter.Node) bool {
	return holds(n, func(cohortKey) bool { return false })
}

// result is an evaluated filter: its members as user numbers of d, and
// their count. A count-only run may leave bm nil.
type result struct {
	node  filter.Node
	bm    *roaring.Bitmap
	d     *dict
	count uint64
}

// minus recognises "A and not B" of two cohorts.
func minus(n filter.Node, bms map[cohortKey]*roaring.Bitmap) (a, b *roaring.Bitmap, ok bool) {
	if n.Op != filter.OpAnd || len(n.Args) != 2 {
		return nil, nil, false
	}
	x, y := n.Args[0], n.Args[1]
	if x.Op == filter.OpNot {
		x, y = y, x
	}
	if x.Op != filter.OpCohort || y.Op != filter.OpNot || y.Args[0].Op != filter.OpCohort {
		return nil, nil, false
	}
	return bms[cohortKey{x.Cohort.Partner, x.Cohort.ID}], bms[cohortKey{y.Args[0].Cohort.Partner, y.Args[0].Cohort.ID}], true
}

// run evaluates a parsed filter. The bitmap it returns is the caller's to
// read (never to modify: it may be a cached cohort bitmap), outside of any
// lock or transaction.
func (e *Engine) run(ctx context.Context, ws string, node filter.Node, asOf time.Time, countOnly bool) (result, error) {
	c := e.cache(ws)
	c.mu.Lock()
	defer c.mu.Unlock()
	var res result
	err := e.store.View(ctx, func(tx *state.ReadTx) error {
		p, err := e.prepare(tx, c, ws, node, asOf)
		if err != nil {
			return err
		}
		universe := needsUniverse(p.node)
		if universe {
			if err := e.ensureUniverse(ctx, tx, c, ws); err != nil {
				return err
			}
		}
		bms := make(map[cohortKey]*roaring.Bitmap, len(p.cohorts))
		for i := 0; i < len(p.cohorts); i++ {
			k := p.cohorts[i]
			gen := c.dict.gen
			var bm *roaring.Bitmap
			if p.past {
				bm, err = e.pastBitmap(ctx, tx, c, ws, k, p.asOf)
			} else {
				bm, err = e.nowBitmap(ctx, tx, c, ws, k)
			}
			if err != nil {
				return err
			}
			if c.dict.gen != gen {
				// New users renumbered everyone: what was built so far
				// uses the old numbers.
				clear(bms)
				i = -1
				continue
			}
			bms[k] = bm
		}
		n := uint64(c.dict.len())
		if countOnly {
			if a, b, ok := minus(p.node, bms); ok {
				// "A and not B" counted without building it.
				res = result{node: p.node, d: c.dict, count: a.GetCardinality() - a.AndCardinality(b)}
				return nil
			}
		}
		bm, _ := evalNode(p.node, bms, n)
		res = result{node: p.node, bm: bm, d: c.dict, count: bm.GetCardinality()}
		return nil
	})
	return res, err
}

// evalNode computes n's members. owned says the bitmap is new, not a
// cohort's, and may be modified.
func evalNode(n filter.Node, bms map[cohortKey]*roaring.Bitmap, universe uint64) (bm *roaring.Bitmap, owned bool) {
	switch n.Op {
	case filter.OpCohort:
		return bms[cohortKey{n.Cohort.Partner, n.Cohort.ID}], false
	case filter.OpNot:
		inner, _ := evalNode(n.Args[0], bms, universe)
		return roaring.Flip(inner, 0, universe), true
	case filter.OpOr:
		if len(n.Args) == 1 {
			return evalNode(n.Args[0], bms, universe)
		}
		parts := make([]*roaring.Bitmap, len(n.Args))
		for i, a := range n.Args {
			parts[i], _ = evalNode(a, bms, universe)
		}
		return roaring.FastOr(parts...), true
	default:
		// "A and not B" is A minus B: the negated arguments are
		// subtracted from the intersection of the others, without ever
		// complementing over the universe.
		var pos, neg []*roaring.Bitmap
		for _, a := range n.Args {
			if a.Op == filter.OpNot {
				b, _ := evalNode(a.Args[0], bms, universe)
				neg = append(neg, b)
				continue
			}
			b, _ := evalNode(a, bms, universe)
			pos = append(pos, b)
		}
		var res *roaring.Bitmap
		switch len(pos) {
		case 0:
			res, owned = roaring.New(), true
			res.AddRange(0, universe)
		case 1:
			res = pos[0]
		default:
			res, owned = roaring.FastAnd(pos...), true
		}
		for _, b := range neg {
			if owned {
				res.AndNot(b)
			} else {
				res, owned = roaring.AndNot(res, b), true
			}
		}
		return res, owned
	}
}

// rebuildDict numbers the workspace's users anew. The caller holds c.mu.
func (e *Engine) rebuildDict(ctx context.Context, tx *state.ReadTx, c *wsCache, ws string) error {
	start := time.Now()
	b, err := buildDict(ctx, tx, ws, c.dict.gen+1)
	if err != nil {
		return fmt.Errorf("user dictionary of %s: %w", ws, err)
	}
	d := b.dict
	c.dict, c.covered, c.dictSeq = d, b.covered, tx.WorkspaceSeq(ws)
	clear(c.bitmaps)
	for k, bm := range b.members {
		c.bitmaps[k] = cachedBitmap{seq: b.covered[k], gen: d.gen, bm: bm}
	}
	e.m.dictBuilds.Inc()
	e.m.bitmapBuilds.Add(float64(len(b.members)))
	e.log.InfoContext(ctx, "user dictionary rebuilt", "workspace", ws, "users", d.len(), "bytes", len(d.data), "elapsed", time.Since(start).Round(time.Millisecond).String())
	return nil
}

// ensureUniverse makes the dictionary hold every user of the workspace,
// which "not" needs: only the cohorts that changed since it last held them
// all are checked. The caller holds c.mu.
func (e *Engine) ensureUniverse(ctx context.Context, tx *state.ReadTx, c *wsCache, ws string) error {
	seq := tx.WorkspaceSeq(ws)
	if c.dictSeq == seq {
		return nil
	}
	var changed []cohortKey
	err := tx.ForEachCohort(ws, func(co state.Cohort, cseq uint64) error {
		if k := (cohortKey{co.Partner, co.CohortID}); c.covered[k] != cseq {
			changed = append(changed, k)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, k := range changed {
		gen := c.dict.gen
		if _, err := e.nowBitmap(ctx, tx, c, ws, k); err != nil {
			return err
		}
		if c.dict.gen != gen {
			return nil // rebuilt from every cohort
		}
	}
	c.dictSeq = seq
	return nil
}

// nowBitmap returns the cohort's current members, cached until the cohort
// changes. The caller holds c.mu.
func (e *Engine) nowBitmap(ctx context.Context, tx *state.ReadTx, c *wsCache, ws string, k cohortKey) (*roaring.Bitmap, error) {
	seq := tx.CohortSeq(ws, k.partner, k.id)
	for attempt := 0; ; attempt++ {
		// A rebuilt dictionary comes with every cohort's bitmap.
		if b, ok := c.bitmaps[k]; ok && b.seq == seq && b.gen == c.dict.gen {
			return b.bm, nil
		}
		bm, ok, err := buildNow(ctx, tx, ws, k, c.dict)
		if err != nil {
			return nil, fmt.Errorf("members of %s/%s: %w", k.partner, k.id, err)
		}
		if ok {
			bm.RunOptimize()
			c.bitmaps[k] = cachedBitmap{seq: seq, gen: c.dict.gen, bm: bm}
			c.covered[k] = seq
			e.m.bitmapBuilds.Inc()
			return bm, nil
		}
		if attempt > 0 {
			return nil, fmt.Errorf("members of %s/%s: a user is missing from a dictionary built in the same transaction", k.partner, k.id)
		}
		if err := e.rebuildDict(ctx, tx, c, ws); err != nil {
			return nil, err
		}
	}
}

// pastBitmap returns the cohort's members as of the unix second asOf,
// computed from its history. The caller holds c.mu.
func (e *Engine) pastBitmap(ctx context.Context, tx *state.ReadTx, c *wsCache, ws string, k cohortKey, asOf int64) (*roaring.Bitmap, error) {
	for attempt := 0; ; attempt++ {
		bm, ok, err := buildPast(tx, ws, k, c.dict, asOf)
		if err != nil {
			return nil, fmt.Errorf("history of %s/%s: %w", k.partner, k.id, err)
		}
		if ok {
			return bm, nil
		}
		if attempt > 0 {
			return nil, fmt.Errorf("history of %s/%s: a user is missing from a dictionary built in the same transaction", k.partner, k.id)
		}
		if err := e.rebuildDict(ctx, tx, c, ws); err != nil {
			return nil, err
		}
	}
}

// buildNow walks the cohort's users (sorted) along the dictionary (sorted).
// ok is false when a user is not in the dictionary.
func buildNow(ctx context.Context, tx *state.ReadTx, ws string, k cohortKey, d *dict) (*roaring.Bitmap, bool, error) {
	bm := roaring.New()
	buf := make([]uint32, 0, 4096)
	cur := tx.Users(ws, k.partner, k.id)
	at := 0
	for n := 1; cur.Next(); n++ {
		if n%65536 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, false, err
			}
		}
		i, found := d.seekFrom(at, cur.User())
		if !found {
			return nil, false, nil
		}
		at = i
		if cur.IsMember() {
			if buf = append(buf, uint32(i)); len(buf) == cap(buf) {
				bm.AddMany(buf)
				buf = buf[:0]
			}
		}
	}
	bm.AddMany(buf)
	return bm, true, nil
}

// buildPast walks the cohort's history in (user, version) order: a user's
// last change at or before asOf decides.
func buildPast(tx *state.ReadTx, ws string, k cohortKey, d *dict, asOf int64) (*roaring.Bitmap, bool, error) {
	bm := roaring.New()
	buf := make([]uint32, 0, 4096)
	var (
		user []byte
		in   bool
		at   int
	)
	missing := false
	flush := func() {
		if user == nil || !in {
			return
		}
		i, found := d.seekFrom(at, user)
		if !found {
			missing = true
			return
		}
		at = i
		if buf = append(buf, uint32(i)); len(buf) == cap(buf) {
			bm.AddMany(buf)
			buf = buf[:0]
		}
	}
	err := tx.ForEachHistory(ws, k.partner, k.id, func(u []byte, h state.HistoryEntry) error {
		if user == nil || !bytes.Equal(u, user) {
			flush()
			user, in = u, false
		}
		if secondOf(h.EventMicros) <= asOf {
			in = h.IsMember
		}
		return nil
	})
	if err != nil {
		return nil, false, err
	}
	flush()
	if missing {
		return nil, false, nil
	}
	bm.AddMany(buf)
	return bm, true, nil
}

func secondOf(us int64) int64 {
	s := us / 1_000_000
	if us%1_000_000 < 0 {
		s--
	}
	return s
}

// Evaluate implements segments.Engine.
func (e *Engine) Evaluate(ctx context.Context, workspace string, q segments.Query) (page segments.Page, err error) {
	start := time.Now()
	defer func() { e.observe(ctx, "evaluate", start, err) }()
	node, err := e.parse(q.Filter)
	if err != nil {
		return segments.Page{}, err
	}
	r, err := e.run(ctx, workspace, node, q.AsOf, q.Limit <= 0)
	if err != nil {
		return segments.Page{}, wrap("evaluate", err)
	}
	from := 0
	if q.Cursor != "" {
		after, err := filter.DecodeCursor(r.node, q.Cursor)
		if err != nil {
			return segments.Page{}, err
		}
		i, found := r.d.search([]byte(after))
		if found {
			i++
		}
		from = i
	}
	page.Count = int64(r.count)
	if q.Limit <= 0 {
		return page, nil
	}
	page.Members = make([]string, 0, min(q.Limit, 1024))
	it := r.bm.Iterator()
	it.AdvanceIfNeeded(uint32(min(from, r.d.len())))
	if from >= r.d.len() {
		return page, nil
	}
	for it.HasNext() {
		i := it.Next()
		if len(page.Members) == q.Limit {
			page.NextCursor = filter.EncodeCursor(r.node, page.Members[len(page.Members)-1])
			break
		}
		page.Members = append(page.Members, string(r.d.at(int(i))))
	}
	return page, nil
}

// Export implements segments.Engine. The members are computed as a bitmap
// and turned into user ids one at a time, outside of any lock or
// transaction, so a slow consumer holds up nothing else.
func (e *Engine) Export(ctx context.Context, workspace string, raw json.RawMessage, asOf time.Time, fn func(userID string) error) (err error) {
	start := time.Now()
	defer func() { e.observe(ctx, "export", start, err) }()
	node, err := e.parse(raw)
	if err != nil {
		return err
	}
	r, err := e.run(ctx, workspace, node, asOf, false)
	if err != nil {
		return wrap("export", err)
	}
	it := r.bm.Iterator()
	for n := 1; it.HasNext(); n++ {
		if n%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return wrap("export", err)
			}
		}
		if err := fn(string(r.d.at(int(it.Next())))); err != nil {
			return err
		}
	}
	return nil
}

// Explain implements segments.Engine: for each cohort the filter names, the
// user's change that decides whether the user is in it (the newest, or the
// newest at or before asOf).
func (e *Engine) Explain(ctx context.Context, workspace string, raw json.RawMessage, userID string, asOf time.Time) (ans segments.Answer, err error) {
	start := time.Now()
	defer func() { e.observe(ctx, "explain", start, err) }()
	node, err := e.parse(raw)
	if err != nil {
		return segments.Answer{}, err
	}
	// The cache's lock is taken before the transaction, as run does: the
	// other order can deadlock with a writer waiting to grow the file.
	c := e.cache(workspace)
	c.mu.Lock()
	defer c.mu.Unlock()
	err = e.store.View(ctx, func(tx *state.ReadTx) error {
		p, err := e.prepare(tx, c, workspace, node, asOf)
		if err != nil {
			return err
		}
		ans = segments.Answer{UserID: userID, Reasons: make([]segments.Reason, len(p.cohorts))}
		in := map[cohortKey]bool{}
		seen := false
		for i, k := range p.cohorts {
			ch, err := decidingChange(tx, workspace, k, userID, p)
			if err != nil {
				return err
			}
			seen = seen || ch != nil
			in[k] = ch != nil && ch.IsMember
			ans.Reasons[i] = segments.Reason{Partner: k.partner, CohortID: k.id, CohortName: p.names[k], InCohort: in[k], LastChange: ch}
		}
		if !seen && needsUniverse(p.node) {
			if seen, err = tx.Known(workspace, userID); err != nil {
				return err
			}
		}
		ans.Member = seen && holds(p.node, func(k cohortKey) bool { return in[k] })
		return nil
	})
	if err != nil {
		return segments.Answer{}, wrap("explain", err)
	}
	return ans, nil
}

// decidingChange is the user's change that decides membership in k: the
// newest, or as of p.asOf the newest whose event time is not after it.
func decidingChange(tx *state.ReadTx, ws string, k cohortKey, userID string, p plan) (*segments.Change, error) {
	hist, err := tx.UserHistory(ws, k.partner, k.id, userID)
	if err != nil {
		return nil, err
	}
	if p.past {
		for _, h := range slices.Backward(hist) {
			if secondOf(h.EventMicros) <= p.asOf {
				return historyChange(h), nil
			}
		}
		return nil, nil
	}
	st, ok, err := tx.Member(ws, k.partner, k.id, userID)
	if err != nil || !ok {
		return nil, err
	}
	ch := &segments.Change{IsMember: st.IsMember, Version: st.Version, RecordID: st.RecordID, EventTime: st.EventTime}
	// The current state has no landing time; its change in the history
	// does (unless it was stored by a build that kept no history).
	for _, h := range slices.Backward(hist) {
		if h.Version == st.Version {
			ch.ReceivedAt = time.UnixMicro(h.ReceivedMicros).UTC()
			break
		}
	}
	return ch, nil
}

func historyChange(h state.HistoryEntry) *segments.Change {
	return &segments.Change{
		IsMember:   h.IsMember,
		Version:    h.Version,
		RecordID:   string(h.RecordID),
		EventTime:  time.UnixMicro(h.EventMicros).UTC(),
		ReceivedAt: time.UnixMicro(h.ReceivedMicros).UTC(),
	}
}

// wrap adds the package and operation to an error the caller must not
// fix, and leaves filter errors as they are.
func wrap(op string, err error) error {
	if fe, ok := errors.AsType[*segments.FilterError](err); ok {
		return fe
	}
	return fmt.Errorf("segments/embedded: %s: %w", op, err)
}

// parsedCacheSize bounds the parsed filters kept: dashboards and saved
// segments ask the same few filters again and again.
const parsedCacheSize = 1024

// parse is filter.Parse, remembered per document: parsing a small filter
// costs about as much as evaluating it over cached bitmaps.
func (e *Engine) parse(raw json.RawMessage) (filter.Node, error) {
	e.mu.Lock()
	n, ok := e.parsed[string(raw)]
	e.mu.Unlock()
	if ok {
		return n, nil
	}
	n, err := filter.Parse(raw)
	if err != nil {
		return filter.Node{}, err
	}
	e.mu.Lock()
	if len(e.parsed) >= parsedCacheSize {
		clear(e.parsed)
	}
	e.parsed[string(raw)] = n
	e.mu.Unlock()
	return n, nil
}
