// Package pipeline holds the contracts between the stages of the stream and the
// runner that drives them. It knows nothing of HTTP, ClickHouse or Parquet.
//
// The flow of one batch:
//
//	Source.Next → decode (bad bytes → dead letter) → Transforms on Records
//	→ Resolver (Records → resolved changes, columnar) → every Sink.Write
//	→ Batch.Ack(nil) → the source commits offsets
//
// A stage never drops data silently: a record is either passed on, counted in
// Rejections under a named reason, or sent to the dead-letter topic.
package pipeline

import (
	"context"
	"errors"
	"time"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/cohortsync/cohortsync/schemas"
)

// Message is one record as read from the landing topic.
type Message struct {
	Topic     string
	Partition int
	Offset    int64
	Key       []byte
	Value     []byte
	Time      time.Time
}

// AckFunc settles a batch: nil means every sink has made the batch durable and
// its offsets may be committed; an error means nothing is committed and the
// messages are delivered again.
type AckFunc func(ctx context.Context, err error) error

// Batch is what a Source hands out: messages plus the one function that settles them.
type Batch struct {
	Messages []Message
	Ack      AckFunc
}

// Source yields batches until ctx ends or Close is called.
type Source interface {
	Next(ctx context.Context) (Batch, error)
	Close() error
}

// Record is a decoded envelope with the position it was read from.
type Record struct {
	Partition int
	Offset    int64
	Envelope  schemas.Envelope
}

// Transform returns the records it keeps, in order. A record it does not keep
// must be counted in rej under a reason; returning an empty slice and a nil
// error means "all filtered", and the batch is still acked.
type Transform interface {
	Name() string
	Apply(ctx context.Context, recs []Record, rej *Rejections) ([]Record, error)
}

// Output is what sinks receive for one batch.
type Output struct {
	// Changes holds one row per resolved id, with the columns of
	// schemas.ChangesSchema. It may have zero rows. Sinks must not Release it.
	Changes arrow.RecordBatch
	// Cohorts are the cohort metadata records of the batch, in offset order.
	Cohorts []Record
	// Rejections are the ids and records the transforms refused, by reason.
	Rejections *Rejections
	// Positions are the source positions the batch covers, per partition;
	// sinks use them to name files and to tell a redelivery, by offset.
	Positions map[int]OffsetRange
}

// OffsetRange is an inclusive range of offsets of one partition.
type OffsetRange struct{ First, Last int64 }

// ErrSinkClosed is what a Sink's Write returns (wrapped) after Close.
var ErrSinkClosed = errors.New("pipeline: sink closed")

// Sink writes one batch and returns only when it is durable. The contract,
// which sinks/sinktest checks for every implementation: writing the same
// Output again changes nothing (redelivery is idempotent); what Write
// returned nil for is in the store before Close; Write after Close fails
// with an error matching ErrSinkClosed, promptly.
type Sink interface {
	Name() string
	Write(ctx context.Context, out *Output) error
	Close() error
}
