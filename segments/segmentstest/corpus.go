// Package segmentstest is the corpus both segment engines must answer
// identically: a deterministic Mixpanel-style history of overlapping
// cohorts in two workspaces, written through a pipeline.Sink as the runner
// would, and questions whose answers the package computes on its own from
// the raw changes with plain maps, never through an engine.
//
// A test loads the corpus into its engine's store and runs it:
//
//	c := segmentstest.New()
//	if err := c.Write(ctx, sink); err != nil { ... }
//	segmentstest.Run(t, engine, c)
//
// Times are whole seconds: ClickHouse stores DateTime, and both engines
// compare event times with as_of instants truncated to the second.
package segmentstest

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/cohortsync/cohortsync/pipeline"
	"github.com/cohortsync/cohortsync/schemas"
	"github.com/cohortsync/cohortsync/segments"
)

// Corpus is the data and the questions.
type Corpus struct {
	// Workspace holds the three overlapping cohorts; OtherWorkspace reuses
	// some of their cohort and user ids with other members, names and
	// times, so any leak between workspaces changes an answer.
	Workspace, OtherWorkspace string
	// Now is the instant Cohorts is asked at.
	Now time.Time
	// Cases are the filter questions.
	Cases []Case
	// DataPoints are the data-point questions.
	DataPoints []DataPointCase

	batches []batch
	// writes are indexes into batches in the order Write sends them: a
	// redelivered batch appears twice.
	writes []int
}

// Case is one filter evaluated in a workspace, now or as of an instant.
type Case struct {
	Name      string
	Workspace string
	Filter    json.RawMessage
	AsOf      time.Time
	// ErrPath, when set, is the JSON pointer of the *segments.FilterError
	// the engine must answer with.
	ErrPath string

	expr expr
}

// DataPointCase is one data-point report.
type DataPointCase struct {
	Name      string
	Workspace string
	From, To  time.Time
	GroupBy   segments.GroupBy
}

// batch is one runner batch: resolved changes and cohort metadata.
type batch struct {
	changes []schemas.ResolvedChange
	cohorts []pipeline.Record
}

// Write sends the corpus to sink batch by batch, in order, redeliveries
// included, as the pipeline runner would.
func (c Corpus) Write(ctx context.Context, sink pipeline.Sink) error {
	for n, i := range c.writes {
		out := c.batches[i].output()
		err := sink.Write(ctx, out)
		out.Changes.Release()
		if err != nil {
			return fmt.Errorf("segmentstest: write %d (batch %d) to %s: %w", n, i, sink.Name(), err)
		}
	}
	return nil
}

// output builds the batch anew: every call gives the same Output, as a
// redelivery from Kafka would.
func (b batch) output() *pipeline.Output {
	cb := schemas.NewChangesBuilder(nil)
	defer cb.Release()
	out := &pipeline.Output{Rejections: pipeline.NewRejections(), Positions: map[int]pipeline.OffsetRange{}}
	widen := func(p int, off int64) {
		r, ok := out.Positions[p]
		if !ok {
			r = pipeline.OffsetRange{First: off, Last: off}
		}
		r.First, r.Last = min(r.First, off), max(r.Last, off)
		out.Positions[p] = r
	}
	for _, ch := range b.changes {
		cb.Append(ch)
		widen(int(ch.Partition), ch.Offset)
	}
	for _, r := range b.cohorts {
		widen(r.Partition, r.Offset)
	}
	out.Changes = cb.NewRecordBatch()
	out.Cohorts = append([]pipeline.Record(nil), b.cohorts...)
	return out
}
