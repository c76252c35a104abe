package service_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync/config"
	"github.com/cohortsync/cohortsync/kafka"
	"github.com/cohortsync/cohortsync/kafka/kafkatest"
	"github.com/cohortsync/cohortsync/schemas"
	"github.com/cohortsync/cohortsync/sinks/state"
)

// TestStreamFromPartnerAPIToState sends a Mixpanel-style sequence through the
// partner API and checks that every id ends up either as membership in the
// state store or in a named rejection count.
func TestStreamFromPartnerAPIToState(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	brokers := kafkatest.NewCluster(t)
	const admin = "cst_stream-test-admin-token"
	cfg := config.Default()
	cfg.Embedded.KafkaAddr = "127.0.0.1:0" // tests run in parallel: any free port
	cfg.DataDir = dir
	cfg.Kafka.Brokers = brokers
	cfg.AdminToken = admin
	svc := startWith(t, cfg)
	m := curlLine.FindStringSubmatch(svc.out.String())
	var first map[string]any
	if err := json.Unmarshal([]byte(m[2]), &first); err != nil {
		t.Fatal(err)
	}
	ids := "{\"user_id\":\"u1\",\"external_id\":\"e1\"}\n" +
		"{\"user_id\":\"u2\",\"device_ids\":[\"d2\"]}\n" +
		"{\"user_id\":\"u3\",\"external_id\":\"e3\",\"device_ids\":[\"d3\"]}\n"
	if code, resp := post(t, "http://"+svc.addr+"/v1/workspaces/default/identities", "application/x-ndjson", admin, ids); code != http.StatusOK {
		t.Fatalf("identities: %d %s", code, resp)
	}
	push := func(changes string) {
		body := fmt.Sprintf(`{"partner_api_key":%q,"client_secret":%q,"cohort_id":"churn","cohort_changes":%s}`, first["partner_api_key"], first["client_secret"], changes)
		if code, resp := post(t, "http://"+svc.addr+"/partners/mixpanel/cohorts/users", "application/json", "", body); code != http.StatusCreated {
			t.Fatalf("push: %d %s", code, resp)
		}
	}
	// The identity directory is fed by its own topic: give it a moment to apply.
	time.Sleep(time.Second)
	push(`[{"user_ids":["e1","e3","nobody"],"device_ids":["d2","d3"]}]`) // d3 belongs to an identified user
	push(`[{"user_ids":["e1"],"should_remove":true}]`)
	push(`[{"user_ids":["e1"],"should_remove":true}]`) // a re-sent sync

	// Envelopes on both sides of the retention cutoff, landed straight on the topic
	// (as a replay of old history would be).
	kcfg := kafka.DefaultConfig()
	kcfg.Brokers = brokers
	client, err := kafka.NewClient(kcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	lander := client.NewLander(kcfg.Topics.Exports)
	defer lander.Close()
	for _, c := range []struct {
		at  time.Time
		ids []string
	}{
		{time.Date(2009, 12, 31, 23, 59, 59, 0, time.UTC), []string{"e3", "e1"}}, // dropped: 2 ids
		{time.Date(2010, 1, 1, 0, 0, 0, 0, time.UTC), []string{"e3"}},            // kept: a re-sent add
	} {
		rid, err := schemas.NewRecordID()
		if err != nil {
			t.Fatal(err)
		}
		env := schemas.Envelope{SchemaVersion: schemas.CurrentVersion, RecordID: rid, Workspace: "default", Partner: "mixpanel",
			ReceivedAt: c.at, EventTime: c.at,
			Payload: schemas.CohortChangesPayload{CohortID: "churn", Changes: []schemas.Change{{UserIDs: c.ids}}}}
		b, err := schemas.Encode(env)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err = lander.Land(ctx, env.PartitionKey(), b)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}

	// Wait for the stream to drain: the runner commits only after the sinks,
	// so zero consumer lag on every partition means everything is written.
	waitNoLag(t, svc.addr)
	if err := svc.stop(); err != nil {
		t.Fatal(err)
	}
	st, err := state.Open(state.DefaultConfig(dir), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	members, err := st.Members("default", "mixpanel", "churn")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"u2", "u3"}; !reflect.DeepEqual(members, want) {
		t.Fatalf("members %v, want %v", members, want)
	}
	rej, err := st.Rejections("default")
	if err != nil {
		t.Fatal(err)
	}
	byReason := map[string]int64{}
	for _, r := range rej {
		byReason[r.Reason] += r.IDs
	}
	if byReason["unknown_user"] != 1 || byReason["device_id_of_identified_user"] != 1 || byReason["retention"] != 2 {
		t.Fatalf("rejections %v", byReason)
	}
	dps, err := st.DataPoints("default", time.Time{}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	var billable, effective int64
	for _, d := range dps {
		billable += d.Billable
		effective += d.Effective
	}
	// Sent 10 ids: 4 rejected by name, 6 accepted (3 adds, 2 removes of e1, a
	// re-sent add of e3 that changes nothing).
	if billable != 6 || effective != 4 || billable+byReason["unknown_user"]+byReason["device_id_of_identified_user"]+byReason["retention"] != 10 {
		t.Fatalf("billable %d effective %d, rejections %v", billable, effective, byReason)
	}
}

func waitNoLag(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	zeroInARow := 0
	for time.Now().Before(deadline) {
		time.Sleep(300 * time.Millisecond)
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/metrics", nil)
		_, body := do(t, req)
		lines, lagging := 0, false
		for _, l := range strings.Split(body, "\n") {
			if !strings.HasPrefix(l, "cohortsync_consumer_lag{") {
				continue
			}
			lines++
			if !strings.HasSuffix(l, " 0") {
				lagging = true
			}
		}
		if lines > 0 && !lagging {
			zeroInARow++
			if zeroInARow >= 3 {
				return
			}
		} else {
			zeroInARow = 0
		}
	}
	t.Fatal("the stream did not catch up within 60 s")
}
