package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	kafkago "github.com/segmentio/kafka-go"

	"github.com/cohortsync/cohortsync/internal/promreg"
	"github.com/cohortsync/cohortsync/pipeline"
)

// Dead-letter records keep the original key and value byte for byte, as the
// Kafka record's key and value, and carry what went wrong in headers. This is
// Kafka Connect's convention (its errors.deadletterqueue.context.headers), so
// existing tools can read the topic, and replaying a fixed record is a plain
// copy of key and value back to the landing topic. Wrapping the bytes in a
// JSON document instead would grow them by a third in base64 and push records
// near the size limit over it.
const (
	HeaderReason       = "cohortsync.dlq.reason"
	HeaderError        = "cohortsync.dlq.error"
	HeaderTopic        = "cohortsync.dlq.topic"
	HeaderPartition    = "cohortsync.dlq.partition"
	HeaderOffset       = "cohortsync.dlq.offset"
	HeaderMessageTime  = "cohortsync.dlq.message_time"
	HeaderTime         = "cohortsync.dlq.time"
	HeaderValueOmitted = "cohortsync.dlq.value_omitted"
)

// maxErrorBytes bounds the error header: a malformed record with thousands of
// bad ids produces one line per id, and headers count against the record size.
const maxErrorBytes = 4 << 10

// DeadLetter writes the messages the stream cannot process to the dead-letter
// topic. Send returns once every in-sync replica has the record, so the caller
// may then ack the original message without losing it.
type DeadLetter struct {
	w   *kafkago.Writer
	log *slog.Logger
	m   *deadLetterMetrics
}

// NewDeadLetter returns a DeadLetter on the configured dead-letter topic. Its
// metrics go to reg (nil: not registered); log nil means slog.Default().
func (c *Client) NewDeadLetter(reg prometheus.Registerer, log *slog.Logger) (*DeadLetter, error) {
	if log == nil {
		log = slog.Default()
	}
	topic := c.cfg.Topics.DeadLetter
	w := c.Writer(topic)
	// The original value was accepted by the landing topic, so it fits the
	// landing writer's BatchBytes; the headers need room on top of that, which
	// the dead-letter topic's own max.message.bytes leaves.
	w.BatchBytes = c.topicMaxBytes(topic)
	// One record per Send: waiting for companions only adds latency.
	w.BatchSize = 1
	m := newDeadLetterMetrics()
	if err := m.register(reg); err != nil {
		_ = w.Close()
		return nil, fmt.Errorf("kafka: dead letter: %w", err)
	}
	return &DeadLetter{w: w, log: log, m: m}, nil
}

func (c *Client) topicMaxBytes(topic string) int64 {
	for _, s := range c.StandardTopics() {
		if s.Name != topic {
			continue
		}
		if n, err := strconv.ParseInt(s.Configs["max.message.bytes"], 10, 64); err == nil && n > 0 {
			return n
		}
	}
	return int64(c.cfg.MaxMessageBytes)
}

// Topic is the dead-letter topic.
func (d *DeadLetter) Topic() string { return d.w.Topic }

// Send writes msg to the dead-letter topic with the reason (a short label such
// as "malformed") and err's text, and returns once the record is durable. A
// record too large for the topic even so is written without its value, with
// HeaderValueOmitted giving the size; the original stays readable at its
// source position until the landing topic's retention removes it.
//
// After an error the record may still have been written (kafka-go cannot
// tell), so a retried Send can write it twice: the topic is at-least-once,
// and readers tell duplicates apart by the source position headers.
func (d *DeadLetter) Send(ctx context.Context, msg pipeline.Message, reason string, err error) error {
	if reason == "" {
		reason = pipeline.ReasonUndecodable
	}
	now := time.Now().UTC()
	rec := kafkago.Message{
		Key:     msg.Key,
		Value:   msg.Value,
		Time:    now,
		Headers: deadLetterHeaders(msg, reason, err, now),
	}
	werr := d.w.WriteMessages(ctx, rec)
	if werr != nil && isTooLarge(werr) {
		d.log.WarnContext(ctx, "dead-letter record too large, writing it without its value",
			"topic", msg.Topic, "partition", msg.Partition, "offset", msg.Offset, "bytes", len(msg.Value))
		d.m.omitted.Inc()
		rec.Value = nil
		rec.Headers = append(rec.Headers, kafkago.Header{Key: HeaderValueOmitted, Value: []byte(strconv.Itoa(len(msg.Value)))})
		werr = d.w.WriteMessages(ctx, rec)
	}
	if werr != nil {
		d.m.errors.Inc()
		return fmt.Errorf("kafka: dead-letter %s/%d@%d to %s: %w", msg.Topic, msg.Partition, msg.Offset, d.w.Topic, werr)
	}
	d.m.records.WithLabelValues(reason).Inc()
	return nil
}

// Close flushes the writer and unregisters the metrics.
func (d *DeadLetter) Close() error {
	d.m.Unregister()
	if err := d.w.Close(); err != nil {
		return fmt.Errorf("kafka: close dead letter: %w", err)
	}
	return nil
}

func deadLetterHeaders(msg pipeline.Message, reason string, err error, now time.Time) []kafkago.Header {
	text := ""
	if err != nil {
		text = truncateUTF8(err.Error(), maxErrorBytes)
	}
	h := []kafkago.Header{
		{Key: HeaderReason, Value: []byte(reason)},
		{Key: HeaderError, Value: []byte(text)},
		{Key: HeaderTopic, Value: []byte(msg.Topic)},
		{Key: HeaderPartition, Value: strconv.AppendInt(nil, int64(msg.Partition), 10)},
		{Key: HeaderOffset, Value: strconv.AppendInt(nil, msg.Offset, 10)},
		{Key: HeaderTime, Value: now.AppendFormat(nil, time.RFC3339Nano)},
	}
	if !msg.Time.IsZero() {
		h = append(h, kafkago.Header{Key: HeaderMessageTime, Value: msg.Time.UTC().AppendFormat(nil, time.RFC3339Nano)})
	}
	return h
}

func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const more = "…"
	cut := n - len(more)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + more
}

// isTooLarge covers both the writer's own check (MessageTooLargeError) and the
// broker's refusal, which arrives inside WriteErrors.
func isTooLarge(err error) bool {
	if errors.Is(err, kafkago.MessageSizeTooLarge) {
		return true
	}
	var we kafkago.WriteErrors
	if errors.As(err, &we) {
		for _, e := range we {
			if e != nil && errors.Is(e, kafkago.MessageSizeTooLarge) {
				return true
			}
		}
	}
	return false
}

// DeadLetterRecord is a dead-letter record read back.
type DeadLetterRecord struct {
	Reason string
	Error  string
	// Topic, Partition and Offset are where the original was read.
	Topic     string
	Partition int
	Offset    int64
	Key       []byte
	// Value is the original bytes; nil when ValueOmitted > 0.
	Value []byte
	// ValueOmitted is the size of an original too large to be copied.
	ValueOmitted int
	// MessageTime is the original record's timestamp (zero if unknown); Time
	// is when it was dead-lettered.
	MessageTime time.Time
	Time        time.Time
}

// ParseDeadLetter reads a record of the dead-letter topic.
func ParseDeadLetter(m kafkago.Message) (DeadLetterRecord, error) {
	r := DeadLetterRecord{Key: m.Key, Value: m.Value}
	var errs []error
	seen := map[string]bool{}
	for _, h := range m.Headers {
		v := string(h.Value)
		var err error
		switch h.Key {
		case HeaderReason:
			r.Reason = v
		case HeaderError:
			r.Error = v
		case HeaderTopic:
			r.Topic = v
		case HeaderPartition:
			r.Partition, err = strconv.Atoi(v)
		case HeaderOffset:
			r.Offset, err = strconv.ParseInt(v, 10, 64)
		case HeaderMessageTime:
			r.MessageTime, err = time.Parse(time.RFC3339Nano, v)
		case HeaderTime:
			r.Time, err = time.Parse(time.RFC3339Nano, v)
		case HeaderValueOmitted:
			r.ValueOmitted, err = strconv.Atoi(v)
		default:
			continue
		}
		seen[h.Key] = true
		if err != nil {
			errs = append(errs, fmt.Errorf("header %s: %w", h.Key, err))
		}
	}
	for _, k := range []string{HeaderReason, HeaderTopic, HeaderPartition, HeaderOffset, HeaderTime} {
		if !seen[k] {
			errs = append(errs, fmt.Errorf("header %s is missing", k))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return DeadLetterRecord{}, fmt.Errorf("kafka: not a dead-letter record at %s/%d@%d: %w", m.Topic, m.Partition, m.Offset, err)
	}
	return r, nil
}

type deadLetterMetrics struct {
	records *prometheus.CounterVec
	errors  prometheus.Counter
	omitted prometheus.Counter

	promreg.Registration
}

func newDeadLetterMetrics() *deadLetterMetrics {
	const ns, sub = "cohortsync", "deadletter"
	return &deadLetterMetrics{
		records: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "records_total",
			Help: "Messages written durably to the dead-letter topic, by reason.",
		}, []string{"reason"}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "errors_total",
			Help: "Dead-letter writes that failed; the message is not acked and comes again.",
		}),
		omitted: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "values_omitted_total",
			Help: "Dead-letter records written without the original value because it did not fit the topic.",
		}),
	}
}

func (m *deadLetterMetrics) register(reg prometheus.Registerer) error {
	return m.Registration.Register(reg, "", m.records, m.errors, m.omitted)
}
