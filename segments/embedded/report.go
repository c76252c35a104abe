package embedded

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/cohortsync/cohortsync/segments"
	"github.com/cohortsync/cohortsync/sinks/state"
)

// DataPoints implements segments.Engine from the store's per-cohort,
// per-landing-day counters: billable is every landed assignment once, and
// transitions the assignments that changed membership when applied (the
// store's "effective" count).
func (e *Engine) DataPoints(ctx context.Context, workspace string, from, to time.Time, groupBy segments.GroupBy) (rows []segments.DataPointRow, err error) {
	start := time.Now()
	defer func() { e.observe(ctx, "datapoints", start, err) }()
	switch groupBy {
	case segments.GroupByDay, segments.GroupByPartner, segments.GroupByCohort:
	default:
		return nil, fmt.Errorf("segments/embedded: group by %q: want day, partner or cohort", groupBy)
	}
	if err := ctx.Err(); err != nil {
		return nil, wrap("data points", err)
	}
	fromDay := utcDay(from)
	toNext := utcDay(to).AddDate(0, 0, 1)
	if !toNext.After(fromDay) {
		return nil, nil
	}
	points, err := e.store.DataPoints(workspace, fromDay, toNext)
	if err != nil {
		return nil, wrap("data points", err)
	}
	type key struct{ day, partner, cohort string }
	sums := map[key]*segments.DataPointRow{}
	for _, p := range points {
		var k key
		switch groupBy {
		case segments.GroupByDay:
			k.day = p.Day.Format(time.DateOnly)
		case segments.GroupByPartner:
			k.partner = p.Partner
		default:
			k.partner, k.cohort = p.Partner, p.CohortID
		}
		r, ok := sums[k]
		if !ok {
			r = &segments.DataPointRow{Day: k.day, Partner: k.partner, CohortID: k.cohort}
			sums[k] = r
		}
		r.Billable += p.Billable
		r.Transitions += p.Effective
	}
	for _, r := range sums {
		rows = append(rows, *r)
	}
	slices.SortFunc(rows, func(a, b segments.DataPointRow) int {
		return cmp.Or(cmp.Compare(a.Day, b.Day), cmp.Compare(a.Partner, b.Partner), cmp.Compare(a.CohortID, b.CohortID))
	})
	return rows, nil
}

func utcDay(t time.Time) time.Time {
	y, m, d := t.UTC().Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

// Cohorts implements segments.Engine: every cohort of the workspace that has
// metadata or changes, in (partner, cohort id) order. The sync mode comes
// from segments.InferSync over the distinct landing seconds of the cohort's
// changes.
func (e *Engine) Cohorts(ctx context.Context, workspace string, now time.Time) (out []segments.CohortInfo, err error) {
	start := time.Now()
	defer func() { e.observe(ctx, "cohorts", start, err) }()
	out = []segments.CohortInfo{}
	err = e.store.View(ctx, func(tx *state.ReadTx) error {
		return tx.ForEachCohort(workspace, func(c state.Cohort, _ uint64) error {
			times, err := tx.SyncTimes(workspace, c.Partner, c.CohortID)
			if err != nil {
				return err
			}
			if len(times) == 0 && !c.LastSync.IsZero() {
				// Stored by a build that kept no landing times.
				times = []time.Time{c.LastSync.Truncate(time.Second)}
			}
			info := segments.CohortInfo{Partner: c.Partner, CohortID: c.CohortID, Name: c.Name, MemberCount: c.Members}
			describeSyncs(&info, times, now)
			out = append(out, info)
			return nil
		})
	})
	if err != nil {
		return nil, wrap("cohorts", err)
	}
	return out, nil
}

// describeSyncs fills the sync fields of c from its landing times. A cohort
// that never received a change is one-time, with no last sync and age 0.
func describeSyncs(c *segments.CohortInfo, times []time.Time, now time.Time) {
	c.SyncMode = segments.SyncOneTime
	if len(times) == 0 {
		return
	}
	c.LastSync = slices.MaxFunc(times, func(a, b time.Time) int { return a.Compare(b) })
	c.AgeSeconds = max(int64(now.Sub(c.LastSync)/time.Second), 0)
	mode, period, stale := segments.InferSync(times, now)
	c.SyncMode, c.PeriodSeconds, c.Stale = mode, int64(period/time.Second), stale
}
