package backfill

import (
	"context"
	"errors"
	"fmt"

	"github.com/cohortsync/cohortsync/kafka"
	"github.com/cohortsync/cohortsync/pipeline"
	"github.com/cohortsync/cohortsync/schemas"
)

// Lander lands a batch of records and returns once they are durable;
// *kafka.Lander is one.
type Lander interface {
	LandBatch(ctx context.Context, recs []kafka.KeyValue) error
}

// Local counts a batch with the stream's own stages, then lands it on the
// landing topic itself.
type Local struct {
	Lander Lander
	// Transforms and Resolver are the stream's stages (retention, then
	// identity resolution); a nil Resolver counts nothing.
	Transforms []pipeline.Transform
	Resolver   pipeline.Resolver
	// MaxRecordBytes is the largest encoded envelope the topic takes.
	MaxRecordBytes int
	// CaughtUp, when set, returns once the Resolver sees every identity
	// landed before the call; each batch waits for it before it is counted.
	CaughtUp func(ctx context.Context) error
}

// Land implements Destination.
func (l *Local) Land(ctx context.Context, envs []schemas.Envelope, dryRun bool) (Outcome, error) {
	var out Outcome
	kvs := make([]kafka.KeyValue, 0, len(envs))
	recs := make([]pipeline.Record, len(envs))
	for i, e := range envs {
		if err := e.Validate(); err != nil {
			return out, fmt.Errorf("record %s: %w", e.RecordID, err)
		}
		recs[i] = pipeline.Record{Partition: -1, Offset: int64(i), Envelope: e}
		val, err := schemas.Encode(e)
		if err != nil {
			return out, fmt.Errorf("encode record %s: %w", e.RecordID, err)
		}
		if l.MaxRecordBytes > 0 && len(val) > l.MaxRecordBytes {
			return out, fmt.Errorf("record %s is %d bytes, more than the topic's %d: split it", e.RecordID, len(val), l.MaxRecordBytes)
		}
		kvs = append(kvs, kafka.KeyValue{Key: e.PartitionKey(), Value: val})
	}
	if err := l.count(ctx, recs, &out); err != nil {
		return out, err
	}
	if dryRun {
		out.Landed = int64(len(kvs))
		return out, nil
	}
	if l.Lander == nil {
		return out, errors.New("no lander")
	}
	if err := l.Lander.LandBatch(ctx, kvs); err != nil {
		return out, err
	}
	out.Landed = int64(len(kvs))
	return out, nil
}

// count runs the stream's stages over recs.
func (l *Local) count(ctx context.Context, recs []pipeline.Record, out *Outcome) error {
	out.Dropped, out.DroppedRecords = map[string]int64{}, map[string]int64{}
	if l.Resolver == nil {
		return nil
	}
	if l.CaughtUp != nil {
		if err := l.CaughtUp(ctx); err != nil {
			return fmt.Errorf("identities: %w", err)
		}
	}
	rej := pipeline.NewRejections()
	kept := recs
	for _, t := range l.Transforms {
		var err error
		if kept, err = t.Apply(ctx, kept, rej); err != nil {
			return fmt.Errorf("%s: %w", t.Name(), err)
		}
	}
	if len(kept) > 0 {
		b, err := l.Resolver.Resolve(ctx, kept, rej)
		if b != nil {
			// One row per accepted id: one billable assignment.
			out.DataPoints += b.NumRows()
			b.Release()
		}
		if err != nil {
			return fmt.Errorf("resolve identities: %w", err)
		}
	}
	for _, row := range rej.Rows() {
		out.Dropped[row.Reason] += row.IDs
		if row.Records > 0 {
			out.DroppedRecords[row.Reason] += row.Records
		}
	}
	return nil
}
