// Package kafkatest gives tests a real Kafka-protocol broker over TCP (kfake)
// and a way to read a topic back, so landing is verified by consuming it.
package kafkatest

import (
	"context"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/cohortsync/cohortsync/kafka"
)

// NewCluster starts an in-memory kfake cluster with one broker and returns its
// addresses; it is closed when the test ends.
func NewCluster(t testing.TB, opts ...kfake.Opt) []string {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1)}, opts...)...)
	if err != nil {
		t.Fatalf("kfake: %v", err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs()
}

// NewClient returns a client with topics prefixed by prefix, so tests sharing a
// cluster do not see each other's records, and creates those topics.
func NewClient(t testing.TB, brokers []string, prefix string) *kafka.Client {
	t.Helper()
	cfg := kafka.DefaultConfig()
	cfg.Brokers = brokers
	cfg.Partitions = 3
	cfg.Topics.Exports = prefix + ".exports"
	cfg.Topics.Identities = prefix + ".identities"
	cfg.Topics.DeadLetter = prefix + ".deadletter"
	cfg.Topics.Keys = prefix + ".keys"
	cfg.Topics.Tokens = prefix + ".tokens"
	cfg.Topics.Segments = prefix + ".segments"
	client, err := kafka.NewClient(cfg)
	if err != nil {
		t.Fatalf("kafka client: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := client.EnsureTopics(ctx, client.StandardTopics()); err != nil {
		t.Fatalf("ensure topics: %v", err)
	}
	t.Cleanup(client.Close)
	return client
}

// ReadAll reads every record currently in topic, partition by partition, up to
// each partition's end offset at the time of the call.
func ReadAll(t testing.TB, client *kafka.Client, topic string) []kafkago.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	msgs, err := client.ReadTopic(ctx, topic)
	if err != nil {
		t.Fatalf("read %s: %v", topic, err)
	}
	return msgs
}
