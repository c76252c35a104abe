package broker_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync/kafka"
	"github.com/cohortsync/cohortsync/kafka/broker"
)

func start(t *testing.T, ctx context.Context, dir string) (*broker.Broker, *kafka.Client) {
	t.Helper()
	b, err := broker.Start(ctx, broker.Options{DataDir: dir})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	cfg := kafka.DefaultConfig()
	cfg.Brokers = b.Addrs()
	cfg.Partitions = 4
	client, err := kafka.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := client.EnsureTopics(ctx, client.StandardTopics()); err != nil {
		t.Fatalf("ensure topics: %v", err)
	}
	return b, client
}

func TestRestartKeepsEveryLandedRecord(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()

	b, client := start(t, ctx, dir)
	topic := client.Config().Topics.Exports
	lander := client.NewLander(topic)
	const n = 200
	want := map[string]bool{}
	for i := range n {
		v := fmt.Sprintf("record-%03d", i)
		if err := lander.Land(ctx, []byte(fmt.Sprintf("ws/mixpanel/c%d", i%7)), []byte(v)); err != nil {
			t.Fatalf("land %d: %v", i, err)
		}
		want[v] = true
	}
	_ = lander.Close()
	client.Close()
	if err := b.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}

	b2, client2 := start(t, ctx, dir)
	defer b2.Close()
	defer client2.Close()
	msgs, err := client2.ReadTopic(ctx, topic)
	if err != nil {
		t.Fatalf("read after restart: %v", err)
	}
	got := map[string]bool{}
	for _, m := range msgs {
		got[string(m.Value)] = true
	}
	if len(msgs) != n || len(got) != n {
		t.Fatalf("after restart read %d records (%d distinct), landed %d", len(msgs), len(got), n)
	}
	for v := range want {
		if !got[v] {
			t.Fatalf("record %s lost across restart", v)
		}
	}
}

func TestSecondProcessOnSameDataDirIsRefused(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	dir := t.TempDir()
	b, err := broker.Start(ctx, broker.Options{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	_, err = broker.Start(ctx, broker.Options{DataDir: dir})
	if !errors.Is(err, broker.ErrLocked) {
		t.Fatalf("second start on a held dir: got %v, want ErrLocked", err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b2, err := broker.Start(ctx, broker.Options{DataDir: dir})
	if err != nil {
		t.Fatalf("start after release: %v", err)
	}
	_ = b2.Close()
}

// TestAcknowledgedRecordsSurviveACrash copies the data directory while the broker
// is still running, which is exactly what a crash leaves on disk, and starts a
// second broker on the copy.
func TestAcknowledgedRecordsSurviveACrash(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()
	b, client := start(t, ctx, dir)
	defer b.Close()
	defer client.Close()
	topic := client.Config().Topics.Exports
	lander := client.NewLander(topic)
	defer lander.Close()
	const n = 50
	for i := range n {
		if err := lander.Land(ctx, []byte(fmt.Sprintf("ws/p/c%d", i%3)), []byte(fmt.Sprintf("r%d", i))); err != nil {
			t.Fatalf("land: %v", err)
		}
	}

	crashed := t.TempDir()
	if err := os.CopyFS(crashed, os.DirFS(dir)); err != nil {
		t.Fatalf("copy data dir: %v", err)
	}
	_ = os.Remove(filepath.Join(crashed, "LOCK"))

	b2, client2 := start(t, ctx, crashed)
	defer b2.Close()
	defer client2.Close()
	msgs, err := client2.ReadTopic(ctx, topic)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if len(msgs) != n {
		t.Fatalf("after a crash %d of %d acknowledged records are left", len(msgs), n)
	}
}
