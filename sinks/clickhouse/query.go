package clickhouse

import (
	"context"
	"fmt"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// Members returns the users currently in a cohort, sorted.
//
// FINAL collapses replays and older versions. The member test is a HAVING on
// argMax rather than WHERE is_member = 1: a server may move a WHERE on a
// non-key column into PREWHERE, which runs before FINAL collapses rows and so
// would revive a user whose latest change was a remove.
func (s *Sink) Members(ctx context.Context, workspace, partner, cohortID string) ([]string, error) {
	q := "SELECT user_id FROM " + s.layout.qualified(TableMembership) + ` FINAL
WHERE workspace = ? AND partner = ? AND cohort_id = ?
GROUP BY user_id
HAVING argMax(is_member, version) = 1
ORDER BY user_id`
	var out []string
	err := s.query(ctx, q, []any{workspace, partner, cohortID}, func(r driver.Rows) error {
		var u string
		if err := r.Scan(&u); err != nil {
			return err
		}
		out = append(out, u)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("clickhouse: members of %s/%s/%s: %w", workspace, partner, cohortID, err)
	}
	return out, nil
}

// DataPointTotal is the billable assignments of one cohort on one landing day.
type DataPointTotal struct {
	Partner  string
	CohortID string
	// Day is the UTC day the records landed.
	Day     time.Time
	Adds    uint64
	Removes uint64
	Total   uint64
}

// DataPointTotals counts data points per partner, cohort and day for one
// workspace, each landed assignment once however often it was delivered.
func (s *Sink) DataPointTotals(ctx context.Context, workspace string) ([]DataPointTotal, error) {
	q := "SELECT partner, cohort_id, toString(day), countIf(is_member = 1), countIf(is_member = 0), count() FROM " +
		s.layout.qualified(TableDataPoints) + ` FINAL
WHERE workspace = ?
GROUP BY partner, cohort_id, day
ORDER BY partner, cohort_id, day`
	var out []DataPointTotal
	err := s.query(ctx, q, []any{workspace}, func(r driver.Rows) error {
		var t DataPointTotal
		var day string
		if err := r.Scan(&t.Partner, &t.CohortID, &day, &t.Adds, &t.Removes, &t.Total); err != nil {
			return err
		}
		// The day travels as text: a Date bound or scanned as time.Time is
		// where 18.16 and the driver disagree (docs/ARCHITECTURE.md, ClickHouse dialect limits).
		d, err := time.Parse(time.DateOnly, day)
		if err != nil {
			return fmt.Errorf("day %q: %w", day, err)
		}
		t.Day = d
		out = append(out, t)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("clickhouse: data point totals of %s: %w", workspace, err)
	}
	return out, nil
}

// RejectionTotal is what the import refused for one cohort under one reason.
type RejectionTotal struct {
	Partner  string
	CohortID string
	Reason   string
	IDs      uint64
	Records  uint64
}

// RejectionTotals sums refused ids and records per partner, cohort and
// reason for one workspace, each landed record counted once.
func (s *Sink) RejectionTotals(ctx context.Context, workspace string) ([]RejectionTotal, error) {
	q := "SELECT partner, cohort_id, reason, sum(ids), sum(records) FROM " +
		s.layout.qualified(TableImportRejections) + ` FINAL
WHERE workspace = ?
GROUP BY partner, cohort_id, reason
ORDER BY partner, cohort_id, reason`
	var out []RejectionTotal
	err := s.query(ctx, q, []any{workspace}, func(r driver.Rows) error {
		var t RejectionTotal
		if err := r.Scan(&t.Partner, &t.CohortID, &t.Reason, &t.IDs, &t.Records); err != nil {
			return err
		}
		out = append(out, t)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("clickhouse: rejection totals of %s: %w", workspace, err)
	}
	return out, nil
}

// query runs q under the query timeout and hands each row to scan.
func (s *Sink) query(ctx context.Context, q string, args []any, scan func(driver.Rows) error) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.QueryTimeout)
	defer cancel()
	rows, err := s.conn.Query(ctx, q, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := scan(rows); err != nil {
			return err
		}
	}
	return rows.Err()
}
