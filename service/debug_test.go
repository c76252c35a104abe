package service_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync/config"
	"github.com/cohortsync/cohortsync/service"
)

// With debug_addr set the profiles answer there, and only there: the API
// port never serves them.
func TestProfilesOnTheirOwnListenerOnly(t *testing.T) {
	t.Parallel()
	cfg := config.Default()
	cfg.Embedded.KafkaAddr = "127.0.0.1:0" // tests run in parallel: any free port
	cfg.DataDir = t.TempDir()
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.DebugAddr = "127.0.0.1:0"
	cfg.Kafka.Partitions = 3
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	apiAddr, debugAddr := make(chan string, 1), make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- service.Run(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), service.Options{
			Ready:      func(a string) { apiAddr <- a },
			DebugReady: func(a string) { debugAddr <- a },
		})
	}()
	var api, debug string
	for api == "" {
		select {
		case debug = <-debugAddr:
		case api = <-apiAddr:
		case err := <-done:
			t.Fatalf("service stopped: %v", err)
		case <-time.After(30 * time.Second):
			t.Fatal("service not ready in time")
		}
	}
	if debug == "" {
		t.Fatal("the debug listener was not reported before the API")
	}
	get := func(url string) (int, string) {
		t.Helper()
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("http://" + debug + "/debug/pprof/"); code != http.StatusOK || !strings.Contains(body, "goroutine") {
		t.Errorf("profiles index on debug_addr: %d %.200s", code, body)
	}
	if code, body := get("http://" + debug + "/debug/pprof/goroutine?debug=1"); code != http.StatusOK || !strings.Contains(body, "goroutine profile") {
		t.Errorf("goroutine profile: %d %.200s", code, body)
	}
	if code, _ := get("http://" + api + "/debug/pprof/"); code != http.StatusNotFound {
		t.Errorf("the API port serves profiles: %d", code)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("service did not stop")
	}
}
