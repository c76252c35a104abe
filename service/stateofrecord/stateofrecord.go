// Package stateofrecord chooses, once, where membership, history and data
// points live: the embedded bbolt store under the data directory (the
// default, one instance) or ClickHouse (clickhouse.addr set, any number of
// instances). Everything that must agree on that choice (the stream's sink,
// the segments engine, the snapshot job's member source, a backfill's view of
// a cohort's current members, readiness) asks the Store Open returns instead
// of looking at the configuration itself.
package stateofrecord

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"

	"github.com/cohortsync/cohortsync/config"
	"github.com/cohortsync/cohortsync/jobs/snapshot"
	"github.com/cohortsync/cohortsync/pipeline"
	"github.com/cohortsync/cohortsync/segments"
	segch "github.com/cohortsync/cohortsync/segments/clickhouse"
	"github.com/cohortsync/cohortsync/segments/embedded"
	chsink "github.com/cohortsync/cohortsync/sinks/clickhouse"
	"github.com/cohortsync/cohortsync/sinks/state"
)

// Kinds of state of record, as Store.Kind names them.
const (
	KindEmbedded   = "embedded"
	KindClickHouse = "clickhouse"
)

// ErrLocked means the embedded store's file is held by another process,
// normally a running `cohortsync serve`.
var ErrLocked = errors.New("stateofrecord: the embedded state store is in use by another process")

// Store is the state of record, opened for one process.
type Store interface {
	// Kind is KindEmbedded or KindClickHouse.
	Kind() string
	// Sink is what the stream writes membership, history and data points to.
	Sink() pipeline.Sink
	// Engine opens the segments engine over the same data, with the
	// function that releases it (the embedded engine holds nothing to
	// release; the store itself stays open either way).
	Engine(opts EngineOptions) (segments.Engine, func() error, error)
	// SnapshotSource is the snapshot job's view of cohorts and members.
	SnapshotSource() snapshot.Source
	// ForEachMember calls fn for each current member of one cohort.
	ForEachMember(ctx context.Context, workspace, partner, cohortID string, fn func(userID string) error) error
	// Workspaces lists the workspaces the store holds data for, where the
	// store can tell cheaply (the embedded one); ClickHouse answers nil.
	Workspaces() ([]string, error)
	// Healthy is nil while the store takes writes.
	Healthy() error
	// Close releases the store.
	Close() error
}

// Options are what Open needs besides the configuration.
type Options struct {
	// Logger and Registerer go to the store's own components; nil discards
	// logs and leaves metrics unregistered.
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// Migrate creates or upgrades the ClickHouse tables before returning,
	// within MigrateTimeout (2 minutes when zero). Ignored when embedded.
	Migrate        bool
	MigrateTimeout time.Duration
	// LockTimeout bounds the wait for the embedded store's file lock (the
	// store's default when zero); past it Open fails with ErrLocked.
	LockTimeout time.Duration
}

// EngineOptions go to the segments engine Store.Engine opens.
type EngineOptions struct {
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Open opens the state of record cfg chooses: ClickHouse when
// cfg.ClickHouse.Addr is set, else the embedded store in cfg.DataDir.
func Open(ctx context.Context, cfg config.Config, opts Options) (Store, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.ClickHouse.Addr != "" {
		return openClickHouse(ctx, cfg, opts, log)
	}
	stCfg := state.DefaultConfig(cfg.DataDir)
	if opts.LockTimeout > 0 {
		stCfg.OpenTimeout = opts.LockTimeout
	}
	st, err := state.Open(stCfg, opts.Registerer)
	if errors.Is(err, bolt.ErrTimeout) {
		return nil, fmt.Errorf("%w (%s): %w", ErrLocked, stCfg.Path, err)
	}
	if err != nil {
		return nil, fmt.Errorf("stateofrecord: state store: %w", err)
	}
	return &embeddedStore{st: st}, nil
}

func openClickHouse(ctx context.Context, cfg config.Config, opts Options, log *slog.Logger) (Store, error) {
	chCfg := cfg.ClickHouse.SinkConfig()
	ch, err := chsink.New(chCfg, chsink.Options{Logger: log, Registerer: opts.Registerer})
	if err != nil {
		return nil, fmt.Errorf("stateofrecord: clickhouse sink: %w", err)
	}
	if opts.Migrate {
		d := opts.MigrateTimeout
		if d <= 0 {
			d = 2 * time.Minute
		}
		migCtx, cancel := context.WithTimeout(ctx, d)
		_, err := ch.Migrate(migCtx)
		cancel()
		if err != nil {
			return nil, errors.Join(fmt.Errorf("stateofrecord: clickhouse migrate (turn off with --no-migrate): %w", err), ch.Close())
		}
	}
	return &clickhouseStore{ch: ch, cfg: chCfg}, nil
}

type embeddedStore struct {
	st *state.Store
}

func (e *embeddedStore) Kind() string        { return KindEmbedded }
func (e *embeddedStore) Sink() pipeline.Sink { return e.st }
func (e *embeddedStore) Engine(opts EngineOptions) (segments.Engine, func() error, error) {
	eng, err := embedded.New(e.st, embedded.Options{Logger: opts.Logger, Registerer: opts.Registerer})
	if err != nil {
		return nil, nil, fmt.Errorf("stateofrecord: embedded segments engine: %w", err)
	}
	return eng, func() error { return nil }, nil
}
func (e *embeddedStore) SnapshotSource() snapshot.Source { return snapshot.FromState(e.st) }
func (e *embeddedStore) ForEachMember(_ context.Context, ws, partner, cohort string, fn func(string) error) error {
	return e.st.ForEachMember(ws, partner, cohort, fn)
}
func (e *embeddedStore) Workspaces() ([]string, error) { return e.st.Workspaces() }

// Healthy is always nil: a write that fails is retried by the runner and
// shows as a failing stage.
func (e *embeddedStore) Healthy() error { return nil }
func (e *embeddedStore) Close() error   { return e.st.Close() }

type clickhouseStore struct {
	ch  *chsink.Sink
	cfg chsink.Config
}

func (c *clickhouseStore) Kind() string        { return KindClickHouse }
func (c *clickhouseStore) Sink() pipeline.Sink { return c.ch }

// Engine opens the query side on a connection pool of its own, named
// cohortsync-segments in the server's query log, so long exports never wait
// behind the sink's inserts for a connection.
func (c *clickhouseStore) Engine(opts EngineOptions) (segments.Engine, func() error, error) {
	eng, err := segch.New(c.cfg, segch.Options{Logger: opts.Logger, Registerer: opts.Registerer})
	if err != nil {
		return nil, nil, fmt.Errorf("stateofrecord: clickhouse segments engine: %w", err)
	}
	return eng, eng.Close, nil
}
func (c *clickhouseStore) SnapshotSource() snapshot.Source { return snapshot.FromClickHouse(c.ch) }
func (c *clickhouseStore) ForEachMember(ctx context.Context, ws, partner, cohort string, fn func(string) error) error {
	members, err := c.ch.Members(ctx, ws, partner, cohort)
	if err != nil {
		return err
	}
	for _, m := range members {
		if err := fn(m); err != nil {
			return err
		}
	}
	return nil
}
func (c *clickhouseStore) Workspaces() ([]string, error) { return nil, nil }
func (c *clickhouseStore) Healthy() error                { return c.ch.Healthy() }
func (c *clickhouseStore) Close() error                  { return c.ch.Close() }
