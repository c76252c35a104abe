package main

import (
	"context"
	"fmt"
	"net"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/cohortsync/cohortsync/kafka"
	"github.com/cohortsync/cohortsync/schemas"
	"github.com/cohortsync/cohortsync/stores/identities"
)

// workload is the landing both contenders read: messages records of
// idsPerMessage external ids each, spread over cohorts, every tenth one a
// removal, every id a user of the identity directory.
type workload struct {
	messages      int
	idsPerMessage int
	cohorts       int
	users         int
}

const (
	workspace = "bench"
	partner   = "mixpanel"
)

func (w workload) changes() int64 { return int64(w.messages) * int64(w.idsPerMessage) }

func externalID(i int) string { return fmt.Sprintf("x%09d", i) }

// envelope is message i of the landing, received at at, as the partner API
// would have landed it.
func (w workload) envelope(i int, at time.Time) schemas.Envelope {
	ids := make([]string, w.idsPerMessage)
	for j := range ids {
		ids[j] = externalID((i*w.idsPerMessage + j) % w.users)
	}
	return schemas.Envelope{
		SchemaVersion: schemas.CurrentVersion,
		RecordID:      fmt.Sprintf("r%09d", i),
		Workspace:     workspace,
		Partner:       partner,
		ReceivedAt:    at,
		EventTime:     at,
		Payload: schemas.CohortChangesPayload{
			CohortID: fmt.Sprintf("c%04d", i%w.cohorts),
			Changes:  []schemas.Change{{UserIDs: ids, ShouldRemove: i%10 == 9}},
		},
	}
}

// startBroker runs an in-memory Kafka-protocol broker on loopback. It lives
// in this process: both contenders fetch from it, so its cost is the same for
// both and counted for neither.
func startBroker() (*kfake.Cluster, string, error) {
	c, err := kfake.NewCluster(
		kfake.NumBrokers(1),
		kfake.ListenFn(func(network, _ string) (net.Listener, error) { return net.Listen(network, "127.0.0.1:0") }),
		kfake.BrokerConfigs(map[string]string{"message.max.bytes": fmt.Sprint(2 << 20)}),
	)
	if err != nil {
		return nil, "", fmt.Errorf("broker: %w", err)
	}
	return c, c.ListenAddrs()[0], nil
}

// land writes the identity directory and the landing topic with acks=all.
func land(ctx context.Context, client *kafka.Client, w workload, logf func(string, ...any)) error {
	if err := landIdentities(ctx, client, w, logf); err != nil {
		return err
	}
	topics := client.Config().Topics
	start := time.Now()
	base := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	err := writeAll(ctx, client.Writer(topics.Exports), w.messages, func(i int) (kafkago.Message, error) {
		e := w.envelope(i, base.Add(time.Duration(i)*time.Millisecond))
		v, err := schemas.Encode(e)
		return kafkago.Message{Key: e.PartitionKey(), Value: v}, err
	})
	if err != nil {
		return fmt.Errorf("land exports: %w", err)
	}
	logf("landed %d records (%d changes) in %.1f s", w.messages, w.changes(), time.Since(start).Seconds())
	return nil
}

// landIdentities creates the topics and writes the identity directory, one
// user per external id, with acks=all.
func landIdentities(ctx context.Context, client *kafka.Client, w workload, logf func(string, ...any)) error {
	if err := client.EnsureTopics(ctx, client.StandardTopics()); err != nil {
		return err
	}
	topics := client.Config().Topics
	start := time.Now()
	err := writeAll(ctx, client.Writer(topics.Identities), w.users, func(i int) (kafkago.Message, error) {
		r := identities.Record{UserID: fmt.Sprintf("u%09d", i), ExternalID: externalID(i)}
		v, err := identities.EncodeValue(workspace, r)
		return kafkago.Message{Key: identities.MessageKey(workspace, r.UserID), Value: v}, err
	})
	if err != nil {
		return fmt.Errorf("land identities: %w", err)
	}
	logf("landed %d users in %.1f s", w.users, time.Since(start).Seconds())
	return nil
}

// writeAll produces n messages made by gen in chunks.
func writeAll(ctx context.Context, wr *kafkago.Writer, n int, gen func(int) (kafkago.Message, error)) error {
	defer wr.Close()
	wr.BatchSize = 5000
	const chunk = 20000
	msgs := make([]kafkago.Message, 0, chunk)
	for i := 0; i < n; i++ {
		m, err := gen(i)
		if err != nil {
			return err
		}
		msgs = append(msgs, m)
		if len(msgs) == chunk || i == n-1 {
			if err := wr.WriteMessages(ctx, msgs...); err != nil {
				return err
			}
			msgs = msgs[:0]
		}
	}
	return nil
}

// ends returns the end offset of every partition of topic.
func ends(ctx context.Context, client *kafka.Client, topic string, partitions int) (map[int]int64, error) {
	req := make([]kafkago.OffsetRequest, partitions)
	for p := range req {
		req[p] = kafkago.LastOffsetOf(p)
	}
	resp, err := client.Admin().ListOffsets(ctx, &kafkago.ListOffsetsRequest{Topics: map[string][]kafkago.OffsetRequest{topic: req}})
	if err != nil {
		return nil, fmt.Errorf("end offsets: %w", err)
	}
	out := make(map[int]int64, partitions)
	for _, po := range resp.Topics[topic] {
		if po.Error != nil {
			return nil, fmt.Errorf("end offset of %d: %w", po.Partition, po.Error)
		}
		out[po.Partition] = po.LastOffset
	}
	return out, nil
}
