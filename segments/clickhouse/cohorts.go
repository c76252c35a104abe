package clickhouse

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/cohortsync/cohortsync/segments"
	chsink "github.com/cohortsync/cohortsync/sinks/clickhouse"
)

// Cohorts implements segments.Engine: every cohort of the workspace that has
// metadata or changes, ordered by partner and cohort id. The sync mode is
// inferred (segments.InferSync) from the distinct landing times of the
// cohort's change records.
func (e *Engine) Cohorts(ctx context.Context, workspace string, now time.Time) ([]segments.CohortInfo, error) {
	infos := map[cohortKey]*segments.CohortInfo{}
	get := func(k cohortKey) *segments.CohortInfo {
		c, ok := infos[k]
		if !ok {
			c = &segments.CohortInfo{Partner: k.partner, CohortID: k.id}
			infos[k] = c
		}
		return c
	}
	q := "SELECT partner, cohort_id, argMax(name, version) FROM " + e.table(chsink.TableCohorts) + `
WHERE workspace = ?
GROUP BY partner, cohort_id`
	err := e.query(ctx, "cohorts_names", q, []any{workspace}, func(r driver.Rows) error {
		var k cohortKey
		var name string
		if err := r.Scan(&k.partner, &k.id, &name); err != nil {
			return err
		}
		get(k).Name = name
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("segments/clickhouse: cohorts of %s: %w", workspace, err)
	}
	q = `SELECT partner, cohort_id, countIf(m = 1) FROM (
  SELECT partner, cohort_id, user_id, argMax(is_member, version) AS m
  FROM ` + e.table(chsink.TableMembership) + `
  WHERE workspace = ?
  GROUP BY partner, cohort_id, user_id
)
GROUP BY partner, cohort_id`
	err = e.query(ctx, "cohorts_members", q, []any{workspace}, func(r driver.Rows) error {
		var k cohortKey
		var n uint64
		if err := r.Scan(&k.partner, &k.id, &n); err != nil {
			return err
		}
		get(k).MemberCount = int64(n)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("segments/clickhouse: member counts of %s: %w", workspace, err)
	}
	syncs := map[cohortKey][]time.Time{}
	q = "SELECT partner, cohort_id, groupUniqArray(toUInt32(received_at)) FROM " + e.table(chsink.TableMembershipChanges) + `
WHERE workspace = ?
GROUP BY partner, cohort_id`
	err = e.query(ctx, "cohorts_syncs", q, []any{workspace}, func(r driver.Rows) error {
		var k cohortKey
		var secs []uint32
		if err := r.Scan(&k.partner, &k.id, &secs); err != nil {
			return err
		}
		ts := make([]time.Time, len(secs))
		for i, s := range secs {
			ts[i] = time.Unix(int64(s), 0).UTC()
		}
		syncs[k] = ts
		get(k)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("segments/clickhouse: syncs of %s: %w", workspace, err)
	}
	out := make([]segments.CohortInfo, 0, len(infos))
	for k, c := range infos {
		describeSyncs(c, syncs[k], now)
		out = append(out, *c)
	}
	slices.SortFunc(out, func(a, b segments.CohortInfo) int {
		return cmp.Or(cmp.Compare(a.Partner, b.Partner), cmp.Compare(a.CohortID, b.CohortID))
	})
	return out, nil
}

// describeSyncs fills the sync fields of c from its landing times. A cohort
// that never received a change is one-time, with no last sync and age 0.
func describeSyncs(c *segments.CohortInfo, times []time.Time, now time.Time) {
	c.SyncMode, c.PeriodSeconds, c.Stale, c.AgeSeconds = segments.SyncOneTime, 0, false, 0
	if len(times) == 0 {
		return
	}
	c.LastSync = slices.MaxFunc(times, func(a, b time.Time) int { return a.Compare(b) })
	c.AgeSeconds = max(int64(now.Sub(c.LastSync)/time.Second), 0)
	mode, period, stale := segments.InferSync(times, now)
	c.SyncMode, c.PeriodSeconds, c.Stale = mode, int64(period/time.Second), stale
}
