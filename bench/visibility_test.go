package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync/config"
	"github.com/cohortsync/cohortsync/internal/chtest"
	"github.com/cohortsync/cohortsync/internal/testkit"
	"github.com/cohortsync/cohortsync/service"
)

// BenchmarkVisibility measures the time from a partner request's 201 to the
// moment POST segments:evaluate counts its members: landing, the consumer
// group's batch wait, identity resolution, the sink writes and the engine's
// answer. The external contract asks for 5 s in a quiet system. The
// ClickHouse case runs when COHORTSYNC_TEST_CLICKHOUSE_ADDR names a server.
//
//	go test -run '^$' -bench Visibility -benchtime 20x ./bench
func BenchmarkVisibility(b *testing.B) {
	b.Run("state=embedded", func(b *testing.B) { visibility(b, config.Default()) })
	b.Run("state=clickhouse", func(b *testing.B) {
		if os.Getenv("COHORTSYNC_TEST_CLICKHOUSE_ADDR") == "" {
			b.Skip("set COHORTSYNC_TEST_CLICKHOUSE_ADDR (make clickhouse-up) to measure on ClickHouse")
		}
		cfg := config.Default()
		cfg.ClickHouse.Addr, cfg.ClickHouse.Database = chtest.NewDatabase(b)
		visibility(b, cfg)
	})
}

func visibility(b *testing.B, cfg config.Config) {
	const admin, users = "cst_visibility-bench-admin", 1000
	cfg.DataDir, cfg.HTTPAddr, cfg.AdminToken = b.TempDir(), "127.0.0.1:0", admin
	cfg.Embedded.KafkaAddr = "127.0.0.1:0"
	out := &testkit.SyncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready, done := make(chan string, 1), make(chan error, 1)
	go func() {
		done <- service.Run(ctx, cfg, slog.New(slog.DiscardHandler), service.Options{Out: out, Ready: func(a string) { ready <- a }})
	}()
	var base string
	select {
	case a := <-ready:
		base = "http://" + a
	case err := <-done:
		b.Fatalf("service: %v", err)
	}
	m := curlBody.FindStringSubmatch(out.String())
	if m == nil {
		b.Fatal("no curl line printed")
	}
	var creds map[string]any
	if err := json.Unmarshal([]byte(m[1]), &creds); err != nil {
		b.Fatal(err)
	}
	call := func(method, url, token, contentType, body string) (int, string) {
		req, err := http.NewRequest(method, url, strings.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		req.Header.Set("Content-Type", contentType)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(raw)
	}
	var idents bytes.Buffer
	ids := make([]string, users)
	for i := range ids {
		ids[i] = fmt.Sprintf("ext-%05d", i)
		fmt.Fprintf(&idents, `{"user_id":"u-%05d","external_id":%q}`+"\n", i, ids[i])
	}
	if code, body := call(http.MethodPost, base+"/v1/workspaces/default/identities", admin, "application/x-ndjson", idents.String()); code != http.StatusOK {
		b.Fatalf("identities: %d %s", code, body)
	}

	// visible pushes one cohort of every user and waits until it counts them.
	visible := func(cohort string) time.Duration {
		body, _ := json.Marshal(map[string]any{
			"partner_api_key": creds["partner_api_key"], "client_secret": creds["client_secret"],
			"cohort_id": cohort, "cohort_changes": []map[string]any{{"user_ids": ids}},
		})
		if code, resp := call(http.MethodPost, base+"/partners/mixpanel/cohorts/users", "", "application/json", string(body)); code != http.StatusCreated {
			b.Fatalf("push: %d %s", code, resp)
		}
		start := time.Now()
		eval := fmt.Sprintf(`{"filter":{"cohort":{"partner":"mixpanel","id":%q}},"limit":1}`, cohort)
		for {
			code, resp := call(http.MethodPost, base+"/v1/workspaces/default/segments:evaluate", admin, "application/json", eval)
			var page struct{ Count int }
			if code == http.StatusOK && json.Unmarshal([]byte(resp), &page) == nil && page.Count == users {
				return time.Since(start)
			}
			if time.Since(start) > time.Minute {
				b.Fatalf("cohort %s never became visible: %d %s", cohort, code, resp)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	// The first push also waits for the identity directory to catch up.
	visible("warm-up")
	var lat []time.Duration
	b.ResetTimer()
	for i := range b.N {
		lat = append(lat, visible(fmt.Sprintf("vis-%d", i)))
		// A quiet system: the next push comes after the stream went idle.
		time.Sleep(50 * time.Millisecond)
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Milliseconds()), "p50-ms")
	b.ReportMetric(float64(lat[len(lat)-1].Milliseconds()), "max-ms")
	cancel()
	<-done
}
