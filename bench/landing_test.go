// Package bench holds end-to-end benchmarks that need the whole service; unit
// benchmarks live beside their packages.
package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync/config"
	"github.com/cohortsync/cohortsync/internal/testkit"
	"github.com/cohortsync/cohortsync/service"
)

var curlBody = regexp.MustCompile(`-d '([^']+)'`)

// BenchmarkLanding measures the partner API end to end on the embedded default:
// HTTP request → validation → envelope → kafka-go acks=all → kfake fsync → 201.
func BenchmarkLanding(b *testing.B) {
	cfg := config.Default()
	cfg.Embedded.KafkaAddr = "127.0.0.1:0" // tests run in parallel: any free port
	cfg.DataDir = b.TempDir()
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.Ingest.RateLimitPerHour = 1 << 40
	cfg.Ingest.RateBurst = 1 << 30
	out := &testkit.SyncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- service.Run(ctx, cfg, slog.New(slog.DiscardHandler), service.Options{Out: out, Ready: func(a string) { ready <- a }})
	}()
	var addr string
	select {
	case addr = <-ready:
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
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}

	for _, ids := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("ids=%d", ids), func(b *testing.B) {
			userIDs := make([]string, ids)
			for i := range userIDs {
				userIDs[i] = fmt.Sprintf("user-%07d", i)
			}
			body := map[string]any{
				"partner_api_key": creds["partner_api_key"],
				"client_secret":   creds["client_secret"],
				"cohort_changes":  []map[string]any{{"user_ids": userIDs}},
			}
			var n sync.Mutex
			cohort := 0
			payload := func() []byte {
				n.Lock()
				cohort++
				body["cohort_id"] = fmt.Sprintf("bench-%d", cohort%64)
				p, _ := json.Marshal(body)
				n.Unlock()
				return p
			}
			b.SetBytes(int64(len(payload())))
			b.SetParallelism(8)
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					resp, err := client.Post("http://"+addr+"/partners/mixpanel/cohorts/users", "application/json", bytes.NewReader(payload()))
					if err != nil {
						b.Error(err)
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusCreated {
						b.Errorf("status %d", resp.StatusCode)
						return
					}
				}
			})
			elapsed := time.Since(start).Seconds()
			b.ReportMetric(float64(b.N)/elapsed, "requests/s")
			b.ReportMetric(float64(b.N*ids)/elapsed, "ids/s")
		})
	}
	cancel()
	<-done
}
