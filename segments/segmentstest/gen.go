package segmentstest

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/cohortsync/cohortsync/pipeline"
	"github.com/cohortsync/cohortsync/schemas"
	"github.com/cohortsync/cohortsync/segments"
)

// The workspaces and cohorts of the corpus.
const (
	mainWS  = "corpus-acme"
	otherWS = "corpus-globex"
	mp      = "mixpanel"
	amp     = "amplitude"
)

var (
	// Day1 is the first landing day; the history spans Day1 to Day1+2.
	day1 = time.Date(2024, 11, 4, 0, 0, 0, 0, time.UTC)

	cohortA   = CohortKey{mp, "1001"} // "Churn risk", dynamic every 6h
	cohortB   = CohortKey{mp, "1002"} // "Power users", dynamic every 8h, stops on day 2
	cohortC   = CohortKey{mp, "1003"} // "Trial", renamed "Trial users"; two syncs
	cohortD   = CohortKey{mp, "1004"} // "Dormant": metadata, never a change
	cohortX   = CohortKey{mp, "1005"} // changes, never metadata
	cohortAmp = CohortKey{amp, "amp-7"}
	// The other workspace: the same ids as A and B, and a name two of its
	// cohorts share.
	otherA = CohortKey{mp, "1001"} // "Churn risk" there too
	otherB = CohortKey{mp, "1002"} // "VIP"
	otherV = CohortKey{mp, "1009"} // "VIP"
)

// cohortDef is a cohort as the generator syncs it.
type cohortDef struct {
	ws        string
	key       CohortKey
	partition int32
}

type gen struct {
	rng     *rand.Rand
	offsets map[int32]int64
	records int
	batches []batch
	// members is what the partner believes each cohort holds: the
	// generator's own bookkeeping, not the expected answers.
	members map[cohortDef]map[string]bool
}

// idChange is one id of a request: add (or remove) user.
type idChange struct {
	user string
	add  bool
}

// landed is a record as it landed, kept to land it again.
type landed struct {
	def      cohortDef
	rows     []schemas.ResolvedChange
	received time.Time
}

func (g *gen) offset(p int32) int64 {
	o := g.offsets[p]
	g.offsets[p] = o + 1
	return o
}

func (g *gen) newBatch() *batch {
	g.batches = append(g.batches, batch{})
	return &g.batches[len(g.batches)-1]
}

// meta lands a cohort metadata record.
func (g *gen) meta(b *batch, d cohortDef, name string, at time.Time) {
	g.records++
	b.cohorts = append(b.cohorts, pipeline.Record{
		Partition: int(d.partition), Offset: g.offset(d.partition),
		Envelope: schemas.Envelope{
			SchemaVersion: 1, RecordID: fmt.Sprintf("0193a6f0-%04d-7000-8000-%012d", g.records, g.records),
			Workspace: d.ws, Partner: d.key.Partner, ReceivedAt: at, EventTime: at,
			Payload: schemas.CohortPayload{CohortID: d.key.ID, Name: name, CreatedAt: day1.Add(-72 * time.Hour)},
		},
	})
}

// record lands one request of changes at received, which happened at event.
func (g *gen) record(b *batch, d cohortDef, ids []idChange, received, event time.Time) landed {
	g.records++
	rid := fmt.Sprintf("0193a6f0-%04d-7000-8000-%012d", g.records, g.records)
	off := g.offset(d.partition)
	l := landed{def: d, received: received}
	for pos, id := range ids {
		l.rows = append(l.rows, schemas.ResolvedChange{
			Workspace: d.ws, Partner: d.key.Partner, CohortID: d.key.ID, UserID: id.user,
			IDKind: schemas.IDKindExternalID, IDValue: id.user, IsMember: id.add,
			Version: schemas.Version(off, pos), RecordID: rid, Position: uint32(pos),
			EventTime: event, ReceivedAt: received, Partition: d.partition, Offset: off,
		})
	}
	b.changes = append(b.changes, l.rows...)
	return l
}

// reland lands a record again at a new offset, as a producer retry does:
// the same record id, positions and times.
func (g *gen) reland(b *batch, l landed) {
	off := g.offset(l.def.partition)
	for _, r := range l.rows {
		r.Offset, r.Version = off, schemas.Version(off, int(r.Position))
		b.changes = append(b.changes, r)
	}
}

// syncOpts shape one sync.
type syncOpts struct {
	churn float64 // share of members removed, and of non-members added
	// strays are removals of users who are not members: accepted and
	// billable, never a transition.
	strays int
	// flipFlops are users added by the first request and removed by the
	// last one of the same sync.
	flipFlops int
}

// sync lands one sync of d at at: the changes since the partner's last
// sync, in requests of at most 25 ids landing a second apart.
func (g *gen) sync(b *batch, d cohortDef, pool []string, at time.Time, o syncOpts) []landed {
	cur := g.members[d]
	if cur == nil {
		cur = map[string]bool{}
		g.members[d] = cur
	}
	var ids []idChange
	for _, u := range pool {
		switch {
		case cur[u] && g.rng.Float64() < o.churn:
			ids = append(ids, idChange{u, false})
		case !cur[u] && g.rng.Float64() < o.churn:
			ids = append(ids, idChange{u, true})
		}
	}
	var outsiders []string
	for _, u := range pool {
		if !cur[u] && !slices.ContainsFunc(ids, func(c idChange) bool { return c.user == u }) {
			outsiders = append(outsiders, u)
		}
	}
	g.rng.Shuffle(len(outsiders), func(i, j int) { outsiders[i], outsiders[j] = outsiders[j], outsiders[i] })
	for i := 0; i < o.strays && len(outsiders) > 0; i++ {
		ids = append(ids, idChange{outsiders[0], false})
		outsiders = outsiders[1:]
	}
	g.rng.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
	var flip []string
	for i := 0; i < o.flipFlops && len(outsiders) > 0; i++ {
		flip = append(flip, outsiders[0])
		outsiders = outsiders[1:]
	}
	for i, u := range flip {
		ids = slices.Insert(ids, i, idChange{u, true})
		ids = append(ids, idChange{u, false})
	}
	for _, c := range ids {
		if c.add {
			cur[c.user] = true
		} else {
			delete(cur, c.user)
		}
	}
	// Pushes carry their landing time as event time; some syncs here
	// report changes that happened earlier, as a backfill would, so that
	// as_of (event time) and the landing day differ.
	lag := []time.Duration{0, 0, 20 * time.Minute, 90 * time.Minute}[g.rng.IntN(4)]
	var out []landed
	for n := 0; len(ids) > 0; n++ {
		k := min(25, len(ids))
		received := at.Add(time.Duration(n) * time.Second)
		out = append(out, g.record(b, d, ids[:k], received, received.Add(-lag)))
		ids = ids[k:]
	}
	return out
}

// resend lands the same changes again as new records, as a partner
// restarting a failed sync does.
func (g *gen) resend(b *batch, ls []landed, at time.Time) {
	for n, l := range ls {
		ids := make([]idChange, len(l.rows))
		for i, r := range l.rows {
			ids[i] = idChange{r.UserID, r.IsMember}
		}
		received := at.Add(time.Duration(n) * time.Second)
		g.record(b, l.def, ids, received, received.Add(l.rows[0].EventTime.Sub(l.rows[0].ReceivedAt)))
	}
}

// initial puts n random users of pool in d before its first sync.
func (g *gen) initial(d cohortDef, pool []string, n int) {
	m := map[string]bool{}
	for _, i := range g.rng.Perm(len(pool))[:n] {
		m[pool[i]] = true
	}
	g.members[d] = m
}

// users of the main workspace: ids whose byte order is not their numeric
// order, upper case, multi-byte characters and prefixes of one another.
func mainPool() []string {
	var out []string
	for i := range 240 {
		out = append(out, fmt.Sprintf("user-%03d", i))
	}
	for i := range 20 {
		out = append(out, fmt.Sprintf("User-%d", i))
	}
	out = append(out, "u7", "u70", "u700", "u7000", "Ωmega-1", "Ωmega-2", "émile", "id with space", "a@example.com", "A@example.com")
	for i := range 10 {
		out = append(out, fmt.Sprintf("device:%x", 0xfa00+i*37))
	}
	return out
}

func otherPool() []string {
	var out []string
	for i := range 60 {
		out = append(out, fmt.Sprintf("user-%03d", i))
	}
	for i := range 60 {
		out = append(out, fmt.Sprintf("globex-%03d", i))
	}
	return out
}

// New returns the corpus. Every call returns the same one. (A function
// named Corpus cannot live beside the type Corpus.)
func New() Corpus {
	g := &gen{rng: rand.New(rand.NewPCG(20241104, 5)), offsets: map[int32]int64{}, members: map[cohortDef]map[string]bool{}}
	pool, opool := mainPool(), otherPool()
	a := cohortDef{mainWS, cohortA, 0}
	b := cohortDef{mainWS, cohortB, 1}
	c := cohortDef{mainWS, cohortC, 2}
	d := cohortDef{mainWS, cohortD, 3}
	x := cohortDef{mainWS, cohortX, 0}
	am := cohortDef{mainWS, cohortAmp, 3}
	oa := cohortDef{otherWS, otherA, 1}
	ob := cohortDef{otherWS, otherB, 2}
	ov := cohortDef{otherWS, otherV, 3}
	// The partner's cohorts already have members when it starts syncing:
	// the first sync of each adds them all (see firstSync).
	g.initial(a, pool, 150)
	g.initial(b, pool, 120)
	g.initial(c, pool, 100)
	g.initial(x, pool, 20)
	g.initial(am, pool, 40)
	g.initial(oa, opool, 60)
	g.initial(ob, opool, 40)
	g.initial(ov, opool, 10)
	first := map[cohortDef]bool{}
	// firstSync lands the cohort's first sync (everyone the partner has)
	// or a later one (the changes since the last).
	firstSync := func(bt *batch, d cohortDef, pool []string, at time.Time, o syncOpts) []landed {
		if !first[d] {
			want := g.members[d]
			g.members[d] = map[string]bool{}
			var ids []idChange
			for _, u := range pool {
				if want[u] {
					ids = append(ids, idChange{u, true})
				}
			}
			for _, u := range ids {
				g.members[d][u.user] = true
			}
			first[d] = true
			var out []landed
			for n := 0; len(ids) > 0; n++ {
				k := min(25, len(ids))
				received := at.Add(time.Duration(n) * time.Second)
				out = append(out, g.record(bt, d, ids[:k], received, received))
				ids = ids[k:]
			}
			return out
		}
		return g.sync(bt, d, pool, at, o)
	}

	h := func(n int) time.Time { return day1.Add(time.Duration(n) * time.Hour) }
	dyn := syncOpts{churn: 0.08, strays: 2}
	var (
		writes        []int
		bSync32       []landed
		aSync36       []landed
		cSync9        []landed
		cSync58       []landed
		evtA36, evtB8 time.Time
	)
	// The rounds: every cohort that syncs at an hour lands in that hour's
	// batch, metadata first.
	hours := []int{0, 2, 3, 6, 7, 8, 9, 12, 13, 16, 18, 24, 26, 30, 32, 36, 40, 42, 48, 50, 54, 58, 60, 66}
	for _, hr := range hours {
		bt := g.newBatch()
		idx := len(g.batches) - 1
		at := h(hr)
		switch hr {
		case 0:
			g.meta(bt, a, "Churn risk", at)
			g.meta(bt, b, "Power users", at)
			g.meta(bt, d, "Dormant", at)
		case 2:
			g.meta(bt, oa, "Churn risk", at)
			g.meta(bt, ob, "VIP", at)
		case 3:
			g.meta(bt, ov, "VIP", at)
		case 9:
			g.meta(bt, c, "Trial", at)
		case 13:
			g.meta(bt, am, "Churn risk", at)
		case 30:
			g.meta(bt, c, "Trial users", at)
		}
		if hr%6 == 0 {
			o := dyn
			if hr == 12 {
				o.flipFlops = 3
			}
			ls := firstSync(bt, a, pool, at, o)
			if hr == 36 {
				aSync36 = ls
				evtA36 = ls[0].rows[0].EventTime
			}
		}
		if hr%8 == 0 && hr <= 40 {
			ls := firstSync(bt, b, pool, at.Add(10*time.Second), dyn)
			if hr == 8 {
				evtB8 = ls[0].rows[0].EventTime
			}
			if hr == 32 {
				bSync32 = ls
			}
		}
		switch hr {
		case 9, 58:
			ls := firstSync(bt, c, pool, at, syncOpts{churn: 0.2})
			if hr == 9 {
				cSync9 = ls
			}
			if hr == 58 {
				cSync58 = ls
			}
		case 7, 30:
			firstSync(bt, x, pool, at.Add(20*time.Second), syncOpts{churn: 0.2, strays: 1})
		case 13:
			firstSync(bt, am, pool, at, syncOpts{})
		case 2, 26, 50:
			firstSync(bt, oa, opool, at, dyn)
			if hr != 26 {
				firstSync(bt, ob, opool, at.Add(30*time.Second), dyn)
			}
		case 3:
			firstSync(bt, ov, opool, at, syncOpts{})
		}
		writes = append(writes, idx)
		switch hr {
		case 6:
			// The runner's batch failed after the sinks wrote it: the
			// same batch is delivered again.
			writes = append(writes, idx)
		case 16:
			// An older batch redelivered late, after newer ones.
			writes = append(writes, slices.Index(hours, 8))
		case 32:
			// B's partner restarts the sync three minutes later: the same
			// changes as new records.
			rb := g.newBatch()
			g.resend(rb, bSync32, at.Add(3*time.Minute))
			writes = append(writes, len(g.batches)-1)
		case 36:
			// A producer retry lands one of A's records a second time.
			rb := g.newBatch()
			g.reland(rb, aSync36[0])
			writes = append(writes, len(g.batches)-1)
		}
	}

	// A backfill lands C's history last: a record received on day 1, an
	// hour after C's first sync, at an offset after every other. Its day
	// is day 1 but its version is the highest, so in version order it
	// follows the day-3 changes of its users; it repeats them, and is no
	// transition. A day-bounded reading would take it for the state before
	// day 2, or for the change after day 1's.
	bf := g.newBatch()
	var late []idChange
	for _, r := range cSync58[0].rows[:4] {
		late = append(late, idChange{r.UserID, r.IsMember})
	}
	g.record(bf, c, late, h(10), h(10))
	writes = append(writes, len(g.batches)-1)
	// Then a producer retry lands one of C's hour-9 records again, long
	// after: applied, it puts back its users' hour-9 state. A record that
	// restores the users the hour-58 sync changed then changes their
	// membership again (transitions), although it repeats their last
	// billable assignments.
	var retried landed
	var restore []idChange
	for _, l := range cSync9 {
		restore = restore[:0]
		for _, r := range l.rows {
			if now := g.members[c][r.UserID]; now != r.IsMember && len(restore) < 4 {
				restore = append(restore, idChange{r.UserID, now})
			}
		}
		if len(restore) > 0 {
			retried = l
			break
		}
	}
	rb := g.newBatch()
	g.reland(rb, retried)
	g.record(rb, c, restore, h(10).Add(30*time.Second), h(10).Add(30*time.Second))
	writes = append(writes, len(g.batches)-1)

	co := Corpus{
		Workspace: mainWS, OtherWorkspace: otherWS,
		Now:     h(71).Add(30 * time.Minute),
		batches: g.batches, writes: writes,
	}
	co.Cases = cases(evtA36, evtB8)
	co.DataPoints = []DataPointCase{
		{Name: "all days by day", Workspace: mainWS, From: day1, To: h(48), GroupBy: segments.GroupByDay},
		{Name: "all days by partner", Workspace: mainWS, From: day1.Add(-24 * time.Hour), To: h(72), GroupBy: segments.GroupByPartner},
		{Name: "all days by cohort", Workspace: mainWS, From: day1, To: h(48), GroupBy: segments.GroupByCohort},
		{Name: "day 1 by cohort", Workspace: mainWS, From: day1, To: h(23), GroupBy: segments.GroupByCohort},
		{Name: "day 2 by day", Workspace: mainWS, From: h(24), To: h(24), GroupBy: segments.GroupByDay},
		{Name: "day 2 by cohort, from and to inside the day", Workspace: mainWS, From: h(30), To: h(31), GroupBy: segments.GroupByCohort},
		{Name: "days 2 and 3 by day", Workspace: mainWS, From: h(24), To: h(71), GroupBy: segments.GroupByDay},
		{Name: "no data", Workspace: mainWS, From: day1.Add(-30 * 24 * time.Hour), To: day1.Add(-29 * 24 * time.Hour), GroupBy: segments.GroupByDay},
		{Name: "reversed range", Workspace: mainWS, From: h(48), To: day1, GroupBy: segments.GroupByDay},
		{Name: "other workspace by cohort", Workspace: otherWS, From: day1, To: h(48), GroupBy: segments.GroupByCohort},
		{Name: "unknown workspace", Workspace: "corpus-nobody", From: day1, To: h(48), GroupBy: segments.GroupByDay},
	}
	return co
}

// cases are the filter questions. evtA36 is the event time of A's sync at
// hour 36, evtB8 of B's at hour 8: as_of exactly there includes the sync.
func cases(evtA36, evtB8 time.Time) []Case {
	A, B, C := byID(cohortA), byID(cohortB), byID(cohortC)
	lastA := day1.Add(66 * time.Hour)
	list := []struct {
		name, ws string
		e        expr
		asOf     time.Time
		errPath  string
	}{
		{name: "A by id", e: A},
		{name: "A by name", e: byName("Churn risk", cohortA)},
		{name: "A and not B", e: and(byName("Churn risk", cohortA), not(byName("Power users", cohortB)))},
		{name: "A and not B by id", e: and(A, not(B))},
		{name: "Braze includes B by name", e: braze("Mixpanel_Cohorts", "includes", "Power users", cohortB)},
		{name: "Braze excludes A by id", e: braze("Mixpanel_Cohorts", "excludes", "1001", cohortA)},
		{name: "Braze includes Amplitude by name", e: braze("Amplitude_Cohorts", "includes", "Churn risk", cohortAmp)},
		{name: "not A", e: not(A)},
		{name: "not not A", e: not(not(A))},
		{name: "A or B or C", e: or(A, B, C)},
		{name: "A and B and C", e: and(A, B, C)},
		{name: "nested", e: and(or(A, C), not(and(B, C)))},
		{name: "only negations", e: and(not(A), not(B))},
		{name: "A or not B", e: or(A, not(B))},
		{name: "same cohort by id and name", e: and(A, or(byName("Churn risk", cohortA), C))},
		{name: "renamed cohort by new name", e: byName("Trial users", cohortC)},
		{name: "cohort without metadata", e: or(byID(cohortX), and(byID(cohortAmp), not(A)))},
		{name: "cohort without changes", e: byName("Dormant", cohortD)},
		{name: "not cohort without changes", e: not(byID(cohortD))},
		{name: "A and not B as of before the last sync", e: and(A, not(B)), asOf: lastA.Add(-5 * time.Hour)},
		{name: "A and not B as of day 2 noon", e: and(A, not(B)), asOf: day1.Add(36 * time.Hour).Add(-time.Minute)},
		{name: "A as of exactly a change", e: A, asOf: evtA36},
		{name: "A as of a fraction after a change", e: A, asOf: evtA36.Add(999 * time.Millisecond)},
		{name: "A as of a fraction before a change", e: A, asOf: evtA36.Add(-time.Millisecond)},
		{name: "B or C as of B's second sync", e: or(B, C), asOf: evtB8},
		{name: "not A as of before everything", e: not(A), asOf: day1.Add(-24 * time.Hour)},
		{name: "nested as of day 1 evening", e: and(or(A, C), not(and(B, C))), asOf: day1.Add(20 * time.Hour)},
		{name: "other workspace A", ws: otherWS, e: byID(otherA)},
		{name: "other workspace A by name", ws: otherWS, e: byName("Churn risk", otherA)},
		{name: "other workspace not A and not VIP 1009", ws: otherWS, e: and(not(byID(otherA)), not(byID(otherV)))},
		{name: "other workspace A or B as of day 2", ws: otherWS, e: or(byID(otherA), byID(otherB)), asOf: day1.Add(30 * time.Hour)},
		// Errors, with the part of the document to fix.
		{name: "old name", e: raw(`{"and":[{"cohort":{"partner":"mixpanel","id":"1001"}},{"cohort":{"partner":"mixpanel","name":"Trial"}}]}`), errPath: "/and/1/cohort/name"},
		{name: "unknown id", e: raw(`{"not":{"cohort":{"partner":"mixpanel","id":"9999"}}}`), errPath: "/not/cohort/id"},
		{name: "cohort of the other workspace", e: raw(`{"cohort":{"partner":"mixpanel","id":"1009"}}`), errPath: "/cohort/id"},
		{name: "ambiguous name", ws: otherWS, e: raw(`{"or":[{"cohort":{"partner":"mixpanel","id":"1001"}},{"cohort":{"partner":"mixpanel","name":"VIP"}}]}`), errPath: "/or/1/cohort/name"},
		{name: "Braze op", e: raw(`{"filter":"Mixpanel_Cohorts","op":"contains","value":"Churn risk"}`), errPath: "/op"},
		{name: "not an object", e: raw(`{"and":[{"cohort":{"partner":"mixpanel","id":"1001"}},7]}`), errPath: "/and/1"},
	}
	out := make([]Case, 0, len(list))
	for _, l := range list {
		ws := l.ws
		if ws == "" {
			ws = mainWS
		}
		out = append(out, Case{Name: l.name, Workspace: ws, Filter: l.e.json(), AsOf: l.asOf, ErrPath: l.errPath, expr: l.e})
	}
	return out
}
