package clickhouse

import (
	"context"
	"fmt"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/cohortsync/cohortsync/segments"
	chsink "github.com/cohortsync/cohortsync/sinks/clickhouse"
)

// DataPoints implements segments.Engine.
//
// Billable is the number of distinct landed assignments (record_id,
// position) per UTC landing day: a redelivered batch adds nothing, while a
// partner's re-sent sync has new record ids and counts again.
//
// Transitions counts the assignments that changed the user's membership, as
// the state store's "effective" flag does: in version order per (partner,
// cohort, user), a change is a transition when its is_member differs from
// the previous change's, and the first change is one when it is an add.
//
// Both come from one pass over data_points without FINAL (which 18.16 runs
// as a single-threaded merge, half the cost): per (partner, cohort, user),
// the changes in range are collected and sorted by version; copies of one
// assignment (same record id, same position) are dropped but the first,
// with arrayEnumerateUniq over (cityHash64(record_id), position) — the
// record id hashed to keep the arrays small; a collision would need two
// records of one user and cohort with equal 64-bit hashes. The history
// before from contributes only its last is_member (argMaxIf), the previous
// value of the first change in range; no window functions, which 18.16
// lacks.
func (e *Engine) DataPoints(ctx context.Context, workspace string, from, to time.Time, groupBy segments.GroupBy) ([]segments.DataPointRow, error) {
	var key, order string
	switch groupBy {
	case segments.GroupByDay:
		key, order = "toString(d) AS k1, '' AS k2", "k1"
	case segments.GroupByPartner:
		key, order = "partner AS k1, '' AS k2", "k1"
	case segments.GroupByCohort:
		key, order = "partner AS k1, cohort_id AS k2", "k1, k2"
	default:
		return nil, fmt.Errorf("segments/clickhouse: group by %q: want day, partner or cohort", groupBy)
	}
	// Dates are bound as 'YYYY-MM-DD' text under toDate: a time.Time
	// compared with a Date returns no rows on 18.16 (docs/ARCHITECTURE.md, ClickHouse dialect limits).
	fromDay, toDay := from.UTC().Format(time.DateOnly), to.UTC().Format(time.DateOnly)
	q := "SELECT " + key + `, count() AS billable, sum(eff) AS transitions
FROM (
  SELECT partner, cohort_id, before,
    arrayFilter((x, n) -> n = 1, s, arrayEnumerateUniq(arrayMap(x -> x.4, s), arrayMap(x -> x.5, s))) AS h
  FROM (
    SELECT partner, cohort_id,
      arraySort(x -> x.1, groupArrayIf((version, is_member, day, cityHash64(record_id), position), day >= toDate(?))) AS s,
      argMaxIf(is_member, version, day < toDate(?)) AS before
    FROM ` + e.table(chsink.TableDataPoints) + `
    WHERE workspace = ? AND day <= toDate(?)
    GROUP BY partner, cohort_id, user_id
    HAVING length(s) > 0
  )
)
ARRAY JOIN
  arrayMap(x -> x.3, h) AS d,
  arrayMap((x, prev) -> x.2 != prev, h, arrayPopBack(arrayPushFront(arrayMap(x -> x.2, h), before))) AS eff
GROUP BY k1, k2
ORDER BY ` + order
	var rows []segments.DataPointRow
	err := e.query(ctx, "datapoints", q, []any{fromDay, fromDay, workspace, toDay}, func(r driver.Rows) error {
		var k1, k2 string
		var billable, transitions uint64
		if err := r.Scan(&k1, &k2, &billable, &transitions); err != nil {
			return err
		}
		row := segments.DataPointRow{Billable: int64(billable), Transitions: int64(transitions)}
		switch groupBy {
		case segments.GroupByDay:
			row.Day = k1
		case segments.GroupByPartner:
			row.Partner = k1
		default:
			row.Partner, row.CohortID = k1, k2
		}
		rows = append(rows, row)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("segments/clickhouse: data points of %s: %w", workspace, err)
	}
	return rows, nil
}
