package segmentstest

import (
	"cmp"
	"slices"
	"time"

	"github.com/cohortsync/cohortsync/schemas"
	"github.com/cohortsync/cohortsync/segments"
)

// model holds the expected answers' inputs, replayed from the raw changes
// in the order Write sends them, with plain maps.
type model struct {
	// history is every distinct change (by version) per workspace, cohort
	// and user, in version order.
	history map[string]map[CohortKey]map[string][]schemas.ResolvedChange
	// points are the distinct assignments (record id, position) per
	// workspace, the first landing of each.
	points map[string][]schemas.ResolvedChange
	// names are the cohorts' latest names; a cohort with changes but no
	// metadata has "".
	names map[string]map[CohortKey]string
}

type wsKey struct {
	ws string
	k  CohortKey
}

func (c Corpus) model() *model {
	m := &model{
		history: map[string]map[CohortKey]map[string][]schemas.ResolvedChange{},
		points:  map[string][]schemas.ResolvedChange{},
		names:   map[string]map[CohortKey]string{},
	}
	type pointKey struct {
		ws, rid string
		pos     uint32
	}
	seenPoint := map[pointKey]bool{}
	type versionKey struct {
		ws      string
		k       CohortKey
		version uint64
	}
	seenVersion := map[versionKey]bool{}
	metaOffset := map[wsKey]int64{}
	for _, i := range c.writes {
		b := c.batches[i]
		for _, r := range b.cohorts {
			e := r.Envelope
			p := e.Payload.(schemas.CohortPayload)
			k := wsKey{e.Workspace, CohortKey{e.Partner, p.CohortID}}
			if m.names[e.Workspace] == nil {
				m.names[e.Workspace] = map[CohortKey]string{}
			}
			if off, ok := metaOffset[k]; !ok || r.Offset > off {
				metaOffset[k] = r.Offset
				m.names[e.Workspace][k.k] = p.Name
			}
		}
		for _, ch := range b.changes {
			k := CohortKey{ch.Partner, ch.CohortID}
			if m.names[ch.Workspace] == nil {
				m.names[ch.Workspace] = map[CohortKey]string{}
			}
			if _, ok := m.names[ch.Workspace][k]; !ok {
				m.names[ch.Workspace][k] = ""
			}
			if vk := (versionKey{ch.Workspace, k, ch.Version}); !seenVersion[vk] {
				seenVersion[vk] = true
				if m.history[ch.Workspace] == nil {
					m.history[ch.Workspace] = map[CohortKey]map[string][]schemas.ResolvedChange{}
				}
				if m.history[ch.Workspace][k] == nil {
					m.history[ch.Workspace][k] = map[string][]schemas.ResolvedChange{}
				}
				m.history[ch.Workspace][k][ch.UserID] = append(m.history[ch.Workspace][k][ch.UserID], ch)
			}
			if pk := (pointKey{ch.Workspace, ch.RecordID, ch.Position}); !seenPoint[pk] {
				seenPoint[pk] = true
				m.points[ch.Workspace] = append(m.points[ch.Workspace], ch)
			}
		}
	}
	for _, cohorts := range m.history {
		for _, users := range cohorts {
			for _, h := range users {
				slices.SortFunc(h, func(a, b schemas.ResolvedChange) int { return cmp.Compare(a.Version, b.Version) })
			}
		}
	}
	return m
}

// deciding is the change that decides whether user is in k: the newest, or
// with asOf set the newest whose event time, in whole seconds, is not after
// asOf's.
func (m *model) deciding(ws string, k CohortKey, user string, asOf time.Time) *schemas.ResolvedChange {
	h := m.history[ws][k][user]
	for i := len(h) - 1; i >= 0; i-- {
		if asOf.IsZero() || h[i].EventTime.Unix() <= asOf.Unix() {
			return &h[i]
		}
	}
	return nil
}

func (m *model) in(ws string, k CohortKey, user string, asOf time.Time) bool {
	c := m.deciding(ws, k, user, asOf)
	return c != nil && c.IsMember
}

// universe is every user with a change in any cohort of ws, at any time,
// sorted bytewise.
func (m *model) universe(ws string) []string {
	set := map[string]bool{}
	for _, users := range m.history[ws] {
		for u := range users {
			set[u] = true
		}
	}
	out := make([]string, 0, len(set))
	for u := range set {
		out = append(out, u)
	}
	slices.Sort(out)
	return out
}

// members evaluates the case's predicate for every user of the universe.
func (m *model) members(c Case) []string {
	out := []string{}
	for _, u := range m.universe(c.Workspace) {
		if c.expr.pred(func(k CohortKey) bool { return m.in(c.Workspace, k, u, c.AsOf) }) {
			out = append(out, u)
		}
	}
	return out
}

// answer is the expected per-user answer.
func (m *model) answer(c Case, user string) segments.Answer {
	ans := segments.Answer{UserID: user, Reasons: []segments.Reason{}}
	for _, k := range c.expr.refs {
		r := segments.Reason{Partner: k.Partner, CohortID: k.ID, CohortName: m.names[c.Workspace][k]}
		if d := m.deciding(c.Workspace, k, user, c.AsOf); d != nil {
			r.InCohort = d.IsMember
			r.LastChange = &segments.Change{IsMember: d.IsMember, Version: d.Version, RecordID: d.RecordID, EventTime: d.EventTime, ReceivedAt: d.ReceivedAt}
		}
		ans.Reasons = append(ans.Reasons, r)
	}
	ans.Member = slices.Contains(m.universe(c.Workspace), user) &&
		c.expr.pred(func(k CohortKey) bool { return m.in(c.Workspace, k, user, c.AsOf) })
	return ans
}

// dataPoints is the expected report: billable is every distinct assignment
// once, on its landing day; a transition is an assignment that changed the
// user's membership: in version order of every change applied to the
// user's state in the cohort (a producer retry's second copy included,
// since it is applied), it differs from the one before (the first one:
// when it is an add). A second copy of an assignment is neither billable
// nor a transition of its own.
func (m *model) dataPoints(q DataPointCase) []segments.DataPointRow {
	// changed tells, per (cohort, user, version), whether the change moved
	// the user's membership.
	type change struct {
		k       CohortKey
		user    string
		version uint64
	}
	changed := map[change]bool{}
	for k, users := range m.history[q.Workspace] {
		for user, h := range users {
			prev := false
			for _, c := range h {
				changed[change{k, user, c.Version}] = c.IsMember != prev
				prev = c.IsMember
			}
		}
	}
	from, to := q.From.UTC().Format(time.DateOnly), q.To.UTC().Format(time.DateOnly)
	type gk struct{ day, partner, cohort string }
	sums := map[gk]*segments.DataPointRow{}
	for _, p := range m.points[q.Workspace] {
		day := p.ReceivedAt.UTC().Format(time.DateOnly)
		if day < from || day > to {
			continue
		}
		var g gk
		switch q.GroupBy {
		case segments.GroupByDay:
			g.day = day
		case segments.GroupByPartner:
			g.partner = p.Partner
		default:
			g.partner, g.cohort = p.Partner, p.CohortID
		}
		r := sums[g]
		if r == nil {
			r = &segments.DataPointRow{Day: g.day, Partner: g.partner, CohortID: g.cohort}
			sums[g] = r
		}
		r.Billable++
		if changed[change{CohortKey{p.Partner, p.CohortID}, p.UserID, p.Version}] {
			r.Transitions++
		}
	}
	out := []segments.DataPointRow{}
	for _, r := range sums {
		out = append(out, *r)
	}
	slices.SortFunc(out, compareRows)
	return out
}

func compareRows(a, b segments.DataPointRow) int {
	return cmp.Or(cmp.Compare(a.Day, b.Day), cmp.Compare(a.Partner, b.Partner), cmp.Compare(a.CohortID, b.CohortID))
}

// cohorts is the expected cohort list of ws at now.
func (m *model) cohorts(ws string, now time.Time) []segments.CohortInfo {
	out := []segments.CohortInfo{}
	for k, name := range m.names[ws] {
		info := segments.CohortInfo{Partner: k.Partner, CohortID: k.ID, Name: name, SyncMode: segments.SyncOneTime}
		seen := map[int64]bool{}
		var times []time.Time
		for u, h := range m.history[ws][k] {
			if m.in(ws, k, u, time.Time{}) {
				info.MemberCount++
			}
			for _, c := range h {
				if s := c.ReceivedAt.Unix(); !seen[s] {
					seen[s] = true
					times = append(times, time.Unix(s, 0).UTC())
				}
			}
		}
		if len(times) > 0 {
			for _, t := range times {
				if t.After(info.LastSync) {
					info.LastSync = t
				}
			}
			info.AgeSeconds = int64(now.Sub(info.LastSync) / time.Second)
			mode, period, stale := segments.InferSync(times, now)
			info.SyncMode, info.PeriodSeconds, info.Stale = mode, int64(period/time.Second), stale
		}
		out = append(out, info)
	}
	slices.SortFunc(out, func(a, b segments.CohortInfo) int {
		return cmp.Or(cmp.Compare(a.Partner, b.Partner), cmp.Compare(a.CohortID, b.CohortID))
	})
	return out
}
