package kafka_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cohortsync/cohortsync/kafka"
	"github.com/cohortsync/cohortsync/kafka/kafkatest"
	"github.com/cohortsync/cohortsync/pipeline"
)

func counterValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if labels[l.GetName()] != l.GetValue() {
					continue next
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

func TestDeadLetterKeepsOriginalBytes(t *testing.T) {
	t.Parallel()
	brokers := kafkatest.NewCluster(t)
	client := kafkatest.NewClient(t, brokers, "dlq")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	reg := prometheus.NewRegistry()
	dl, err := client.NewDeadLetter(reg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer dl.Close()
	if dl.Topic() != "dlq.deadletter" {
		t.Fatalf("Topic = %q", dl.Topic())
	}

	landed := time.Date(2024, 11, 5, 9, 30, 0, 123000000, time.UTC)
	huge := strings.Repeat("payload.cohort_changes[0].user_ids[7] is empty\n", 500)
	// The largest value the landing writer could have produced still fits
	// whole, with the headers on top.
	nearLimit := bytes.Repeat([]byte{'y'}, client.Config().MaxMessageBytes-1<<10)
	tooBig := bytes.Repeat([]byte{'x'}, client.Config().MaxMessageBytes+100<<10)
	cases := []struct {
		msg       pipeline.Message
		reason    string
		err       error
		wantError string
		omitted   bool
	}{
		{
			msg:    pipeline.Message{Topic: "dlq.exports", Partition: 2, Offset: 41, Key: []byte("acme/mixpanel/c1"), Value: []byte(`{"schema_version":9}`), Time: landed},
			reason: "unknown_schema_version", err: errors.New("schemas: unknown schema version: 9"),
			wantError: "schemas: unknown schema version: 9",
		},
		{
			// Not UTF-8, not JSON, no key: the bytes must come back unchanged.
			msg:    pipeline.Message{Topic: "dlq.exports", Partition: 0, Offset: 7, Value: []byte{0x00, 0xff, 0xfe, '{', 0x80}},
			reason: "malformed", err: fmt.Errorf("decode: %w", errors.New("not JSON")),
			wantError: "decode: not JSON",
		},
		{
			msg:    pipeline.Message{Topic: "dlq.exports", Partition: 1, Offset: 1 << 40, Key: []byte("k"), Value: []byte(`{}`)},
			reason: "malformed", err: errors.New(huge),
			wantError: huge[:4<<10-len("…")] + "…",
		},
		{
			msg:    pipeline.Message{Topic: "dlq.exports", Partition: 1, Offset: 8, Key: []byte("near"), Value: nearLimit},
			reason: "malformed", err: errors.New(huge),
			wantError: huge[:4<<10-len("…")] + "…",
		},
		{
			msg:    pipeline.Message{Topic: "dlq.exports", Partition: 1, Offset: 9, Key: []byte("big"), Value: tooBig},
			reason: "", err: nil, omitted: true,
		},
	}
	for _, c := range cases {
		if err := dl.Send(ctx, c.msg, c.reason, c.err); err != nil {
			t.Fatalf("send %d: %v", c.msg.Offset, err)
		}
	}

	// Send returned, so the records must already be readable.
	msgs := kafkatest.ReadAll(t, client, dl.Topic())
	if len(msgs) != len(cases) {
		t.Fatalf("dead-letter topic holds %d records, want %d", len(msgs), len(cases))
	}
	for i, c := range cases {
		got, err := kafka.ParseDeadLetter(msgs[i])
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		wantReason := c.reason
		if wantReason == "" {
			wantReason = pipeline.ReasonUndecodable
		}
		if got.Reason != wantReason || got.Error != c.wantError {
			t.Errorf("record %d: reason %q error %q, want %q %q", i, got.Reason, got.Error, wantReason, c.wantError)
		}
		if got.Topic != c.msg.Topic || got.Partition != c.msg.Partition || got.Offset != c.msg.Offset {
			t.Errorf("record %d: source %s/%d@%d, want %s/%d@%d", i, got.Topic, got.Partition, got.Offset, c.msg.Topic, c.msg.Partition, c.msg.Offset)
		}
		if !bytes.Equal(got.Key, c.msg.Key) {
			t.Errorf("record %d: key %q, want %q", i, got.Key, c.msg.Key)
		}
		if c.omitted {
			if len(got.Value) != 0 || got.ValueOmitted != len(c.msg.Value) {
				t.Errorf("record %d: value of %d bytes, omitted %d; want omitted %d", i, len(got.Value), got.ValueOmitted, len(c.msg.Value))
			}
		} else if !bytes.Equal(got.Value, c.msg.Value) || got.ValueOmitted != 0 {
			t.Errorf("record %d: value %q (omitted %d), want %q", i, got.Value, got.ValueOmitted, c.msg.Value)
		}
		if !got.MessageTime.Equal(c.msg.Time) {
			t.Errorf("record %d: message time %s, want %s", i, got.MessageTime, c.msg.Time)
		}
		if time.Since(got.Time) > time.Minute || got.Time.After(time.Now()) {
			t.Errorf("record %d: dead-lettered at %s", i, got.Time)
		}
	}

	for reason, want := range map[string]float64{"malformed": 3, "unknown_schema_version": 1, pipeline.ReasonUndecodable: 1} {
		if got := counterValue(t, reg, "cohortsync_deadletter_records_total", map[string]string{"reason": reason}); got != want {
			t.Errorf("records_total{reason=%q} = %v, want %v", reason, got, want)
		}
	}
	if got := counterValue(t, reg, "cohortsync_deadletter_values_omitted_total", nil); got != 1 {
		t.Errorf("values_omitted_total = %v, want 1", got)
	}
}

func TestDeadLetterFailsWithoutAcks(t *testing.T) {
	t.Parallel()
	brokers := kafkatest.NewCluster(t)
	client := kafkatest.NewClient(t, brokers, "dlqfail")
	reg := prometheus.NewRegistry()
	dl, err := client.NewDeadLetter(reg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.NewDeadLetter(reg, slog.New(slog.DiscardHandler)); err == nil {
		t.Error("a second dead letter registered on the same registry")
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := dl.Send(ctx, pipeline.Message{Topic: "t", Value: []byte("x")}, "malformed", nil); err == nil {
		t.Error("Send on a canceled context reported success")
	}
	if got := counterValue(t, reg, "cohortsync_deadletter_errors_total", nil); got != 1 {
		t.Errorf("errors_total = %v, want 1", got)
	}
	if err := dl.Close(); err != nil {
		t.Fatal(err)
	}
	// Close unregisters, so a restarted stage can register again.
	dl2, err := client.NewDeadLetter(reg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("re-register after Close: %v", err)
	}
	_ = dl2.Close()
}

func TestParseDeadLetterRejectsOtherRecords(t *testing.T) {
	t.Parallel()
	brokers := kafkatest.NewCluster(t)
	client := kafkatest.NewClient(t, brokers, "dlqparse")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	lander := client.NewLander(client.Config().Topics.DeadLetter)
	defer lander.Close()
	if err := lander.Land(ctx, []byte("k"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	msgs := kafkatest.ReadAll(t, client, client.Config().Topics.DeadLetter)
	if len(msgs) != 1 {
		t.Fatalf("%d records", len(msgs))
	}
	_, err := kafka.ParseDeadLetter(msgs[0])
	if err == nil || !strings.Contains(err.Error(), "cohortsync.dlq.reason is missing") {
		t.Errorf("ParseDeadLetter of a plain record: %v", err)
	}
}
