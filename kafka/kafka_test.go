package kafka_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync/kafka"
	"github.com/cohortsync/cohortsync/kafka/kafkatest"
)

func TestLanderWritesKeyedRecordsInOrder(t *testing.T) {
	t.Parallel()
	brokers := kafkatest.NewCluster(t)
	client := kafkatest.NewClient(t, brokers, "land")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	lander := client.NewLander(client.Config().Topics.Exports)
	defer lander.Close()

	const cohorts, perCohort = 8, 25
	var wg sync.WaitGroup
	errs := make(chan error, cohorts)
	for c := range cohorts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := []byte(fmt.Sprintf("ws/mixpanel/cohort-%d", c))
			for i := range perCohort {
				if err := lander.Land(ctx, key, []byte(fmt.Sprintf("%d", i))); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("land: %v", err)
	}

	msgs := kafkatest.ReadAll(t, client, client.Config().Topics.Exports)
	if len(msgs) != cohorts*perCohort {
		t.Fatalf("read %d records, landed %d", len(msgs), cohorts*perCohort)
	}
	partitionOf := map[string]int{}
	next := map[string]int{}
	for _, m := range msgs {
		k := string(m.Key)
		if p, ok := partitionOf[k]; ok && p != m.Partition {
			t.Fatalf("key %s on partitions %d and %d", k, p, m.Partition)
		}
		partitionOf[k] = m.Partition
		if got := string(m.Value); got != fmt.Sprintf("%d", next[k]) {
			t.Fatalf("key %s: record %s out of order, want %d", k, got, next[k])
		}
		next[k]++
	}
}

func TestEnsureTopicsIsIdempotent(t *testing.T) {
	t.Parallel()
	brokers := kafkatest.NewCluster(t)
	client := kafkatest.NewClient(t, brokers, "idem")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := client.EnsureTopics(ctx, client.StandardTopics()); err != nil {
		t.Fatalf("second ensure: %v", err)
	}
	ends, err := client.PartitionEnds(ctx, client.Config().Topics.Exports)
	if err != nil {
		t.Fatal(err)
	}
	if len(ends) != 3 {
		t.Fatalf("exports has %d partitions, want 3", len(ends))
	}
}

func TestCheckMessageSizeRejectsBatchesOverBrokerLimit(t *testing.T) {
	t.Parallel()
	brokers := kafkatest.NewCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	cfg := kafka.DefaultConfig()
	cfg.Brokers = brokers
	client, err := kafka.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := client.CheckMessageSize(ctx); err != nil {
		t.Fatalf("default size should fit kfake's default limit: %v", err)
	}

	cfg.MaxMessageBytes = 8 << 20
	big, err := kafka.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	err = big.CheckMessageSize(ctx)
	if err == nil || !strings.Contains(err.Error(), "message.max.bytes") {
		t.Fatalf("want a message.max.bytes error, got %v", err)
	}
}

func TestConfigValidateReportsEveryProblem(t *testing.T) {
	t.Parallel()
	cfg := kafka.DefaultConfig()
	cfg.Brokers = []string{"nocolon"}
	cfg.Partitions = 0
	cfg.SASL.Mechanism = "gssapi"
	cfg.Topics.Keys = ""
	err := cfg.Validate()
	if err == nil {
		t.Fatal("want errors")
	}
	for _, want := range []string{"brokers[0]", "partitions", "sasl.mechanism", "topics.keys"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
	if err := kafka.DefaultConfig().Validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
}
