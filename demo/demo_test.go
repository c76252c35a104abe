package demo_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/cohortsync/cohortsync/config"
	"github.com/cohortsync/cohortsync/demo"
	"github.com/cohortsync/cohortsync/internal/testkit"
	"github.com/cohortsync/cohortsync/pipeline"
	"github.com/cohortsync/cohortsync/service"
	"github.com/cohortsync/cohortsync/sinks/state"
)

const (
	adminToken = "cst_demo-test-admin-token"
	partnerKey = "cpk_demo-test-partner-key"
)

// startService runs a real embedded instance (broker, stream, state store)
// on dir and returns its address and a function that stops it.
func startService(t *testing.T, dir string) (string, func()) {
	t.Helper()
	cfg := config.Default()
	cfg.Embedded.KafkaAddr = "127.0.0.1:0" // tests run in parallel: any free port
	cfg.DataDir = dir
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.AdminToken = adminToken
	p := cfg.Partners["mixpanel"]
	p.APIKey = partnerKey
	cfg.Partners["mixpanel"] = p
	logs := &testkit.SyncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- service.Run(ctx, cfg, log, service.Options{Out: io.Discard, Ready: func(a string) { ready <- a }})
	}()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("service: %v\n%s", err, logs.String())
				}
			case <-time.After(30 * time.Second):
				t.Error("service did not stop")
			}
		})
	}
	t.Cleanup(stop)
	select {
	case addr := <-ready:
		return "http://" + addr, stop
	case err := <-done:
		t.Fatalf("service stopped before it was ready: %v\n%s", err, logs.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("service not ready\n%s", logs.String())
	}
	return "", nil
}

func scrapeMetrics(t *testing.T, base string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return mfs
}

// counter sums the series of a family whose labels include match.
func counter(mfs map[string]*dto.MetricFamily, name string, match map[string]string) int64 {
	var sum float64
	mf := mfs[name]
	if mf == nil {
		return -1
	}
series:
	for _, m := range mf.GetMetric() {
		for _, l := range m.GetLabel() {
			if want, ok := match[l.GetName()]; ok && want != l.GetValue() {
				continue series
			}
		}
		sum += m.GetCounter().GetValue()
	}
	return int64(sum)
}

// TestDemoAgainstRunningService runs the demo against a real instance and
// checks its account three ways: the demo's own check of /metrics, the
// metrics read here, and the state store read after the service stopped,
// against set computations over the plan.
func TestDemoAgainstRunningService(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	base, stop := startService(t, dir)

	cfg := demo.DefaultConfig()
	cfg.Server, cfg.Token, cfg.PartnerAPIKey = base, adminToken, partnerKey
	cfg.Users, cfg.Rounds, cfg.Interval, cfg.Seed = 400, 3, 0, 7
	cfg.BatchSize = 40 // several requests per sync, so that the restart re-sends part of one
	cfg.Wait = 30 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out bytes.Buffer
	rep, err := demo.Run(ctx, cfg, demo.Options{Out: &out})
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	t.Logf("demo output:\n%s", out.String())

	plan := demo.NewPlan(cfg)
	e := rep.Expected
	if rep.Identities != cfg.Users || rep.Created != cfg.Cohorts || rep.KeyID == "" {
		t.Errorf("report %+v", rep)
	}
	sent := 0
	for _, round := range plan.Rounds {
		for _, s := range round {
			sent += len(s.Sent())
		}
	}
	if rep.Pushed != sent || rep.Resent == 0 {
		t.Errorf("pushed %d (want %d), resent %d (want > 0)", rep.Pushed, sent, rep.Resent)
	}
	if rep.Observed == nil || !rep.Observed.CaughtUp || len(rep.Observed.Mismatches(e)) > 0 {
		t.Fatalf("observed %+v", rep.Observed)
	}
	if e.Rejected[pipeline.ReasonUnknownUser] == 0 || e.Rejected[pipeline.ReasonDeviceIDOfIdentifiedUser] == 0 || e.Billable <= e.Transitions {
		t.Fatalf("the demo must exercise refusals and a re-sent sync: %+v", e)
	}

	// The service's own metrics, read here. The demo ran on a fresh
	// instance, so the totals are the demo's.
	mfs := scrapeMetrics(t, base)
	for res, want := range map[string]int64{
		"matched":                               e.Billable,
		pipeline.ReasonUnknownUser:              e.Rejected[pipeline.ReasonUnknownUser],
		pipeline.ReasonDeviceIDOfIdentifiedUser: e.Rejected[pipeline.ReasonDeviceIDOfIdentifiedUser],
	} {
		if got := counter(mfs, "cohortsync_identity_ids_total", map[string]string{"result": res}); got != want {
			t.Errorf("cohortsync_identity_ids_total{result=%q} = %d, want %d", res, got, want)
		}
	}
	if got := counter(mfs, "cohortsync_state_data_points_total", map[string]string{"result": "new"}); got != e.Billable {
		t.Errorf("new data points %d, want %d", got, e.Billable)
	}
	if got := counter(mfs, "cohortsync_partnerapi_requests_total", map[string]string{"code": "201"}); got != int64(rep.Pushed+rep.Created) {
		t.Errorf("201s %d, want %d", got, rep.Pushed+rep.Created)
	}

	// The state of record, after a clean stop.
	stop()
	st, err := state.Open(state.DefaultConfig(dir), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for c, co := range plan.Cohorts {
		got, err := st.Members(cfg.Workspace, cfg.Partner, co.ID)
		if err != nil {
			t.Fatal(err)
		}
		want := slices.Sorted(slices.Values(plan.Members[c]))
		if !reflect.DeepEqual(got, want) {
			t.Errorf("cohort %s: %d members, want %d", co.ID, len(got), len(want))
		}
	}
	dps, err := st.DataPoints(cfg.Workspace, time.Time{}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	var billable, effective int64
	for _, d := range dps {
		billable += d.Billable
		effective += d.Effective
	}
	if billable != e.Billable || effective != e.Transitions {
		t.Errorf("data points: billable %d effective %d, want %d and %d", billable, effective, e.Billable, e.Transitions)
	}
}

func TestPlanIsDeterministicAndConsistent(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		users, cohorts, rounds, batch int
		seed                          uint64
	}{
		{3000, 3, 3, 1000, 1},
		{3000, 3, 3, 1000, 2},
		{500, 5, 4, 25, 9},
		{20, 1, 1, 3, 3},
	} {
		t.Run(fmt.Sprintf("users=%d,cohorts=%d,rounds=%d,seed=%d", tc.users, tc.cohorts, tc.rounds, tc.seed), func(t *testing.T) {
			t.Parallel()
			cfg := demo.DefaultConfig()
			cfg.Users, cfg.Cohorts, cfg.Rounds, cfg.BatchSize, cfg.Seed = tc.users, tc.cohorts, tc.rounds, tc.batch, tc.seed
			p := demo.NewPlan(cfg)
			if !reflect.DeepEqual(p, demo.NewPlan(cfg)) {
				t.Fatal("the same config gave two plans")
			}
			other := cfg
			other.Seed++
			if reflect.DeepEqual(p.Members, demo.NewPlan(other).Members) {
				t.Error("another seed gave the same members")
			}
			kinds := map[string]int{}
			for i, r := range p.Identities {
				if err := r.Validate(); err != nil {
					t.Fatalf("identity %d: %v", i, err)
				}
				kinds[p.Kinds[i]]++
			}
			if tc.users >= 500 && len(kinds) != 4 {
				t.Errorf("kinds %v, want all four", kinds)
			}
			restarts := 0
			for _, round := range p.Rounds {
				if len(round) != tc.cohorts {
					t.Fatalf("%d syncs in a round, want %d", len(round), tc.cohorts)
				}
				for _, s := range round {
					if s.RestartAfter >= 0 {
						restarts++
						if s.RestartAfter < 1 || s.RestartAfter > len(s.Requests) {
							t.Errorf("restart after %d of %d requests", s.RestartAfter, len(s.Requests))
						}
					}
					for _, req := range s.Requests {
						n := 0
						for _, ch := range req.Changes {
							n += len(ch.UserIDs) + len(ch.DeviceIDs) + len(ch.Aliases)
						}
						if n == 0 || n > tc.batch {
							t.Errorf("request with %d ids, batch size %d", n, tc.batch)
						}
					}
				}
			}
			if restarts != tc.cohorts {
				t.Errorf("%d restarted syncs, want one round's (%d)", restarts, tc.cohorts)
			}
			// The rules applied to what is sent end where the generator
			// meant each cohort to end.
			e := p.Expect()
			for c := range p.Cohorts {
				want := slices.Sorted(slices.Values(p.Members[c]))
				if !reflect.DeepEqual(e.Final[c], want) || e.Cohorts[c].Members != len(want) {
					t.Errorf("cohort %d: expected %d members, generated %d", c, len(e.Final[c]), len(want))
				}
			}
			if len(p.Cohorts) >= 2 {
				inB := map[string]bool{}
				for _, u := range p.Members[1] {
					inB[u] = true
				}
				n := 0
				for _, u := range p.Members[0] {
					if !inB[u] {
						n++
					}
				}
				if e.MembersANotB != n {
					t.Errorf("A and not B: %d, want %d", e.MembersANotB, n)
				}
			}
			var ids int64
			for _, c := range e.Cohorts {
				ids += c.Billable
			}
			for _, n := range e.Rejected {
				ids += n
			}
			if ids != e.IDsSent {
				t.Errorf("billable + refused = %d, sent %d: an id went unaccounted", ids, e.IDsSent)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	ok := demo.DefaultConfig()
	ok.Server, ok.Token, ok.PartnerAPIKey = "http://127.0.0.1:8080", "t", "k"
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	bad := demo.Config{Server: "localhost", Workspace: "No Spaces", Users: 1, Cohorts: 0, Rounds: 0, Interval: -1, Prefix: "UPPER", BatchSize: 1001, Wait: -1}
	err := bad.Validate()
	if err == nil {
		t.Fatal("no error")
	}
	for _, f := range []string{"server:", "token:", "partner_api_key:", "partner:", "workspace:", "users:", "cohorts:", "rounds:", "interval:", "prefix:", "batch_size:", "wait:"} {
		if !strings.Contains(err.Error(), f) {
			t.Errorf("error lacks %s: %v", f, err)
		}
	}
}
