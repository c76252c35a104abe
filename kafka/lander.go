package kafka

import (
	"context"
	"fmt"

	kafkago "github.com/segmentio/kafka-go"
)

// Lander writes records to one topic and returns only once every in-sync
// replica has acknowledged them, which is what lets the HTTP API answer 201.
type Lander struct {
	w *kafkago.Writer
}

// NewLander returns a Lander on topic.
func (c *Client) NewLander(topic string) *Lander {
	return &Lander{w: c.Writer(topic)}
}

// Land writes one record and waits for its acks.
func (l *Lander) Land(ctx context.Context, key, value []byte) error {
	if err := l.w.WriteMessages(ctx, kafkago.Message{Key: key, Value: value}); err != nil {
		return fmt.Errorf("kafka: land on %s: %w", l.w.Topic, err)
	}
	return nil
}

// KeyValue is one record to land.
type KeyValue struct{ Key, Value []byte }

// LandBatch writes many records in as few produce requests as the writer's
// batch limits allow and waits for the acks of all of them. On error some may
// have landed: callers retry the whole batch with the same record ids, which
// the sinks deduplicate.
func (l *Lander) LandBatch(ctx context.Context, recs []KeyValue) error {
	if len(recs) == 0 {
		return nil
	}
	msgs := make([]kafkago.Message, len(recs))
	for i, r := range recs {
		msgs[i] = kafkago.Message{Key: r.Key, Value: r.Value}
	}
	if err := l.w.WriteMessages(ctx, msgs...); err != nil {
		return fmt.Errorf("kafka: land %d records on %s: %w", len(recs), l.w.Topic, err)
	}
	return nil
}

// Close flushes and closes the underlying writer.
func (l *Lander) Close() error { return l.w.Close() }
