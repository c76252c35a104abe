package pipeline

import (
	"context"
	"errors"

	"github.com/apache/arrow-go/v18/arrow"
)

// ErrClosed is returned by Source.Next once the source is closed.
var ErrClosed = errors.New("pipeline: source closed")

// Decoder turns a landed message into a record. An error means the message
// can never be decoded (bad bytes, an unknown schema version): the runner
// sends it to the dead letter and goes on.
type Decoder interface {
	Decode(Message) (Record, error)
}

// Resolver turns the records that survived the transforms into resolved
// changes with the columns of schemas.ChangesSchema. Ids it refuses are
// counted in rej. The caller releases the returned batch. An error means
// nothing was decided (rej untouched) and the call may be repeated.
type Resolver interface {
	Resolve(ctx context.Context, recs []Record, rej *Rejections) (arrow.RecordBatch, error)
}

// DeadLetter keeps a message the stream cannot process, with a short reason
// and the error, and returns only once that is durable: the runner acks the
// message right after.
type DeadLetter interface {
	Send(ctx context.Context, msg Message, reason string, err error) error
}

// SourceStats is what a source can tell about its progress.
type SourceStats struct {
	// Partitions is how many partitions the source currently owns.
	Partitions int
	// Lag is the sum over owned partitions of high watermark minus committed
	// offset, as of the latest fetch or commit.
	Lag int64
	// InflightBytes are fetched but not yet acked (buffered or handed out).
	InflightBytes int64
}

// StatsSource is a Source that reports SourceStats; the runner includes them
// in its Status.
type StatsSource interface {
	Source
	Stats() SourceStats
}

// merge adds o's counts to r.
func (r *Rejections) merge(o *Rejections) {
	for k, n := range o.ids {
		r.ids[k] += n
	}
	for k, n := range o.records {
		r.records[k] += n
	}
}

// recordsByReason sums whole-record rejections per reason.
func (r *Rejections) recordsByReason() map[string]int64 {
	out := map[string]int64{}
	for k, n := range r.records {
		out[k.Reason] += n
	}
	return out
}

// idsByReason sums refused ids per reason.
func (r *Rejections) idsByReason() map[string]int64 {
	out := map[string]int64{}
	for k, n := range r.ids {
		out[k.Reason] += n
	}
	return out
}
