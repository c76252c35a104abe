package mixpanel_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/cohortsync/cohortsync/connectors/mixpanel"
	"github.com/cohortsync/cohortsync/internal/testkit"
	"github.com/cohortsync/cohortsync/kafka/kafkatest"
	"github.com/cohortsync/cohortsync/pipeline"
	"github.com/cohortsync/cohortsync/schemas"
	"github.com/cohortsync/cohortsync/stores/identities"
	"github.com/cohortsync/cohortsync/transforms/identity"
)

var planTime = time.Date(2026, 11, 3, 9, 30, 0, 123456789, time.UTC)

func planRequest() mixpanel.PlanRequest {
	return mixpanel.PlanRequest{Workspace: "acme", Partner: "mixpanel", CohortID: testCohort, CreatedAt: planTime}
}

// buildIndex writes a replica file from identity records, the way the tail
// would from the topic.
func buildIndex(t testing.TB, ws string, recs []identities.Record) *identities.Index {
	t.Helper()
	x, err := identities.OpenIndex(filepath.Join(t.TempDir(), identities.FileName), identities.IndexOptions{Topic: "ids"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = x.Close() })
	const perTx = 20_000
	for start := 0; start < len(recs); start += perTx {
		msgs := make([]identities.Message, 0, perTx)
		for i, r := range recs[start:min(start+perTx, len(recs))] {
			v, err := identities.EncodeValue(ws, r)
			if err != nil {
				t.Fatal(err)
			}
			msgs = append(msgs, identities.Message{Offset: int64(start + i), Key: identities.MessageKey(ws, r.UserID), Value: v})
		}
		if _, err := x.Apply(0, msgs, 0); err != nil {
			t.Fatal(err)
		}
	}
	return x
}

// members returns a reader of the current members of a cohort.
func members(users ...string) func(context.Context, func(string) error) error {
	return func(_ context.Context, fn func(string) error) error {
		for _, u := range users {
			if err := fn(u); err != nil {
				return err
			}
		}
		return nil
	}
}

// scenarioUsers covers every rule: identified, anonymous, created anonymous
// and later identified, alias-only, and a device id claimed by two users.
var scenarioUsers = []identities.Record{
	{UserID: "u-ident", DeviceIDs: []string{"dev-1"}},
	{UserID: "u-ident", ExternalID: "ext-1", DeviceIDs: []string{"dev-1"}}, // later identified
	{UserID: "u-anon", DeviceIDs: []string{"dev-2"}},
	{UserID: "u-new", ExternalID: "ext-4"},
	{UserID: "u-stay", ExternalID: "ext-5", Aliases: []identities.Alias{{Name: "e5@x.io", Label: "email"}}},
	{UserID: "u-anon-stay", DeviceIDs: []string{"dev-6"}},
	{UserID: "u-gone-ext", ExternalID: "ext-7", Aliases: []identities.Alias{{Name: "e7@x.io", Label: "email"}}, DeviceIDs: []string{"dev-7"}},
	{UserID: "u-gone-anon", DeviceIDs: []string{"dev-8"}},
	{UserID: "u-alias", Aliases: []identities.Alias{{Name: "carol", Label: "crm"}}},
	// Both anonymous with one device: the rule picks u-shared-a, so
	// u-shared-b cannot be named.
	{UserID: "u-shared-a", DeviceIDs: []string{"dev-9"}},
	{UserID: "u-shared-b", DeviceIDs: []string{"dev-9"}},
}

var scenarioProfiles = []map[string]any{
	member("ext-1", map[string]any{"$user_id": "ext-1", "$device_id": "dev-1"}), // identified: add by external id
	member("$device:dev-1", map[string]any{}),                                   // its old anonymous profile: refused
	member("$device:dev-2", map[string]any{"$device_id": "dev-2"}),              // anonymous: add by device id
	member("p-5", map[string]any{"$braze_external_id": "ext-5"}),                // already a member
	member("$device:dev-6", map[string]any{}),                                   // already a member, anonymous
	member("p-404", map[string]any{"$user_id": "ext-404"}),                      // not in the directory
	member("p-mystery", map[string]any{"$email": "m@x.io"}),                     // no identity at all
	member("p-1-again", map[string]any{"$user_id": "ext-1"}),                    // same user twice
	member("p-4", map[string]any{"$user_id": "ext-4"}),                          // add by external id
}

var scenarioCurrent = []string{"u-stay", "u-anon-stay", "u-gone-ext", "u-gone-anon", "u-alias", "u-shared-b", "u-deleted", "u-stay"}

func TestPlanSyncScenario(t *testing.T) {
	t.Parallel()
	idx := buildIndex(t, "acme", scenarioUsers)
	h := newHarness(t, scenarioProfiles, 3, func(c *mixpanel.Config) { c.RetryBase = 100 * time.Millisecond })
	// Page 1 is rate limited once (Retry-After: 30), page 2 fails with a 500
	// once: the plan must still see every profile exactly once.
	h.engage.fail = func(w http.ResponseWriter, _ *http.Request, n, page int) bool {
		switch {
		case n == 2 && page == 1:
			w.Header().Set("Retry-After", "30")
			w.WriteHeader(http.StatusTooManyRequests)
			_, _ = w.Write([]byte(`{"error":"Query rate limit exceeded","status":"error"}`))
			return true
		case n == 4 && page == 2:
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = w.Write([]byte(`{"error":"internal error","status":"error"}`))
			return true
		}
		return false
	}
	plan, err := mixpanel.PlanSync(testkit.DetachedContext(t, 20*time.Second), h.client, planRequest(), idx, members(scenarioCurrent...))
	if err != nil {
		t.Fatal(err)
	}
	var pages []int
	for _, r := range h.engage.Requests() {
		pages = append(pages, r.page)
	}
	if want := []int{0, 1, 1, 2, 2, 3}; !reflect.DeepEqual(pages, want) {
		t.Errorf("pages requested %v, want %v", pages, want)
	}
	if sleeps := h.clock.Sleeps(); len(sleeps) != 2 || sleeps[0] != 30*time.Second {
		t.Errorf("waits %v, want Retry-After 30s then a backoff", sleeps)
	}
	if plan.Pull.Retries != 2 || plan.Pull.Profiles != int64(len(scenarioProfiles)) {
		t.Errorf("pull stats %+v", plan.Pull)
	}

	if plan.Pulled != 9 || plan.Adds != 3 || plan.Removes != 3 || plan.Unchanged != 2 {
		t.Errorf("pulled %d adds %d removes %d unchanged %d, want 9/3/3/2", plan.Pulled, plan.Adds, plan.Removes, plan.Unchanged)
	}
	wantSkipped := map[string]int{
		pipeline.ReasonDeviceIDOfIdentifiedUser: 1, pipeline.ReasonUnknownUser: 1,
		mixpanel.SkipNoIdentity: 1, mixpanel.SkipDuplicate: 1,
		mixpanel.SkipRemoveUnknownUser: 1, mixpanel.SkipRemoveUnaddressable: 1,
	}
	if !reflect.DeepEqual(plan.Skipped, wantSkipped) {
		t.Errorf("skipped %v, want %v", plan.Skipped, wantSkipped)
	}
	// Every profile is accounted for exactly once.
	profileSkips := plan.Skipped[pipeline.ReasonDeviceIDOfIdentifiedUser] + plan.Skipped[pipeline.ReasonUnknownUser] +
		plan.Skipped[mixpanel.SkipNoIdentity] + plan.Skipped[mixpanel.SkipDuplicate]
	if plan.Adds+plan.Unchanged+profileSkips != plan.Pulled {
		t.Errorf("adds+unchanged+skipped %d != pulled %d", plan.Adds+plan.Unchanged+profileSkips, plan.Pulled)
	}

	wantChanges := []schemas.Change{
		// Sorted by user id: u-anon, u-ident, u-new.
		{UserIDs: []string{"ext-1", "ext-4"}, DeviceIDs: []string{"dev-2"}},
		// u-alias, u-gone-anon, u-gone-ext: the identified one by external id.
		{UserIDs: []string{"ext-7"}, DeviceIDs: []string{"dev-8"}, Aliases: []schemas.Alias{{Name: "carol", Label: "crm"}}, ShouldRemove: true},
	}
	if len(plan.Envelopes) != len(wantChanges) {
		t.Fatalf("%d envelopes, want %d: %+v", len(plan.Envelopes), len(wantChanges), plan.Envelopes)
	}
	for i, e := range plan.Envelopes {
		checkEnvelope(t, e)
		p := e.Payload.(schemas.CohortChangesPayload)
		if !reflect.DeepEqual(p.Changes, wantChanges[i:i+1]) {
			t.Errorf("envelope %d changes %+v, want %+v", i, p.Changes, wantChanges[i])
		}
	}

	// Landed through the stream's own Resolver over the same directory,
	// the plan produces exactly the diff and no rejection.
	rows, rej := resolvePlan(t, idx, plan)
	if len(rej) != 0 {
		t.Errorf("the stream rejects planned ids: %v", rej)
	}
	want := map[string]bool{"u-anon": true, "u-ident": true, "u-new": true, "u-alias": false, "u-gone-anon": false, "u-gone-ext": false}
	if !reflect.DeepEqual(rows, want) {
		t.Errorf("stream applies %v, want %v", rows, want)
	}
}

func checkEnvelope(t *testing.T, e schemas.Envelope) {
	t.Helper()
	if err := e.Validate(); err != nil {
		t.Errorf("envelope %s: %v", e.RecordID, err)
	}
	if _, err := uuid.Parse(e.RecordID); err != nil {
		t.Errorf("record id %q is not a UUID: %v", e.RecordID, err)
	}
	if !e.EventTime.Equal(planTime) || !e.ReceivedAt.Equal(planTime) {
		t.Errorf("times %s / %s, want %s", e.EventTime, e.ReceivedAt, planTime)
	}
	if e.Workspace != "acme" || e.Partner != "mixpanel" || e.CohortID() != testCohort || e.Kind() != schemas.KindCohortChanges {
		t.Errorf("envelope %+v", e)
	}
	var n int
	for _, c := range e.Payload.(schemas.CohortChangesPayload).Changes {
		n += len(c.UserIDs) + len(c.DeviceIDs) + len(c.Aliases)
	}
	if n == 0 || n > mixpanel.MaxIDsPerEnvelope {
		t.Errorf("envelope %s holds %d ids", e.RecordID, n)
	}
	// What the plan returns is what lands: it survives the wire format.
	b, err := schemas.Encode(e)
	if err != nil {
		t.Fatalf("encode: %v", err)
	}
	back, err := schemas.Decode(b)
	if err != nil || !reflect.DeepEqual(back.Payload, e.Payload) || back.RecordID != e.RecordID {
		t.Errorf("round trip: %v", err)
	}
}

// resolvePlan runs the plan's records through the stream's Resolver and
// returns the membership each user ends with, and the rejections by reason.
func resolvePlan(t *testing.T, dir identity.Lookups, plan mixpanel.Plan) (map[string]bool, map[string]int64) {
	t.Helper()
	r, err := identity.New(identity.Options{Directory: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = r.Close() }()
	recs := make([]pipeline.Record, len(plan.Envelopes))
	for i, e := range plan.Envelopes {
		recs[i] = pipeline.Record{Partition: 0, Offset: int64(i), Envelope: e}
	}
	rej := pipeline.NewRejections()
	batch, err := r.Resolve(testkit.DetachedContext(t, 20*time.Second), recs, rej)
	if err != nil {
		t.Fatal(err)
	}
	defer batch.Release()
	rows := map[string]bool{}
	for i := range int(batch.NumRows()) {
		c := schemas.ChangeAt(batch, i)
		if _, dup := rows[c.UserID]; dup {
			t.Errorf("user %s changed twice", c.UserID)
		}
		rows[c.UserID] = c.IsMember
	}
	reasons := map[string]int64{}
	for _, row := range rej.Rows() {
		reasons[row.Reason] += row.IDs
	}
	return rows, reasons
}

func TestPlanSyncEmptyDiff(t *testing.T) {
	t.Parallel()
	idx := buildIndex(t, "acme", scenarioUsers)
	h := newHarness(t, []map[string]any{
		member("ext-5", map[string]any{"$user_id": "ext-5"}),
		member("$device:dev-6", map[string]any{}),
	}, 1000, nil)
	plan, err := mixpanel.PlanSync(testkit.DetachedContext(t, 20*time.Second), h.client, planRequest(), idx, members("u-anon-stay", "u-stay"))
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Envelopes) != 0 || plan.Adds != 0 || plan.Removes != 0 || plan.Unchanged != 2 || len(plan.Skipped) != 0 {
		t.Errorf("plan %+v, want 2 unchanged and nothing to land", plan)
	}
}

func TestPlanSyncEmptyCohortRemovesEveryone(t *testing.T) {
	t.Parallel()
	idx := buildIndex(t, "acme", scenarioUsers)
	h := newHarness(t, []map[string]any{}, 1000, nil)
	plan, err := mixpanel.PlanSync(testkit.DetachedContext(t, 20*time.Second), h.client, planRequest(), idx, members("u-stay", "u-anon-stay"))
	if err != nil {
		t.Fatal(err)
	}
	if plan.Pulled != 0 || plan.Adds != 0 || plan.Removes != 2 || len(plan.Envelopes) != 1 {
		t.Fatalf("plan %+v", plan)
	}
	want := schemas.Change{UserIDs: []string{"ext-5"}, DeviceIDs: []string{"dev-6"}, ShouldRemove: true}
	if got := plan.Envelopes[0].Payload.(schemas.CohortChangesPayload).Changes; !reflect.DeepEqual(got, []schemas.Change{want}) {
		t.Errorf("changes %+v, want %+v", got, want)
	}
}

// bulk makes n identified users and n anonymous ones, with their profiles.
func bulk(n int) ([]identities.Record, []map[string]any) {
	recs := make([]identities.Record, 0, 2*n)
	profiles := make([]map[string]any, 0, 2*n)
	for i := range n {
		recs = append(recs,
			identities.Record{UserID: fmt.Sprintf("ui-%07d", i), ExternalID: fmt.Sprintf("ext-%07d", i)},
			identities.Record{UserID: fmt.Sprintf("ua-%07d", i), DeviceIDs: []string{fmt.Sprintf("dev-%07d", i)}})
		profiles = append(profiles,
			member(fmt.Sprintf("ext-%07d", i), map[string]any{"$user_id": fmt.Sprintf("ext-%07d", i)}),
			member(fmt.Sprintf("$device:dev-%07d", i), map[string]any{}))
	}
	return recs, profiles
}

// TestPlanSyncChunksAndDeterminism plans 2,400 profiles against 1,000
// current members, of whom 300 left: records hold at most 1,000 ids, adds
// come before removes, and the same plan, from the same members in another
// order, has the same record ids.
func TestPlanSyncChunksAndDeterminism(t *testing.T) {
	t.Parallel()
	recs, profiles := bulk(1500)
	idx := buildIndex(t, "acme", recs)
	var current []string
	for i := range 700 {
		current = append(current, fmt.Sprintf("ui-%07d", i)) // pulled again: unchanged
	}
	for i := range 300 {
		current = append(current, fmt.Sprintf("ua-%07d", 1200+i)) // not pulled: removed
	}
	pulled := profiles[:2400] // users 0..1199 of each kind
	run := func(profiles []map[string]any, req mixpanel.PlanRequest) mixpanel.Plan {
		t.Helper()
		h := newHarness(t, profiles, 1000, nil)
		plan, err := mixpanel.PlanSync(testkit.DetachedContext(t, 20*time.Second), h.client, req, idx, members(current...))
		if err != nil {
			t.Fatal(err)
		}
		return plan
	}
	a := run(pulled, planRequest())
	if a.Pulled != 2400 || a.Unchanged != 700 || a.Adds != 1700 || a.Removes != 300 || len(a.Skipped) != 0 {
		t.Fatalf("plan: pulled %d unchanged %d adds %d removes %d skipped %v", a.Pulled, a.Unchanged, a.Adds, a.Removes, a.Skipped)
	}
	var sizes []int
	var removes []bool
	ids := map[string]bool{}
	for _, e := range a.Envelopes {
		checkEnvelope(t, e)
		c := e.Payload.(schemas.CohortChangesPayload).Changes[0]
		sizes = append(sizes, len(c.UserIDs)+len(c.DeviceIDs)+len(c.Aliases))
		removes = append(removes, c.ShouldRemove)
		ids[e.RecordID] = true
	}
	if want := []int{1000, 700, 300}; !reflect.DeepEqual(sizes, want) {
		t.Errorf("envelope sizes %v, want %v", sizes, want)
	}
	if want := []bool{false, false, true}; !reflect.DeepEqual(removes, want) {
		t.Errorf("should_remove per envelope %v, want %v", removes, want)
	}
	if len(ids) != len(a.Envelopes) {
		t.Errorf("%d distinct record ids for %d envelopes", len(ids), len(a.Envelopes))
	}
	rows, rej := resolvePlan(t, idx, a)
	if len(rej) != 0 || len(rows) != 2000 {
		t.Errorf("stream applies %d users, rejects %v", len(rows), rej)
	}

	reversed := slices.Clone(pulled)
	slices.Reverse(reversed)
	b := run(reversed, planRequest())
	if !reflect.DeepEqual(recordIDs(a), recordIDs(b)) || !reflect.DeepEqual(a.Envelopes, b.Envelopes) {
		t.Errorf("same plan, other order: record ids %v vs %v", recordIDs(a), recordIDs(b))
	}
	later := planRequest()
	later.CreatedAt = planTime.Add(time.Nanosecond)
	c := run(pulled, later)
	for i, id := range recordIDs(c) {
		if ids[id] {
			t.Errorf("envelope %d of a plan made at another time reuses record id %s", i, id)
		}
	}
	other := planRequest()
	other.Partner = "amplitude"
	for i, id := range recordIDs(run(pulled, other)) {
		if ids[id] {
			t.Errorf("envelope %d of another partner's plan reuses record id %s", i, id)
		}
	}
}

func recordIDs(p mixpanel.Plan) []string {
	out := make([]string, len(p.Envelopes))
	for i, e := range p.Envelopes {
		out[i] = e.RecordID
	}
	return out
}

func TestPlanSyncErrors(t *testing.T) {
	t.Parallel()
	idx := buildIndex(t, "acme", scenarioUsers)
	t.Run("invalid request names every field", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, nil, 1000, nil)
		_, err := mixpanel.PlanSync(testkit.DetachedContext(t, 20*time.Second), h.client, mixpanel.PlanRequest{Workspace: "Bad Name"}, idx, members())
		for _, f := range []string{"workspace:", "partner:", "cohort_id:", "created_at:"} {
			if err == nil || !strings.Contains(err.Error(), f) {
				t.Errorf("error %v lacks %s", err, f)
			}
		}
		if n := len(h.engage.Requests()); n != 0 {
			t.Errorf("%d requests for an invalid plan", n)
		}
	})
	t.Run("refused service account", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, numbered(3), 1000, func(c *mixpanel.Config) { c.Secret = "wrong" })
		_, err := mixpanel.PlanSync(testkit.DetachedContext(t, 20*time.Second), h.client, planRequest(), idx, members())
		if !errors.Is(err, mixpanel.ErrUnauthorized) {
			t.Errorf("err %v, want ErrUnauthorized", err)
		}
	})
	t.Run("current members unreadable", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, numbered(3), 1000, nil)
		boom := errors.New("state store closed")
		_, err := mixpanel.PlanSync(testkit.DetachedContext(t, 20*time.Second), h.client, planRequest(), idx,
			func(context.Context, func(string) error) error { return boom })
		if !errors.Is(err, boom) || !strings.Contains(err.Error(), "current members") {
			t.Errorf("err %v", err)
		}
	})
	t.Run("cancelled while reading current members", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, numbered(3), 1000, nil)
		ctx, cancel := context.WithCancel(testkit.DetachedContext(t, 20*time.Second))
		var many []string
		for i := range 5000 {
			many = append(many, fmt.Sprint("u", i))
		}
		_, err := mixpanel.PlanSync(ctx, h.client, planRequest(), idx, func(ctx context.Context, fn func(string) error) error {
			cancel()
			return members(many...)(ctx, fn)
		})
		if !errors.Is(err, context.Canceled) {
			t.Errorf("err %v, want context.Canceled", err)
		}
	})
}

// TestPlanSyncOnDirectory plans against the identity directory replicated
// from the identities topic on an in-process broker, as serve runs it.
func TestPlanSyncOnDirectory(t *testing.T) {
	t.Parallel()
	client := kafkatest.NewClient(t, kafkatest.NewCluster(t), "plan")
	cfg := identities.DefaultConfig(t.TempDir())
	loader, err := identities.NewLoader(client, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = loader.Close() })
	lines := strings.Join([]string{
		`{"user_id":"u1","external_id":"ext-1","device_ids":["dev-1"]}`,
		`{"user_id":"u2","device_ids":["dev-2"]}`,
		`{"user_id":"u3","aliases":[{"alias_name":"carol","alias_label":"crm"}]}`,
	}, "\n")
	st, err := loader.Load(testkit.DetachedContext(t, 20*time.Second), "acme", strings.NewReader(lines), func(le identities.LineError) {
		t.Errorf("line %d: %s", le.Line, le.Error)
	})
	if err != nil || st.Accepted != 3 {
		t.Fatalf("load: %+v %v", st, err)
	}
	dir, err := identities.Open(testkit.DetachedContext(t, 20*time.Second), client, cfg, identities.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = dir.Close() })

	h := newHarness(t, []map[string]any{
		member("$device:dev-1", map[string]any{}),
		member("$device:dev-2", map[string]any{}),
	}, 1000, nil)
	plan, err := mixpanel.PlanSync(testkit.DetachedContext(t, 20*time.Second), h.client, planRequest(), dir, members("u1", "u3"))
	if err != nil {
		t.Fatal(err)
	}
	// u1 was identified since its device was seen: the device no longer
	// names it, so u1 is removed (by external id) rather than kept.
	if plan.Adds != 1 || plan.Removes != 2 || plan.Skipped[pipeline.ReasonDeviceIDOfIdentifiedUser] != 1 {
		t.Fatalf("plan %+v", plan)
	}
	rows, rej := resolvePlan(t, dir, plan)
	if want := map[string]bool{"u2": true, "u1": false, "u3": false}; !reflect.DeepEqual(rows, want) || len(rej) != 0 {
		t.Errorf("stream applies %v rejecting %v, want %v", rows, rej, want)
	}
}
