package service_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync/config"
	"github.com/cohortsync/cohortsync/demo"
	"github.com/cohortsync/cohortsync/internal/chtest"
	"github.com/cohortsync/cohortsync/kafka/kafkatest"
)

// segmentAnswers is everything the engines' acceptance compares between the
// engines: member lists, per-user answers and data points.
type segmentAnswers struct {
	ANotB      []string
	ANotBAsOf  []string
	Pages      int
	Users      map[string]userAnswer
	DataPoints []dataPointRow
	Counts     map[string]int64 // cohort id → member_count from GET /cohorts
}

type userAnswer struct {
	Member   bool
	InA, InB bool
}

type dataPointRow struct {
	Day         string `json:"day"`
	Billable    int64  `json:"billable"`
	Transitions int64  `json:"transitions"`
}

// TestSegmentsAnswerAlikeOnBothEngines is the acceptance test of the query side: after a
// scripted Mixpanel-style sync of three overlapping cohorts (the demo's plan:
// anonymous, later identified and aliased users, adds, removes, a restarted
// sync), "A and not B" with its count, pages and per-user reasons, its as_of
// answer from before the last sync, and data points by day are the same on
// ClickHouse and on the embedded engine, and equal a set computation made
// here from the plan alone.
func TestSegmentsAnswerAlikeOnBothEngines(t *testing.T) {
	t.Parallel()
	dcfg := demo.DefaultConfig()
	dcfg.Users, dcfg.Cohorts, dcfg.Rounds, dcfg.Interval, dcfg.Seed, dcfg.Prefix = 800, 3, 3, 0, 11, "seg"
	dcfg.Wait = 0
	plan := demo.NewPlan(dcfg)
	final := plan.Expect()
	before := plan
	before.Rounds = plan.Rounds[:len(plan.Rounds)-1]
	earlier := before.Expect()
	a, b := plan.Cohorts[0].ID, plan.Cohorts[1].ID
	wantANotB := setMinus(final.Final[0], final.Final[1])
	wantANotBAsOf := setMinus(earlier.Final[0], earlier.Final[1])
	if len(wantANotB) == 0 || slices.Equal(wantANotB, wantANotBAsOf) {
		t.Fatalf("the plan does not exercise the question: A∖B now %d members, before the last sync %d", len(wantANotB), len(wantANotBAsOf))
	}

	var mu sync.Mutex
	got := map[string]segmentAnswers{}
	t.Run("engines", func(t *testing.T) {
		for _, backend := range []string{"embedded", "clickhouse"} {
			t.Run(backend, func(t *testing.T) {
				t.Parallel()
				const admin = "cst_segments-acceptance-admin"
				cfg := config.Default()
				cfg.Embedded.KafkaAddr = "127.0.0.1:0" // tests run in parallel: any free port
				cfg.DataDir, cfg.Kafka.Brokers, cfg.AdminToken = t.TempDir(), kafkatest.NewCluster(t), admin
				if backend == "clickhouse" {
					cfg.ClickHouse.Addr, cfg.ClickHouse.Database = chtest.NewDatabase(t)
				}
				svc := startWith(t, cfg)
				base := "http://" + svc.addr
				var first map[string]any
				if err := json.Unmarshal([]byte(curlLine.FindStringSubmatch(svc.out.String())[2]), &first); err != nil {
					t.Fatal(err)
				}
				c := segClient{t: t, base: base + "/v1/workspaces/" + dcfg.Workspace, token: admin}
				run := dcfg
				run.Server, run.Token, run.PartnerAPIKey = base, admin, first["partner_api_key"].(string)

				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
				defer cancel()
				var asOf time.Time
				_, err := demo.Run(ctx, run, demo.Options{BeforeRound: func(ctx context.Context, round int) error {
					if round != len(plan.Rounds)-1 {
						return nil
					}
					c.waitMembers(ctx, plan, earlier)
					// as_of has the resolution of ClickHouse's DateTime, one
					// second: the last round must land in a later second.
					asOf = time.Now().UTC().Truncate(time.Second)
					time.Sleep(time.Until(asOf.Add(time.Second + 10*time.Millisecond)))
					return nil
				}})
				if err != nil {
					t.Fatalf("demo: %v", err)
				}
				c.waitMembers(ctx, plan, final)

				aNotB := fmt.Sprintf(`{"and":[{"cohort":{"partner":%q,"id":%q}},{"not":{"cohort":{"partner":%q,"id":%q}}}]}`, dcfg.Partner, a, dcfg.Partner, b)
				var ans segmentAnswers
				ans.ANotB, ans.Pages = c.evaluateAll(aNotB, "", 97)
				ans.ANotBAsOf, _ = c.evaluateAll(aNotB, asOf.Format(time.RFC3339Nano), 1000)

				var seg struct{ ID string }
				c.call(http.MethodPost, "/segments", fmt.Sprintf(`{"name":"A and not B","filter":%s}`, aNotB), http.StatusCreated, &seg)
				ans.Users = map[string]userAnswer{}
				for _, u := range sampleUsers(final.Final[0], final.Final[1], plan) {
					var ex struct {
						Member  bool `json:"member"`
						Reasons []struct {
							CohortID   string `json:"cohort_id"`
							InCohort   bool   `json:"in_cohort"`
							LastChange *struct {
								IsMember bool   `json:"is_member"`
								RecordID string `json:"record_id"`
							} `json:"last_change"`
						} `json:"reasons"`
					}
					c.call(http.MethodGet, "/segments/"+seg.ID+"/members/"+url.PathEscape(u), "", http.StatusOK, &ex)
					ua := userAnswer{Member: ex.Member}
					for _, r := range ex.Reasons {
						if r.LastChange != nil && (r.LastChange.IsMember != r.InCohort || r.LastChange.RecordID == "") {
							t.Errorf("user %s cohort %s: last change %+v does not decide in_cohort=%v", u, r.CohortID, *r.LastChange, r.InCohort)
						}
						if r.InCohort && r.LastChange == nil {
							t.Errorf("user %s is in cohort %s but no change is named", u, r.CohortID)
						}
						switch r.CohortID {
						case a:
							ua.InA = r.InCohort
						case b:
							ua.InB = r.InCohort
						default:
							t.Errorf("user %s: reason names cohort %s, which the filter does not use", u, r.CohortID)
						}
					}
					if len(ex.Reasons) != 2 {
						t.Errorf("user %s: %d reasons, want one per cohort of the filter", u, len(ex.Reasons))
					}
					ans.Users[u] = ua
				}

				today := time.Now().UTC()
				var dp struct{ Rows []dataPointRow }
				c.call(http.MethodGet, "/datapoints?group_by=day&from="+today.AddDate(0, 0, -1).Format(time.DateOnly)+"&to="+today.AddDate(0, 0, 1).Format(time.DateOnly), "", http.StatusOK, &dp)
				ans.DataPoints = dp.Rows
				ans.Counts = c.cohortCounts()

				mu.Lock()
				got[backend] = ans
				mu.Unlock()
			})
		}
	})
	if t.Failed() {
		return
	}

	for name, ans := range got {
		if !slices.Equal(ans.ANotB, wantANotB) {
			t.Errorf("%s: A and not B has %d members, want %d (first difference: %s)", name, len(ans.ANotB), len(wantANotB), firstDiff(ans.ANotB, wantANotB))
		}
		if !slices.Equal(ans.ANotBAsOf, wantANotBAsOf) {
			t.Errorf("%s: A and not B as of before the last sync has %d members, want %d (first difference: %s)", name, len(ans.ANotBAsOf), len(wantANotBAsOf), firstDiff(ans.ANotBAsOf, wantANotBAsOf))
		}
		for u, ua := range ans.Users {
			inA, inB := slices.Contains(final.Final[0], u), slices.Contains(final.Final[1], u)
			want := userAnswer{Member: inA && !inB, InA: inA, InB: inB}
			if ua != want {
				t.Errorf("%s: user %s answered %+v, want %+v", name, u, ua, want)
			}
		}
		var billable, transitions int64
		for _, r := range ans.DataPoints {
			billable += r.Billable
			transitions += r.Transitions
			if r.Transitions > r.Billable {
				t.Errorf("%s: day %s has more transitions (%d) than billable assignments (%d)", name, r.Day, r.Transitions, r.Billable)
			}
		}
		// Cohort creation lands no assignment; every accepted id of every
		// sync, re-sent ones included, is one billable data point.
		if billable != final.Billable || transitions != final.Transitions {
			t.Errorf("%s: data points billable=%d transitions=%d, want %d and %d", name, billable, transitions, final.Billable, final.Transitions)
		}
		for i, co := range plan.Cohorts {
			if ans.Counts[co.ID] != int64(len(final.Final[i])) {
				t.Errorf("%s: cohort %s member_count %d, want %d", name, co.ID, ans.Counts[co.ID], len(final.Final[i]))
			}
		}
	}
	emb, ch := got["embedded"], got["clickhouse"]
	if _, ok := got["clickhouse"]; !ok {
		// Locally without a server the ClickHouse half skips (chtest says
		// how to start one); in CI it must run.
		return
	}
	if emb.Pages != ch.Pages || emb.Pages < 2 {
		t.Errorf("pages: embedded %d, clickhouse %d; want the same, and more than one", emb.Pages, ch.Pages)
	}
	if !slices.Equal(emb.DataPoints, ch.DataPoints) {
		t.Errorf("data points by day differ: embedded %+v, clickhouse %+v", emb.DataPoints, ch.DataPoints)
	}
}

type segClient struct {
	t           *testing.T
	base, token string
}

func (c segClient) call(method, path, body string, want int, out any) {
	c.t.Helper()
	req, err := http.NewRequest(method, c.base+path, strings.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	code, resp := do(c.t, req)
	if code != want {
		c.t.Fatalf("%s %s: %d %s, want %d", method, path, code, resp, want)
	}
	if out != nil {
		if err := json.Unmarshal([]byte(resp), out); err != nil {
			c.t.Fatalf("%s %s: %v in %s", method, path, err, resp)
		}
	}
}

// evaluateAll pages through an evaluation and checks that every page agrees
// on the count and that members come in ascending order without repeats.
func (c segClient) evaluateAll(filter, asOf string, limit int) ([]string, int) {
	c.t.Helper()
	var members []string
	cursor, pages := "", 0
	var count int64 = -1
	for {
		body := fmt.Sprintf(`{"filter":%s,"limit":%d`, filter, limit)
		if cursor != "" {
			body += fmt.Sprintf(`,"cursor":%q`, cursor)
		}
		if asOf != "" {
			body += fmt.Sprintf(`,"as_of":%q`, asOf)
		}
		body += "}"
		var page struct {
			Count      int64    `json:"count"`
			Members    []string `json:"members"`
			NextCursor *string  `json:"next_cursor"`
		}
		c.call(http.MethodPost, "/segments:evaluate", body, http.StatusOK, &page)
		pages++
		if count >= 0 && page.Count != count {
			c.t.Fatalf("count changed between pages: %d then %d", count, page.Count)
		}
		count = page.Count
		if len(page.Members) > limit {
			c.t.Fatalf("page of %d members, limit %d", len(page.Members), limit)
		}
		members = append(members, page.Members...)
		if page.NextCursor == nil {
			break
		}
		cursor = *page.NextCursor
	}
	if int64(len(members)) != count {
		c.t.Fatalf("pages hold %d members, count says %d", len(members), count)
	}
	if !slices.IsSorted(members) || len(slices.Compact(slices.Clone(members))) != len(members) {
		c.t.Fatal("members are not in one stable ascending order without repeats")
	}
	return members, pages
}

func (c segClient) cohortCounts() map[string]int64 {
	c.t.Helper()
	var list struct {
		Cohorts []struct {
			CohortID    string `json:"cohort_id"`
			MemberCount int64  `json:"member_count"`
		} `json:"cohorts"`
	}
	c.call(http.MethodGet, "/cohorts", "", http.StatusOK, &list)
	out := map[string]int64{}
	for _, co := range list.Cohorts {
		out[co.CohortID] = co.MemberCount
	}
	return out
}

// waitMembers waits until every cohort holds the expected number of members:
// the stream has processed what was sent so far.
func (c segClient) waitMembers(ctx context.Context, plan demo.Plan, want demo.Expected) {
	c.t.Helper()
	for {
		counts := c.cohortCounts()
		done := true
		for i, co := range plan.Cohorts {
			done = done && counts[co.ID] == int64(len(want.Final[i]))
		}
		if done {
			return
		}
		select {
		case <-ctx.Done():
			c.t.Fatalf("cohorts never reached the expected sizes: have %v", counts)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// sampleUsers picks users in A only, in both, in B only and in neither.
func sampleUsers(a, b []string, plan demo.Plan) []string {
	var onlyA, both, onlyB, neither []string
	for _, r := range plan.Identities {
		inA, inB := slices.Contains(a, r.UserID), slices.Contains(b, r.UserID)
		switch {
		case inA && !inB:
			onlyA = append(onlyA, r.UserID)
		case inA && inB:
			both = append(both, r.UserID)
		case inB:
			onlyB = append(onlyB, r.UserID)
		default:
			neither = append(neither, r.UserID)
		}
	}
	var out []string
	for _, group := range [][]string{onlyA, both, onlyB, neither} {
		out = append(out, group[:min(5, len(group))]...)
	}
	return out
}

func setMinus(a, b []string) []string {
	var out []string
	for _, u := range a {
		if _, found := slices.BinarySearch(b, u); !found {
			out = append(out, u)
		}
	}
	return out
}

func firstDiff(got, want []string) string {
	for i := range min(len(got), len(want)) {
		if got[i] != want[i] {
			return fmt.Sprintf("at %d got %s, want %s", i, got[i], want[i])
		}
	}
	return "one is a prefix of the other"
}
