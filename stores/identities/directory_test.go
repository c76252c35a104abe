package identities

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cohortsync/cohortsync/internal/testkit"
	"github.com/cohortsync/cohortsync/kafka"
)

type openedDir struct {
	*Directory
	reg  *prometheus.Registry
	logs *testkit.SyncBuffer
}

func openDir(t *testing.T, client *kafka.Client, path string) openedDir {
	t.Helper()
	cfg := testConfig(t)
	cfg.Path = path
	return openDirWith(t, client, cfg)
}

// openDirWith opens a directory with cfg, logging at info into its logs.
func openDirWith(t *testing.T, client *kafka.Client, cfg Config) openedDir {
	t.Helper()
	logs := &testkit.SyncBuffer{}
	reg := prometheus.NewRegistry()
	d, err := Open(testkit.Context(t, 20*time.Second), client, cfg, Options{
		Logger:     slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo})),
		Registerer: reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return openedDir{Directory: d, reg: reg, logs: logs}
}

func TestDirectoryReplicaAcrossInstancesAndRestart(t *testing.T) {
	t.Parallel()
	client := newTestClient(t)
	loader := newTestLoader(t, client)
	land(t, loader, "acme",
		`{"user_id":"u1","device_ids":["dev-1"]}`,
		`{"user_id":"u2","external_id":"ext-2","aliases":[{"alias_name":"bob@x.io","alias_label":"email"}]}`,
		`{"user_id":"u3","external_id":"ext-3"}`,
	)
	land(t, loader, "globex", `{"user_id":"g1","external_id":"ext-2"}`)

	pathA := dirPath(t)
	a := openDir(t, client, pathA)
	b := openDir(t, client, dirPath(t))
	check := func(when string, d *Directory, tests map[string]struct{ got, want match }) {
		t.Helper()
		for name, tt := range tests {
			if tt.got != tt.want {
				t.Errorf("%s, %s: got %+v, want %+v", when, name, tt.got, tt.want)
			}
		}
	}
	for _, d := range []*Directory{a.Directory, b.Directory} {
		// Open returns caught up: no WaitApplied needed for what landed before.
		check("after open", d, map[string]struct{ got, want match }{
			"device":        {match2(d.LookupDevice("acme", "dev-1")), match{"u1", false, true}},
			"external":      {match2(d.LookupExternalID("acme", "ext-2")), match{"u2", true, true}},
			"alias":         {match2(d.LookupAlias("acme", "bob@x.io", "email")), match{"u2", true, true}},
			"other tenant":  {match2(d.LookupExternalID("globex", "ext-2")), match{"g1", true, true}},
			"unknown":       {match2(d.LookupExternalID("acme", "ext-404")), none},
			"user id ≠ ext": {match2(d.LookupExternalID("acme", "u3")), none},
		})
		if err := d.Healthy(); err != nil {
			t.Errorf("healthy after open: %v", err)
		}
		if !d.CaughtUp() {
			t.Error("not caught up after open")
		}
	}

	// u1 is identified later; u3 loses its external id for a device. Both
	// instances see it once WaitApplied returns.
	land(t, loader, "acme",
		`{"user_id":"u1","external_id":"ext-1","device_ids":["dev-1"]}`,
		`{"user_id":"u3","device_ids":["dev-3"]}`,
	)
	for _, d := range []*Directory{a.Directory, b.Directory} {
		if err := d.WaitApplied(testkit.Context(t, 20*time.Second)); err != nil {
			t.Fatal(err)
		}
		check("after identification", d, map[string]struct{ got, want match }{
			"created anonymous, later identified: device": {match2(d.LookupDevice("acme", "dev-1")), match{"u1", true, true}},
			"its new external id":                         {match2(d.LookupExternalID("acme", "ext-1")), match{"u1", true, true}},
			"stale external id":                           {match2(d.LookupExternalID("acme", "ext-3")), none},
			"new device":                                  {match2(d.LookupDevice("acme", "dev-3")), match{"u3", false, true}},
		})
		if st := d.Status(); st.Users != 4 || st.Lag != 0 || len(st.Partitions) != 3 {
			t.Errorf("status = %+v", st)
		}
	}
	if got := testutil.ToFloat64(a.metrics.applied); got != 6 {
		t.Errorf("instance A applied %v records, want 6", got)
	}

	// Restart A while a record lands: it resumes from its stored offsets and
	// applies only the new record instead of replaying the topic.
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Healthy(); !errors.Is(err, ErrClosed) {
		t.Errorf("healthy after close: %v", err)
	}
	if err := a.WaitApplied(testkit.Context(t, 5*time.Second)); err == nil {
		t.Error("WaitApplied on a closed directory succeeded")
	}
	stored := func() map[int]int64 {
		x, err := OpenIndex(pathA, IndexOptions{Topic: client.Config().Topics.Identities})
		if err != nil {
			t.Fatal(err)
		}
		defer x.Close()
		offs, err := x.Offsets()
		if err != nil {
			t.Fatal(err)
		}
		return offs
	}()
	var total int64
	for _, off := range stored {
		total += off
	}
	if total != 6 {
		t.Errorf("stored offsets %v sum to %d, want the 6 records landed", stored, total)
	}
	land(t, loader, "acme", `{"user_id":"u4","aliases":[{"alias_name":"x","alias_label":"crm"}]}`)
	a2 := openDir(t, client, pathA)
	if got := testutil.ToFloat64(a2.metrics.applied); got != 1 {
		t.Errorf("after restart applied %v records, want only the 1 new one", got)
	}
	check("after restart", a2.Directory, map[string]struct{ got, want match }{
		"new alias":        {match2(a2.LookupAlias("acme", "x", "crm")), match{"u4", false, true}},
		"kept from before": {match2(a2.LookupDevice("acme", "dev-1")), match{"u1", true, true}},
	})
	if n, err := testutil.GatherAndCount(a2.reg, "cohortsync_identities_users", "cohortsync_identities_lag_records"); err != nil || n != 2 {
		t.Errorf("metrics: %d series, %v", n, err)
	}
	if logs := a2.logs.String(); !strings.Contains(logs, `"msg":"identity directory ready"`) || strings.Contains(logs, "ext-") || strings.Contains(logs, "dev-") {
		t.Errorf("logs lack the ready line or leak identifiers:\n%s", logs)
	}
}

func TestDirectorySkipsForeignRecordsAndKeepsTailing(t *testing.T) {
	t.Parallel()
	client := newTestClient(t)
	d := openDir(t, client, dirPath(t))
	w := client.Writer(client.Config().Topics.Identities)
	t.Cleanup(func() { _ = w.Close() })
	ctx := testkit.Context(t, 20*time.Second)
	if err := w.WriteMessages(ctx, kafkaMessage("acme/u1", "garbage")); err != nil {
		t.Fatal(err)
	}
	land(t, newTestLoader(t, client), "acme", `{"user_id":"u2","external_id":"e2"}`)
	if err := d.WaitApplied(ctx); err != nil {
		t.Fatal(err)
	}
	if u, _, ok := d.LookupExternalID("acme", "e2"); !ok || u != "u2" {
		t.Error("record after a bad one was not applied")
	}
	if got := testutil.ToFloat64(d.metrics.invalidRecords); got != 1 {
		t.Errorf("invalid records = %v, want 1", got)
	}
	if !strings.Contains(d.logs.String(), "skipping invalid record on identities topic") {
		t.Errorf("no warning logged:\n%s", d.logs.String())
	}
}

func TestOpenErrors(t *testing.T) {
	t.Parallel()
	client := newTestClient(t)
	bad := testConfig(t)
	bad.Path = ""
	bad.PollWait = 0
	if _, err := Open(testkit.Context(t, 5*time.Second), client, bad, Options{}); err == nil ||
		!strings.Contains(err.Error(), "path: must not be empty") || !strings.Contains(err.Error(), "poll_wait:") {
		t.Errorf("bad config: %v", err)
	}
	if _, err := Open(testkit.Context(t, 5*time.Second), nil, testConfig(t), Options{}); err == nil {
		t.Error("nil client accepted")
	}
	if _, err := Open(testkit.Context(t, 5*time.Second), client, testConfig(t), Options{Topic: "no-such-topic-" + t.Name()}); err == nil {
		t.Error("missing topic accepted")
	}
	// A second process on the same file fails instead of hanging.
	cfg := testConfig(t)
	openDir(t, client, cfg.Path)
	cfg.OpenTimeout = 100 * time.Millisecond
	if _, err := Open(testkit.Context(t, 5*time.Second), client, cfg, Options{}); err == nil || !strings.Contains(err.Error(), "another process holds it") {
		t.Errorf("second open: %v", err)
	}
	// Two directories cannot share a registry.
	reg := prometheus.NewRegistry()
	c1 := testConfig(t)
	d1, err := Open(testkit.Context(t, 20*time.Second), client, c1, Options{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer d1.Close()
	if _, err := Open(testkit.Context(t, 20*time.Second), client, testConfig(t), Options{Registerer: reg}); err == nil || !strings.Contains(err.Error(), "another identity directory") {
		t.Errorf("second registration: %v", err)
	}
}

// A file that applied more of a partition than the topic holds (the topic
// was recreated), or a partition the topic does not have, describes records
// that no longer exist: Open rebuilds instead of trusting it.
func TestDirectoryRebuildsWhatTheTopicNoLongerHas(t *testing.T) {
	t.Parallel()
	client := newTestClient(t)
	path := dirPath(t)
	x, err := OpenIndex(path, IndexOptions{Topic: client.Config().Topics.Identities})
	if err != nil {
		t.Fatal(err)
	}
	f := &feed{t: t}
	f.put("acme", Record{UserID: "ghost", ExternalID: "e-ghost"})
	if _, err := x.Apply(0, f.msgs, 1000); err != nil {
		t.Fatal(err)
	}
	if _, err := x.Apply(7, (&feed{t: t}).put("acme", Record{UserID: "ghost7", ExternalID: "e7"}).msgs, 0); err != nil {
		t.Fatal(err)
	}
	if err := x.Close(); err != nil {
		t.Fatal(err)
	}
	land(t, newTestLoader(t, client), "acme", `{"user_id":"real","external_id":"e-real"}`)

	d := openDir(t, client, path)
	for id, want := range map[string]match{"e-ghost": none, "e7": none, "e-real": {"real", true, true}} {
		if got := match2(d.LookupExternalID("acme", id)); got != want {
			t.Errorf("%s: got %+v, want %+v", id, got, want)
		}
	}
	st := d.Status()
	if st.Users != 1 || len(st.Partitions) != 3 {
		t.Errorf("status %+v", st)
	}
	for _, p := range st.Partitions {
		if p.Applied != p.HighWaterMark && p.HighWaterMark != 0 {
			t.Errorf("partition %+v not caught up", p)
		}
	}
	if !strings.Contains(d.logs.String(), "rebuilding it") || !strings.Contains(d.logs.String(), "no longer has") {
		t.Errorf("rebuild not logged:\n%s", d.logs.String())
	}
}

// TestCatchUpFailsOnlyWhenStalled: the catch-up is bounded by time without
// progress, not by its length. Offsets that keep arriving are waited for
// well past the stall window; offsets that never arrive fail after it.
func TestCatchUpFailsOnlyWhenStalled(t *testing.T) {
	t.Parallel()
	client := newTestClient(t)
	d := openDir(t, client, dirPath(t))
	ctx := testkit.Context(t, 30*time.Second)
	ends, err := d.partitionEnds(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const records, every, stall = 20, 50 * time.Millisecond, time.Second
	// Every record is keyed to one user, so all go to one partition.
	var part int
	for p := range ends {
		part = p
		break
	}
	want := map[int]int64{}
	for p, end := range ends {
		want[p] = end
	}
	w := client.Writer(client.Config().Topics.Identities)
	t.Cleanup(func() { _ = w.Close() })
	if err := w.WriteMessages(ctx, kafkaMessage("acme/probe", `{"user_id":"probe","external_id":"probe"}`)); err != nil {
		t.Fatal(err)
	}
	if err := d.WaitApplied(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := d.partitionEnds(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for p := range got {
		if got[p] > ends[p] {
			part = p
		}
	}
	want[part] = got[part] + records
	go func() {
		for i := range records {
			time.Sleep(every)
			line := fmt.Sprintf(`{"user_id":"probe","external_id":"probe-%d"}`, i)
			if err := w.WriteMessages(ctx, kafkaMessage("acme/probe", line)); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	start := time.Now()
	if err := d.waitOffsets(ctx, want, stall/4); err != nil {
		t.Fatalf("a catch-up that makes progress failed after %s: %v", time.Since(start), err)
	}
	if took := time.Since(start); took < stall/4 {
		t.Fatalf("the wait took %s, not longer than the stall window: the test proves nothing", took)
	}

	want[part] += 5 // offsets nobody writes
	start = time.Now()
	err = d.waitOffsets(ctx, want, stall)
	if err == nil || !strings.Contains(err.Error(), "no record applied for 1s") {
		t.Fatalf("a stalled catch-up: %v, want it to fail for lack of progress", err)
	}
	if took := time.Since(start); took < stall || took > 10*stall {
		t.Errorf("the stalled catch-up failed after %s, want about %s", took, stall)
	}
}
