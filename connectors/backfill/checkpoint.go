package backfill

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/cohortsync/cohortsync/internal/atomicfile"
)

// Checkpoint is the progress of a run, rewritten after every landed batch,
// in the one format every kind of backfill uses under DATA_DIR/backfill/.
type Checkpoint struct {
	RunID string `json:"run_id"`
	// NextSource is the index of the source being read; Done counts its
	// envelopes already landed.
	NextSource int   `json:"next_source"`
	Done       int64 `json:"done"`
	// Offsets is, for a replay of the landed topic (--from kafka), the next
	// offset per partition whose batch not every sink acknowledged yet.
	Offsets map[int]int64 `json:"offsets,omitempty"`
	Summary Summary       `json:"summary"`
}

// ReadCheckpoint reads the checkpoint at path; found is false when there is
// none. A file that does not parse is an error that names --restart.
func ReadCheckpoint(path string) (cp Checkpoint, found bool, err error) {
	raw, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return Checkpoint{}, false, nil
	}
	if err != nil {
		return Checkpoint{}, false, fmt.Errorf("backfill: read checkpoint: %w", err)
	}
	if err := json.Unmarshal(raw, &cp); err != nil {
		return Checkpoint{}, false, fmt.Errorf("backfill: checkpoint %s is damaged (start over with --restart): %w", path, err)
	}
	return cp, true, nil
}

// WriteCheckpoint replaces the checkpoint at path atomically.
func WriteCheckpoint(path string, cp Checkpoint) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("backfill: checkpoint dir: %w", err)
	}
	if err := atomicfile.WriteJSON(path, cp); err != nil {
		return fmt.Errorf("backfill: checkpoint: %w", err)
	}
	return nil
}

// RunID names a run after what it reads: the same sources (same content
// fingerprints) in the same order and the same settings make the same id,
// which is how a new invocation finds the checkpoint of an interrupted one.
func RunID(kind string, settings []string, sources []Source) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00", kind, strings.Join(settings, "\x00"))
	for _, s := range sources {
		fmt.Fprintf(h, "%s\x00%s\x00", s.Name, s.Fingerprint)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// CheckpointPath is where the checkpoint of run id lives under dataDir.
func CheckpointPath(dataDir, id string) string {
	return filepath.Join(dataDir, "backfill", id+".json")
}

// loadCheckpoint returns the checkpoint to resume, the checkpoint of a run
// that finished (Summary.Complete: Run lands nothing then), or a fresh one.
// Restart and DryRun always get a fresh one.
func loadCheckpoint(opts Options) (Checkpoint, error) {
	id := strings.TrimSuffix(filepath.Base(opts.Checkpoint), ".json")
	fresh := Checkpoint{RunID: id, Summary: Summary{RunID: id}}
	if opts.Checkpoint == "" || opts.Restart || opts.DryRun {
		return fresh, nil
	}
	cp, found, err := ReadCheckpoint(opts.Checkpoint)
	if err != nil {
		return Checkpoint{}, err
	}
	if !found || (!cp.Summary.Complete && cp.NextSource > len(opts.Sources)) {
		return fresh, nil
	}
	if cp.Summary.Complete {
		return cp, nil
	}
	cp.Summary.Resumed = cp.Summary.Landed
	return cp, nil
}

// Resumable reports whether path holds the checkpoint of an unfinished run.
func Resumable(path string) bool {
	cp, found, err := ReadCheckpoint(path)
	return err == nil && found && !cp.Summary.Complete
}

// saveCheckpoint replaces the checkpoint file atomically.
func (r *run) saveCheckpoint() error {
	if r.opts.Checkpoint == "" || r.opts.DryRun {
		return nil
	}
	return WriteCheckpoint(r.opts.Checkpoint, r.cp)
}
