package kafka

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/cohortsync/cohortsync/internal/retry"
)

// Follower is what FollowPartition reports to: the owner of a replica that
// keeps its own read position (in memory for a Table, in the same bbolt
// transaction as the data for the identity directory).
type Follower interface {
	// Position is the offset of the next record to fetch.
	Position() int64
	// Fetched hands over one fetch from offset from: its records at or
	// above from, in offset order. complete is true when the fetch read to
	// the end of what the broker returned, so the position may step to after
	// (past offsets compaction removed) and the high-water mark hwm is
	// authoritative: a replica at hwm is current as of asked. An error stops
	// this connection; FollowPartition reconnects.
	Fetched(from int64, recs []TableRecord, complete bool, after, hwm int64, asked time.Time) error
	// OutOfRange is called when the position lies outside the log, with the
	// log's first and end offsets: records below it were deleted (at <
	// first) or the topic was recreated shorter than what was applied (at >
	// last). The follower moves its position; an error stops this
	// connection.
	OutOfRange(at, first, last int64) error
	// Interrupted reports a lost connection or a failed fetch before the
	// reconnect.
	Interrupted(err error)
}

// FollowOptions tune FollowPartition.
type FollowOptions struct {
	// PollWait is how long one fetch waits at the broker for new records.
	PollWait time.Duration
	// Backoff spaces reconnects; reset once a connection fetched anything.
	Backoff retry.Backoff
}

const (
	// followFetchSlack is how much longer than the poll wait one fetch may
	// take before the connection is presumed dead and replaced.
	followFetchSlack    = 5 * time.Second
	followFetchMaxBytes = 1 << 20
)

// FollowPartition reads partition of topic from f's position until ctx
// ends, reconnecting with backoff. It fetches through a low-level Conn
// because every fetch answer carries the high-water mark, which tells a
// replica when it is current; a kafka-go Reader hides it.
func (c *Client) FollowPartition(ctx context.Context, topic string, partition int, opts FollowOptions, f Follower) {
	failures := 0
	for {
		if failures > 0 && retry.Sleep(ctx, opts.Backoff.Delay(failures)) != nil {
			return
		}
		conn, err := c.DialLeader(ctx, topic, partition)
		if err == nil {
			var fetched bool
			fetched, err = c.follow(ctx, conn, topic, partition, opts, f)
			_ = conn.Close()
			if fetched {
				failures = 0
			}
		}
		if ctx.Err() != nil {
			return
		}
		failures++
		f.Interrupted(err)
	}
}

// follow fetches over conn until it fails; fetched reports whether at least
// one fetch succeeded.
func (c *Client) follow(ctx context.Context, conn *kafkago.Conn, topic string, partition int, opts FollowOptions, f Follower) (fetched bool, err error) {
	// A blocked fetch only returns early when its connection closes.
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()
	for {
		from := f.Position()
		if _, err := conn.Seek(from, kafkago.SeekAbsolute|kafkago.SeekDontCheck); err != nil {
			return fetched, fmt.Errorf("seek to %d: %w", from, err)
		}
		asked := time.Now()
		if err := conn.SetDeadline(asked.Add(opts.PollWait + followFetchSlack)); err != nil {
			return fetched, fmt.Errorf("set deadline: %w", err)
		}
		batch := conn.ReadBatchWith(kafkago.ReadBatchConfig{MinBytes: 1, MaxBytes: followFetchMaxBytes, MaxWait: opts.PollWait})
		fetchErr := batch.Err() // set when the fetch itself failed, before any message
		hwm := batch.HighWaterMark()
		var recs []TableRecord
		var end error
		for {
			m, err := batch.ReadMessage()
			if err != nil {
				end = err
				break
			}
			if m.Offset >= from {
				recs = append(recs, TableRecord{Key: m.Key, Value: m.Value, Offset: m.Offset, Time: m.Time})
			}
		}
		after := batch.Offset()
		_ = batch.Close() // its error is end, which we already have

		var kerr kafkago.Error
		// An answer with nothing new comes back as RequestTimedOut with the
		// high-water mark equal to the fetch position: we are at the end.
		atEnd := fetchErr == nil && len(recs) == 0 && hwm == from && errors.As(end, &kerr) && kerr == kafkago.RequestTimedOut
		complete := atEnd || errors.Is(end, io.EOF)
		if !complete && len(recs) == 0 {
			switch {
			case errors.As(end, &kerr) && kerr == kafkago.OffsetOutOfRange:
				if err := c.outOfRange(ctx, topic, partition, from, f); err != nil {
					return fetched, err
				}
				continue
			case errors.As(end, &kerr) && kerr == kafkago.RequestTimedOut:
				// The broker gave up waiting; the next fetch asks again.
				continue
			default:
				return fetched, fmt.Errorf("fetch %s/%d at %d: %w", topic, partition, from, end)
			}
		}
		fetched = true
		if err := f.Fetched(from, recs, complete, after, hwm, asked); err != nil {
			return fetched, err
		}
	}
}

// outOfRange asks for the partition's first and end offsets and lets the
// follower move.
func (c *Client) outOfRange(ctx context.Context, topic string, partition int, at int64, f Follower) error {
	qctx, cancel := context.WithTimeout(ctx, leaderDialTimeout)
	defer cancel()
	first, err := c.PartitionOffset(qctx, topic, partition, kafkago.FirstOffset)
	if err != nil {
		return fmt.Errorf("offset %d out of range: %w", at, err)
	}
	last, err := c.PartitionOffset(qctx, topic, partition, kafkago.LastOffset)
	if err != nil {
		return fmt.Errorf("offset %d out of range: %w", at, err)
	}
	return f.OutOfRange(at, first, last)
}

// PartitionOffset asks the partition's leader for its first
// (kafkago.FirstOffset) or end (kafkago.LastOffset) offset.
func (c *Client) PartitionOffset(ctx context.Context, topic string, partition int, which int64) (int64, error) {
	resp, err := c.Admin().ListOffsets(ctx, &kafkago.ListOffsetsRequest{
		Topics: map[string][]kafkago.OffsetRequest{topic: {{Partition: partition, Timestamp: which}}},
	})
	if err != nil {
		return 0, fmt.Errorf("list offsets of %s/%d: %w", topic, partition, err)
	}
	for _, po := range resp.Topics[topic] {
		if po.Partition != partition {
			continue
		}
		if po.Error != nil {
			return 0, fmt.Errorf("list offsets of %s/%d: %w", topic, partition, po.Error)
		}
		if which == kafkago.FirstOffset {
			return po.FirstOffset, nil
		}
		return po.LastOffset, nil
	}
	return 0, fmt.Errorf("list offsets of %s: no answer for partition %d", topic, partition)
}
