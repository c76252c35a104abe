// Package backfill lands envelopes read from files (or a Mixpanel plan
// written as a file) on the landing topic, where the stream's own consumers
// apply the same transforms and sinks as to partner pushes.
//
// A run is safe to repeat: inputs yield deterministic record ids, so a record
// landed twice is a redelivery that the sinks deduplicate, not new data. A run
// is resumable: after every landed batch a checkpoint records how many
// envelopes of which input are landed, and a new run of the same inputs skips
// them. Before landing, the stream's retention and identity stages run here
// over each batch, so the summary (and --dry-run) say what the stream will
// accept and drop, computed by the same code.
package backfill

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"

	"github.com/cohortsync/cohortsync/connectors/kafka"
	"github.com/cohortsync/cohortsync/pipeline"
	"github.com/cohortsync/cohortsync/schemas"
)

// Item is one envelope read from an input, with the first input line it came from.
type Item struct {
	Envelope schemas.Envelope
	Line     int64
}

// Input yields envelopes until io.EOF. An error for which IsBadInput is
// true is one bad line: it is counted and reported, and Next is called again.
type Input interface {
	Next(ctx context.Context) (Item, error)
	Progress() (done, total int64)
	Close() error
}

// Source names one input of a run and opens it.
type Source struct {
	// Name identifies the input in checkpoints and messages (a path).
	Name string
	// Fingerprint changes when the input's content may have changed (size
	// and modification time for a file); a checkpoint of another
	// fingerprint is not resumed.
	Fingerprint string
	// Size is the input's size in bytes, for the progress total.
	Size int64
	Open func() (Input, error)
}

// Lander lands a batch of records and returns once they are durable.
type Lander interface {
	LandBatch(ctx context.Context, recs []kafka.KeyValue) error
}

// Options configure a Run.
type Options struct {
	Sources []Source
	// IsBadInput tells a bad line from a failure of the input itself.
	IsBadInput func(error) bool
	// Lander is where records go; nil only with DryRun.
	Lander Lander
	// Transforms and Resolver are the stream's own stages (retention, then
	// identity resolution), run here to count the assignments the stream
	// will accept and the ids it will drop, by reason. Nil Resolver: no counts.
	Transforms []pipeline.Transform
	Resolver   pipeline.Resolver
	// MaxRecordBytes is the largest encoded envelope the topic takes.
	MaxRecordBytes int
	// Checkpoint is the file recording progress; empty: no checkpoints.
	Checkpoint string
	// Restart ignores an existing checkpoint.
	Restart bool
	DryRun  bool
	// BatchRecords is how many envelopes are landed per batch (default 500).
	BatchRecords int
	// Progress, when set, is told about envelopes read and the input bytes.
	Progress Progress
	Logger   *slog.Logger
}

// Progress is told how many input bytes were consumed, against the total
// size of all sources; internal/progress implements it.
type Progress interface {
	Add(n int64)
	SetTotal(n int64)
}

// BadLine is one reported bad input line; Error names its line number.
type BadLine struct {
	Source string `json:"source"`
	Error  string `json:"error"`
}

// Summary is the outcome of a run, resumed parts included.
type Summary struct {
	RunID string `json:"run_id"`
	// Read counts envelopes read; BadLines the lines that made none.
	Read     int64 `json:"read"`
	BadLines int64 `json:"bad_lines"`
	// Landed counts records written to the landing topic (0 on a dry run);
	// Resumed those a previous, interrupted run had landed already.
	Landed  int64 `json:"landed"`
	Resumed int64 `json:"resumed"`
	// DataPoints counts the assignments the stream accepts (each is one
	// billable data point the first time its record lands); Dropped counts
	// refused ids by reason, as the stream counts them.
	DataPoints int64            `json:"data_points"`
	Dropped    map[string]int64 `json:"dropped"`
	// DroppedRecords counts whole records refused, by reason.
	DroppedRecords map[string]int64 `json:"dropped_records"`
	// Cohorts counts envelopes per workspace/partner/cohort.
	Cohorts map[string]int64 `json:"cohorts"`
	// Samples holds the first bad lines.
	Samples []BadLine `json:"bad_line_samples,omitempty"`
	DryRun  bool      `json:"dry_run"`
	// Complete is false while the run can still be resumed.
	Complete bool `json:"complete"`
}

const maxSamples = 20

// ErrInterrupted wraps the context's error when a run stops early; the
// checkpoint lets the next run resume.
var ErrInterrupted = errors.New("backfill interrupted")

// Run reads every source, applies the rules to count outcomes, lands the
// envelopes in batches and checkpoints after each batch.
func Run(ctx context.Context, opts Options) (Summary, error) {
	if opts.BatchRecords <= 0 {
		opts.BatchRecords = 500
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.IsBadInput == nil {
		opts.IsBadInput = func(error) bool { return false }
	}
	if opts.Lander == nil && !opts.DryRun {
		return Summary{}, errors.New("backfill: no lander")
	}
	cp, err := loadCheckpoint(opts)
	if err != nil {
		return Summary{}, err
	}
	r := &run{opts: opts, cp: cp}
	r.sum = cp.Summary
	r.sum.DryRun = opts.DryRun
	if opts.Progress != nil {
		var total int64
		for _, s := range opts.Sources {
			total += s.Size
		}
		opts.Progress.SetTotal(total)
	}
	for i, src := range opts.Sources {
		if i < cp.NextSource {
			continue
		}
		if err := r.source(ctx, i, src); err != nil {
			return r.sum, err
		}
	}
	r.sum.Complete = true
	r.cp.Summary = r.sum
	if err := r.saveCheckpoint(); err != nil {
		return r.sum, err
	}
	return r.sum, nil
}

type run struct {
	opts Options
	cp   checkpoint
	sum  Summary
}

func (r *run) source(ctx context.Context, idx int, src Source) (err error) {
	in, err := src.Open()
	if err != nil {
		return fmt.Errorf("backfill: open %s: %w", src.Name, err)
	}
	defer func() { err = errors.Join(err, in.Close()) }()
	skip := int64(0)
	if idx == r.cp.NextSource {
		skip = r.cp.Done
	}
	if skip > 0 {
		r.opts.Logger.Info("resuming", "source", src.Name, "envelopes_already_landed", skip)
	}
	var ordinal int64 // envelopes of this source read so far
	batch := make([]Item, 0, r.opts.BatchRecords)
	var lastBytes int64
	reportBytes := func() {
		if r.opts.Progress == nil {
			return
		}
		done, _ := in.Progress()
		r.opts.Progress.Add(done - lastBytes)
		lastBytes = done
	}
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		if err := r.land(ctx, src, batch); err != nil {
			return err
		}
		r.cp.NextSource, r.cp.Done = idx, ordinal
		r.cp.Summary = r.sum
		batch = batch[:0]
		reportBytes()
		return r.saveCheckpoint()
	}
	for {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("%w at %s envelope %d: %w", ErrInterrupted, src.Name, ordinal, err)
		}
		it, err := in.Next(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if r.opts.IsBadInput(err) {
				// Bad lines before the resume point were counted by the
				// run that read them first.
				if ordinal >= skip {
					r.badLine(src, err)
				}
				continue
			}
			if ctx.Err() != nil {
				return fmt.Errorf("%w at %s envelope %d: %w", ErrInterrupted, src.Name, ordinal, ctx.Err())
			}
			return fmt.Errorf("backfill: read %s: %w", src.Name, err)
		}
		ordinal++
		if ordinal <= skip {
			continue
		}
		batch = append(batch, it)
		if len(batch) >= r.opts.BatchRecords {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := flush(); err != nil {
		return err
	}
	reportBytes()
	r.cp.NextSource, r.cp.Done = idx+1, 0
	r.cp.Summary = r.sum
	return r.saveCheckpoint()
}

func (r *run) badLine(src Source, err error) {
	r.sum.BadLines++
	if len(r.sum.Samples) < maxSamples {
		r.sum.Samples = append(r.sum.Samples, BadLine{Source: src.Name, Error: err.Error()})
	}
	r.opts.Logger.Warn("bad input line", "source", src.Name, "err", err)
}

// land counts one batch with the rules, then writes it.
func (r *run) land(ctx context.Context, src Source, items []Item) error {
	recs := make([]pipeline.Record, len(items))
	kvs := make([]kafka.KeyValue, 0, len(items))
	if r.sum.Cohorts == nil {
		r.sum.Cohorts = map[string]int64{}
	}
	for i, it := range items {
		e := it.Envelope
		recs[i] = pipeline.Record{Partition: -1, Offset: int64(i), Envelope: e}
		r.sum.Cohorts[e.Workspace+"/"+e.Partner+"/"+e.CohortID()]++
		if r.opts.DryRun {
			continue
		}
		val, err := schemas.Encode(e)
		if err != nil {
			return fmt.Errorf("backfill: %s line %d: encode record %s: %w", src.Name, it.Line, e.RecordID, err)
		}
		if r.opts.MaxRecordBytes > 0 && len(val) > r.opts.MaxRecordBytes {
			return fmt.Errorf("backfill: %s line %d: record %s is %d bytes, more than the topic's %d: split it", src.Name, it.Line, e.RecordID, len(val), r.opts.MaxRecordBytes)
		}
		kvs = append(kvs, kafka.KeyValue{Key: e.PartitionKey(), Value: val})
	}
	r.sum.Read += int64(len(items))
	if err := r.count(ctx, recs); err != nil {
		return err
	}
	if r.opts.DryRun {
		return nil
	}
	if err := r.opts.Lander.LandBatch(ctx, kvs); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("%w while landing: %w", ErrInterrupted, err)
		}
		return fmt.Errorf("backfill: land %d records from %s: %w", len(kvs), src.Name, err)
	}
	r.sum.Landed += int64(len(kvs))
	return nil
}

// count runs the stream's stages over recs and adds their outcome to the summary.
func (r *run) count(ctx context.Context, recs []pipeline.Record) error {
	if r.opts.Resolver == nil {
		return nil
	}
	rej := pipeline.NewRejections()
	kept := recs
	for _, t := range r.opts.Transforms {
		var err error
		if kept, err = t.Apply(ctx, kept, rej); err != nil {
			return fmt.Errorf("backfill: %s: %w", t.Name(), err)
		}
	}
	if len(kept) > 0 {
		out, err := r.opts.Resolver.Resolve(ctx, kept, rej)
		if out != nil {
			// One row per accepted id: one billable assignment.
			r.sum.DataPoints += out.NumRows()
			out.Release()
		}
		if err != nil {
			return fmt.Errorf("backfill: resolve identities: %w", err)
		}
	}
	if r.sum.Dropped == nil {
		r.sum.Dropped, r.sum.DroppedRecords = map[string]int64{}, map[string]int64{}
	}
	for _, row := range rej.Rows() {
		r.sum.Dropped[row.Reason] += row.IDs
		if row.Records > 0 {
			r.sum.DroppedRecords[row.Reason] += row.Records
		}
	}
	return nil
}

// Reasons lists the drop reasons of s in a stable order.
func (s Summary) Reasons() []string { return slices.Sorted(maps.Keys(s.Dropped)) }
