package clickhouse

import (
	"context"
	"fmt"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// CohortVersion names a cohort and the highest version applied to it.
type CohortVersion struct {
	Workspace, Partner, CohortID string
	Version                      uint64
}

// CohortVersions lists every cohort with its highest membership version.
// max(version) needs no FINAL: replaced rows never carry a higher version
// than the row that replaced them.
func (s *Sink) CohortVersions(ctx context.Context) ([]CohortVersion, error) {
	q := "SELECT workspace, partner, cohort_id, max(version) FROM " + s.layout.qualified(TableMembership) +
		"\nGROUP BY workspace, partner, cohort_id\nORDER BY workspace, partner, cohort_id"
	var out []CohortVersion
	err := s.query(ctx, q, nil, func(r driver.Rows) error {
		var c CohortVersion
		if err := r.Scan(&c.Workspace, &c.Partner, &c.CohortID, &c.Version); err != nil {
			return err
		}
		out = append(out, c)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("clickhouse: cohort versions: %w", err)
	}
	return out, nil
}

// SnapshotMembers calls fn for every current member of the cohort in user id
// order and returns the highest version among the rows it read. Members and
// version come from one query, so the list is the state as of that version
// even while writes go on.
func (s *Sink) SnapshotMembers(ctx context.Context, workspace, partner, cohortID string, fn func(userID string) error) (uint64, error) {
	q := "SELECT user_id, argMax(is_member, version), max(version) FROM " + s.layout.qualified(TableMembership) + ` FINAL
WHERE workspace = ? AND partner = ? AND cohort_id = ?
GROUP BY user_id
ORDER BY user_id`
	var version uint64
	err := s.query(ctx, q, []any{workspace, partner, cohortID}, func(r driver.Rows) error {
		var (
			user     string
			isMember uint8
			v        uint64
		)
		if err := r.Scan(&user, &isMember, &v); err != nil {
			return err
		}
		version = max(version, v)
		if isMember != 1 {
			return nil
		}
		return fn(user)
	})
	if err != nil {
		return 0, fmt.Errorf("clickhouse: snapshot members of %s/%s/%s: %w", workspace, partner, cohortID, err)
	}
	return version, nil
}
