package keys

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/cohortsync/cohortsync/kafka"
)

const (
	// fetchSlack is how much longer than the poll wait a fetch may take before
	// the connection is presumed dead and replaced.
	fetchSlack    = 5 * time.Second
	fetchMaxBytes = 1 << 20
	backoffMin    = 100 * time.Millisecond
	backoffMax    = 2 * time.Second
	dialTimeout   = 10 * time.Second
)

// tail reads the keys topic from s.next on, forever, reconnecting with
// backoff. It uses the low-level Conn rather than a kafka-go Reader because
// every fetch response carries the high-water mark: that tells the store both
// when it has caught up and how fresh its view is, which a Reader hides.
func (s *Store) tail(ctx context.Context) {
	defer close(s.done)
	for attempt := 0; ; attempt++ {
		if attempt > 0 && !kafka.SleepContext(ctx, kafka.RetryDelay(attempt, backoffMin, backoffMax)) {
			return
		}
		conn, err := s.client.DialLeader(ctx, s.topic, 0)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			s.tailFailed(err)
			continue
		}
		progressed, err := s.readLoop(ctx, conn)
		_ = conn.Close()
		if ctx.Err() != nil {
			return
		}
		s.tailFailed(err)
		if progressed {
			attempt = 0
		}
	}
}

func (s *Store) tailFailed(err error) {
	s.metrics.tailErrors.Inc()
	s.mu.Lock()
	s.lastErr = err
	s.mu.Unlock()
	s.log.Warn("keys topic tail interrupted, reconnecting", "error", err)
}

// readLoop fetches until the connection fails. It reports whether any fetch
// succeeded, so that the caller can reset its backoff.
func (s *Store) readLoop(ctx context.Context, conn *kafkago.Conn) (progressed bool, err error) {
	// Closing the connection is the only way to interrupt a blocked fetch.
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()
	for {
		s.mu.RLock()
		next := s.next
		s.mu.RUnlock()
		if _, err := conn.Seek(next, kafkago.SeekAbsolute|kafkago.SeekDontCheck); err != nil {
			return progressed, fmt.Errorf("seek to offset %d: %w", next, err)
		}
		sent := time.Now()
		if err := conn.SetDeadline(sent.Add(s.pollWait + fetchSlack)); err != nil {
			return progressed, fmt.Errorf("set deadline: %w", err)
		}
		batch := conn.ReadBatchWith(kafkago.ReadBatchConfig{MinBytes: 1, MaxBytes: fetchMaxBytes, MaxWait: s.pollWait})
		fetchErr := batch.Err() // set when the fetch itself failed, before any message
		hwm := batch.HighWaterMark()
		var msgs []kafkago.Message
		var readErr error
		for {
			m, err := batch.ReadMessage()
			if err != nil {
				readErr = err
				break
			}
			msgs = append(msgs, m)
		}
		after := batch.Offset()
		_ = batch.Close() // its error is readErr, which we already have

		// kafka-go reports a fetch that found nothing new (next is already the
		// high-water mark) as RequestTimedOut from the first ReadMessage; for
		// us that is the best outcome: proof that we are at the end.
		caughtUp := fetchErr == nil && len(msgs) == 0 && hwm == next && errors.Is(readErr, kafkago.RequestTimedOut)
		clean := caughtUp || errors.Is(readErr, io.EOF)
		s.applyBatch(next, msgs, clean, after, hwm, sent)
		if clean {
			progressed = true
			continue
		}

		var kerr kafkago.Error
		switch {
		case errors.As(readErr, &kerr) && kerr == kafkago.OffsetOutOfRange:
			if err := s.recoverOutOfRange(ctx, next); err != nil {
				return progressed, err
			}
		case errors.As(readErr, &kerr) && kerr == kafkago.RequestTimedOut:
			// The broker gave up waiting; the next fetch simply asks again.
		default:
			return progressed, fmt.Errorf("fetch %s/0 at offset %d: %w", s.topic, next, readErr)
		}
	}
}

// applyBatch applies fetched messages in offset order and moves next. from is
// the offset the fetch started at: if the index was reset meanwhile, the
// batch belongs to a stale position and is dropped.
func (s *Store) applyBatch(from int64, msgs []kafkago.Message, clean bool, after, hwm int64, sent time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if from != s.next {
		return
	}
	before := s.next
	for _, m := range msgs {
		if m.Offset < s.next {
			continue
		}
		s.apply(m)
		s.next = m.Offset + 1
	}
	// A clean batch may end in compacted-away offsets that yield no message;
	// the batch's own position steps past them.
	if clean && after > s.next {
		s.next = after
	}
	if clean {
		s.hwm = hwm
		if s.next >= hwm {
			// Everything acknowledged before this fetch was sent is applied.
			s.lastSync = sent
			s.lastErr = nil
		}
	}
	if s.next != before {
		close(s.advanced)
		s.advanced = make(chan struct{})
	}
	s.metrics.active.Set(float64(s.active))
}

// recoverOutOfRange handles a fetch position outside the log: records were
// deleted below it, or the topic was recreated shorter than what we read.
func (s *Store) recoverOutOfRange(ctx context.Context, at int64) error {
	qctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	first, err := s.listOffset(qctx, kafkago.FirstOffset)
	if err != nil {
		return fmt.Errorf("offset %d out of range, and listing offsets failed: %w", at, err)
	}
	last, err := s.listOffset(qctx, kafkago.LastOffset)
	if err != nil {
		return fmt.Errorf("offset %d out of range, and listing offsets failed: %w", at, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.next != at {
		return nil
	}
	switch {
	case at < first:
		s.log.Warn("keys topic records were deleted before being read; skipping ahead", "from", at, "to", first)
		s.next = first
	case at > last:
		// Our index describes a log that no longer exists: keeping it would
		// keep keys alive that the new log does not have.
		s.log.Error("keys topic is shorter than what was applied (recreated?); replaying it from scratch", "applied", at, "end", last)
		s.resetLocked(first)
		s.metrics.active.Set(0)
	}
	close(s.advanced)
	s.advanced = make(chan struct{})
	return nil
}

// listOffset asks the partition leader for the first or the end offset.
func (s *Store) listOffset(ctx context.Context, which int64) (int64, error) {
	resp, err := s.client.Admin().ListOffsets(ctx, &kafkago.ListOffsetsRequest{
		Topics: map[string][]kafkago.OffsetRequest{s.topic: {{Partition: 0, Timestamp: which}}},
	})
	if err != nil {
		return 0, fmt.Errorf("list offsets of %s: %w", s.topic, err)
	}
	parts := resp.Topics[s.topic]
	if len(parts) != 1 {
		return 0, fmt.Errorf("list offsets of %s: no answer for partition 0", s.topic)
	}
	p := parts[0]
	if p.Error != nil {
		return 0, fmt.Errorf("list offsets of %s/0: %w", s.topic, p.Error)
	}
	if which == kafkago.FirstOffset {
		return p.FirstOffset, nil
	}
	return p.LastOffset, nil
}

// listOffsetRetry retries errors the broker calls temporary, such as a topic
// created a moment ago whose leader is not known yet.
func (s *Store) listOffsetRetry(ctx context.Context, which int64) (int64, error) {
	for attempt := 1; ; attempt++ {
		off, err := s.listOffset(ctx, which)
		var kerr kafkago.Error
		if err == nil || !errors.As(err, &kerr) || !kerr.Temporary() {
			return off, err
		}
		if !kafka.SleepContext(ctx, kafka.RetryDelay(attempt, backoffMin, backoffMax)) {
			return 0, fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
		}
	}
}
