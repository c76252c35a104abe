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
// Both come from one pass over the history, membership_changes, without
// FINAL (which 18.16 runs as a single-threaded merge, half the cost): per
// (partner, cohort, user) with a change landed in range, all of its changes
// are collected and sorted by version. A change is a transition when its
// is_member differs from the change before it in that order, whatever its
// day: a backfill lands history with its original day at a later offset,
// so an older day can hold a higher version, and neither "the last change
// before from" nor "the changes up to to" is the history before a change.
// Every copy takes part in that order, a producer retry's second copy too,
// since the state store applies it; data_points cannot give that order, as
// its key holds one copy of an assignment, whichever a merge kept. Only the
// first copy of an assignment (same record id, same position, found with
// arrayEnumerateUniq over (cityHash64(record_id), position), the record id
// hashed to keep the arrays small: a collision would need two records of
// one user and cohort with equal 64-bit hashes) is counted, on its UTC
// landing day, and only the ones in range. No window functions, which
// 18.16 lacks.
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
  SELECT partner, cohort_id, s,
    arrayMap((x, prev) -> x.2 != prev, s, arrayPopBack(arrayPushFront(arrayMap(x -> x.2, s), toUInt8(0)))) AS changed,
    arrayEnumerateUniq(arrayMap(x -> x.4, s), arrayMap(x -> x.5, s)) AS copy
  FROM (
    SELECT partner, cohort_id,
      arraySort(x -> x.1, groupArray((version, is_member, toDate(received_at, 'UTC') AS day, cityHash64(record_id), position))) AS s
    FROM ` + e.table(chsink.TableMembershipChanges) + `
    WHERE workspace = ?
    GROUP BY partner, cohort_id, user_id
    HAVING countIf(day >= toDate(?) AND day <= toDate(?)) > 0
  )
)
ARRAY JOIN
  arrayMap(x -> x.3, s) AS d,
  changed AS eff,
  copy AS n
WHERE n = 1 AND d >= toDate(?) AND d <= toDate(?)
GROUP BY k1, k2
ORDER BY ` + order
	var rows []segments.DataPointRow
	err := e.query(ctx, "datapoints", q, []any{workspace, fromDay, toDay, fromDay, toDay}, func(r driver.Rows) error {
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
