// Package retention drops landed records whose event time is before the
// retention cutoff (docs/ARCHITECTURE.md, Import rules), counting every one of them and its ids under
// pipeline.ReasonRetention so that nothing disappears unaccounted.
package retention

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cohortsync/cohortsync/pipeline"
	"github.com/cohortsync/cohortsync/schemas"
)

// Filter is the retention transform.
type Filter struct {
	cutoff time.Time
}

var _ pipeline.Transform = (*Filter)(nil)

// New returns a Filter for cfg.
func New(cfg Config) (*Filter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("retention: %w", err)
	}
	return &Filter{cutoff: cfg.Cutoff}, nil
}

// Name is the stage name used in metrics and logs.
func (*Filter) Name() string { return "retention" }

// Cutoff is the instant before which records are dropped.
func (f *Filter) Cutoff() time.Time { return f.cutoff }

// Apply keeps the records whose event time is at or after the cutoff, in
// order. recs is never modified: when nothing is dropped it is returned as
// is, which keeps the common case free of allocations.
func (f *Filter) Apply(ctx context.Context, recs []pipeline.Record, rej *pipeline.Rejections) ([]pipeline.Record, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("retention: %w", err)
	}
	if rej == nil {
		return nil, errors.New("retention: Apply needs a Rejections collector")
	}
	var kept []pipeline.Record
	for i := range recs {
		e := &recs[i].Envelope
		if !e.EventTime.Before(f.cutoff) {
			if kept != nil {
				kept = append(kept, recs[i])
			}
			continue
		}
		if kept == nil {
			kept = make([]pipeline.Record, i, len(recs))
			copy(kept, recs[:i])
		}
		k := pipeline.RejectionKey{
			Workspace: e.Workspace,
			Partner:   e.Partner,
			CohortID:  e.CohortID(),
			RecordID:  e.RecordID,
			Reason:    pipeline.ReasonRetention,
		}
		rej.AddRecord(k)
		rej.AddIDs(k, IDCount(*e))
	}
	if kept == nil {
		return recs, nil
	}
	return kept, nil
}

// IDCount is the number of ids an envelope carries: user ids, device ids and
// aliases over all its changes. Cohort metadata carries none.
func IDCount(e schemas.Envelope) int64 {
	var changes []schemas.Change
	switch p := e.Payload.(type) {
	case schemas.CohortChangesPayload:
		changes = p.Changes
	case *schemas.CohortChangesPayload:
		if p != nil {
			changes = p.Changes
		}
	}
	var n int64
	for _, c := range changes {
		n += int64(len(c.UserIDs) + len(c.DeviceIDs) + len(c.Aliases))
	}
	return n
}
