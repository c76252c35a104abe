package identity_test

import (
	"context"
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cohortsync/cohortsync/pipeline"
	"github.com/cohortsync/cohortsync/schemas"
	"github.com/cohortsync/cohortsync/stores/identities"
	"github.com/cohortsync/cohortsync/transforms/identity"
)

// The runner's pipeline.Resolver has exactly this method; the check lives
// here until that interface is in the pipeline package.
var _ interface {
	Resolve(context.Context, []pipeline.Record, *pipeline.Rejections) (arrow.RecordBatch, error)
} = (*identity.Resolver)(nil)

var (
	eventTime  = time.Date(2024, 5, 1, 12, 0, 0, 123456000, time.UTC)
	receivedAt = time.Date(2024, 5, 1, 12, 0, 1, 0, time.UTC)
)

// newIndex builds a replica file directly from identity records, the way
// the tail would from the topic, one partition per workspace.
func newIndex(t testing.TB, users map[string][]identities.Record) *identities.Index {
	t.Helper()
	x, err := identities.OpenIndex(filepath.Join(t.TempDir(), identities.FileName), identities.IndexOptions{Topic: "ids"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = x.Close() })
	p := 0
	for ws, recs := range users {
		msgs := make([]identities.Message, len(recs))
		for i, r := range recs {
			v, err := identities.EncodeValue(ws, r)
			if err != nil {
				t.Fatal(err)
			}
			msgs[i] = identities.Message{Offset: int64(i), Key: identities.MessageKey(ws, r.UserID), Value: v}
		}
		if _, err := x.Apply(p, msgs, 0); err != nil {
			t.Fatal(err)
		}
		p++
	}
	return x
}

// testDirectory is the directory every rule test resolves against.
func testDirectory(t testing.TB) *identities.Index {
	return newIndex(t, map[string][]identities.Record{
		"acme": {
			{UserID: "u-ident", ExternalID: "ext-1", Aliases: []identities.Alias{{Name: "a@x.io", Label: "email"}}},
			{UserID: "u-anon", DeviceIDs: []string{"dev-anon"}},
			// Created anonymous, later identified.
			{UserID: "u-later", DeviceIDs: []string{"dev-later"}},
			{UserID: "u-later", ExternalID: "ext-later", DeviceIDs: []string{"dev-later"}},
			{UserID: "u-alias", Aliases: []identities.Alias{{Name: "crm-7", Label: "crm"}}},
		},
		"globex": {
			{UserID: "g1", ExternalID: "ext-g", DeviceIDs: []string{"dev-g"}},
		},
	})
}

func newResolver(t testing.TB, dir identity.Lookups, reg prometheus.Registerer) *identity.Resolver {
	t.Helper()
	r, err := identity.New(identity.Options{Directory: dir, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

func changesRecord(offset int64, ws, cohort, recordID string, changes ...schemas.Change) pipeline.Record {
	return pipeline.Record{Partition: 2, Offset: offset, Envelope: schemas.Envelope{
		SchemaVersion: schemas.CurrentVersion, RecordID: recordID, Workspace: ws, Partner: "mixpanel",
		ReceivedAt: receivedAt, EventTime: eventTime,
		Payload: schemas.CohortChangesPayload{CohortID: cohort, Changes: changes},
	}}
}

func resolve(t *testing.T, r *identity.Resolver, recs ...pipeline.Record) ([]schemas.ResolvedChange, *pipeline.Rejections) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	rej := pipeline.NewRejections()
	batch, err := r.Resolve(ctx, recs, rej)
	if err != nil {
		t.Fatal(err)
	}
	defer batch.Release()
	return rowsOf(batch), rej
}

func rowsOf(b arrow.RecordBatch) []schemas.ResolvedChange {
	out := []schemas.ResolvedChange{}
	for i := range int(b.NumRows()) {
		out = append(out, schemas.ChangeAt(b, i))
	}
	return out
}

// brief is the part of a row that the rules decide.
type brief struct {
	user, kind, value string
	member            bool
}

func briefs(rows []schemas.ResolvedChange) []brief {
	out := []brief{}
	for _, r := range rows {
		out = append(out, brief{r.UserID, r.IDKind, r.IDValue, r.IsMember})
	}
	return out
}

func rejected(rej *pipeline.Rejections) map[string]int64 {
	out := map[string]int64{}
	for _, r := range rej.Rows() {
		out[r.Reason] += r.IDs
	}
	return out
}

func TestResolveIdentityRules(t *testing.T) {
	t.Parallel()
	r := newResolver(t, testDirectory(t), nil)
	tests := []struct {
		name   string
		ws     string
		change schemas.Change
		want   []brief
		reject map[string]int64
	}{
		{
			name:   "user_ids are external ids",
			ws:     "acme",
			change: schemas.Change{UserIDs: []string{"ext-1", "ext-later"}},
			want:   []brief{{"u-ident", "external_id", "ext-1", true}, {"u-later", "external_id", "ext-later", true}},
		},
		{
			name:   "a user id is not an external id",
			ws:     "acme",
			change: schemas.Change{UserIDs: []string{"u-ident"}},
			reject: map[string]int64{pipeline.ReasonUnknownUser: 1},
		},
		{
			name:   "alias by name and label, identified or not",
			ws:     "acme",
			change: schemas.Change{Aliases: []schemas.Alias{{Name: "a@x.io", Label: "email"}, {Name: "crm-7", Label: "crm"}}},
			want:   []brief{{"u-ident", "alias", "email:a@x.io", true}, {"u-alias", "alias", "crm:crm-7", true}},
		},
		{
			name:   "alias under another label",
			ws:     "acme",
			change: schemas.Change{Aliases: []schemas.Alias{{Name: "a@x.io", Label: "phone"}}},
			reject: map[string]int64{pipeline.ReasonUnknownUser: 1},
		},
		{
			name:   "device of an anonymous user",
			ws:     "acme",
			change: schemas.Change{DeviceIDs: []string{"dev-anon"}, ShouldRemove: true},
			want:   []brief{{"u-anon", "device_id", "dev-anon", false}},
		},
		{
			name:   "created anonymous, later identified: its device_id no longer matches",
			ws:     "acme",
			change: schemas.Change{DeviceIDs: []string{"dev-later"}},
			reject: map[string]int64{pipeline.ReasonDeviceIDOfIdentifiedUser: 1},
		},
		{
			name:   "unknown ids are never created",
			ws:     "acme",
			change: schemas.Change{UserIDs: []string{"ext-new"}, DeviceIDs: []string{"dev-new"}, Aliases: []schemas.Alias{{Name: "n", Label: "l"}}},
			reject: map[string]int64{pipeline.ReasonUnknownUser: 3},
		},
		{
			name:   "other workspaces are invisible",
			ws:     "globex",
			change: schemas.Change{UserIDs: []string{"ext-1", "ext-g"}, DeviceIDs: []string{"dev-anon", "dev-g"}},
			want:   []brief{{"g1", "external_id", "ext-g", true}},
			reject: map[string]int64{pipeline.ReasonUnknownUser: 2, pipeline.ReasonDeviceIDOfIdentifiedUser: 1},
		},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rows, rej := resolve(t, r, changesRecord(int64(i), tt.ws, "c1", "rec", tt.change))
			if got := briefs(rows); !reflect.DeepEqual(got, append([]brief{}, tt.want...)) {
				t.Errorf("rows %+v, want %+v", got, tt.want)
			}
			want := tt.reject
			if want == nil {
				want = map[string]int64{}
			}
			if got := rejected(rej); !reflect.DeepEqual(got, want) {
				t.Errorf("rejections %v, want %v", got, want)
			}
			// Every id ends up either in a row or in a count.
			sent := int64(len(tt.change.UserIDs) + len(tt.change.DeviceIDs) + len(tt.change.Aliases))
			if int64(len(rows))+rej.TotalIDs() != sent {
				t.Errorf("%d rows + %d rejected != %d sent", len(rows), rej.TotalIDs(), sent)
			}
		})
	}
}

func TestResolveVersionsPositionsAndReplay(t *testing.T) {
	t.Parallel()
	r := newResolver(t, testDirectory(t), nil)
	first := changesRecord(41, "acme", "c1", "rec-a",
		schemas.Change{
			UserIDs:   []string{"ext-1", "ext-unknown"},
			DeviceIDs: []string{"dev-anon", "dev-later"},
			Aliases:   []schemas.Alias{{Name: "crm-7", Label: "crm"}},
		},
		schemas.Change{UserIDs: []string{"ext-1"}, ShouldRemove: true},
	)
	second := changesRecord(42, "acme", "c1", "rec-b", schemas.Change{UserIDs: []string{"ext-1"}})
	meta := pipeline.Record{Partition: 2, Offset: 43, Envelope: schemas.Envelope{
		SchemaVersion: 1, RecordID: "rec-c", Workspace: "acme", Partner: "mixpanel", ReceivedAt: receivedAt, EventTime: eventTime,
		Payload: schemas.CohortPayload{CohortID: "c1", Name: "Churn risk", CreatedAt: eventTime},
	}}
	rows, rej := resolve(t, r, first, second, meta)

	base := schemas.ResolvedChange{
		Workspace: "acme", Partner: "mixpanel", CohortID: "c1", EventTime: eventTime, ReceivedAt: receivedAt, Partition: 2,
	}
	row := func(offset int64, recordID string, pos int, user, kind, value string, member bool) schemas.ResolvedChange {
		c := base
		c.UserID, c.IDKind, c.IDValue, c.IsMember = user, kind, value, member
		c.RecordID, c.Offset, c.Position, c.Version = recordID, offset, uint32(pos), schemas.Version(offset, pos)
		return c
	}
	want := []schemas.ResolvedChange{
		// Positions count every id in order, rejected ones included:
		// user_ids 0-1, device_ids 2-3, aliases 4, then the next change.
		row(41, "rec-a", 0, "u-ident", "external_id", "ext-1", true),
		row(41, "rec-a", 2, "u-anon", "device_id", "dev-anon", true),
		row(41, "rec-a", 4, "u-alias", "alias", "crm:crm-7", true),
		row(41, "rec-a", 5, "u-ident", "external_id", "ext-1", false),
		row(42, "rec-b", 0, "u-ident", "external_id", "ext-1", true),
	}
	if !reflect.DeepEqual(rows, want) {
		t.Fatalf("rows:\n%+v\nwant:\n%+v", rows, want)
	}
	// For one user of the cohort, the later change has the higher version:
	// the remove after the add within rec-a, and rec-b after both.
	if !(rows[0].Version < rows[3].Version && rows[3].Version < rows[4].Version) {
		t.Errorf("versions of u-ident not increasing: %d %d %d", rows[0].Version, rows[3].Version, rows[4].Version)
	}
	wantRej := []pipeline.Rejection{
		{RejectionKey: pipeline.RejectionKey{Workspace: "acme", Partner: "mixpanel", CohortID: "c1", RecordID: "rec-a", Reason: pipeline.ReasonDeviceIDOfIdentifiedUser}, IDs: 1},
		{RejectionKey: pipeline.RejectionKey{Workspace: "acme", Partner: "mixpanel", CohortID: "c1", RecordID: "rec-a", Reason: pipeline.ReasonUnknownUser}, IDs: 1},
	}
	if got := rej.Rows(); !reflect.DeepEqual(got, wantRej) {
		t.Errorf("rejections %+v, want %+v", got, wantRej)
	}

	// A redelivery, alone or in another batch, yields the very same rows.
	replayRows, replayRej := resolve(t, r, second)
	if !reflect.DeepEqual(replayRows, want[4:]) || replayRej.TotalIDs() != 0 {
		t.Errorf("replay of rec-b: %+v", replayRows)
	}
	again, againRej := resolve(t, r, first, second, meta)
	if !reflect.DeepEqual(again, want) || !reflect.DeepEqual(againRej.Rows(), wantRej) {
		t.Error("replaying the batch gave different rows or rejections")
	}
}

func TestResolveMetadataAndEmptyBatches(t *testing.T) {
	t.Parallel()
	r := newResolver(t, testDirectory(t), nil)
	ptr := changesRecord(7, "acme", "c1", "rec", schemas.Change{UserIDs: []string{"ext-1"}})
	p := ptr.Envelope.Payload.(schemas.CohortChangesPayload)
	ptr.Envelope.Payload = &p
	meta := pipeline.Record{Envelope: schemas.Envelope{Workspace: "acme", Payload: schemas.CohortPayload{CohortID: "c1", Name: "n"}}}
	for name, tt := range map[string]struct {
		recs []pipeline.Record
		rows int
	}{
		"nothing":                 {nil, 0},
		"metadata only":           {[]pipeline.Record{meta}, 0},
		"pointer payload":         {[]pipeline.Record{ptr}, 1},
		"empty change list":       {[]pipeline.Record{changesRecord(1, "acme", "c1", "r")}, 0},
		"nil payload is not data": {[]pipeline.Record{{Envelope: schemas.Envelope{Workspace: "acme"}}}, 0},
	} {
		rows, rej := resolve(t, r, tt.recs...)
		if len(rows) != tt.rows || rej.TotalIDs() != 0 {
			t.Errorf("%s: %d rows, %d rejected", name, len(rows), rej.TotalIDs())
		}
	}
}

func TestResolveTooManyIDs(t *testing.T) {
	t.Parallel()
	r := newResolver(t, testDirectory(t), nil)
	ids := make([]string, identity.MaxIDsPerRecord+1)
	for i := range ids {
		ids[i] = "ext-1"
	}
	ok := changesRecord(1, "acme", "c1", "fits", schemas.Change{UserIDs: ids[:identity.MaxIDsPerRecord]})
	tooMany := changesRecord(2, "acme", "c1", "too-many", schemas.Change{UserIDs: ids})
	rows, rej := resolve(t, r, ok, tooMany)
	if len(rows) != identity.MaxIDsPerRecord || rows[len(rows)-1].Version != schemas.Version(1, identity.MaxIDsPerRecord-1) {
		t.Fatalf("%d rows for the record that fits", len(rows))
	}
	if schemas.Version(1, identity.MaxIDsPerRecord-1) >= schemas.Version(2, 0) {
		t.Error("the last position of a record reaches into the next offset's versions")
	}
	want := []pipeline.Rejection{{
		RejectionKey: pipeline.RejectionKey{Workspace: "acme", Partner: "mixpanel", CohortID: "c1", RecordID: "too-many", Reason: identity.ReasonTooManyIDs},
		IDs:          int64(len(ids)), Records: 1,
	}}
	if got := rej.Rows(); !reflect.DeepEqual(got, want) {
		t.Errorf("rejections %+v, want %+v", got, want)
	}
}

type failingDirectory struct{ err error }

func (f failingDirectory) View(func(identities.Lookup) error) error { return f.err }

func TestResolveErrorsLeaveRejectionsUntouched(t *testing.T) {
	t.Parallel()
	rec := changesRecord(1, "acme", "c1", "r", schemas.Change{UserIDs: []string{"ext-404"}})
	broken := errors.New("disk gone")
	canceled, cancel := context.WithCancel(t.Context())
	cancel()
	for name, tt := range map[string]struct {
		dir  identity.Lookups
		ctx  context.Context
		want error
	}{
		"directory unreadable": {failingDirectory{broken}, t.Context(), broken},
		"context ended":        {testDirectory(t), canceled, context.Canceled},
	} {
		r := newResolver(t, tt.dir, nil)
		rej := pipeline.NewRejections()
		batch, err := r.Resolve(tt.ctx, []pipeline.Record{rec}, rej)
		if !errors.Is(err, tt.want) || batch != nil {
			t.Errorf("%s: batch %v, err %v", name, batch, err)
		}
		if len(rej.Rows()) != 0 {
			t.Errorf("%s: rejections counted for a failed batch: %+v", name, rej.Rows())
		}
	}
	if _, err := identity.New(identity.Options{}); err == nil {
		t.Error("New without a directory succeeded")
	}
	if _, err := newResolver(t, testDirectory(t), nil).Resolve(t.Context(), nil, nil); err == nil {
		t.Error("Resolve without a Rejections collector succeeded")
	}
}

func TestResolveMetricsAndAllocator(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	r, err := identity.New(identity.Options{Directory: testDirectory(t), Registerer: reg, Allocator: mem})
	if err != nil {
		t.Fatal(err)
	}
	rec := changesRecord(1, "acme", "c1", "r", schemas.Change{
		UserIDs: []string{"ext-1", "nope"}, DeviceIDs: []string{"dev-later", "dev-anon"},
	})
	batch, err := r.Resolve(t.Context(), []pipeline.Record{rec}, pipeline.NewRejections())
	if err != nil {
		t.Fatal(err)
	}
	batch.Release()
	mem.AssertSize(t, 0)
	want := `
# HELP cohortsync_identity_ids_total Ids of membership changes looked up in the identity directory, by kind and result.
# TYPE cohortsync_identity_ids_total counter
cohortsync_identity_ids_total{kind="alias",result="matched"} 0
cohortsync_identity_ids_total{kind="alias",result="unknown_user"} 0
cohortsync_identity_ids_total{kind="any",result="too_many_ids"} 0
cohortsync_identity_ids_total{kind="device_id",result="device_id_of_identified_user"} 1
cohortsync_identity_ids_total{kind="device_id",result="matched"} 1
cohortsync_identity_ids_total{kind="device_id",result="unknown_user"} 0
cohortsync_identity_ids_total{kind="external_id",result="matched"} 1
cohortsync_identity_ids_total{kind="external_id",result="unknown_user"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "cohortsync_identity_ids_total"); err != nil {
		t.Error(err)
	}
	if _, err := identity.New(identity.Options{Directory: testDirectory(t), Registerer: reg}); err == nil {
		t.Error("a second resolver registered on the same registry")
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	// Closing unregisters, so a rebuilt resolver can register again.
	newResolver(t, testDirectory(t), reg)
}
