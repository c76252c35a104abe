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

// Outcome is what landing a batch did, counted with the stream's own stages.
type Outcome struct {
	// Landed counts records written, or on a dry run those that would be.
	Landed int64 `json:"landed"`
	// DataPoints counts the assignments the stream accepts: each is one
	// billable data point the first time its record lands.
	DataPoints int64 `json:"data_points"`
	// Dropped counts refused ids by reason, DroppedRecords whole records.
	Dropped        map[string]int64 `json:"dropped"`
	DroppedRecords map[string]int64 `json:"dropped_records"`
}

func (o *Outcome) add(b Outcome) {
	o.Landed += b.Landed
	o.DataPoints += b.DataPoints
	if o.Dropped == nil {
		o.Dropped, o.DroppedRecords = map[string]int64{}, map[string]int64{}
	}
	for k, v := range b.Dropped {
		o.Dropped[k] += v
	}
	for k, v := range b.DroppedRecords {
		o.DroppedRecords[k] += v
	}
}

// Destination lands a batch of envelopes and says what the stream will make
// of them: Local writes to Kafka itself, Remote goes through a running server.
type Destination interface {
	Land(ctx context.Context, envs []schemas.Envelope, dryRun bool) (Outcome, error)
}

// Options configure a Run.
type Options struct {
	Sources []Source
	// IsBadInput tells a bad line from a failure of the input itself.
	IsBadInput func(error) bool
	// Destination is where envelopes go.
	Destination Destination
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
// size of all sources, and how many records were landed (or counted, on a
// dry run); internal/progress implements it.
type Progress interface {
	Add(n int64)
	SetTotal(n int64)
	AddRecords(n int64)
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
	Outcome
	// Replay says the run replayed landed records (--from kafka). Replayed
	// then counts the accepted assignments it sent through the sinks, those
	// the stream had applied before included; DataPoints is what the replay
	// added to the billable count, and Transitions the membership changes
	// it made.
	Replay      bool  `json:"replay,omitempty"`
	Replayed    int64 `json:"replayed,omitempty"`
	Transitions int64 `json:"transitions,omitempty"`
	// Resumed counts the records a previous, interrupted run had landed.
	Resumed int64 `json:"resumed"`
	// Cohorts counts envelopes per workspace/partner/cohort.
	Cohorts map[string]int64 `json:"cohorts"`
	// Samples holds the first bad lines.
	Samples []BadLine `json:"bad_line_samples,omitempty"`
	DryRun  bool      `json:"dry_run"`
	// Complete is false while the run can still be resumed.
	Complete bool `json:"complete"`
	// AlreadyComplete says this invocation landed nothing: the same run
	// (same inputs, same settings) had finished before, and the figures are
	// that run's. Options.Restart lands it again.
	AlreadyComplete bool `json:"already_complete,omitempty"`
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
	if opts.Destination == nil {
		return Summary{}, errors.New("backfill: no destination")
	}
	cp, err := loadCheckpoint(opts)
	if err != nil {
		return Summary{}, err
	}
	if cp.Summary.Complete {
		// Finished before: say so rather than land everything again.
		cp.Summary.AlreadyComplete = true
		opts.Logger.Info("backfill already complete; nothing landed (restart to land it again)", "run_id", cp.RunID)
		return cp.Summary, nil
	}
	r := &run{opts: opts, cp: cp}
	r.cp.Summary.DryRun = opts.DryRun
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
			return r.cp.Summary, err
		}
	}
	r.cp.Summary.Complete = true
	if err := r.saveCheckpoint(); err != nil {
		return r.cp.Summary, err
	}
	return r.cp.Summary, nil
}

// run is one Run; its checkpoint holds the summary so far, saved with the
// position after every landed batch.
type run struct {
	opts Options
	cp   Checkpoint
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
	return r.saveCheckpoint()
}

func (r *run) badLine(src Source, err error) {
	r.cp.Summary.BadLines++
	if len(r.cp.Summary.Samples) < maxSamples {
		r.cp.Summary.Samples = append(r.cp.Summary.Samples, BadLine{Source: src.Name, Error: err.Error()})
	}
	r.opts.Logger.Warn("bad input line", "source", src.Name, "err", err)
}

// land hands one batch to the destination and adds its outcome.
func (r *run) land(ctx context.Context, src Source, items []Item) error {
	envs := make([]schemas.Envelope, len(items))
	if r.cp.Summary.Cohorts == nil {
		r.cp.Summary.Cohorts = map[string]int64{}
	}
	for i, it := range items {
		envs[i] = it.Envelope
		r.cp.Summary.Cohorts[it.Envelope.Workspace+"/"+it.Envelope.Partner+"/"+it.Envelope.CohortID()]++
	}
	out, err := r.opts.Destination.Land(ctx, envs, r.opts.DryRun)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("%w while landing: %w", ErrInterrupted, err)
		}
		return fmt.Errorf("backfill: land %d records from %s (lines %d-%d): %w", len(items), src.Name, items[0].Line, items[len(items)-1].Line, err)
	}
	r.cp.Summary.Read += int64(len(items))
	r.cp.Summary.add(out)
	if r.opts.Progress != nil {
		r.opts.Progress.AddRecords(int64(len(items)))
	}
	return nil
}
