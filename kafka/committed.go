package kafka

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	kafkago "github.com/segmentio/kafka-go"
)

// Committed returns the consumer group's committed offset per partition of
// topic; a partition without a commit has -1.
func (c *Client) Committed(ctx context.Context, group, topic string, partitions []int) (map[int]int64, error) {
	resp, err := c.admin.OffsetFetch(ctx, &kafkago.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: partitions}})
	if err != nil {
		return nil, fmt.Errorf("kafka: committed offsets of group %s: %w", group, err)
	}
	out := make(map[int]int64, len(partitions))
	if errors.Is(resp.Error, kafkago.GroupIdNotFound) {
		// A group that never committed is not known to the broker yet.
		for _, p := range partitions {
			out[p] = -1
		}
		return out, nil
	}
	if resp.Error != nil {
		return nil, fmt.Errorf("kafka: committed offsets of group %s: %w", group, resp.Error)
	}
	for _, p := range resp.Topics[topic] {
		if p.Error != nil {
			return nil, fmt.Errorf("kafka: committed offset of group %s on %s/%d: %w", group, topic, p.Partition, p.Error)
		}
		out[p.Partition] = p.CommittedOffset
	}
	return out, nil
}

// WaitCommitted blocks until group has committed at least ends on every
// partition of topic, which means every record before those offsets went
// through the pipeline and its sinks. progress, when set, is called after
// each poll with the records still to go.
func (c *Client) WaitCommitted(ctx context.Context, group, topic string, ends map[int]int64, poll time.Duration, progress func(remaining int64)) error {
	parts := slices.Sorted(maps.Keys(ends))
	if poll <= 0 {
		poll = 200 * time.Millisecond
	}
	for {
		got, err := c.Committed(ctx, group, topic, parts)
		if err == nil {
			var remaining int64
			for _, p := range parts {
				if end := ends[p]; end > 0 && got[p] < end {
					remaining += end - max(got[p], 0)
				}
			}
			if progress != nil {
				progress(remaining)
			}
			if remaining == 0 {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			if err != nil {
				return fmt.Errorf("kafka: wait for group %s: %w (last error: %v)", group, ctx.Err(), err)
			}
			return fmt.Errorf("kafka: wait for group %s to commit %v: %w", group, ends, ctx.Err())
		case <-time.After(poll):
		}
	}
}
