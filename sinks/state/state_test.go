package state

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"

	"github.com/cohortsync/cohortsync/internal/testkit"
	"github.com/cohortsync/cohortsync/pipeline"
	"github.com/cohortsync/cohortsync/schemas"
)

var t0 = time.Date(2024, 3, 1, 10, 0, 0, 0, time.UTC)

func openStore(t *testing.T, path string, reg prometheus.Registerer) *Store {
	t.Helper()
	cfg := DefaultConfig(t.TempDir())
	if path != "" {
		cfg.Path = path
	}
	s, err := Open(cfg, reg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// change is one resolved id of the record at offset, in workspace ws and
// cohort c of partner "mixpanel", landed (and happened) at at.
func change(ws, c, user string, add bool, offset int64, pos int, at time.Time) schemas.ResolvedChange {
	return schemas.ResolvedChange{
		Workspace: ws, Partner: "mixpanel", CohortID: c, UserID: user,
		IDKind: schemas.IDKindExternalID, IDValue: "ext-" + user, IsMember: add,
		Version: schemas.Version(offset, pos), RecordID: fmt.Sprintf("rec-%d", offset), Position: uint32(pos),
		EventTime: at, ReceivedAt: at, Offset: offset,
	}
}

type outputOpt func(*pipeline.Output)

func withCohort(ws, c, name string, offset int64, received time.Time) outputOpt {
	return func(o *pipeline.Output) {
		o.Cohorts = append(o.Cohorts, pipeline.Record{Offset: offset, Envelope: schemas.Envelope{
			SchemaVersion: 1, RecordID: fmt.Sprintf("rec-%d", offset), Workspace: ws, Partner: "mixpanel",
			ReceivedAt: received, EventTime: received,
			Payload: schemas.CohortPayload{CohortID: c, Name: name, CreatedAt: received.Add(-time.Hour)},
		}})
	}
}

func withRejection(k pipeline.RejectionKey, ids int64, record bool) outputOpt {
	return func(o *pipeline.Output) {
		o.Rejections.AddIDs(k, ids)
		if record {
			o.Rejections.AddRecord(k)
		}
	}
}

func output(t testing.TB, changes []schemas.ResolvedChange, opts ...outputOpt) *pipeline.Output {
	t.Helper()
	b := schemas.NewChangesBuilder(nil)
	defer b.Release()
	out := &pipeline.Output{Rejections: pipeline.NewRejections(), Positions: map[int]pipeline.OffsetRange{}}
	for _, c := range changes {
		b.Append(c)
		r, ok := out.Positions[int(c.Partition)]
		if !ok {
			r = pipeline.OffsetRange{First: c.Offset, Last: c.Offset}
		}
		r.First, r.Last = min(r.First, c.Offset), max(r.Last, c.Offset)
		out.Positions[int(c.Partition)] = r
	}
	out.Changes = b.NewRecordBatch()
	t.Cleanup(out.Changes.Release)
	for _, o := range opts {
		o(out)
	}
	return out
}

func write(t *testing.T, s *Store, outs ...*pipeline.Output) {
	t.Helper()
	for _, o := range outs {
		if err := s.Write(testkit.DetachedContext(t, 10*time.Second), o); err != nil {
			t.Fatal(err)
		}
	}
}

// dump lists every key and value of the file, so "identical state" means
// byte for byte, not just equal query answers.
func dump(t *testing.T, s *Store) string {
	t.Helper()
	var sb strings.Builder
	var walk func(prefix string, b *bolt.Bucket) error
	walk = func(prefix string, b *bolt.Bucket) error {
		return b.ForEach(func(k, v []byte) error {
			if v == nil {
				return walk(prefix+"/"+hex.EncodeToString(k), b.Bucket(k))
			}
			fmt.Fprintf(&sb, "%s %x=%x\n", prefix, k, v)
			return nil
		})
	}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error { return walk(string(name), b) })
	})
	if err != nil {
		t.Fatal(err)
	}
	return sb.String()
}

func dataPoints(t *testing.T, s *Store, ws string) []DataPointRow {
	t.Helper()
	rows, err := s.DataPoints(ws, time.Time{}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

func totals(rows []DataPointRow) (billable, effective int64) {
	for _, r := range rows {
		billable += r.Billable
		effective += r.Effective
	}
	return billable, effective
}

func members(t *testing.T, s *Store, ws, c string) []string {
	t.Helper()
	m, err := s.Members(ws, "mixpanel", c)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestReplayChangesNothing(t *testing.T) {
	t.Parallel()
	s := openStore(t, "", nil)
	rej := pipeline.RejectionKey{Workspace: "acme", Partner: "mixpanel", CohortID: "c1", RecordID: "rec-1", Reason: pipeline.ReasonUnknownUser}
	a := output(t, []schemas.ResolvedChange{
		change("acme", "c1", "u1", true, 1, 0, t0),
		change("acme", "c1", "u2", true, 1, 1, t0),
		change("acme", "c2", "u1", true, 2, 0, t0),
	}, withCohort("acme", "c1", "Churn risk", 0, t0), withRejection(rej, 3, false))
	b := output(t, []schemas.ResolvedChange{
		change("acme", "c1", "u1", false, 3, 0, t0.Add(time.Hour)),
		change("acme", "c1", "u3", true, 3, 1, t0.Add(time.Hour)),
	}, withRejection(pipeline.RejectionKey{Workspace: "acme", Partner: "mixpanel", CohortID: "c1", RecordID: "rec-4", Reason: pipeline.ReasonRetention}, 10, true))

	write(t, s, a)
	afterA := dump(t, s)
	write(t, s, a)
	if got := dump(t, s); got != afterA {
		t.Fatalf("replaying a batch changed the store:\nbefore\n%s\nafter\n%s", afterA, got)
	}
	write(t, s, b)
	afterAB := dump(t, s)
	// A crash before either commit redelivers both batches in order.
	write(t, s, a, b)
	if got := dump(t, s); got != afterAB {
		t.Fatalf("replaying two batches changed the store:\nbefore\n%s\nafter\n%s", afterAB, got)
	}

	if got := members(t, s, "acme", "c1"); !reflect.DeepEqual(got, []string{"u2", "u3"}) {
		t.Errorf("c1 members = %v", got)
	}
	if bill, eff := totals(dataPoints(t, s, "acme")); bill != 5 || eff != 5 {
		t.Errorf("data points billable %d effective %d, want 5 5", bill, eff)
	}
	rejs, err := s.Rejections("acme")
	if err != nil {
		t.Fatal(err)
	}
	want := []RejectionTotal{
		{Partner: "mixpanel", CohortID: "c1", Reason: pipeline.ReasonRetention, IDs: 10, Records: 1},
		{Partner: "mixpanel", CohortID: "c1", Reason: pipeline.ReasonUnknownUser, IDs: 3},
	}
	if !reflect.DeepEqual(rejs, want) {
		t.Errorf("rejections\n got %+v\nwant %+v", rejs, want)
	}
	pos, err := s.Positions()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(pos, map[int]int64{0: 3}) {
		t.Errorf("positions = %v", pos)
	}
}

func TestLaterVersionWinsInAnyArrivalOrder(t *testing.T) {
	t.Parallel()
	add := change("acme", "c1", "u1", true, 5, 0, t0)
	remove := change("acme", "c1", "u1", false, 9, 0, t0.Add(time.Hour))
	readd := change("acme", "c1", "u1", true, 9, 1, t0.Add(time.Hour))
	cases := []struct {
		name      string
		batches   [][]schemas.ResolvedChange
		member    bool
		version   uint64
		effective int64
	}{
		{"in order", [][]schemas.ResolvedChange{{add}, {remove}}, false, remove.Version, 2},
		{"reversed", [][]schemas.ResolvedChange{{remove}, {add}}, false, remove.Version, 0},
		// Within a batch changes are applied in version order, whatever the row order.
		{"reversed in one batch", [][]schemas.ResolvedChange{{remove, add}}, false, remove.Version, 2},
		{"later position of the same record", [][]schemas.ResolvedChange{{readd, remove, add}}, true, readd.Version, 3},
		{"later position first, separately", [][]schemas.ResolvedChange{{readd}, {add}, {remove}}, true, readd.Version, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			s := openStore(t, "", nil)
			var n int64
			for _, b := range c.batches {
				write(t, s, output(t, b))
				n += int64(len(b))
			}
			st, ok, err := s.Member("acme", "mixpanel", "c1", "u1")
			if err != nil || !ok {
				t.Fatalf("Member: %v %v", ok, err)
			}
			if st.IsMember != c.member || st.Version != c.version {
				t.Errorf("state %+v, want member %v version %d", st, c.member, c.version)
			}
			if st.RecordID != "rec-9" {
				t.Errorf("record id %q, want rec-9", st.RecordID)
			}
			// Every accepted assignment is billable whatever the order;
			// only those that changed is_member when applied are effective.
			if bill, eff := totals(dataPoints(t, s, "acme")); bill != n || eff != c.effective {
				t.Errorf("billable %d effective %d, want %d %d", bill, eff, n, c.effective)
			}
		})
	}
}

func TestTransitionsAndResends(t *testing.T) {
	t.Parallel()
	seq := []schemas.ResolvedChange{
		change("acme", "c1", "u1", true, 1, 0, t0),
		change("acme", "c1", "u1", false, 2, 0, t0),
		change("acme", "c1", "u1", true, 3, 0, t0),
	}
	// A partner re-sends the add: a new record, so a new billable assignment
	// that changes nothing.
	resend := change("acme", "c1", "u1", true, 4, 0, t0)
	// Removing someone who never was a member is accepted but not effective.
	stranger := change("acme", "c1", "u9", false, 4, 1, t0)
	for _, oneBatch := range []bool{true, false} {
		t.Run(fmt.Sprintf("one batch %v", oneBatch), func(t *testing.T) {
			t.Parallel()
			s := openStore(t, "", nil)
			if oneBatch {
				write(t, s, output(t, seq))
			} else {
				for _, c := range seq {
					write(t, s, output(t, []schemas.ResolvedChange{c}))
				}
			}
			if bill, eff := totals(dataPoints(t, s, "acme")); bill != 3 || eff != 3 {
				t.Fatalf("add-remove-add: billable %d effective %d, want 3 3", bill, eff)
			}
			write(t, s, output(t, []schemas.ResolvedChange{resend, stranger}))
			if bill, eff := totals(dataPoints(t, s, "acme")); bill != 5 || eff != 3 {
				t.Errorf("after re-send: billable %d effective %d, want 5 3", bill, eff)
			}
			if ok, err := s.IsMember("acme", "mixpanel", "c1", "u1"); err != nil || !ok {
				t.Errorf("IsMember(u1) = %v %v", ok, err)
			}
			if ok, err := s.IsMember("acme", "mixpanel", "c1", "u9"); err != nil || ok {
				t.Errorf("IsMember(u9) = %v %v", ok, err)
			}
			st, _, err := s.Member("acme", "mixpanel", "c1", "u1")
			if err != nil || st.Version != resend.Version || st.RecordID != "rec-4" {
				t.Errorf("Member(u1) = %+v %v: the re-send must carry the version forward", st, err)
			}
			cohorts, err := s.Cohorts("acme")
			if err != nil || len(cohorts) != 1 || cohorts[0].Members != 1 {
				t.Errorf("Cohorts = %+v %v, want one cohort with 1 member", cohorts, err)
			}
		})
	}
}

func TestDayBucketing(t *testing.T) {
	t.Parallel()
	s := openStore(t, "", nil)
	lastMicro := time.Date(2024, 3, 1, 23, 59, 59, 999999000, time.UTC)
	midnight := time.Date(2024, 3, 2, 0, 0, 0, 0, time.UTC)
	// A landing at 00:30 in UTC+1 is still 1 March in UTC.
	zoned := time.Date(2024, 3, 2, 0, 30, 0, 0, time.FixedZone("CET", 3600))
	later := time.Date(2024, 3, 5, 8, 0, 0, 0, time.UTC)
	write(t, s, output(t, []schemas.ResolvedChange{
		change("acme", "c1", "u1", true, 1, 0, lastMicro),
		change("acme", "c1", "u2", true, 2, 0, zoned),
		change("acme", "c1", "u1", false, 3, 0, midnight),
		change("acme", "c1", "u3", false, 4, 0, midnight),
		change("acme", "c2", "u1", true, 5, 0, later),
	}))
	day := func(d int) time.Time { return time.Date(2024, 3, d, 0, 0, 0, 0, time.UTC) }
	cases := []struct {
		name     string
		from, to time.Time
		want     []DataPointRow
	}{
		{"all", time.Time{}, time.Time{}, []DataPointRow{
			{"mixpanel", "c1", day(1), 2, 2},
			{"mixpanel", "c1", day(2), 2, 1},
			{"mixpanel", "c2", day(5), 1, 1},
		}},
		{"days overlapping the range", day(1).Add(12 * time.Hour), day(2), []DataPointRow{{"mixpanel", "c1", day(1), 2, 2}}},
		{"one day", day(2), day(3), []DataPointRow{{"mixpanel", "c1", day(2), 2, 1}}},
		{"open end", day(2).Add(time.Second), time.Time{}, []DataPointRow{
			{"mixpanel", "c1", day(2), 2, 1},
			{"mixpanel", "c2", day(5), 1, 1},
		}},
		{"empty", day(3), day(5), []DataPointRow{}},
	}
	for _, c := range cases {
		got, err := s.DataPoints("acme", c.from, c.to)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s:\n got %+v\nwant %+v", c.name, got, c.want)
		}
	}
}

func TestRejectionsAreReplacedNotAdded(t *testing.T) {
	t.Parallel()
	s := openStore(t, "", nil)
	k := func(rid, reason string) pipeline.RejectionKey {
		return pipeline.RejectionKey{Workspace: "acme", Partner: "mixpanel", CohortID: "c1", RecordID: rid, Reason: reason}
	}
	first := output(t, nil,
		withRejection(k("r1", pipeline.ReasonUnknownUser), 3, false),
		withRejection(k("r1", pipeline.ReasonDeviceIDOfIdentifiedUser), 2, false))
	write(t, s, first, first, first)
	write(t, s, output(t, nil, withRejection(k("r2", pipeline.ReasonUnknownUser), 4, false)))
	got, err := s.Rejections("acme")
	if err != nil {
		t.Fatal(err)
	}
	want := []RejectionTotal{
		{Partner: "mixpanel", CohortID: "c1", Reason: pipeline.ReasonDeviceIDOfIdentifiedUser, IDs: 2},
		{Partner: "mixpanel", CohortID: "c1", Reason: pipeline.ReasonUnknownUser, IDs: 7},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("rejections\n got %+v\nwant %+v", got, want)
	}
}

func TestReopenKeepsEverything(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "data", FileName)
	s := openStore(t, path, nil)
	write(t, s, output(t, []schemas.ResolvedChange{
		change("acme", "c1", "u1", true, 1, 0, t0),
		change("acme", "c1", "u2", true, 1, 1, t0),
	}, withCohort("acme", "c1", "Churn risk", 0, t0),
		withRejection(pipeline.RejectionKey{Workspace: "acme", Partner: "mixpanel", CohortID: "c1", RecordID: "rec-1", Reason: pipeline.ReasonUnknownUser}, 1, false)))
	before := dump(t, s)
	cohorts, _ := s.Cohorts("acme")

	// The file is locked while open: a second process fails instead of waiting forever.
	if _, err := Open(Config{Path: path, OpenTimeout: 50 * time.Millisecond}, nil); err == nil {
		t.Fatal("opened a store that is already open")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	s2 := openStore(t, path, nil)
	if got := dump(t, s2); got != before {
		t.Fatalf("reopened store differs:\nbefore\n%s\nafter\n%s", before, got)
	}
	if got := members(t, s2, "acme", "c1"); !reflect.DeepEqual(got, []string{"u1", "u2"}) {
		t.Errorf("members after reopen = %v", got)
	}
	if got, _ := s2.Cohorts("acme"); !reflect.DeepEqual(got, cohorts) || got[0].Name != "Churn risk" {
		t.Errorf("cohorts after reopen = %+v, want %+v", got, cohorts)
	}
	// Replaying after the restart is still a no-op.
	write(t, s2, output(t, []schemas.ResolvedChange{change("acme", "c1", "u1", true, 1, 0, t0)}))
	if got := dump(t, s2); got != before {
		t.Errorf("replay after reopen changed the store")
	}
}

func TestWorkspacesAreIsolated(t *testing.T) {
	t.Parallel()
	s := openStore(t, "", nil)
	// Workspace names that would collide if keys were simply concatenated.
	write(t, s, output(t, []schemas.ResolvedChange{
		change("acme", "c1", "u1", true, 1, 0, t0),
		change("acme", "c1", "u2", true, 1, 1, t0),
		change("acme\x00", "c1", "u3", true, 2, 0, t0),
		change("beta", "c1", "u1", false, 3, 0, t0),
	}, withRejection(pipeline.RejectionKey{Workspace: "beta", Partner: "mixpanel", CohortID: "c1", RecordID: "rec-3", Reason: pipeline.ReasonUnknownUser}, 5, false),
		withCohort("beta", "c1", "Beta cohort", 0, t0)))

	if got := members(t, s, "acme", "c1"); !reflect.DeepEqual(got, []string{"u1", "u2"}) {
		t.Errorf("acme members = %v", got)
	}
	if got := members(t, s, "acme\x00", "c1"); !reflect.DeepEqual(got, []string{"u3"}) {
		t.Errorf("acme\\x00 members = %v", got)
	}
	if got := members(t, s, "beta", "c1"); len(got) != 0 {
		t.Errorf("beta members = %v", got)
	}
	stop := errors.New("stop")
	var seen []string
	err := s.ForEachMember("acme", "mixpanel", "c1", func(u string) error {
		seen = append(seen, u)
		return stop
	})
	if !errors.Is(err, stop) || len(seen) != 1 {
		t.Errorf("ForEachMember with a failing callback: %v after %v", err, seen)
	}
	if got := members(t, s, "gamma", "c1"); len(got) != 0 {
		t.Errorf("unknown workspace members = %v", got)
	}
	if bill, _ := totals(dataPoints(t, s, "acme")); bill != 2 {
		t.Errorf("acme billable = %d, want 2", bill)
	}
	if bill, eff := totals(dataPoints(t, s, "beta")); bill != 1 || eff != 0 {
		t.Errorf("beta billable %d effective %d, want 1 0", bill, eff)
	}
	if r, _ := s.Rejections("acme"); len(r) != 0 {
		t.Errorf("acme rejections = %+v", r)
	}
	if r, _ := s.Rejections("beta"); len(r) != 1 || r[0].IDs != 5 {
		t.Errorf("beta rejections = %+v", r)
	}
	if c, _ := s.Cohorts("acme"); len(c) != 1 || c[0].Name != "" || c[0].Members != 2 {
		t.Errorf("acme cohorts = %+v", c)
	}
	if c, _ := s.Cohorts("beta"); len(c) != 1 || c[0].Name != "Beta cohort" || c[0].Members != 0 {
		t.Errorf("beta cohorts = %+v", c)
	}
}

func TestCohortMetadata(t *testing.T) {
	t.Parallel()
	s := openStore(t, "", nil)
	renamed := t0.Add(2 * time.Hour)
	// The rename (offset 20) arrives before the creation (offset 10), as after
	// a redelivery: the later record still wins.
	write(t, s, output(t, nil, withCohort("acme", "c1", "Renamed", 20, renamed)))
	write(t, s, output(t, nil, withCohort("acme", "c1", "Original", 10, t0)))
	write(t, s, output(t, []schemas.ResolvedChange{
		change("acme", "c1", "u1", true, 30, 0, t0.Add(3*time.Hour)),
		change("acme", "c1", "u2", true, 30, 1, t0.Add(3*time.Hour)),
	}))
	// An older change delivered later does not move last sync back.
	write(t, s, output(t, []schemas.ResolvedChange{change("acme", "c2", "u1", true, 5, 0, t0)}))
	write(t, s, output(t, []schemas.ResolvedChange{change("acme", "c1", "u1", true, 25, 0, t0)}))
	got, err := s.Cohorts("acme")
	if err != nil {
		t.Fatal(err)
	}
	want := []Cohort{
		{Partner: "mixpanel", CohortID: "c1", Name: "Renamed", CreatedAt: renamed.Add(-time.Hour), ReceivedAt: renamed,
			LastSync: t0.Add(3 * time.Hour), Members: 2},
		{Partner: "mixpanel", CohortID: "c2", LastSync: t0, Members: 1},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("cohorts\n got %+v\nwant %+v", got, want)
	}
}

func TestRefusedBatchStoresNothing(t *testing.T) {
	t.Parallel()
	s := openStore(t, "", prometheus.NewRegistry())
	empty := dump(t, s)
	good := change("acme", "c1", "u1", true, 1, 0, t0)
	bad := change("acme", "c1", "", true, 1, 1, t0)

	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	wrongKind := output(t, nil)
	wrongKind.Cohorts = []pipeline.Record{{Envelope: schemas.Envelope{Workspace: "acme", Payload: schemas.CohortChangesPayload{CohortID: "c1"}}}}
	cases := []struct {
		name string
		ctx  context.Context
		out  *pipeline.Output
	}{
		{"empty user id", testkit.DetachedContext(t, 10*time.Second), output(t, []schemas.ResolvedChange{good, bad})},
		{"canceled", canceled, output(t, []schemas.ResolvedChange{good})},
		{"changes payload among cohorts", testkit.DetachedContext(t, 10*time.Second), wrongKind},
	}
	for _, c := range cases {
		if err := s.Write(c.ctx, c.out); err == nil {
			t.Errorf("%s: Write succeeded", c.name)
		}
		if got := dump(t, s); got != empty {
			t.Errorf("%s: a refused batch left data behind:\n%s", c.name, got)
		}
	}
	if err := s.Write(testkit.DetachedContext(t, 10*time.Second), nil); err != nil {
		t.Errorf("nil output: %v", err)
	}
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	s := openStore(t, "", reg)
	out := output(t, []schemas.ResolvedChange{
		change("acme", "c1", "u1", true, 1, 0, t0),
		change("acme", "c1", "u2", true, 1, 1, t0),
	})
	write(t, s, out, out)
	got := map[string]float64{}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			name := mf.GetName()
			for _, l := range m.GetLabel() {
				name += "{" + l.GetValue() + "}"
			}
			switch {
			case m.Counter != nil:
				got[name] = m.GetCounter().GetValue()
			case m.Histogram != nil:
				got[name+"_count"] = float64(m.GetHistogram().GetSampleCount())
			case m.Gauge != nil:
				got[name] = m.GetGauge().GetValue()
			}
		}
	}
	for name, want := range map[string]float64{
		"cohortsync_state_changes_total{applied}":       2,
		"cohortsync_state_changes_total{stale}":         2,
		"cohortsync_state_data_points_total{new}":       2,
		"cohortsync_state_data_points_total{replayed}":  2,
		"cohortsync_state_write_duration_seconds_count": 2,
		"cohortsync_state_write_errors_total":           0,
	} {
		if got[name] != want {
			t.Errorf("%s = %v, want %v", name, got[name], want)
		}
	}
	if got["cohortsync_state_file_bytes"] <= 0 {
		t.Errorf("file_bytes = %v", got["cohortsync_state_file_bytes"])
	}
	if _, err := Open(DefaultConfig(t.TempDir()), reg); err == nil {
		t.Error("a second store registered on the same registry")
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	if err := DefaultConfig("/var/lib/cohortsync").Validate(); err != nil {
		t.Errorf("default: %v", err)
	}
	err := Config{}.Validate()
	if err == nil || !strings.Contains(err.Error(), "path:") || !strings.Contains(err.Error(), "open_timeout:") {
		t.Errorf("zero config: %v, want both fields reported", err)
	}
}

func TestTupleEncoding(t *testing.T) {
	t.Parallel()
	tuples := [][]string{
		{"", ""}, {"", "a"}, {"a", ""}, {"a", "b"}, {"a\x00", "b"}, {"a\x00b", ""}, {"a\x01", ""},
		{"ab", ""}, {"a", "\x00"}, {"\x00", "\xff"}, {"b", ""},
	}
	var keys [][]byte
	for _, tu := range tuples {
		k := tuple(tu...)
		rest := k
		for i, want := range tu {
			got, r, err := readTuple(rest)
			if err != nil || got != want {
				t.Fatalf("%q component %d: %q %v", tu, i, got, err)
			}
			rest = r
		}
		if len(rest) != 0 {
			t.Fatalf("%q: %d bytes left", tu, len(rest))
		}
		keys = append(keys, k)
	}
	// Byte order of keys must be tuple order.
	sorted := slices.Clone(tuples)
	sort.Slice(sorted, func(i, j int) bool { return slices.Compare(sorted[i], sorted[j]) < 0 })
	order := make([]int, len(keys))
	for i := range order {
		order[i] = i
	}
	sort.Slice(order, func(i, j int) bool { return bytes.Compare(keys[order[i]], keys[order[j]]) < 0 })
	for i, o := range order {
		if !slices.Equal(tuples[o], sorted[i]) {
			t.Fatalf("key order %q at %d, tuple order %q", tuples[o], i, sorted[i])
		}
	}
	for _, bad := range [][]byte{{'a'}, {'a', 0}, {'a', 0, 7}} {
		if _, _, err := readTuple(bad); err == nil {
			t.Errorf("readTuple(%q) accepted a corrupt key", bad)
		}
	}
	for _, d := range []time.Time{time.Date(1969, 12, 31, 23, 59, 59, 0, time.UTC), time.Unix(0, 0), t0} {
		if got := dayTime(readDay(appendDay(nil, dayOf(d)))); !got.Equal(d.Truncate(24 * time.Hour)) {
			t.Errorf("day of %s = %s", d, got)
		}
	}
	if bytes.Compare(appendDay(nil, -1), appendDay(nil, 0)) >= 0 {
		t.Error("day keys do not sort across the epoch")
	}
}

// TestProducerDuplicateInOneBatch: a producer retry (or a backfill batch
// whose ack was lost) lands the same record at two offsets, and both copies
// reach the store in one batch. The record is one data point, and its
// transition is kept whichever copy the point is stored from.
func TestProducerDuplicateInOneBatch(t *testing.T) {
	t.Parallel()
	for i := range 20 {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			t.Parallel()
			s := openStore(t, "", nil)
			var batch []schemas.ResolvedChange
			// 1,000 users added by one record at offset 1, then the same
			// record again at offset 2 (large enough that sorting is not
			// a stable insertion sort).
			const users = 1000
			for _, off := range []int64{1, 2} {
				for u := range users {
					c := change("acme", "c1", fmt.Sprintf("u%d", u), true, off, u, t0)
					c.RecordID = "rec-dup"
					batch = append(batch, c)
				}
			}
			if i%2 == 1 {
				slices.Reverse(batch)
			}
			write(t, s, output(t, batch))
			if bill, eff := totals(dataPoints(t, s, "acme")); bill != users || eff != users {
				t.Fatalf("billable %d effective %d, want %d and %d", bill, eff, users, users)
			}
		})
	}
}
