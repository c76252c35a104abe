package clickhouse_test

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cohortsync/cohortsync/internal/chtest"
	"github.com/cohortsync/cohortsync/internal/testkit"
	"github.com/cohortsync/cohortsync/pipeline"
	"github.com/cohortsync/cohortsync/schemas"
	chsink "github.com/cohortsync/cohortsync/sinks/clickhouse"
)

// newSink returns a migrated sink on its own database of the shared server.
func newSink(t testing.TB) (*chsink.Sink, *prometheus.Registry) {
	t.Helper()
	addr, db := chtest.NewDatabase(t)
	return newSinkAt(t, addr, db)
}

func newSinkAt(t testing.TB, addr, db string) (*chsink.Sink, *prometheus.Registry) {
	t.Helper()
	cfg := chsink.DefaultConfig()
	cfg.Addr = addr
	cfg.Database = db
	cfg.DialTimeout = 2 * time.Second
	cfg.QueryTimeout = 10 * time.Second
	cfg.Retry = chsink.Retry{Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond}
	reg := prometheus.NewRegistry()
	s, err := chsink.New(cfg, chsink.Options{Logger: testLogger(t), Registerer: reg})
	if err != nil {
		t.Fatalf("new sink: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	if _, err := s.Migrate(testkit.DetachedContext(t, 60*time.Second)); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	return s, reg
}

// record describes one landed cohort_changes record and what the identity
// transform resolved from it: ids in order, each an add or a remove.
type record struct {
	workspace, partner, cohort string
	recordID                   string
	offset                     int64
	receivedAt                 time.Time
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

// resolved is what the identity transform would emit for r.
func (r record) resolved() []schemas.ResolvedChange {
	out := make([]schemas.ResolvedChange, len(r.ids))
	for i, c := range r.ids {
		out[i] = schemas.ResolvedChange{
			Workspace: r.workspace, Partner: r.partner, CohortID: r.cohort, UserID: c.user,
			IDKind: schemas.IDKindExternalID, IDValue: c.user,
			IsMember: !c.remove, Version: schemas.Version(r.offset, i),
			RecordID: r.recordID, Position: uint32(i),
			EventTime: r.receivedAt, ReceivedAt: r.receivedAt,
			Partition: 0, Offset: r.offset,
		}
	}
	return out
}

// output builds the sink input for recs plus optional cohorts and rejections.
func output(t testing.TB, recs []record, cohorts []pipeline.Record, rej *pipeline.Rejections) *pipeline.Output {
	t.Helper()
	b := schemas.NewChangesBuilder(nil)
	defer b.Release()
	for _, r := range recs {
		for _, c := range r.resolved() {
			b.Append(c)
		}
	}
	batch := b.NewRecordBatch()
	t.Cleanup(batch.Release)
	if rej == nil {
		rej = pipeline.NewRejections()
	}
	return &pipeline.Output{Changes: batch, Cohorts: cohorts, Rejections: rej}
}

func cohortRecord(workspace, partner, cohortID, name string, offset int64, at time.Time) pipeline.Record {
	return pipeline.Record{Offset: offset, Envelope: schemas.Envelope{
		SchemaVersion: schemas.CurrentVersion, RecordID: "cohort-" + name,
		Workspace: workspace, Partner: partner, ReceivedAt: at, EventTime: at,
		Payload: schemas.CohortPayload{CohortID: cohortID, Name: name, CreatedAt: at},
	}}
}
