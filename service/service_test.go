package service_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync/config"
	"github.com/cohortsync/cohortsync/internal/testkit"
	"github.com/cohortsync/cohortsync/kafka"
	"github.com/cohortsync/cohortsync/kafka/broker"
	"github.com/cohortsync/cohortsync/kafka/kafkatest"
	"github.com/cohortsync/cohortsync/schemas"
	"github.com/cohortsync/cohortsync/service"
)

type running struct {
	addr string
	out  *testkit.SyncBuffer
	logs *testkit.SyncBuffer
	stop func() error
}

func startService(t *testing.T, dataDir string) running {
	t.Helper()
	cfg := config.Default()
	cfg.Embedded.KafkaAddr = "127.0.0.1:0" // tests run in parallel: any free port
	cfg.DataDir = dataDir
	return startWith(t, cfg)
}

func startWith(t testing.TB, cfg config.Config) running {
	t.Helper()
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.Kafka.Partitions = 3
	out, logs := &testkit.SyncBuffer{}, &testkit.SyncBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ready := make(chan string, 1)
	done, stop := launch(t, cfg, log, service.Options{Out: out, Ready: func(a string) { ready <- a }})
	select {
	case addr := <-ready:
		return running{addr: addr, out: out, logs: logs, stop: stop}
	case err := <-done:
		t.Fatalf("service stopped before it was ready: %v\n%s", err, logs.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("service not ready in time\n%s", logs.String())
	}
	return running{}
}

// launch runs the service in the background until stop or the end of the
// test; done receives what Run returned, unless stop took it.
func launch(t testing.TB, cfg config.Config, log *slog.Logger, opts service.Options) (done <-chan error, stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	result := make(chan error, 1)
	go func() { result <- service.Run(ctx, cfg, log, opts) }()
	var once sync.Once
	var stopErr error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case stopErr = <-result:
			case <-time.After(30 * time.Second):
				stopErr = fmt.Errorf("service did not stop")
			}
		})
		return stopErr
	}
	t.Cleanup(func() { _ = stop() })
	return result, stop
}

var (
	curlLine  = regexp.MustCompile(`curl .* -X POST (http://\S+) .* -d '([^']+)'`)
	adminLine = regexp.MustCompile(`admin token \(Authorization: Bearer \.\.\.\):\s+(\S+)`)
)

func post(t *testing.T, url, contentType, token, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", contentType)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return do(t, req)
}

func do(t *testing.T, req *http.Request) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestFirstStartCurlLandsAndRevocationRefuses walks the README's first steps:
// the printed curl line answers 201, its record is on the topic, and a revoked
// key is refused. The landed record must survive a restart of the broker.
func TestFirstStartCurlLandsAndRevocationRefuses(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	svc := startService(t, dir)

	m := curlLine.FindStringSubmatch(svc.out.String())
	if m == nil {
		t.Fatalf("no curl line in first-start output:\n%s", svc.out.String())
	}
	url, body := m[1], m[2]
	if !strings.Contains(url, svc.addr) {
		t.Fatalf("curl line targets %s, service listens on %s", url, svc.addr)
	}
	code, resp := post(t, url, "application/json", "", body)
	if code != http.StatusCreated {
		t.Fatalf("printed curl line: %d %s", code, resp)
	}
	var created struct {
		RecordID string `json:"record_id"`
	}
	if err := json.Unmarshal([]byte(resp), &created); err != nil || created.RecordID == "" {
		t.Fatalf("201 body %q: %v", resp, err)
	}

	var req struct {
		ClientSecret string `json:"client_secret"`
	}
	if err := json.Unmarshal([]byte(body), &req); err != nil {
		t.Fatal(err)
	}
	keyID := strings.Split(req.ClientSecret, "_")[1]
	admin := adminLine.FindStringSubmatch(svc.out.String())
	if admin == nil {
		t.Fatalf("no admin token printed:\n%s", svc.out.String())
	}
	del, _ := http.NewRequest(http.MethodDelete, "http://"+svc.addr+"/v1/workspaces/default/keys/"+keyID, nil)
	del.Header.Set("Authorization", "Bearer "+admin[1])
	if code, resp := do(t, del); code != http.StatusNoContent {
		t.Fatalf("revoke: %d %s", code, resp)
	}
	code, resp = post(t, url, "application/json", "", body)
	if code != http.StatusUnauthorized || resp != "Invalid client secret" {
		t.Fatalf("revoked key: %d %q, want 401 Invalid client secret", code, resp)
	}

	for _, secret := range []string{req.ClientSecret, admin[1]} {
		if strings.Contains(svc.logs.String(), secret) {
			t.Fatal("a secret appeared in the logs")
		}
	}
	if err := svc.stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}

	// Restart only the broker on the same data directory and read the topic back.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := broker.Start(ctx, broker.Options{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	kcfg := kafka.DefaultConfig()
	kcfg.Brokers = b.Addrs()
	client, err := kafka.NewClient(kcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	msgs, err := client.ReadTopic(ctx, kcfg.Topics.Exports)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 1 {
		t.Fatalf("exports holds %d records, want exactly the one landed", len(msgs))
	}
	env, err := schemas.Decode(msgs[0].Value)
	if err != nil {
		t.Fatalf("decode landed record: %v", err)
	}
	if env.RecordID != created.RecordID || env.Workspace != "default" || env.Partner != "mixpanel" || env.KeyID != keyID {
		t.Fatalf("landed envelope %+v does not match the request (record %s, key %s)", env, created.RecordID, keyID)
	}
	if string(msgs[0].Key) != "default/mixpanel/first-cohort" {
		t.Fatalf("record key %q", msgs[0].Key)
	}
	if strings.Contains(string(msgs[0].Value), req.ClientSecret) {
		t.Fatal("the client secret was landed in Kafka")
	}
}

// TestRestartKeepsCredentials: a second start prints nothing secret and the
// admin token of the first start still works.
func TestRestartKeepsCredentials(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	first := startService(t, dir)
	admin := adminLine.FindStringSubmatch(first.out.String())
	if admin == nil {
		t.Fatalf("no admin token printed:\n%s", first.out.String())
	}
	if err := first.stop(); err != nil {
		t.Fatal(err)
	}

	second := startService(t, dir)
	if out := second.out.String(); strings.Contains(out, "csk_") || strings.Contains(out, "cst_") {
		t.Fatalf("restart printed secrets again:\n%s", out)
	}
	code, resp := post(t, "http://"+second.addr+"/v1/workspaces/default/keys", "application/json", admin[1], `{"partner":"heap","label":"after restart"}`)
	if code != http.StatusCreated {
		t.Fatalf("admin token of the first start after restart: %d %s", code, resp)
	}
	get, _ := http.NewRequest(http.MethodGet, "http://"+second.addr+"/v1/workspaces/default/keys", nil)
	get.Header.Set("Authorization", "Bearer "+admin[1])
	code, resp = do(t, get)
	if code != http.StatusOK || strings.Count(resp, `"key_id"`) != 2 {
		t.Fatalf("list after restart: %d %s (want both keys)", code, resp)
	}
	for _, path := range []string{"/healthz", "/readyz", "/health/pipeline", "/metrics"} {
		req, _ := http.NewRequest(http.MethodGet, "http://"+second.addr+path, nil)
		if code, resp := do(t, req); code != http.StatusOK {
			t.Fatalf("%s: %d %s", path, code, resp)
		}
	}
}

// TestRevocationReachesEveryInstance runs two instances on one (external)
// Kafka: a key created on one works on the other, and once revoked on the
// other it is refused by the first within the 5 s the contract allows.
func TestRevocationReachesEveryInstance(t *testing.T) {
	t.Parallel()
	brokers := kafkatest.NewCluster(t)
	const adminToken = "cst_shared-admin-token-for-both"
	const partnerKey = "cpk_shared-mixpanel-partner-key"
	instance := func() running {
		cfg := config.Default()
		cfg.Embedded.KafkaAddr = "127.0.0.1:0" // tests run in parallel: any free port
		cfg.DataDir = t.TempDir()
		cfg.Kafka.Brokers = brokers
		cfg.AdminToken = adminToken
		p := cfg.Partners["mixpanel"]
		p.APIKey = partnerKey
		cfg.Partners["mixpanel"] = p
		return startWith(t, cfg)
	}
	a, b := instance(), instance()
	// Only the first instance on a fresh Kafka makes the first data import key.
	if !strings.Contains(a.out.String(), "client_secret") || strings.Contains(b.out.String(), "client_secret") {
		t.Fatalf("first-start keys: instance A printed %q, instance B printed %q; want a key from A only", a.out.String(), b.out.String())
	}

	code, resp := post(t, "http://"+a.addr+"/v1/workspaces/acme/keys", "application/json", adminToken, `{"partner":"mixpanel","label":"rotation"}`)
	if code != http.StatusCreated {
		t.Fatalf("create on A: %d %s", code, resp)
	}
	var key struct {
		KeyID        string `json:"key_id"`
		ClientSecret string `json:"client_secret"`
	}
	if err := json.Unmarshal([]byte(resp), &key); err != nil {
		t.Fatal(err)
	}
	body := fmt.Sprintf(`{"partner_api_key":%q,"client_secret":%q,"cohort_id":"c1","cohort_changes":[{"user_ids":["u1"]}]}`, partnerKey, key.ClientSecret)
	pushTo := func(r running) (int, string) {
		return post(t, "http://"+r.addr+"/partners/mixpanel/cohorts/users", "application/json", "", body)
	}
	waitFor := func(r running, want int) time.Duration {
		start := time.Now()
		for {
			code, resp := pushTo(r)
			if code == want {
				return time.Since(start)
			}
			if time.Since(start) > 5*time.Second {
				t.Fatalf("after %s instance %s still answers %d %q, want %d", time.Since(start), r.addr, code, resp, want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitFor(b, http.StatusCreated)

	del, _ := http.NewRequest(http.MethodDelete, "http://"+b.addr+"/v1/workspaces/acme/keys/"+key.KeyID, nil)
	del.Header.Set("Authorization", "Bearer "+adminToken)
	if code, resp := do(t, del); code != http.StatusNoContent {
		t.Fatalf("revoke on B: %d %s", code, resp)
	}
	took := waitFor(a, http.StatusUnauthorized)
	t.Logf("instance A refused the revoked key %s after the revocation on B", took)
	if _, resp := pushTo(a); resp != "Invalid client secret" {
		t.Fatalf("revoked key body %q", resp)
	}
}

// TestFailedFirstStartShowsCredentials: a first start that fails after the
// credentials exist (ClickHouse unreachable) has shown the admin token and
// the first data import key before failing, and a later start that fails
// the same way does not create or show others; the credentials shown work
// once the store is back.
func TestFailedFirstStartShowsCredentials(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := config.Default()
	cfg.Embedded.KafkaAddr = "127.0.0.1:0" // tests run in parallel: any free port
	cfg.DataDir = dir
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.Kafka.Partitions = 3
	cfg.ClickHouse.Addr = "127.0.0.1:1" // nothing listens there
	cfg.ClickHouse.DialTimeout = 200 * time.Millisecond
	cfg.ClickHouse.MigrateOnStart = true
	failing := func() string {
		t.Helper()
		out := &testkit.SyncBuffer{}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		err := service.Run(ctx, cfg, slog.New(slog.DiscardHandler), service.Options{Out: out})
		if err == nil {
			t.Fatal("Run with ClickHouse unreachable returned nil")
		}
		return out.String()
	}
	first := failing()
	admin := adminLine.FindStringSubmatch(first)
	key := regexp.MustCompile(`data import key \(client_secret\) of workspace "default", partner mixpanel:\s+(\S+)`).FindStringSubmatch(first)
	if admin == nil || key == nil || !strings.Contains(first, "partner_api_key for mixpanel:") {
		t.Fatalf("the failed first start did not show the credentials:\n%s", first)
	}
	if again := failing(); strings.Contains(again, admin[1]) || strings.Contains(again, key[1]) || strings.Contains(again, "data import key") {
		t.Fatalf("a second failed start showed credentials again:\n%s", again)
	}

	// Back on the embedded store: the admin token shown works, and the
	// key shown authenticates a push.
	cfg.ClickHouse.Addr = ""
	svc := startWith(t, cfg)
	if out := svc.out.String(); strings.Contains(out, "admin token") || strings.Contains(out, "data import key") || strings.Contains(out, "Try it") {
		t.Errorf("the start after the failed ones showed credentials again:\n%s", out)
	}
	req, _ := http.NewRequest(http.MethodGet, "http://"+svc.addr+"/v1/workspaces/default/keys", nil)
	req.Header.Set("Authorization", "Bearer "+admin[1])
	code, body := do(t, req)
	if code != 200 || !strings.Contains(body, "created at first start") {
		t.Fatalf("admin token shown by the failed start: %d %s", code, body)
	}
	partnerKey := regexp.MustCompile(`partner_api_key for mixpanel:\s+(\S+)`).FindStringSubmatch(first)[1]
	code, body = post(t, "http://"+svc.addr+"/partners/mixpanel/cohorts/users", "application/json", "",
		fmt.Sprintf(`{"partner_api_key":%q,"client_secret":%q,"cohort_id":"c","cohort_changes":[{"user_ids":["u1"]}]}`, partnerKey, key[1]))
	if code != 201 {
		t.Fatalf("push with the key shown by the failed start: %d %s", code, body)
	}
}

var (
	identitiesLine = regexp.MustCompile(`printf '%s\\n' ('[^']+'(?: '[^']+')*) \| curl .* -X POST (http://\S+/identities) -H "Authorization: Bearer (\S+)"`)
	cohortsLine    = regexp.MustCompile(`curl -sS (http://\S+/cohorts) -H "Authorization: Bearer (\S+)"`)
)

// TestBannerStepsMakeTheCohortAppear follows the first start's "Try it"
// lines as a newcomer would: the identities, then the push, then the
// cohort listing, which must show the cohort with both users, and the
// banner names the embedded broker's address.
func TestBannerStepsMakeTheCohortAppear(t *testing.T) {
	t.Parallel()
	svc := startService(t, t.TempDir())
	out := svc.out.String()
	if !regexp.MustCompile(`Kafka\s+127\.0\.0\.1:\d+ \(embedded broker`).MatchString(out) {
		t.Errorf("the banner does not name the embedded broker:\n%s", out)
	}
	ids, push, list := identitiesLine.FindStringSubmatch(out), curlLine.FindStringSubmatch(out), cohortsLine.FindStringSubmatch(out)
	if ids == nil || push == nil || list == nil {
		t.Fatalf("the banner lacks a step (identities %v, push %v, cohorts %v):\n%s", ids != nil, push != nil, list != nil, out)
	}
	var lines []string
	for _, quoted := range regexp.MustCompile(`'([^']+)'`).FindAllStringSubmatch(ids[1], -1) {
		lines = append(lines, quoted[1])
	}
	if code, resp := post(t, ids[2], "application/x-ndjson", ids[3], strings.Join(lines, "\n")+"\n"); code != http.StatusOK {
		t.Fatalf("identities step: %d %s", code, resp)
	}
	if code, resp := post(t, push[1], "application/json", "", push[2]); code != http.StatusCreated {
		t.Fatalf("push step: %d %s", code, resp)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		req, _ := http.NewRequest(http.MethodGet, list[1], nil)
		req.Header.Set("Authorization", "Bearer "+list[2])
		code, resp := do(t, req)
		var got struct {
			Cohorts []struct {
				CohortID    string `json:"cohort_id"`
				MemberCount int64  `json:"member_count"`
			} `json:"cohorts"`
		}
		if code == http.StatusOK && json.Unmarshal([]byte(resp), &got) == nil && len(got.Cohorts) == 1 && got.Cohorts[0].CohortID == "first-cohort" && got.Cohorts[0].MemberCount == 2 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("cohorts step: %d %s, want first-cohort with 2 members", code, resp)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestPartnerRequestsAreTakenBeforeTheStreamRuns: the partner API and
// /readyz answer while the stream is still starting (here held at the
// Ingesting hook, as a long identity catch-up holds it), the APIs over the
// stream's state answer 503 with Retry-After meanwhile, and once the
// stream runs the change taken before is applied.
func TestPartnerRequestsAreTakenBeforeTheStreamRuns(t *testing.T) {
	t.Parallel()
	const admin = "cst_ingest-before-stream-admin"
	cfg := config.Default()
	cfg.Embedded.KafkaAddr = "127.0.0.1:0" // tests run in parallel: any free port
	cfg.DataDir, cfg.HTTPAddr, cfg.AdminToken = t.TempDir(), "127.0.0.1:0", admin
	cfg.Kafka.Partitions = 2
	out := &testkit.SyncBuffer{}
	ingesting, release, ready := make(chan string, 1), make(chan struct{}), make(chan string, 1)
	done, _ := launch(t, cfg, slog.New(slog.DiscardHandler), service.Options{
		Out:       out,
		Ingesting: func(a string) { ingesting <- a; <-release },
		Ready:     func(a string) { ready <- a },
	})
	var releaseOnce sync.Once
	letStreamStart := func() { releaseOnce.Do(func() { close(release) }) }
	// A test that fails while the stream is held must still let Run stop.
	t.Cleanup(letStreamStart)
	var addr string
	select {
	case addr = <-ingesting:
	case err := <-done:
		t.Fatalf("service: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("the partner API never listened")
	}
	base := "http://" + addr
	get := func(path string) (int, string, http.Header) {
		req, _ := http.NewRequest(http.MethodGet, base+path, nil)
		req.Header.Set("Authorization", "Bearer "+admin)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, err := http.DefaultClient.Do(req.WithContext(ctx))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp.Header
	}
	if code, body, _ := get("/readyz"); code != http.StatusOK {
		t.Errorf("/readyz while the stream starts: %d %s, want 200: partner requests are taken", code, body)
	}
	if code, body, _ := get("/health/pipeline"); code != http.StatusServiceUnavailable || !strings.Contains(body, "stream") {
		t.Errorf("/health/pipeline while the stream starts: %d %s, want 503 naming the stream", code, body)
	}
	if code, body, h := get("/v1/workspaces/default/cohorts"); code != http.StatusServiceUnavailable || h.Get("Retry-After") == "" || !strings.Contains(body, "starting") {
		t.Errorf("cohorts while the stream starts: %d %s (Retry-After %q), want 503 starting", code, body, h.Get("Retry-After"))
	}
	if code, resp := post(t, base+"/v1/workspaces/default/identities", "application/x-ndjson", admin, "{\"user_id\":\"u1\",\"external_id\":\"e1\"}\n"); code != http.StatusOK {
		t.Fatalf("identities while the stream starts: %d %s", code, resp)
	}
	m := curlLine.FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("no curl line:\n%s", out.String())
	}
	var first map[string]any
	if err := json.Unmarshal([]byte(m[2]), &first); err != nil {
		t.Fatal(err)
	}
	body := fmt.Sprintf(`{"partner_api_key":%q,"client_secret":%q,"cohort_id":"early","cohort_changes":[{"user_ids":["e1"]}]}`, first["partner_api_key"], first["client_secret"])
	if code, resp := post(t, base+"/partners/mixpanel/cohorts/users", "application/json", "", body); code != http.StatusCreated {
		t.Fatalf("partner push while the stream starts: %d %s", code, resp)
	}

	letStreamStart()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("service: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("the stream never ran")
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, resp, _ := get("/v1/workspaces/default/cohorts")
		if code == http.StatusOK && strings.Contains(resp, `"cohort_id":"early"`) && strings.Contains(resp, `"member_count":1`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the stream started, cohorts: %d %s, want the early cohort with its member", code, resp)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if code, body, _ := get("/health/pipeline"); code != http.StatusOK {
		t.Errorf("/health/pipeline once the stream runs: %d %s", code, body)
	}
}
