package clickhouse

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/cohortsync/cohortsync/segments/filter"
	chsink "github.com/cohortsync/cohortsync/sinks/clickhouse"
)

// cohortKey identifies one cohort of a workspace.
type cohortKey struct{ partner, id string }

// plan is a parsed and resolved filter, ready to become SQL.
type plan struct {
	node filter.Node
	// cohorts are the distinct cohorts the filter names; cohort i is the
	// column c<i> of the per-user query.
	cohorts []cohortKey
	names   map[cohortKey]string
	index   map[cohortKey]int
	// past is set for an as_of query; asOf is its unix second.
	past bool
	asOf int64
}

// prepare parses raw, resolves its cohort names and ids against the
// workspace's cohorts and numbers the cohorts it names.
func (e *Engine) prepare(ctx context.Context, workspace string, raw json.RawMessage, asOf time.Time) (plan, error) {
	node, err := filter.Parse(raw)
	if err != nil {
		return plan{}, err
	}
	known, err := e.knownCohorts(ctx, workspace, node.Cohorts())
	if err != nil {
		return plan{}, err
	}
	resolved, err := filter.Resolve(node, func(partner, idOrName string) []string {
		var ids []string
		if _, ok := known[cohortKey{partner, idOrName}]; ok {
			ids = append(ids, idOrName)
		}
		for k, name := range known {
			if k.partner == partner && name == idOrName && k.id != idOrName {
				ids = append(ids, k.id)
			}
		}
		return ids
	})
	if err != nil {
		return plan{}, err
	}
	p := plan{node: resolved, names: map[cohortKey]string{}, index: map[cohortKey]int{}}
	for _, ref := range resolved.Cohorts() {
		k := cohortKey{ref.Partner, ref.ID}
		if _, ok := p.index[k]; ok {
			continue
		}
		p.index[k] = len(p.cohorts)
		p.cohorts = append(p.cohorts, k)
		p.names[k] = known[k]
	}
	if !asOf.IsZero() {
		// DateTime holds whole seconds, so the instant is truncated to one.
		p.past, p.asOf = true, max(asOf.Unix(), 0)
	}
	return p, nil
}

// knownCohorts returns the cohorts of the workspace that refs may mean, with
// their names: those the cohorts table lists (by id or name) and those that
// only have membership changes (by id). A cohort counts as known once either
// its metadata or one of its changes landed.
func (e *Engine) knownCohorts(ctx context.Context, workspace string, refs []filter.CohortRef) (map[cohortKey]string, error) {
	known := map[cohortKey]string{}
	if len(refs) == 0 {
		return known, nil
	}
	var conds []string
	args := []any{workspace}
	for _, r := range refs {
		v := r.ID
		if v == "" {
			v = r.Name
		}
		conds = append(conds, "(partner = ? AND (cohort_id = ? OR name = ?))")
		args = append(args, r.Partner, v, v)
	}
	q := "SELECT partner, cohort_id, argMax(name, version) AS name FROM " + e.table(chsink.TableCohorts) + `
WHERE workspace = ?
GROUP BY partner, cohort_id
HAVING ` + strings.Join(conds, " OR ")
	scan := func(r driver.Rows) error {
		var k cohortKey
		var name string
		if err := r.Scan(&k.partner, &k.id, &name); err != nil {
			return err
		}
		known[k] = name
		return nil
	}
	if err := e.query(ctx, "cohort_names", q, args, scan); err != nil {
		return nil, fmt.Errorf("segments/clickhouse: look up cohorts: %w", err)
	}
	// Values not known as ids yet may still be ids of cohorts whose metadata
	// never landed. Known ids are not looked up again: DISTINCT reads every
	// row of a cohort, millions for a large one.
	conds, args = conds[:0], []any{workspace}
	for _, r := range refs {
		v := r.ID
		if v == "" {
			v = r.Name
		}
		if _, ok := known[cohortKey{r.Partner, v}]; ok {
			continue
		}
		conds = append(conds, "(partner = ? AND cohort_id = ?)")
		args = append(args, r.Partner, v)
	}
	if len(conds) == 0 {
		return known, nil
	}
	q = "SELECT DISTINCT partner, cohort_id FROM " + e.table(chsink.TableMembership) + `
WHERE workspace = ? AND (` + strings.Join(conds, " OR ") + ")"
	scan = func(r driver.Rows) error {
		var k cohortKey
		if err := r.Scan(&k.partner, &k.id); err != nil {
			return err
		}
		if _, ok := known[k]; !ok {
			known[k] = ""
		}
		return nil
	}
	if err := e.query(ctx, "cohort_ids", q, args, scan); err != nil {
		return nil, fmt.Errorf("segments/clickhouse: look up cohorts: %w", err)
	}
	return known, nil
}

// predicate renders n over the per-user columns c<i>.
func (p plan) predicate(n filter.Node) string {
	switch n.Op {
	case filter.OpCohort:
		return "c" + strconv.Itoa(p.index[cohortKey{n.Cohort.Partner, n.Cohort.ID}]) + " = 1"
	case filter.OpNot:
		return "NOT (" + p.predicate(n.Args[0]) + ")"
	default:
		op := " AND "
		if n.Op == filter.OpOr {
			op = " OR "
		}
		parts := make([]string, len(n.Args))
		for i, a := range n.Args {
			parts[i] = "(" + p.predicate(a) + ")"
		}
		return strings.Join(parts, op)
	}
}

// holds evaluates n for one user whose cohort memberships are in.
func (p plan) holds(n filter.Node, in []bool) bool {
	switch n.Op {
	case filter.OpCohort:
		return in[p.index[cohortKey{n.Cohort.Partner, n.Cohort.ID}]]
	case filter.OpNot:
		return !p.holds(n.Args[0], in)
	case filter.OpAnd:
		for _, a := range n.Args {
			if !p.holds(a, in) {
				return false
			}
		}
		return true
	default:
		for _, a := range n.Args {
			if p.holds(a, in) {
				return true
			}
		}
		return false
	}
}

// needsUniverse tells whether a user in none of the named cohorts can match
// (as with "not A"): only then must the query read the whole workspace
// rather than the named cohorts' rows.
func (p plan) needsUniverse() bool {
	return p.holds(p.node, make([]bool, len(p.cohorts)))
}

// memberQuery is the SELECT of the users the filter holds, with their
// columns c<i>, and its bound arguments. The caller adds ORDER BY / LIMIT.
//
// Now, it reads the membership table; as of an instant, the history with
// event_time at or before it. Either way each c<i> is is_member of the
// user's highest version in cohort i (0 when there is none), computed with
// argMaxIf instead of FINAL: a server may run a WHERE on a non-key column
// before FINAL collapses rows, and unmerged parts must not revive a removed
// member.
func (e *Engine) memberQuery(p plan, workspace string) (string, []any) {
	var b strings.Builder
	var args []any
	b.WriteString("SELECT user_id FROM (\n  SELECT user_id")
	src, cond := chsink.TableMembership, ""
	if p.past {
		src, cond = chsink.TableMembershipChanges, " AND event_time <= toDateTime(?)"
	}
	for i, k := range p.cohorts {
		fmt.Fprintf(&b, ",\n    argMaxIf(is_member, version, partner = ? AND cohort_id = ?%s) AS c%d", cond, i)
		args = append(args, k.partner, k.id)
		if p.past {
			args = append(args, p.asOf)
		}
	}
	b.WriteString("\n  FROM " + e.table(src) + "\n  WHERE workspace = ?")
	args = append(args, workspace)
	if !p.needsUniverse() {
		b.WriteString(" AND (")
		for i, k := range p.cohorts {
			if i > 0 {
				b.WriteString(" OR ")
			}
			b.WriteString("(partner = ? AND cohort_id = ?)")
			args = append(args, k.partner, k.id)
		}
		b.WriteString(")")
	}
	b.WriteString("\n  GROUP BY user_id\n)\nWHERE " + p.predicate(p.node))
	return b.String(), args
}
