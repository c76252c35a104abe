package backfill_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync/connectors/backfill"
	"github.com/cohortsync/cohortsync/internal/httproute"
	"github.com/cohortsync/cohortsync/kafka"
	"github.com/cohortsync/cohortsync/kafka/kafkatest"
	"github.com/cohortsync/cohortsync/pipeline"
	"github.com/cohortsync/cohortsync/schemas"
	"github.com/cohortsync/cohortsync/stores/adminauth"
	"github.com/cohortsync/cohortsync/stores/identities"
	"github.com/cohortsync/cohortsync/transforms/identity"
	"github.com/cohortsync/cohortsync/transforms/retention"
)

// sliceInput yields fixed items; a nil envelope payload stands for a bad line.
type sliceInput struct {
	items []backfill.Item
	next  int
	// failAt makes Next fail (not a bad line) once, at that index.
	failAt int
}

var errBadLine = errors.New("bad line")

func (s *sliceInput) Next(context.Context) (backfill.Item, error) {
	if s.next == s.failAt {
		s.failAt = -1
		return backfill.Item{}, errors.New("disk went away")
	}
	if s.next >= len(s.items) {
		return backfill.Item{}, io.EOF
	}
	it := s.items[s.next]
	s.next++
	if it.Envelope.Payload == nil {
		return backfill.Item{}, fmt.Errorf("line %d: %w", it.Line, errBadLine)
	}
	return it, nil
}
func (s *sliceInput) Progress() (int64, int64) { return int64(s.next), int64(len(s.items)) }
func (s *sliceInput) Close() error             { return nil }

func changes(id string, at time.Time, remove bool, users ...string) schemas.Envelope {
	return schemas.Envelope{
		SchemaVersion: schemas.CurrentVersion, RecordID: id, Workspace: "ws", Partner: "mixpanel",
		ReceivedAt: at, EventTime: at,
		Payload: schemas.CohortChangesPayload{CohortID: "c1", Changes: []schemas.Change{{UserIDs: users, ShouldRemove: remove}}},
	}
}

func rules(t *testing.T) ([]pipeline.Transform, pipeline.Resolver) {
	t.Helper()
	x, err := identities.OpenIndex(filepath.Join(t.TempDir(), "ids.db"), identities.IndexOptions{Topic: "ids"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = x.Close() })
	var msgs []identities.Message
	for i, u := range []string{"u1", "u2", "u3"} {
		v, err := identities.EncodeValue("ws", identities.Record{UserID: u, ExternalID: "e" + u})
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, identities.Message{Offset: int64(i), Key: identities.MessageKey("ws", u), Value: v})
	}
	if _, err := x.Apply(0, msgs, int64(len(msgs))); err != nil {
		t.Fatal(err)
	}
	ret, err := retention.New(retention.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	res, err := identity.New(identity.Options{Directory: x})
	if err != nil {
		t.Fatal(err)
	}
	return []pipeline.Transform{ret}, res
}

func items() []backfill.Item {
	now := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	old := time.Date(2009, 6, 1, 0, 0, 0, 0, time.UTC)
	var out []backfill.Item
	for i := range 10 {
		var e schemas.Envelope
		switch {
		case i == 3:
			out = append(out, backfill.Item{Line: int64(i + 1)}) // bad line
			continue
		case i == 5:
			e = changes(fmt.Sprintf("r%02d", i), old, false, "eu1")
		case i%2 == 0:
			e = changes(fmt.Sprintf("r%02d", i), now, false, "eu1", "eu2", "nobody")
		default:
			e = changes(fmt.Sprintf("r%02d", i), now, true, "eu3")
		}
		out = append(out, backfill.Item{Envelope: e, Line: int64(i + 1)})
	}
	return out
}

// landingTopic is a fresh broker with the standard topics, and a lander on
// the landing topic.
func landingTopic(t *testing.T, ctx context.Context, prefix string) (*kafka.Client, string, *kafka.Lander) {
	t.Helper()
	client := kafkatest.NewClient(t, kafkatest.NewCluster(t), prefix)
	topic := client.Config().Topics.Exports
	if err := client.EnsureTopics(ctx, client.StandardTopics()); err != nil {
		t.Fatal(err)
	}
	lander := client.NewLander(topic)
	t.Cleanup(func() { _ = lander.Close() })
	return client, topic, lander
}

// TestRunCountsLandsAndResumes: the summary counts what the stream's own
// stages accept and drop; every envelope lands exactly once across an
// interrupted run and its resumption; a dry run lands nothing.
func TestRunCountsLandsAndResumes(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	client, topic, lander := landingTopic(t, ctx, "bf")
	tr, res := rules(t)
	cpPath := backfill.CheckpointPath(t.TempDir(), "run1")
	isBad := func(err error) bool { return errors.Is(err, errBadLine) }
	opts := func(in *sliceInput) backfill.Options {
		return backfill.Options{
			Sources:     []backfill.Source{{Name: "mem", Open: func() (backfill.Input, error) { return in, nil }}},
			IsBadInput:  isBad,
			Destination: &backfill.Local{Lander: lander, Transforms: tr, Resolver: res},
			Checkpoint:  cpPath, BatchRecords: 2,
		}
	}

	dry := opts(&sliceInput{items: items(), failAt: -1})
	dry.DryRun = true
	sum, err := backfill.Run(ctx, dry)
	if err != nil {
		t.Fatal(err)
	}
	// A dry run says what the real run would land: every record read.
	if sum.Landed != 9 || sum.Read != 9 || sum.BadLines != 1 {
		t.Fatalf("dry run summary %+v", sum)
	}
	// Five adds of eu1 and eu2 (nobody is unknown) = 10, three removes of
	// eu3 = 3; the 2009 record is dropped whole by retention.
	if sum.DataPoints != 13 || sum.Dropped[pipeline.ReasonUnknownUser] != 5 || sum.DroppedRecords[pipeline.ReasonRetention] != 1 || sum.Dropped[pipeline.ReasonRetention] != 1 {
		t.Fatalf("dry run counts %+v", sum)
	}
	if got := kafkatest.ReadAll(t, client, topic); len(got) != 0 {
		t.Fatalf("dry run landed %d records", len(got))
	}

	// First attempt fails after two batches (4 envelopes landed).
	_, err = backfill.Run(ctx, opts(&sliceInput{items: items(), failAt: 5}))
	if err == nil {
		t.Fatal("a failing input must fail the run")
	}
	if got := kafkatest.ReadAll(t, client, topic); len(got) != 4 {
		t.Fatalf("after the failure %d records landed, want 4", len(got))
	}
	sum, err = backfill.Run(ctx, opts(&sliceInput{items: items(), failAt: -1}))
	if err != nil {
		t.Fatal(err)
	}
	if !sum.Complete || sum.Landed != 9 || sum.Resumed != 4 || sum.Read != 9 || sum.BadLines != 1 || sum.DataPoints != 13 {
		t.Fatalf("resumed summary %+v", sum)
	}
	landed := kafkatest.ReadAll(t, client, topic)
	if len(landed) != 9 {
		t.Fatalf("%d records on the topic, want 9: each envelope once", len(landed))
	}
	seen := map[string]bool{}
	for _, m := range landed {
		e, err := schemas.Decode(m.Value)
		if err != nil {
			t.Fatal(err)
		}
		if seen[e.RecordID] {
			t.Fatalf("record %s landed twice", e.RecordID)
		}
		seen[e.RecordID] = true
	}

	// A complete run says so and lands nothing; Restart lands it all again
	// (the sinks deduplicate by record id).
	sum, err = backfill.Run(ctx, opts(&sliceInput{items: items(), failAt: -1}))
	if err != nil || !sum.AlreadyComplete || sum.Landed != 9 || sum.DataPoints != 13 {
		t.Fatalf("run of a complete backfill: %+v, %v; want AlreadyComplete with the finished run's figures", sum, err)
	}
	if n := len(kafkatest.ReadAll(t, client, topic)); n != len(landed) {
		t.Fatalf("the run of a complete backfill landed %d records", n-len(landed))
	}
	again := opts(&sliceInput{items: items(), failAt: -1})
	again.Restart = true
	sum, err = backfill.Run(ctx, again)
	if err != nil || sum.AlreadyComplete || sum.Landed != 9 || sum.Resumed != 0 {
		t.Fatalf("restarted run: %+v, %v", sum, err)
	}
	if n := len(kafkatest.ReadAll(t, client, topic)); n != len(landed)+9 {
		t.Fatalf("the restarted run landed %d records, want 9", n-len(landed))
	}
}

// TestRemoteThroughAPI lands through the HTTP route a server registers: a
// batch spanning two workspaces becomes one request per workspace, the
// answer carries the server's counts, and a dry run lands nothing.
func TestRemoteThroughAPI(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	client, topic, lander := landingTopic(t, ctx, "bfapi")
	tr, res := rules(t)
	const token = "cst_backfill-api-test-token"
	auth, err := adminauth.NewAdminToken(token)
	if err != nil {
		t.Fatal(err)
	}
	api, err := backfill.NewAPI(&backfill.Local{Lander: lander, Transforms: tr, Resolver: res}, auth, nil)
	if err != nil {
		t.Fatal(err)
	}
	mux := httproute.NewRecorder()
	api.Register(mux)
	srv := httptest.NewServer(mux.Mux)
	defer srv.Close()

	now := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	other := changes("o1", now, false, "eu1")
	other.Workspace = "other"
	envs := []schemas.Envelope{changes("w1", now, false, "eu1", "nobody"), other, changes("w2", now, true, "eu2")}

	if _, err := backfill.NewRemote(srv.URL, "", nil); err == nil {
		t.Fatal("a remote without a token must be refused")
	}
	bad, err := backfill.NewRemote(srv.URL, "cst_wrong", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bad.Land(ctx, envs, false); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("wrong token: %v, want a 401", err)
	}
	// A workspace name no store takes is refused before anything is read.
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/v1/workspaces/Not%20Valid/backfill", strings.NewReader(""))
	req.Header.Set("Authorization", "Bearer "+token)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("invalid workspace: %v %v, want 400", resp, err)
	} else {
		resp.Body.Close()
	}
	remote, err := backfill.NewRemote(srv.URL, token, nil)
	if err != nil {
		t.Fatal(err)
	}
	out, err := remote.Land(ctx, envs, true)
	if err != nil {
		t.Fatal(err)
	}
	// eu1 and eu2 exist in workspace ws only: "other" resolves nothing.
	if out.Landed != 3 || out.DataPoints != 2 || out.Dropped[pipeline.ReasonUnknownUser] != 2 {
		t.Fatalf("dry run outcome %+v", out)
	}
	if got := kafkatest.ReadAll(t, client, topic); len(got) != 0 {
		t.Fatalf("dry run landed %d", len(got))
	}
	out, err = remote.Land(ctx, envs, false)
	if err != nil || out.Landed != 3 || out.DataPoints != 2 {
		t.Fatalf("land: %+v, %v", out, err)
	}
	got := kafkatest.ReadAll(t, client, topic)
	ids := map[string]string{}
	for _, m := range got {
		e, err := schemas.Decode(m.Value)
		if err != nil {
			t.Fatal(err)
		}
		ids[e.RecordID] = e.Workspace
	}
	if len(ids) != 3 || ids["o1"] != "other" || ids["w1"] != "ws" {
		t.Fatalf("landed %v: record ids must be kept", ids)
	}
}
