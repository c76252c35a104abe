package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"time"

	"github.com/cohortsync/cohortsync/connectors/backfill"
	"github.com/cohortsync/cohortsync/internal/atomicfile"
	"github.com/cohortsync/cohortsync/internal/progress"
	"github.com/cohortsync/cohortsync/kafka"
	"github.com/cohortsync/cohortsync/pipeline"
	"github.com/cohortsync/cohortsync/service"
)

// replayCheckpoint is the progress of a replay: per partition, the next
// offset whose batch was not yet acked by every sink.
type replayCheckpoint struct {
	Next     map[int]int64 `json:"next"`
	Complete bool          `json:"complete"`
}

// replayKafka sends the landed records of [--since, --until) through the
// stream's transforms and sinks, reading partitions positioned by time: the
// live group's offsets are never touched. Versions come from offsets and data
// points are keyed by record id, so records the stream already applied
// change nothing.
func (b *backfiller) replayKafka(ctx context.Context) error {
	since, err := time.Parse(time.RFC3339Nano, b.f.since)
	if err != nil {
		return &usageError{fmt.Errorf("--since %q: want an RFC 3339 time: %w", b.f.since, err)}
	}
	var until time.Time
	if b.f.until != "" {
		if until, err = time.Parse(time.RFC3339Nano, b.f.until); err != nil {
			return &usageError{fmt.Errorf("--until %q: want an RFC 3339 time: %w", b.f.until, err)}
		}
		if !until.After(since) {
			return &usageError{fmt.Errorf("--until %s is not after --since %s", b.f.until, b.f.since)}
		}
	}
	if err := b.openCore(ctx); err != nil {
		return err
	}
	topic := b.core.Kafka.Config().Topics.Exports
	runID := backfill.RunID("kafka", []string{b.f.since, b.f.until}, nil)
	cpPath := backfill.CheckpointPath(b.cfg.DataDir, runID)
	var resume map[int]int64
	if !b.f.restart && !b.f.dryRun {
		if raw, err := os.ReadFile(cpPath); err == nil {
			var cp replayCheckpoint
			if err := json.Unmarshal(raw, &cp); err != nil {
				return fmt.Errorf("backfill: checkpoint %s is damaged (start over with --restart): %w", cpPath, err)
			}
			if !cp.Complete {
				resume = cp.Next
				b.log.Warn("resuming an interrupted replay", "checkpoint", cpPath)
			}
		}
	}
	src, err := b.core.Kafka.NewRangeSource(ctx, topic, kafka.RangeOptions{Since: since, Until: until, Resume: resume}, b.reg, b.log)
	if err != nil {
		return err
	}
	sum := backfill.Summary{RunID: runID, DryRun: b.f.dryRun}
	sum.Read = src.Total()
	if b.f.dryRun {
		if err := src.Close(); err != nil {
			return err
		}
		fmt.Fprintf(b.c.stderr, "%d records of %s in the window would be replayed through the transforms and sinks\n", src.Total(), topic)
		return b.printSummary(sum, cpPath)
	}
	start := src.Done()
	st, err := service.StartStream(ctx, b.cfg, b.core, b.log, b.reg, service.StreamOptions{Source: src})
	if err != nil {
		_ = src.Close()
		return err
	}
	b.stream = st
	rep := progress.New(b.c.stderr, progress.Options{Label: "replay " + topic, Unit: "records", Total: src.Total(), Logger: b.progLog})
	save := func(complete bool) error {
		if err := os.MkdirAll(filepath.Dir(cpPath), 0o700); err != nil {
			return fmt.Errorf("backfill: checkpoint dir: %w", err)
		}
		if err := atomicfile.WriteJSON(cpPath, replayCheckpoint{Next: src.Done(), Complete: complete}); err != nil {
			return fmt.Errorf("backfill: checkpoint: %w", err)
		}
		return nil
	}
	var reported int64
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var runErr error
loop:
	for {
		select {
		case <-st.Done():
			runErr = st.Err()
			break loop
		case <-ctx.Done():
			runErr = fmt.Errorf("%w: %w", backfill.ErrInterrupted, ctx.Err())
			break loop
		case <-tick.C:
			done := advanced(start, src.Done())
			rep.Add(done - reported)
			reported = done
			if err := save(false); err != nil {
				runErr = err
				break loop
			}
		}
	}
	// Stop drains what is in flight; only acked batches move Done and
	// count in the runner's totals, read once it has stopped.
	runErr = errors.Join(runErr, st.Stop())
	outcomeFromTotals(st.Totals(), &sum)
	b.stream = nil
	rep.Add(advanced(start, src.Done()) - reported)
	rep.Finish()
	complete := runErr == nil
	if err := save(complete); err != nil {
		runErr = errors.Join(runErr, err)
	}
	sum.Complete = complete
	if err := b.printSummary(sum, cpPath); err != nil {
		return errors.Join(runErr, err)
	}
	if errors.Is(runErr, backfill.ErrInterrupted) {
		return fmt.Errorf("%w\nrun the same command again to resume from %s", runErr, cpPath)
	}
	return runErr
}

// advanced sums the offsets each partition moved past its start.
func advanced(start, now map[int]int64) int64 {
	var n int64
	for p, off := range now {
		n += max(off-start[p], 0)
	}
	return n
}

// outcomeFromTotals copies what the runner made durable into the summary:
// accepted ids (the resolver's change rows), refused ids by reason, and whole
// records dropped by a transform or sent to the dead letter, by reason.
func outcomeFromTotals(t pipeline.Totals, sum *backfill.Summary) {
	sum.DataPoints = t.Changes
	sum.Dropped, sum.DroppedRecords = map[string]int64{}, map[string]int64{}
	maps.Copy(sum.Dropped, t.RejectedIDs)
	maps.Copy(sum.DroppedRecords, t.DroppedRecords)
	for reason, n := range t.DeadLettered {
		sum.DroppedRecords[reason] += n
	}
}
