package identities

import (
	"context"
	"fmt"
	"time"

	"github.com/cohortsync/cohortsync/internal/retry"
	"github.com/cohortsync/cohortsync/kafka"
)

// tailBackoff spaces the reconnects of a partition's tail and the retries
// of the offset queries at open.
var tailBackoff = retry.Backoff{Initial: 100 * time.Millisecond, Max: 2 * time.Second}

// tail applies partition p from its stored offset on, until ctx ends, with
// the same partition follower the compacted-topic tables use. Unlike a
// kafka.Table the position lives in the bbolt replica, written in the
// transaction that applies the records.
func (d *Directory) tail(ctx context.Context, p int) {
	defer d.wg.Done()
	d.client.FollowPartition(ctx, d.topic, p, kafka.FollowOptions{PollWait: d.pollWait, Backoff: tailBackoff}, partitionFollower{d, p})
}

// partitionFollower is one partition of the directory as a kafka.Follower.
type partitionFollower struct {
	d *Directory
	p int
}

func (f partitionFollower) Position() int64 {
	f.d.mu.RLock()
	defer f.d.mu.RUnlock()
	return f.d.parts[f.p].next
}

func (f partitionFollower) Interrupted(err error) {
	d := f.d
	d.metrics.tailErrors.Inc()
	d.mu.Lock()
	d.parts[f.p].lastErr = err
	d.mu.Unlock()
	d.log.Warn("identities partition tail interrupted, reconnecting", "partition", f.p, "error", err)
}

// Fetched stores the fetched records and the partition's new offset in one
// transaction, then publishes the new offset. A complete fetch may end in
// offsets compaction removed, which yield no record: its position steps past
// them.
func (f partitionFollower) Fetched(from int64, recs []kafka.TableRecord, complete bool, after, hwm int64, asked time.Time) error {
	d, p := f.d, f.p
	next := from
	if len(recs) > 0 {
		next = recs[len(recs)-1].Offset + 1
	}
	if complete && after > next {
		next = after
	}
	stored := from
	if next > from {
		msgs := make([]Message, len(recs))
		for i, r := range recs {
			msgs[i] = Message{Offset: r.Offset, Key: r.Key, Value: r.Value}
		}
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
	if complete {
		ps.hwm = hwm
		if ps.next >= hwm {
			// Everything acknowledged before this fetch was sent is applied.
			ps.lastSync = asked
			ps.lastErr = nil
		}
	}
	if moved {
		close(d.advanced)
		d.advanced = make(chan struct{})
	}
	return nil
}

// OutOfRange handles a fetch position outside the partition's log: records
// were deleted below it, or the topic was recreated shorter than what this
// replica applied.
func (f partitionFollower) OutOfRange(at, first, last int64) error {
	d, p := f.d, f.p
	next := at
	switch {
	case at < first:
		d.log.Warn("identities records were deleted before being read; skipping ahead", "partition", p, "from", at, "to", first)
		if err := d.idx.SkipTo(p, first); err != nil {
			return fmt.Errorf("skip to offset %d: %w", first, err)
		}
		next = first
	case at > last:
		// The users applied from this partition describe a log that no
		// longer exists: keeping them would keep ids matching that the new
		// log does not have.
		d.log.Error("identities partition is shorter than what was applied (topic recreated?); rebuilding it", "partition", p, "applied", at, "end", last)
		if err := d.idx.ResetPartition(p, first); err != nil {
			return fmt.Errorf("reset partition: %w", err)
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
