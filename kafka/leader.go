package kafka

import (
	"context"
	"errors"
	"fmt"
	"time"

	kafkago "github.com/segmentio/kafka-go"
)

// leaderDialTimeout bounds one attempt to reach a partition's leader through one broker.
const leaderDialTimeout = 10 * time.Second

// DialLeader connects to the leader of topic/partition, trying each bootstrap
// broker in turn, for readers that use the low-level Conn fetch API (whose
// answers carry the high-water mark).
func (c *Client) DialLeader(ctx context.Context, topic string, partition int) (*kafkago.Conn, error) {
	var errs []error
	for _, broker := range c.cfg.Brokers {
		dctx, cancel := context.WithTimeout(ctx, leaderDialTimeout)
		conn, err := c.dialer.DialLeader(dctx, "tcp", broker, topic, partition)
		cancel()
		if err == nil {
			return conn, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("kafka: connect to the leader of %s/%d: %w", topic, partition, errors.Join(errs...))
}
