package deploy

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync/config"
	"github.com/cohortsync/cohortsync/internal/chtest"
	"github.com/cohortsync/cohortsync/kafka"
	"github.com/cohortsync/cohortsync/kafka/kafkatest"
	"github.com/cohortsync/cohortsync/service"
)

// pendingMetrics are queried by the dashboards or alerts but not exposed
// yet: the cohort freshness gauges being added with GET
// /v1/workspaces/{ws}/cohorts. The test fails once one appears, so that it
// is removed from here; the lead empties the list.
var pendingMetrics = []string{}

// scrapeSeries are made by Prometheus itself, not by the target.
var scrapeSeries = []string{"up"}

var (
	// PromQL's words that look like metric names but are not.
	promqlKeywords = []string{"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset", "atan2", "inf", "nan"}
	identRE        = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)
	stringRE       = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'`)
	groupingRE     = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
)

// metricNames returns the metric names a PromQL expression selects: the
// identifiers left after removing strings, label matchers, range and
// subquery brackets, grouping label lists, function calls, keywords and numbers.
func metricNames(expr string) []string {
	s := stringRE.ReplaceAllString(expr, `""`)
	s = stripBetween(s, '{', '}')
	s = stripBetween(s, '[', ']')
	s = groupingRE.ReplaceAllString(s, " ")
	var out []string
	for _, loc := range identRE.FindAllStringIndex(s, -1) {
		name := s[loc[0]:loc[1]]
		rest := strings.TrimLeft(s[loc[1]:], " \t\n")
		if strings.HasPrefix(rest, "(") || slices.Contains(promqlKeywords, strings.ToLower(name)) {
			continue // a function call or an operator
		}
		if loc[0] > 0 && (s[loc[0]-1] >= '0' && s[loc[0]-1] <= '9' || s[loc[0]-1] == '.') {
			continue // the unit of a duration or the exponent of a number
		}
		if !slices.Contains(out, name) {
			out = append(out, name)
		}
	}
	return out
}

func stripBetween(s string, open, close byte) string {
	var b strings.Builder
	depth := 0
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == open:
			depth++
		case s[i] == close && depth > 0:
			depth--
		case depth == 0:
			b.WriteByte(s[i])
		}
	}
	return b.String()
}

func TestMetricNames(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		expr string
		want []string
	}{
		{`sum by (endpoint, code) (rate(cohortsync_partnerapi_requests_total{code=~"5.."}[$__rate_interval]))`, []string{"cohortsync_partnerapi_requests_total"}},
		{`histogram_quantile(0.99, sum by (le) (rate(a_bucket[5m])))`, []string{"a_bucket"}},
		{`sum(x) > 100000 and deriv(sum(x)[15m:1m]) > 0`, []string{"x"}},
		{`time() - max(y) > 1e3`, []string{"y"}},
		{`a / on (instance) group_left (job) b unless c offset 5m`, []string{"a", "b", "c"}},
		{`up{job="cohortsync"} == 0`, []string{"up"}},
	} {
		if got := metricNames(tc.expr); !slices.Equal(got, tc.want) {
			t.Errorf("metricNames(%q) = %v, want %v", tc.expr, got, tc.want)
		}
	}
}

// queriedMetrics returns every metric name the dashboards and the alert
// rules query, with where each is used.
func queriedMetrics(t *testing.T) map[string][]string {
	t.Helper()
	used := map[string][]string{}
	add := func(where, expr string) {
		names := metricNames(expr)
		if len(names) == 0 {
			t.Errorf("%s: no metric in %q", where, expr)
		}
		for _, n := range names {
			used[n] = append(used[n], where)
		}
	}
	files, err := filepath.Glob(filepath.Join("grafana", "dashboards", "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no dashboards: %v", err)
	}
	var ds struct {
		Datasources []struct {
			UID string `yaml:"uid"`
		} `yaml:"datasources"`
	}
	readYAML(t, filepath.Join("grafana", "provisioning", "datasources", "prometheus.yml"), &ds)
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d struct {
			UID    string `json:"uid"`
			Panels []struct {
				ID         int    `json:"id"`
				Type       string `json:"type"`
				Title      string `json:"title"`
				Datasource *struct {
					UID string `json:"uid"`
				} `json:"datasource"`
				GridPos struct{ X, W int } `json:"gridPos"`
				Targets []struct {
					Expr string `json:"expr"`
				} `json:"targets"`
			} `json:"panels"`
		}
		if err := json.Unmarshal(raw, &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if d.UID == "" {
			t.Errorf("%s: no uid", f)
		}
		ids := map[int]bool{}
		for _, p := range d.Panels {
			where := fmt.Sprintf("%s panel %q", filepath.Base(f), p.Title)
			if ids[p.ID] {
				t.Errorf("%s: duplicate id %d", where, p.ID)
			}
			ids[p.ID] = true
			if p.GridPos.X+p.GridPos.W > 24 {
				t.Errorf("%s: wider than the grid", where)
			}
			if p.Type == "row" {
				continue
			}
			if p.Datasource == nil || len(ds.Datasources) == 0 || p.Datasource.UID != ds.Datasources[0].UID {
				t.Errorf("%s: datasource is not the provisioned one", where)
			}
			if len(p.Targets) == 0 {
				t.Errorf("%s: no query", where)
			}
			for _, tg := range p.Targets {
				add(where, tg.Expr)
			}
		}
	}
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	readYAML(t, filepath.Join("prometheus", "alerts.yml"), &rules)
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			add("alert "+r.Alert, r.Expr)
		}
	}
	return used
}

// exposedMetrics scrapes /metrics and returns the series names it shows
// (histograms as their _bucket, _sum and _count series) and the metric
// families (from the TYPE lines).
func exposedMetrics(t *testing.T, addr string) (series, families []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if f, ok := strings.CutPrefix(line, "# TYPE "); ok {
			families = append(families, strings.Fields(f)[0])
			continue
		}
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name := line[:strings.IndexAny(line, "{ ")]
		if !slices.Contains(series, name) {
			series = append(series, name)
		}
	}
	return series, families
}

// instance is one running service.
type instance struct {
	addr string
	stop func()
}

func start(t *testing.T, cfg config.Config) instance {
	t.Helper()
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.Kafka.Partitions = 3
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- service.Run(ctx, cfg, slog.New(slog.DiscardHandler), service.Options{Ready: func(a string) { ready <- a }})
	}()
	stop := func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("service did not stop")
		}
	}
	select {
	case addr := <-ready:
		t.Cleanup(stop)
		return instance{addr: addr, stop: stop}
	case err := <-done:
		cancel()
		t.Fatalf("service stopped before it was ready: %v", err)
	case <-time.After(90 * time.Second):
		cancel()
		t.Fatal("service not ready in time")
	}
	return instance{}
}

func post(t *testing.T, url, contentType, token, body string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Content-Type", contentType)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// traffic makes the series appear that exist only after something
// happened: a landed request (partner API, consumer lag, sink writes), an
// id that matches nobody (a drop by reason) and an undecodable message (the
// dead letter). It returns once the stream has caught up and the cohort
// freshness gauges have been refreshed.
func traffic(t *testing.T, in instance, brokers []string, admin string) {
	t.Helper()
	base := "http://" + in.addr
	code, body := post(t, base+"/v1/workspaces/default/keys", "application/json", admin, `{"partner":"mixpanel","label":"metrics test"}`)
	if code != http.StatusCreated {
		t.Fatalf("create key: %d %s", code, body)
	}
	var key struct {
		ClientSecret string `json:"client_secret"`
	}
	if err := json.Unmarshal([]byte(body), &key); err != nil {
		t.Fatal(err)
	}
	if code, body := post(t, base+"/v1/workspaces/default/identities", "application/x-ndjson", admin, `{"user_id":"u1","external_id":"e1"}`+"\n"); code != http.StatusOK {
		t.Fatalf("identities: %d %s", code, body)
	}
	changes := fmt.Sprintf(`{"partner_api_key":"cpk_metrics-test-partner-key","client_secret":%q,"cohort_id":"c1","cohort_changes":[{"user_ids":["e1","nobody"]}]}`, key.ClientSecret)
	if code, body := post(t, base+"/partners/mixpanel/cohorts/users", "application/json", "", changes); code != http.StatusCreated {
		t.Fatalf("partner api: %d %s", code, body)
	}
	kcfg := kafka.DefaultConfig()
	kcfg.Brokers = brokers
	client, err := kafka.NewClient(kcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	lander := client.NewLander(kcfg.Topics.Exports)
	defer lander.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := lander.Land(ctx, []byte("default/mixpanel/c1"), []byte("not an envelope")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		series, _ := exposedMetrics(t, in.addr)
		if slices.Contains(series, "cohortsync_deadletter_records_total") && slices.Contains(series, "cohortsync_stage_dropped_total") &&
			slices.Contains(series, "cohortsync_consumer_lag") && slices.Contains(series, "cohortsync_clickhouse_rows_written_total") &&
			// The freshness gauges follow within one refresh round (15 s).
			slices.Contains(series, "cohortsync_cohort_stale") {
			return
		}
		time.Sleep(300 * time.Millisecond)
	}
	t.Fatal("the stream did not process the test traffic within 60 s")
}

// TestDashboardMetricsExist runs the compose shape (external Kafka,
// ClickHouse), sends traffic, and checks that every metric a dashboard or
// an alert queries is on /metrics, and that docs/OPERATIONS.md documents
// every metric family the service exposes.
func TestDashboardMetricsExist(t *testing.T) {
	t.Parallel()
	used := queriedMetrics(t)
	chAddr, database := chtest.NewDatabase(t)
	brokers := kafkatest.NewCluster(t)
	const admin = "cst_metrics-test-admin-token"
	cfg := config.Default()
	cfg.Embedded.KafkaAddr = "127.0.0.1:0" // tests run in parallel: any free port
	cfg.DataDir = t.TempDir()
	cfg.Kafka.Brokers = brokers
	cfg.ClickHouse.Addr = chAddr
	cfg.ClickHouse.Database = database
	cfg.AdminToken = admin
	cfg.Partners["mixpanel"] = config.Partner{APIKey: "cpk_metrics-test-partner-key", Enabled: true}
	in := start(t, cfg)
	traffic(t, in, brokers, admin)
	series, families := exposedMetrics(t, in.addr)

	for _, name := range slices.Sorted(maps.Keys(used)) {
		switch {
		case slices.Contains(scrapeSeries, name):
		case slices.Contains(pendingMetrics, name):
			if slices.Contains(series, name) {
				t.Errorf("%s is exposed now: delete it from pendingMetrics in deploy/metrics_test.go", name)
			}
		case !slices.Contains(series, name):
			t.Errorf("%s is not on /metrics (used by %s)", name, strings.Join(used[name], "; "))
		}
	}

	// The embedded shape exposes the state store's metrics instead of ClickHouse's.
	embedded := config.Default()
	embedded.Embedded.KafkaAddr = "127.0.0.1:0" // tests run in parallel: any free port
	embedded.DataDir = t.TempDir()
	_, embeddedFamilies := exposedMetrics(t, start(t, embedded).addr)

	ops, err := os.ReadFile(filepath.Join("..", "docs", "OPERATIONS.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range append(families, embeddedFamilies...) {
		if !strings.HasPrefix(f, "cohortsync_") {
			continue // Go runtime and process metrics, documented as a group
		}
		if !strings.Contains(string(ops), "`"+f+"`") {
			t.Errorf("docs/OPERATIONS.md does not document %s", f)
		}
	}
}
