package service_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.yaml.in/yaml/v3"

	"github.com/cohortsync/cohortsync/config"
	"github.com/cohortsync/cohortsync/internal/chtest"
	"github.com/cohortsync/cohortsync/internal/testkit"
)

// hangProxy forwards TCP connections to target until Hang. From then on it
// accepts new connections and keeps the ones it has, and answers nothing on
// any of them: a server that is up but does not respond (a stuck disk, a
// saturated host), the outage where a caller without deadlines waits forever.
// Stopping the shared test server is not an option: other tests use it.
type hangProxy struct {
	ln     net.Listener
	target string
	hung   atomic.Bool

	mu    sync.Mutex
	conns []net.Conn // client sides, held open once hung
	ups   []net.Conn // server sides, closed by Hang
}

func newHangProxy(t testing.TB, target string) *hangProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &hangProxy{ln: ln, target: target}
	go p.serve()
	t.Cleanup(func() {
		_ = ln.Close()
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, c := range append(p.conns, p.ups...) {
			_ = c.Close()
		}
	})
	return p
}

func (p *hangProxy) Addr() string { return p.ln.Addr().String() }

// Hang stops every byte in both directions, for good.
func (p *hangProxy) Hang() {
	p.hung.Store(true)
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, up := range p.ups {
		_ = up.Close()
	}
}

func (p *hangProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		p.conns = append(p.conns, c)
		p.mu.Unlock()
		if p.hung.Load() {
			continue // accepted, never read
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		p.mu.Lock()
		p.ups = append(p.ups, up)
		if p.hung.Load() {
			_ = up.Close()
		}
		p.mu.Unlock()
		pipe := func(dst, src net.Conn) {
			_, _ = io.Copy(dst, src)
			if !p.hung.Load() {
				_ = c.Close()
				_ = up.Close()
			}
		}
		go pipe(up, c)
		go pipe(c, up)
	}
}

// hangKafka makes the kfake cluster hold every request until release is
// called: a broker that accepts connections and answers nothing.
func hangKafka(c *kfake.Cluster) (release func()) {
	done := make(chan struct{})
	c.Control(func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		c.SleepControl(func() { <-done })
		return nil, nil, false // then handled as usual
	})
	var once sync.Once
	return func() { once.Do(func() { close(done) }) }
}

// scrapeMetrics is one GET /metrics with a generous deadline: what the test
// asserts is that a scrape does not wait for a hung dependency (which would
// take longer than the deadline), never how fast a busy machine answers.
func scrapeMetrics(t testing.TB, addr string, within time.Duration) (int, map[string]float64, time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET /metrics: %v (after %s)", err, time.Since(start).Round(time.Millisecond))
	}
	defer resp.Body.Close()
	series := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		series[line[:i]] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("read /metrics: %v (after %s)", err, time.Since(start).Round(time.Millisecond))
	}
	return resp.StatusCode, series, time.Since(start)
}

func has(series map[string]float64, name string) bool {
	for k := range series {
		if k == name || strings.HasPrefix(k, name+"{") {
			return true
		}
	}
	return false
}

// alertExpr returns the expression of one alert of deploy/prometheus/alerts.yml.
func alertExpr(t *testing.T, name string) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "deploy", "prometheus", "alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(raw, &rules); err != nil {
		t.Fatal(err)
	}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Alert == name {
				return strings.TrimSpace(r.Expr)
			}
		}
	}
	t.Fatalf("no alert %s in deploy/prometheus/alerts.yml", name)
	return ""
}

// TestMetricsAnswerWhileClickHouseAndKafkaHang runs the ClickHouse shape on
// an idle instance, then makes ClickHouse and Kafka accept connections and
// answer nothing. Every scrape must still answer 200 without waiting for
// them, and report the outage the way the ClickHouse-down alert reads it,
// although no batch is being written that would notice it.
func TestMetricsAnswerWhileClickHouseAndKafkaHang(t *testing.T) {
	t.Parallel()
	// Far below how long the dependencies hang (until the test ends) and
	// far above what a scrape takes on a busy machine (milliseconds).
	const bound = 5 * time.Second
	downExpr := alertExpr(t, "CohortsyncClickHouseDown")
	if downExpr != "min by (instance) (cohortsync_clickhouse_up) == 0" {
		t.Fatalf("CohortsyncClickHouseDown is now %q: check that the series it reads is on /metrics during an outage, then update this test", downExpr)
	}

	chAddr, db := chtest.NewDatabase(t)
	proxy := newHangProxy(t, chAddr)
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	cfg := config.Default()
	cfg.Embedded.KafkaAddr = "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	cfg.Kafka.Brokers = cluster.ListenAddrs()
	cfg.ClickHouse.Addr, cfg.ClickHouse.Database = proxy.Addr(), db
	svc := startWith(t, cfg)

	code, series, _ := scrapeMetrics(t, svc.addr, bound)
	if code != http.StatusOK || series["cohortsync_clickhouse_up"] != 1 {
		t.Fatalf("before the outage: %d, cohortsync_clickhouse_up = %v", code, series["cohortsync_clickhouse_up"])
	}

	proxy.Hang()
	// Cleanups run last first: the broker answers again before the
	// service stops, so that it stops in its usual time.
	t.Cleanup(hangKafka(cluster))
	hungAt := time.Now()

	var slowest time.Duration
	scrapes := 0
	check := func() map[string]float64 {
		t.Helper()
		code, series, took := scrapeMetrics(t, svc.addr, bound)
		scrapes++
		slowest = max(slowest, took)
		if code != http.StatusOK {
			t.Fatalf("scrape %d during the outage answered %d after %s", scrapes, code, took.Round(time.Millisecond))
		}
		return series
	}
	// The sink has nothing to write: only its background probe can see
	// the outage. It pings every few seconds, each ping bounded by 2 s.
	deadline := hungAt.Add(60 * time.Second)
	for {
		series = check()
		if v, ok := series["cohortsync_clickhouse_up"]; ok && v == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cohortsync_clickhouse_up = %v %s into the outage; CohortsyncClickHouseDown cannot fire", series["cohortsync_clickhouse_up"], time.Since(hungAt).Round(time.Second))
		}
		time.Sleep(250 * time.Millisecond)
	}
	// Keep scraping past the first refresh of the freshness gauges and the
	// probes that now wait on the hung server.
	for time.Since(hungAt) < 20*time.Second {
		series = check()
		time.Sleep(500 * time.Millisecond)
	}
	for _, name := range []string{
		"cohortsync_clickhouse_up",                           // CohortsyncClickHouseDown
		"cohortsync_keys_sync_age_seconds",                   // CohortsyncKeyStoreStale
		"cohortsync_identities_sync_age_seconds",             // CohortsyncIdentityDirectoryStale
		"cohortsync_runner_last_batch_timestamp_seconds",     // CohortsyncStreamStalled
		"cohortsync_cohort_freshness_refresh_failures_total", // the refreshes that now fail
		"cohortsync_metrics_collector_failures_total",
		"go_goroutines",
	} {
		if !has(series, name) {
			t.Errorf("%s is not on /metrics during the outage", name)
		}
	}
	if series["cohortsync_clickhouse_up"] != 0 {
		t.Errorf("cohortsync_clickhouse_up = %v later in the outage, want 0", series["cohortsync_clickhouse_up"])
	}
	t.Logf("%d scrapes during the outage, slowest %s", scrapes, slowest.Round(time.Millisecond))
}

// BenchmarkMetricsScrape measures GET /metrics of an idle instance whose
// state of record is a ClickHouse holding COHORTSYNC_BENCH_MEMBERS
// membership rows (default 3,000,000) over 300 cohorts of one workspace,
// first with ClickHouse answering, then with it hung (hangProxy). It reports
// the median, p99 and slowest scrape besides the mean.
//
//	COHORTSYNC_TEST_CLICKHOUSE_ADDR=127.0.0.1:9000 go test -run '^$' -bench BenchmarkMetricsScrape -benchtime 200x ./service/
func BenchmarkMetricsScrape(b *testing.B) {
	members := testkit.EnvCount(b, "COHORTSYNC_BENCH_MEMBERS", 3_000_000, 1)
	chAddr, db := chtest.NewDatabase(b)
	proxy := newHangProxy(b, chAddr)
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(cluster.Close)
	cfg := config.Default()
	cfg.Embedded.KafkaAddr = "127.0.0.1:0"
	cfg.DataDir = b.TempDir()
	cfg.Kafka.Brokers = cluster.ListenAddrs()
	cfg.ClickHouse.Addr, cfg.ClickHouse.Database = proxy.Addr(), db
	svc := startWith(b, cfg)

	conn := chtest.Open(b, chAddr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	load := fmt.Sprintf("INSERT INTO `%s`.membership (workspace, partner, cohort_id, user_id, is_member, version, updated_at, record_id) "+
		"SELECT 'default', 'mixpanel', concat('c', toString(number %% 300)), concat('u', toString(number)), 1, 1, now(), 'bench' "+
		"FROM system.numbers LIMIT %d", db, members)
	if err := conn.Exec(ctx, load); err != nil {
		b.Fatalf("load %d membership rows: %v", members, err)
	}
	// The freshness gauges of the 300 cohorts appear within a refresh
	// round: the scrape then carries them, as it does in production.
	deadline := time.Now().Add(3 * time.Minute)
	for {
		_, series, _ := scrapeMetrics(b, svc.addr, time.Minute)
		n := 0
		for k := range series {
			if strings.HasPrefix(k, "cohortsync_cohort_stale{") {
				n++
			}
		}
		if n == 300 {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d of 300 cohorts on /metrics after 3 minutes", n)
		}
		time.Sleep(time.Second)
	}

	run := func(b *testing.B) {
		var took []time.Duration
		for b.Loop() {
			code, _, d := scrapeMetrics(b, svc.addr, time.Minute)
			if code != http.StatusOK {
				b.Fatalf("scrape answered %d", code)
			}
			took = append(took, d)
		}
		slices.Sort(took)
		ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
		b.ReportMetric(ms(took[len(took)/2]), "p50-ms")
		b.ReportMetric(ms(took[len(took)*99/100]), "p99-ms")
		b.ReportMetric(ms(took[len(took)-1]), "max-ms")
	}
	b.Run("clickhouse=up", run)
	proxy.Hang()
	b.Cleanup(hangKafka(cluster))
	// Let the background refreshes and probes run into the hang first.
	time.Sleep(20 * time.Second)
	b.Run("clickhouse=hung", run)
}
