package identities

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/cohortsync/cohortsync/internal/retry"
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

// tail applies partition p from its stored offset on, until ctx ends,
// reconnecting with backoff. Like the key store it uses the low-level Conn:
// every fetch answer carries the high-water mark, which says when the
// partition has been read to the end.
func (d *Directory) tail(ctx context.Context, p int) {
	defer d.wg.Done()
	for attempt := 0; ; attempt++ {
		if attempt > 0 && retry.Sleep(ctx, retry.Backoff{Initial: backoffMin, Max: backoffMax}.Delay(attempt)) != nil {
			return
		}
		conn, err := d.client.DialLeader(ctx, d.topic, p)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			d.tailFailed(p, err)
			continue
		}
		progressed, err := d.readLoop(ctx, conn, p)
		_ = conn.Close()
		if ctx.Err() != nil {
			return
		}
		d.tailFailed(p, err)
		if progressed {
			attempt = 0
		}
	}
}

func (d *Directory) tailFailed(p int, err error) {
	d.metrics.tailErrors.Inc()
	d.mu.Lock()
	d.parts[p].lastErr = err
	d.mu.Unlock()
	d.log.Warn("identities partition tail interrupted, reconnecting", "partition", p, "error", err)
}

// readLoop fetches until the connection fails. It reports whether any fetch
// succeeded, so that the caller can reset its backoff.
func (d *Directory) readLoop(ctx context.Context, conn *kafkago.Conn, p int) (progressed bool, err error) {
	// Closing the connection is the only way to interrupt a blocked fetch.
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()
	for {
		d.mu.RLock()
		next := d.parts[p].next
		d.mu.RUnlock()
		if _, err := conn.Seek(next, kafkago.SeekAbsolute|kafkago.SeekDontCheck); err != nil {
			return progressed, fmt.Errorf("seek to offset %d: %w", next, err)
		}
		sent := time.Now()
		if err := conn.SetDeadline(sent.Add(d.pollWait + fetchSlack)); err != nil {
			return progressed, fmt.Errorf("set deadline: %w", err)
		}
		batch := conn.ReadBatchWith(kafkago.ReadBatchConfig{MinBytes: 1, MaxBytes: fetchMaxBytes, MaxWait: d.pollWait})
		fetchErr := batch.Err() // set when the fetch itself failed, before any message
		hwm := batch.HighWaterMark()
		var msgs []Message
		var readErr error
		for {
			m, err := batch.ReadMessage()
			if err != nil {
				readErr = err
				break
			}
			msgs = append(msgs, Message{Offset: m.Offset, Key: m.Key, Value: m.Value})
		}
		after := batch.Offset()
		_ = batch.Close() // its error is readErr, which we already have

		// kafka-go reports a fetch that found nothing new (next is already the
		// high-water mark) as RequestTimedOut from the first ReadMessage: proof
		// that the partition has been read to the end.
		caughtUp := fetchErr == nil && len(msgs) == 0 && hwm == next && errors.Is(readErr, kafkago.RequestTimedOut)
		clean := caughtUp || errors.Is(readErr, io.EOF)
		if err := d.applyFetched(p, next, msgs, clean, after, hwm, sent); err != nil {
			return progressed, err
		}
		if clean {
			progressed = true
			continue
		}

		var kerr kafkago.Error
		switch {
		case errors.As(readErr, &kerr) && kerr == kafkago.OffsetOutOfRange:
			if err := d.recoverOutOfRange(ctx, p, next); err != nil {
				return progressed, err
			}
		case errors.As(readErr, &kerr) && kerr == kafkago.RequestTimedOut:
			// The broker gave up waiting; the next fetch simply asks again.
		default:
			return progressed, fmt.Errorf("fetch %s/%d at offset %d: %w", d.topic, p, next, readErr)
		}
	}
}

// applyFetched stores the fetched messages and the partition's new offset in
// one transaction, then publishes the new offset. A clean fetch may end in
// offsets compaction removed, which yield no message: its position steps past
// them.
func (d *Directory) applyFetched(p int, from int64, msgs []Message, clean bool, after, hwm int64, sent time.Time) error {
	next := from
	if len(msgs) > 0 {
		next = msgs[len(msgs)-1].Offset + 1
	}
	if clean && after > next {
		next = after
	}
	stored := from
	if next > from {
		res, err := d.idx.Apply(p, msgs, next)
		if err != nil {
			return err
		}
		stored = res.Next
		d.metrics.applied.Add(float64(res.Records))
		for _, s := range res.Skipped {
			d.metrics.invalidRecords.Inc()
			d.log.Warn("skipping invalid record on identities topic", "partition", p, "offset", s.Offset, "error", s.Err)
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	ps := d.parts[p]
	moved := stored != ps.next
	ps.next = stored
	if clean {
		ps.hwm = hwm
		if ps.next >= hwm {
			// Everything acknowledged before this fetch was sent is applied.
			ps.lastSync = sent
			ps.lastErr = nil
		}
	}
	if moved {
		close(d.advanced)
		d.advanced = make(chan struct{})
	}
	return nil
}

// recoverOutOfRange handles a fetch position outside the partition's log:
// records were deleted below it, or the topic was recreated shorter than
// what this replica applied.
func (d *Directory) recoverOutOfRange(ctx context.Context, p int, at int64) error {
	qctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	first, err := d.listOffset(qctx, p, kafkago.FirstOffset)
	if err != nil {
		return fmt.Errorf("offset %d out of range, and listing offsets failed: %w", at, err)
	}
	last, err := d.listOffset(qctx, p, kafkago.LastOffset)
	if err != nil {
		return fmt.Errorf("offset %d out of range, and listing offsets failed: %w", at, err)
	}
	next := at
	switch {
	case at < first:
		d.log.Warn("identities records were deleted before being read; skipping ahead", "partition", p, "from", at, "to", first)
		if err := d.idx.SkipTo(p, first); err != nil {
			return err
		}
		next = first
	case at > last:
		// The users applied from this partition describe a log that no
		// longer exists: keeping them would keep ids matching that the new
		// log does not have.
		d.log.Error("identities partition is shorter than what was applied (topic recreated?); rebuilding it", "partition", p, "applied", at, "end", last)
		if err := d.idx.ResetPartition(p, first); err != nil {
			return err
		}
		next = first
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.parts[p].next = next
	close(d.advanced)
	d.advanced = make(chan struct{})
	return nil
}

// listOffset asks the partition leader for the first or the end offset.
func (d *Directory) listOffset(ctx context.Context, p int, which int64) (int64, error) {
	resp, err := d.client.Admin().ListOffsets(ctx, &kafkago.ListOffsetsRequest{
		Topics: map[string][]kafkago.OffsetRequest{d.topic: {{Partition: p, Timestamp: which}}},
	})
	if err != nil {
		return 0, fmt.Errorf("list offsets of %s/%d: %w", d.topic, p, err)
	}
	for _, po := range resp.Topics[d.topic] {
		if po.Partition != p {
			continue
		}
		if po.Error != nil {
			return 0, fmt.Errorf("list offsets of %s/%d: %w", d.topic, p, po.Error)
		}
		if which == kafkago.FirstOffset {
			return po.FirstOffset, nil
		}
		return po.LastOffset, nil
	}
	return 0, fmt.Errorf("list offsets of %s: no answer for partition %d", d.topic, p)
}
