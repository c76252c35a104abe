package clickhouse

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/cohortsync/cohortsync/segments"
	"github.com/cohortsync/cohortsync/segments/filter"
	chsink "github.com/cohortsync/cohortsync/sinks/clickhouse"
)

// Evaluate implements segments.Engine: the count of the filter's members
// and, when q.Limit > 0, the page of at most q.Limit members after q.Cursor.
func (e *Engine) Evaluate(ctx context.Context, workspace string, q segments.Query) (segments.Page, error) {
	p, err := e.prepare(ctx, workspace, q.Filter, q.AsOf)
	if err != nil {
		return segments.Page{}, err
	}
	var after string
	if q.Cursor != "" {
		if after, err = filter.DecodeCursor(p.node, q.Cursor); err != nil {
			return segments.Page{}, err
		}
	}
	if q.Limit <= 0 {
		n, err := e.count(ctx, p, workspace)
		return segments.Page{Count: n}, err
	}
	return e.page(ctx, p, workspace, after, q.Limit)
}

// count runs the filter's query for its count alone.
func (e *Engine) count(ctx context.Context, p plan, workspace string) (int64, error) {
	sel, args := e.memberQuery(p, workspace)
	var n uint64
	err := e.query(ctx, "count", "SELECT count() FROM (\n"+sel+"\n)", args, func(r driver.Rows) error {
		return r.Scan(&n)
	})
	if err != nil {
		return 0, fmt.Errorf("segments/clickhouse: count %s: %w", p.node, err)
	}
	return int64(n), nil
}

// page answers the count and one page with one query: the members after the
// cursor sort first, so LIMIT takes the page while the server's
// rows_before_limit (in the profile info it sends with the result) counts
// every member. The cursor is not a WHERE condition for the same reason;
// the aggregation reads the filter's rows in full either way, since the
// count needs them. Should a server not report the figure, a count query
// runs instead.
func (e *Engine) page(ctx context.Context, p plan, workspace, after string, limit int) (segments.Page, error) {
	sel, args := e.memberQuery(p, workspace)
	order := "user_id"
	if after != "" {
		order = "user_id <= ?, user_id"
		args = append(args, after)
	}
	// One more than asked tells whether another page follows, so the last
	// page carries no cursor.
	args = append(args, limit+1)
	var (
		page       segments.Page
		more       bool
		calculated bool
		before     uint64
	)
	page.Members = make([]string, 0, min(limit, 1024))
	qctx := ch.Context(ctx, ch.WithProfileInfo(func(info *ch.ProfileInfo) {
		if info.CalculatedRowsBeforeLimit {
			calculated, before = true, max(before, info.RowsBeforeLimit)
		}
	}))
	err := e.query(qctx, "page", sel+"\nORDER BY "+order+"\nLIMIT ?", args, func(r driver.Rows) error {
		var u string
		if err := r.Scan(&u); err != nil {
			return err
		}
		switch {
		case after != "" && u <= after:
			// Past the end: the members before the cursor sort last.
		case len(page.Members) == limit:
			more = true
		default:
			page.Members = append(page.Members, u)
		}
		return nil
	})
	if err != nil {
		return segments.Page{}, fmt.Errorf("segments/clickhouse: members of %s: %w", p.node, err)
	}
	if more {
		page.NextCursor = filter.EncodeCursor(p.node, page.Members[len(page.Members)-1])
	}
	switch {
	case calculated:
		page.Count = int64(before)
	case after == "" && !more:
		// The whole result fit in the page.
		page.Count = int64(len(page.Members))
	default:
		if page.Count, err = e.count(ctx, p, workspace); err != nil {
			return segments.Page{}, err
		}
	}
	return page, nil
}

// Export implements segments.Engine with one streamed query in the order of
// Evaluate's pages. Without a deadline on ctx it is bounded by the export
// timeout.
func (e *Engine) Export(ctx context.Context, workspace string, raw json.RawMessage, asOf time.Time, fn func(userID string) error) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, e.exportTimeout)
		defer cancel()
	}
	p, err := e.prepare(ctx, workspace, raw, asOf)
	if err != nil {
		return err
	}
	sel, args := e.memberQuery(p, workspace)
	var fnErr error
	err = e.stream(ctx, "export", sel+"\nORDER BY user_id", args, func(r driver.Rows) error {
		var u string
		if err := r.Scan(&u); err != nil {
			return err
		}
		if err := fn(u); err != nil {
			fnErr = err
			return errStop
		}
		return nil
	})
	if fnErr != nil {
		return fnErr
	}
	if err != nil {
		return fmt.Errorf("segments/clickhouse: export %s: %w", p.node, err)
	}
	return nil
}

// Explain implements segments.Engine: for each cohort the filter names, the
// user's newest change in the history (at or before asOf when it is set),
// which decides whether the user is in the cohort.
func (e *Engine) Explain(ctx context.Context, workspace string, raw json.RawMessage, userID string, asOf time.Time) (segments.Answer, error) {
	p, err := e.prepare(ctx, workspace, raw, asOf)
	if err != nil {
		return segments.Answer{}, err
	}
	var b strings.Builder
	b.WriteString(`SELECT partner, cohort_id, is_member, version, record_id, toUInt32(event_time), toUInt32(received_at)
FROM ` + e.table(chsink.TableMembershipChanges) + `
WHERE workspace = ? AND user_id = ? AND (`)
	args := []any{workspace, userID}
	for i, k := range p.cohorts {
		if i > 0 {
			b.WriteString(" OR ")
		}
		b.WriteString("(partner = ? AND cohort_id = ?)")
		args = append(args, k.partner, k.id)
	}
	b.WriteString(")")
	if p.past {
		b.WriteString(" AND event_time <= toDateTime(?)")
		args = append(args, p.asOf)
	}
	b.WriteString("\nORDER BY version DESC\nLIMIT 1 BY partner, cohort_id")
	last := make(map[cohortKey]*segments.Change, len(p.cohorts))
	err = e.query(ctx, "explain", b.String(), args, func(r driver.Rows) error {
		var k cohortKey
		var c segments.Change
		var member uint8
		var event, received uint32
		if err := r.Scan(&k.partner, &k.id, &member, &c.Version, &c.RecordID, &event, &received); err != nil {
			return err
		}
		c.IsMember = member == 1
		c.EventTime = time.Unix(int64(event), 0).UTC()
		c.ReceivedAt = time.Unix(int64(received), 0).UTC()
		last[k] = &c
		return nil
	})
	if err != nil {
		return segments.Answer{}, fmt.Errorf("segments/clickhouse: explain %s for %q: %w", p.node, userID, err)
	}
	ans := segments.Answer{UserID: userID, Reasons: make([]segments.Reason, len(p.cohorts))}
	in := make([]bool, len(p.cohorts))
	for i, k := range p.cohorts {
		c := last[k]
		in[i] = c != nil && c.IsMember
		ans.Reasons[i] = segments.Reason{Partner: k.partner, CohortID: k.id, CohortName: p.names[k], InCohort: in[i], LastChange: c}
	}
	inUniverse := len(last) > 0
	if !inUniverse && p.needsUniverse() {
		if inUniverse, err = e.known(ctx, workspace, userID); err != nil {
			return segments.Answer{}, err
		}
	}
	ans.Member = inUniverse && p.holds(p.node, in)
	return ans, nil
}

// known tells whether the user appears in the workspace's membership, the
// universe "not" is relative to.
func (e *Engine) known(ctx context.Context, workspace, userID string) (bool, error) {
	q := "SELECT 1 FROM " + e.table(chsink.TableMembership) + " WHERE workspace = ? AND user_id = ? LIMIT 1"
	found := false
	err := e.query(ctx, "known_user", q, []any{workspace, userID}, func(driver.Rows) error {
		found = true
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("segments/clickhouse: look up user %q: %w", userID, err)
	}
	return found, nil
}
