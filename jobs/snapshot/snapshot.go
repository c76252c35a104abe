// Package snapshot writes the full member list of every cohort that changed
// as Parquet (sinks/parquet's snapshots/ folder), on a timer and on demand.
// The lists come from the state of record: the embedded store, or ClickHouse
// when it is configured.
package snapshot

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	chsink "github.com/cohortsync/cohortsync/sinks/clickhouse"
	"github.com/cohortsync/cohortsync/sinks/parquet"
	"github.com/cohortsync/cohortsync/sinks/state"
)

// Cohort is a cohort and the highest version applied to it.
type Cohort struct {
	Key     parquet.CohortKey
	Version uint64
}

// Source is the state of record, seen from snapshots.
type Source interface {
	// Cohorts lists every cohort with its current version.
	Cohorts(ctx context.Context) ([]Cohort, error)
	// Members calls fn for every current member in user id order and
	// returns the version the list reflects.
	Members(ctx context.Context, k parquet.CohortKey, fn func(userID string) error) (uint64, error)
}

// FromState reads snapshots from the embedded state store.
func FromState(st *state.Store) Source { return stateSource{st} }

type stateSource struct{ st *state.Store }

func (s stateSource) Cohorts(ctx context.Context) ([]Cohort, error) {
	cvs, err := s.st.CohortVersions(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Cohort, len(cvs))
	for i, c := range cvs {
		out[i] = Cohort{parquet.CohortKey{Workspace: c.Workspace, Partner: c.Partner, CohortID: c.CohortID}, c.Version}
	}
	return out, nil
}

func (s stateSource) Members(ctx context.Context, k parquet.CohortKey, fn func(string) error) (uint64, error) {
	return s.st.SnapshotMembers(ctx, k.Workspace, k.Partner, k.CohortID, fn)
}

// FromClickHouse reads snapshots from ClickHouse.
func FromClickHouse(ch *chsink.Sink) Source { return chSource{ch} }

type chSource struct{ ch *chsink.Sink }

func (s chSource) Cohorts(ctx context.Context) ([]Cohort, error) {
	cvs, err := s.ch.CohortVersions(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Cohort, len(cvs))
	for i, c := range cvs {
		out[i] = Cohort{parquet.CohortKey{Workspace: c.Workspace, Partner: c.Partner, CohortID: c.CohortID}, c.Version}
	}
	return out, nil
}

func (s chSource) Members(ctx context.Context, k parquet.CohortKey, fn func(string) error) (uint64, error) {
	return s.ch.SnapshotMembers(ctx, k.Workspace, k.Partner, k.CohortID, fn)
}

// Config holds the snapshot job's settings; service copies them from the
// configuration's snapshots section (config.Snapshots).
type Config struct {
	// Interval between two rounds of snapshots of the changed cohorts; a
	// negative interval turns the timer off (on-demand snapshots still work).
	Interval time.Duration `yaml:"interval"`
}

// DefaultConfig snapshots every 15 minutes, the period of a dynamic sync.
func DefaultConfig() Config { return Config{Interval: 15 * time.Minute} }

// Validate reports the problems of c, each naming its field.
func (c Config) Validate() error {
	if c.Interval == 0 {
		return errors.New("interval: must be positive, or negative to turn timed snapshots off")
	}
	return nil
}

// Options carries what a Snapshotter needs besides its configuration.
type Options struct {
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	Now        func() time.Time
}

// Snapshotter decides which cohorts need a new snapshot and writes them.
type Snapshotter struct {
	cfg Config
	src Source
	pq  *parquet.Sink
	log *slog.Logger
	now func() time.Time

	// mu serialises rounds, so a timed round and an on-demand one never
	// write the same file at once, and guards written.
	mu sync.Mutex
	// written caches the newest snapshot version of each cohort, read
	// from disk the first time the cohort comes up.
	written map[parquet.CohortKey]uint64

	files, rows, failures prometheus.Counter
	lastRound             prometheus.Gauge
}

// New returns a Snapshotter writing through pq.
func New(cfg Config, src Source, pq *parquet.Sink, opts Options) (*Snapshotter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("snapshot: invalid configuration: %w", err)
	}
	if src == nil || pq == nil {
		return nil, errors.New("snapshot: a source and a parquet sink are required")
	}
	s := &Snapshotter{cfg: cfg, src: src, pq: pq, log: opts.Logger, now: opts.Now, written: map[parquet.CohortKey]uint64{}}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.log = s.log.With("component", "snapshots")
	if s.now == nil {
		s.now = time.Now
	}
	s.files = prometheus.NewCounter(prometheus.CounterOpts{Namespace: "cohortsync", Subsystem: "snapshot",
		Name: "files_total", Help: "Cohort snapshots written."})
	s.rows = prometheus.NewCounter(prometheus.CounterOpts{Namespace: "cohortsync", Subsystem: "snapshot",
		Name: "members_total", Help: "Members written into cohort snapshots."})
	s.failures = prometheus.NewCounter(prometheus.CounterOpts{Namespace: "cohortsync", Subsystem: "snapshot",
		Name: "failures_total", Help: "Cohort snapshots that failed; the cohort is tried again next round, and the other cohorts of the round are written."})
	s.lastRound = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "cohortsync", Subsystem: "snapshot",
		Name: "last_round_timestamp_seconds", Help: "When the last round of snapshots ended (it ends even when some cohorts failed; those count in failures_total)."})
	if opts.Registerer != nil {
		for _, c := range []prometheus.Collector{s.files, s.rows, s.failures, s.lastRound} {
			if err := opts.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("snapshot: metrics: %w", err)
			}
		}
	}
	return s, nil
}

// Selection narrows an on-demand round; the zero value takes every cohort.
type Selection struct {
	Workspace string             // "" is every workspace
	Cohort    *parquet.CohortKey // nil is every cohort (of Workspace)
}

func (sel Selection) includes(k parquet.CohortKey) bool {
	if sel.Cohort != nil {
		return *sel.Cohort == k
	}
	return sel.Workspace == "" || sel.Workspace == k.Workspace
}

// Result tells what a round did for one cohort.
type Result struct {
	Cohort  parquet.CohortKey `json:"-"`
	Version uint64            `json:"version"`
	// Path is the cohort's newest snapshot file, relative to the Parquet
	// root (DATA_DIR/parquet).
	Path    string `json:"path,omitempty"`
	Members int64  `json:"members"`
	// Written is false when the newest snapshot already had this version.
	Written bool `json:"written"`
	// Error says why the cohort's snapshot failed this round (the other
	// cohorts are written regardless); empty on success. It names no
	// server paths.
	Error string `json:"error,omitempty"`
}

// ErrCohortsFailed is returned (wrapped) by Snapshot when every selected
// cohort failed; when only some did, Snapshot returns nil and the Results
// carry the errors.
var ErrCohortsFailed = errors.New("snapshot: every selected cohort failed")

// ErrNoSuchCohort is returned when a selected cohort has no state.
var ErrNoSuchCohort = errors.New("snapshot: no such cohort")

// Run writes the changed cohorts every interval until ctx ends. A failed
// round is logged and counted; the next one tries the same cohorts again.
func (s *Snapshotter) Run(ctx context.Context) error {
	if s.cfg.Interval < 0 {
		<-ctx.Done()
		return nil
	}
	t := time.NewTicker(s.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if _, err := s.Snapshot(ctx, Selection{}); err != nil && ctx.Err() == nil {
			s.log.Error("snapshot round failed", "error", err)
		}
	}
}

// Snapshot writes a new snapshot of every selected cohort whose version
// moved since its newest snapshot, and reports every selected cohort.
func (s *Snapshotter) Snapshot(ctx context.Context, sel Selection) ([]Result, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cohorts, err := s.src.Cohorts(ctx)
	if err != nil {
		return nil, fmt.Errorf("snapshot: list cohorts: %w", err)
	}
	var (
		out      []Result
		failed   int
		firstErr error
	)
	for _, c := range cohorts {
		if !sel.includes(c.Key) || c.Version == 0 {
			continue
		}
		if ctx.Err() != nil {
			return out, fmt.Errorf("snapshot: %w", ctx.Err())
		}
		v, ok := s.written[c.Key]
		if !ok {
			// One cohort's unreadable folder fails that cohort only.
			var err error
			if v, ok, err = s.pq.LatestSnapshot(c.Key); err != nil {
				s.log.Error("existing snapshots not readable", "cohort", c.Key.String(), "error", err)
				ok = false
			} else if ok {
				s.written[c.Key] = v
			}
		}
		if ok && v >= c.Version {
			out = append(out, Result{Cohort: c.Key, Version: v, Path: s.pq.SnapshotPath(c.Key, v)})
			continue
		}
		r, err := s.write(ctx, c.Key)
		if err != nil {
			failed++
			s.failures.Inc()
			s.log.Error("cohort snapshot failed", "cohort", c.Key.String(), "error", err)
			firstErr = cmp.Or(firstErr, err)
			out = append(out, Result{Cohort: c.Key, Version: c.Version, Error: publicError(err)})
			continue
		}
		out = append(out, r)
	}
	if sel.Cohort != nil && len(out) == 0 {
		return nil, fmt.Errorf("%w: %s", ErrNoSuchCohort, sel.Cohort)
	}
	s.lastRound.Set(float64(s.now().Unix()))
	// The round fails only when it has nothing but failures to show:
	// one cohort's failure must not fail (nor hide) the others.
	if failed > 0 && failed == len(out) {
		return out, fmt.Errorf("%w (%d): first: %w", ErrCohortsFailed, failed, firstErr)
	}
	return out, nil
}

// publicError is what an API answer may say about a failed cohort: the kind
// of failure, without the file paths and addresses the full error (logged)
// carries.
func publicError(err error) string {
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return "cancelled or timed out"
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return "the disk is full"
	case errors.Is(err, errReadMembers):
		return "the state of record could not be read"
	default:
		return "the snapshot file could not be written (see the server log)"
	}
}

// errReadMembers marks a failure to read a cohort's members from the source.
var errReadMembers = errors.New("read members")

// write reads the cohort's members from the source and writes one file.
// The file is named by its version, which ClickHouse tells only with the
// last row, so the list is held in memory between the two (about 40 bytes
// per member: 400 MB for a cohort of 10M).
func (s *Snapshotter) write(ctx context.Context, k parquet.CohortKey) (Result, error) {
	var users []string
	version, err := s.src.Members(ctx, k, func(u string) error {
		users = append(users, u)
		return nil
	})
	if err != nil {
		return Result{}, fmt.Errorf("snapshot: %w of %s: %w", errReadMembers, k, err)
	}
	f, err := s.pq.WriteSnapshot(ctx, k, version, func(yield func(string) error) error {
		for _, u := range users {
			if err := yield(u); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return Result{}, err
	}
	s.written[k] = version
	s.files.Inc()
	s.rows.Add(float64(f.Members))
	s.log.Info("cohort snapshot written", "cohort", k.String(), "version", version, "members", f.Members, "path", f.Path)
	return Result{Cohort: k, Version: version, Path: f.Path, Members: f.Members, Written: true}, nil
}
