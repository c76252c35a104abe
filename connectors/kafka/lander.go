package kafka

import (
	"context"
	"fmt"

	kgo "github.com/segmentio/kafka-go"
)

// Lander writes records to one topic and returns only once every in-sync
// replica has acknowledged them, which is what lets the HTTP API answer 201.
type Lander struct {
	w *kgo.Writer
}

// NewLander returns a Lander on topic.
func (c *Client) NewLander(topic string) *Lander {
	return &Lander{w: c.Writer(topic)}
}

// Land writes one record and waits for its acks.
func (l *Lander) Land(ctx context.Context, key, value []byte) error {
	if err := l.w.WriteMessages(ctx, kgo.Message{Key: key, Value: value}); err != nil {
		return fmt.Errorf("kafka: land on %s: %w", l.w.Topic, err)
	}
	return nil
}

// Close flushes and closes the underlying writer.
func (l *Lander) Close() error { return l.w.Close() }
