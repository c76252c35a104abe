package kafka

import (
	"context"
	"fmt"

	kafkago "github.com/segmentio/kafka-go"
)

// PartitionEnds returns, for every partition of topic, the offset the next
// record will get (the high watermark).
func (c *Client) PartitionEnds(ctx context.Context, topic string) (map[int]int64, error) {
	md, err := c.admin.Metadata(ctx, &kafkago.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return nil, fmt.Errorf("kafka: metadata %s: %w", topic, err)
	}
	if len(md.Topics) != 1 || md.Topics[0].Error != nil {
		return nil, fmt.Errorf("kafka: topic %s not found", topic)
	}
	req := map[string][]kafkago.OffsetRequest{}
	for _, p := range md.Topics[0].Partitions {
		req[topic] = append(req[topic], kafkago.LastOffsetOf(p.ID))
	}
	resp, err := c.admin.ListOffsets(ctx, &kafkago.ListOffsetsRequest{Topics: req})
	if err != nil {
		return nil, fmt.Errorf("kafka: list offsets %s: %w", topic, err)
	}
	ends := map[int]int64{}
	for _, po := range resp.Topics[topic] {
		if po.Error != nil {
			return nil, fmt.Errorf("kafka: list offsets %s/%d: %w", topic, po.Partition, po.Error)
		}
		ends[po.Partition] = po.LastOffset
	}
	return ends, nil
}

// ReadTopic reads every record of topic up to the end offsets seen at the
// start of the call. It is meant for tests, audits and small compacted topics.
func (c *Client) ReadTopic(ctx context.Context, topic string) ([]kafkago.Message, error) {
	ends, err := c.PartitionEnds(ctx, topic)
	if err != nil {
		return nil, err
	}
	var out []kafkago.Message
	for p, end := range ends {
		msgs, err := c.readPartition(ctx, topic, p, end)
		if err != nil {
			return nil, err
		}
		out = append(out, msgs...)
	}
	return out, nil
}

func (c *Client) readPartition(ctx context.Context, topic string, partition int, end int64) ([]kafkago.Message, error) {
	if end == 0 {
		return nil, nil
	}
	conn, err := c.DialLeader(ctx, topic, partition)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	first, err := conn.ReadFirstOffset()
	if err != nil {
		return nil, fmt.Errorf("kafka: first offset of %s/%d: %w", topic, partition, err)
	}
	if _, err := conn.Seek(first, kafkago.SeekAbsolute); err != nil {
		return nil, fmt.Errorf("kafka: seek %s/%d: %w", topic, partition, err)
	}
	var out []kafkago.Message
	for next := first; next < end; {
		batch := conn.ReadBatch(1, 10<<20)
		before := next
		for {
			m, err := batch.ReadMessage()
			if err != nil {
				break
			}
			out = append(out, m)
			next = m.Offset + 1
		}
		if err := batch.Close(); err != nil {
			return nil, fmt.Errorf("kafka: read %s/%d at %d: %w", topic, partition, next, err)
		}
		if next == before {
			// Compaction can leave the tail of the range empty; nothing more to read.
			break
		}
	}
	return out, nil
}
