package kafka_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cohortsync/cohortsync/internal/testkit"
	"github.com/cohortsync/cohortsync/kafka"
	"github.com/cohortsync/cohortsync/kafka/kafkatest"
)

// kv is a test state: the latest value per key, and the offsets in the
// order Apply saw them.
type kv struct {
	mu      sync.Mutex
	m       map[string]string
	offsets []int64
	resets  int
}

func newKV() *kv { return &kv{m: map[string]string{}} }

func (s *kv) apply(r kafka.TableRecord) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.offsets = append(s.offsets, r.Offset)
	if r.Value == nil {
		delete(s.m, string(r.Key))
		return
	}
	s.m[string(r.Key)] = string(r.Value)
}

func (s *kv) get(k string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.m[k]
	return v, ok
}

func (s *kv) snapshot() (map[string]string, []int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := make(map[string]string, len(s.m))
	for k, v := range s.m {
		m[k] = v
	}
	return m, append([]int64(nil), s.offsets...)
}

func openKV(t *testing.T, client *kafka.Client, reg prometheus.Registerer) (*kafka.Table, *kv) {
	t.Helper()
	st := newKV()
	tbl, err := client.OpenTable(testkit.Context(t, 20*time.Second), kafka.TableOptions{
		Topic: client.Config().Topics.Tokens, Name: "test", Apply: st.apply,
		Reset:      func() { st.mu.Lock(); st.m = map[string]string{}; st.resets++; st.mu.Unlock() },
		Registerer: reg, PollWait: 50 * time.Millisecond, MaxStaleness: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tbl.Close() })
	return tbl, st
}

func TestTableReadYourWritesReplayAndTail(t *testing.T) {
	t.Parallel()
	ctx := testkit.Context(t, 20*time.Second)
	client := kafkatest.NewClient(t, kafkatest.NewCluster(t), "table")

	reg := prometheus.NewRegistry()
	a, stA := openKV(t, client, reg)
	if err := a.Healthy(); err != nil {
		t.Fatalf("fresh table unhealthy: %v", err)
	}
	// Every Put is visible on return, without polling.
	for i := range 20 {
		k := fmt.Sprintf("k%d", i%7)
		if err := a.Put(ctx, []byte(k), []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
		if v, ok := stA.get(k); !ok || v != fmt.Sprint(i) {
			t.Fatalf("after Put(%s, %d): state has %q, %v", k, i, v, ok)
		}
	}
	if err := a.Put(ctx, []byte("k3"), nil); err != nil {
		t.Fatal(err)
	}
	if _, ok := stA.get("k3"); ok {
		t.Fatal("tombstone did not remove k3")
	}

	// A second instance replays the same state and sees the first one's
	// later writes through its tail.
	b, stB := openKV(t, client, nil)
	wantA, offsA := stA.snapshot()
	gotB, offsB := stB.snapshot()
	if fmt.Sprint(gotB) != fmt.Sprint(wantA) {
		t.Fatalf("replayed state %v, want %v", gotB, wantA)
	}
	for i := 1; i < len(offsB); i++ {
		if offsB[i] <= offsB[i-1] {
			t.Fatalf("records applied out of order: %v", offsB)
		}
	}
	if len(offsA) != 21 || offsA[20] != 20 {
		t.Fatalf("writer applied offsets %v, want 0..20", offsA)
	}
	start := time.Now()
	if err := a.Put(ctx, []byte("late"), []byte("x")); err != nil {
		t.Fatal(err)
	}
	for {
		if v, _ := stB.get("late"); v == "x" {
			break
		}
		if time.Since(start) > 5*time.Second {
			t.Fatal("second instance did not see the write within 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := b.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if st := b.Status(); st.AppliedOffset != 22 || st.HighWaterMark != 22 {
		t.Fatalf("status %+v, want applied 22 and hwm 22", st)
	}
	if got := gaugeValue(t, reg, "cohortsync_table_applied_offset"); got != 22 {
		t.Fatalf("applied_offset metric %v", got)
	}

	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Put(ctx, []byte("k"), []byte("v")); err == nil {
		t.Fatal("Put after Close succeeded")
	}
	if err := a.Healthy(); err == nil {
		t.Fatal("closed table healthy")
	}
	if n, _ := testutil.GatherAndCount(reg); n != 0 {
		t.Fatalf("%d metrics still registered after Close", n)
	}
}

func gaugeValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}

func TestOpenTableRejects(t *testing.T) {
	t.Parallel()
	client := kafkatest.NewClient(t, kafkatest.NewCluster(t), "tablebad")
	apply := func(kafka.TableRecord) {}
	tests := []struct {
		name string
		opts kafka.TableOptions
		want string
	}{
		{"no topic", kafka.TableOptions{Apply: apply}, "topic is empty"},
		{"no apply", kafka.TableOptions{Topic: "x"}, "apply is nil"},
		{"staleness under poll", kafka.TableOptions{Topic: "x", Apply: apply, PollWait: time.Second, MaxStaleness: time.Second}, "must exceed poll wait"},
		{"missing topic", kafka.TableOptions{Topic: "does.not.exist", Apply: apply}, "does.not.exist"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
			defer cancel()
			tbl, err := client.OpenTable(ctx, tt.opts)
			if err == nil {
				_ = tbl.Close()
				t.Fatal("OpenTable succeeded")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q lacks %q", err, tt.want)
			}
		})
	}
}

func BenchmarkTablePut(b *testing.B) {
	client := kafkatest.NewClient(b, kafkatest.NewCluster(b), "tablebench")
	tbl, err := client.OpenTable(context.Background(), kafka.TableOptions{
		Topic: client.Config().Topics.Segments, Apply: func(kafka.TableRecord) {},
	})
	if err != nil {
		b.Fatal(err)
	}
	defer tbl.Close()
	val := []byte(strings.Repeat("v", 200))
	b.SetBytes(int64(len(val)))
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if err := tbl.Put(context.Background(), []byte(fmt.Sprint(i%100)), val); err != nil {
			b.Fatal(err)
		}
	}
}
