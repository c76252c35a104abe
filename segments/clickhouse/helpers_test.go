package clickhouse_test

import (
	"cmp"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cohortsync/cohortsync/internal/chtest"
	"github.com/cohortsync/cohortsync/internal/testkit"
	"github.com/cohortsync/cohortsync/pipeline"
	"github.com/cohortsync/cohortsync/schemas"
	"github.com/cohortsync/cohortsync/segments"
	segch "github.com/cohortsync/cohortsync/segments/clickhouse"
	chsink "github.com/cohortsync/cohortsync/sinks/clickhouse"
)

func testConfig(addr, db string) chsink.Config {
	cfg := chsink.DefaultConfig()
	cfg.Addr, cfg.Database = addr, db
	cfg.DialTimeout, cfg.QueryTimeout = 2*time.Second, 30*time.Second
	cfg.Retry = chsink.Retry{Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond}
	return cfg
}

// newPair returns a migrated sink and an engine on a fresh database.
func newPair(t testing.TB) (*chsink.Sink, *segch.Engine) {
	t.Helper()
	addr, db := chtest.NewDatabase(t)
	return newPairAt(t, addr, db)
}

func newPairAt(t testing.TB, addr, db string) (*chsink.Sink, *segch.Engine) {
	t.Helper()
	cfg := testConfig(addr, db)
	if _, ok := t.(*testing.B); ok {
		// Queries over 10M and 100M rows take minutes on 18.16.
		cfg.QueryTimeout = 20 * time.Minute
	}
	log := slog.New(slog.DiscardHandler)
	sink, err := chsink.New(cfg, chsink.Options{Logger: log, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatalf("new sink: %v", err)
	}
	t.Cleanup(func() { _ = sink.Close() })
	if _, err := sink.Migrate(testkit.DetachedContext(t, 60*time.Second)); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	eng, err := segch.New(cfg, segch.Options{Logger: log, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatalf("new engine: %v", err)
	}
	t.Cleanup(func() { _ = eng.Close() })
	return sink, eng
}

// record is one landed cohort_changes record as the identity transform
// resolved it.
type record struct {
	workspace, partner, cohort string
	recordID                   string
	offset                     int64
	at                         time.Time
	ids                        []change
}

type change struct {
	user   string
	remove bool
}

func adds(users ...string) []change {
	out := make([]change, len(users))
	for i, u := range users {
		out[i] = change{user: u}
	}
	return out
}

func removes(users ...string) []change {
	out := adds(users...)
	for i := range out {
		out[i].remove = true
	}
	return out
}

func concat(parts ...[]change) []change {
	var out []change
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// resolved is the record's rows of schemas.ChangesSchema. The event time is
// a little before the landing, as a partner's would be.
func (r record) resolved() []schemas.ResolvedChange {
	out := make([]schemas.ResolvedChange, len(r.ids))
	for i, c := range r.ids {
		out[i] = schemas.ResolvedChange{
			Workspace: r.workspace, Partner: r.partner, CohortID: r.cohort, UserID: c.user,
			IDKind: schemas.IDKindExternalID, IDValue: c.user,
			IsMember: !c.remove, Version: schemas.Version(r.offset, i),
			RecordID: r.recordID, Position: uint32(i),
			EventTime: r.at.Add(-5 * time.Second), ReceivedAt: r.at,
			Offset: r.offset,
		}
	}
	return out
}

// write lands recs (and cohort metadata) through the sink, as one batch.
func write(t testing.TB, sink *chsink.Sink, recs []record, cohorts []pipeline.Record) {
	t.Helper()
	b := schemas.NewChangesBuilder(nil)
	defer b.Release()
	for _, r := range recs {
		for _, c := range r.resolved() {
			b.Append(c)
		}
	}
	batch := b.NewRecordBatch()
	defer batch.Release()
	out := &pipeline.Output{Changes: batch, Cohorts: cohorts, Rejections: pipeline.NewRejections()}
	if err := sink.Write(testkit.DetachedContext(t, 60*time.Second), out); err != nil {
		t.Fatalf("write: %v", err)
	}
}

func cohortMeta(workspace, partner, cohortID, name string, offset int64, at time.Time) pipeline.Record {
	return pipeline.Record{Offset: offset, Envelope: schemas.Envelope{
		SchemaVersion: schemas.CurrentVersion, RecordID: "meta-" + cohortID + "-" + name,
		Workspace: workspace, Partner: partner, ReceivedAt: at, EventTime: at,
		Payload: schemas.CohortPayload{CohortID: cohortID, Name: name, CreatedAt: at},
	}}
}

// model is the independent answer: it replays the records with Go maps.
type model struct {
	// all is every change applied to membership, in version order; a
	// record landed twice in the log (at two offsets) is applied twice.
	all []schemas.ResolvedChange
	// rows are the distinct landed assignments (record id, position), the
	// first landing of each, in version order: what is billed.
	rows []schemas.ResolvedChange
}

func newModel(recs []record) *model {
	m := &model{}
	seen := map[[2]any]bool{}
	for _, r := range recs {
		m.all = append(m.all, r.resolved()...)
	}
	slices.SortStableFunc(m.all, func(a, b schemas.ResolvedChange) int { return cmp.Compare(a.Version, b.Version) })
	for _, c := range m.all {
		k := [2]any{c.RecordID, c.Position}
		if !seen[k] {
			seen[k] = true
			m.rows = append(m.rows, c)
		}
	}
	return m
}

type userKey struct{ ws, partner, cohort, user string }

// last is each user's newest change per cohort at or before asOf (zero: all).
func (m *model) last(asOf time.Time) map[userKey]schemas.ResolvedChange {
	out := map[userKey]schemas.ResolvedChange{}
	for _, c := range m.all {
		if !asOf.IsZero() && c.EventTime.Truncate(time.Second).After(asOf.Truncate(time.Second)) {
			continue
		}
		out[userKey{c.Workspace, c.Partner, c.CohortID, c.UserID}] = c
	}
	return out
}

// members of one cohort at asOf.
func (m *model) members(ws, partner, cohort string, asOf time.Time) map[string]bool {
	out := map[string]bool{}
	for k, c := range m.last(asOf) {
		if k.ws == ws && k.partner == partner && k.cohort == cohort && c.IsMember {
			out[k.user] = true
		}
	}
	return out
}

// universe is every user the workspace's history names.
func (m *model) universe(ws string) []string {
	set := map[string]bool{}
	for _, c := range m.rows {
		if c.Workspace == ws {
			set[c.UserID] = true
		}
	}
	return sortedKeys(set)
}

// dataPoints groups billable assignments and effective transitions by key.
func (m *model) dataPoints(ws string, from, to time.Time, key func(c schemas.ResolvedChange) segments.DataPointRow) []segments.DataPointRow {
	prev := map[userKey]bool{}
	sums := map[segments.DataPointRow]*segments.DataPointRow{}
	for _, c := range m.rows {
		if c.Workspace != ws {
			continue
		}
		uk := userKey{c.Workspace, c.Partner, c.CohortID, c.UserID}
		effective := c.IsMember != prev[uk]
		prev[uk] = c.IsMember
		day := c.ReceivedAt.UTC().Truncate(24 * time.Hour)
		if day.Before(from) || day.After(to) {
			continue
		}
		k := key(c)
		s, ok := sums[k]
		if !ok {
			s = &segments.DataPointRow{Day: k.Day, Partner: k.Partner, CohortID: k.CohortID}
			sums[k] = s
		}
		s.Billable++
		if effective {
			s.Transitions++
		}
	}
	var out []segments.DataPointRow
	for _, s := range sums {
		out = append(out, *s)
	}
	slices.SortFunc(out, func(a, b segments.DataPointRow) int {
		return cmp.Or(cmp.Compare(a.Day, b.Day), cmp.Compare(a.Partner, b.Partner), cmp.Compare(a.CohortID, b.CohortID))
	})
	return out
}

func sortedKeys(set map[string]bool) []string {
	out := make([]string, 0, len(set))
	for k, ok := range set {
		if ok {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}
