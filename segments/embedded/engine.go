// Package embedded is the segment engine over the embedded state store
// (sinks/state): the same answers as the ClickHouse engine, from one
// process with no server.
//
// Semantics, shared with the ClickHouse engine:
//
//   - A user is in cohort C now when the stored change with the highest
//     version of (workspace, partner, C, user) is an add.
//   - As of an instant T, the user is in C when the highest-version change
//     whose event time is at or before T is an add. Times are compared in
//     whole seconds, as ClickHouse's DateTime columns do: T and event times
//     are truncated to the second.
//   - "not F" is relative to the universe: every user with a change in any
//     cohort of the workspace, at any time (also as of T).
//   - Members are in ascending byte order of the user id.
//
// Set algebra runs on roaring bitmaps over dense, order-preserving user
// numbers (see dict). Each cohort's current member bitmap is cached and
// rebuilt when the store's change sequence of the cohort moves; as-of
// bitmaps are computed from the history for each query.
package embedded

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/RoaringBitmap/roaring/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cohortsync/cohortsync/segments"
	"github.com/cohortsync/cohortsync/segments/filter"
	"github.com/cohortsync/cohortsync/sinks/state"
)

var _ segments.Engine = (*Engine)(nil)

// Options carries what an Engine needs besides the store.
type Options struct {
	// Logger receives cache rebuilds and failed queries; nil discards them.
	Logger *slog.Logger
	// Registerer receives the engine's metrics; nil keeps them unregistered.
	Registerer prometheus.Registerer
}

// Engine answers segment and data-point queries from the state store. It is
// safe for concurrent use; queries of one workspace run one at a time while
// they touch its cache, and export their members outside of it.
type Engine struct {
	store *state.Store
	log   *slog.Logger
	m     *metrics

	mu     sync.Mutex
	caches map[string]*wsCache
	parsed map[string]filter.Node
}

// New returns an engine over store. It reads nothing until the first query.
func New(store *state.Store, opts Options) (*Engine, error) {
	if store == nil {
		return nil, errors.New("segments/embedded: nil state store")
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, fmt.Errorf("segments/embedded: metrics: %w", err)
	}
	return &Engine{store: store, log: log.With("component", "segments-embedded"), m: m, caches: map[string]*wsCache{}, parsed: map[string]filter.Node{}}, nil
}

// cohortKey identifies one cohort of a workspace.
type cohortKey struct{ partner, id string }

// wsCache is what the engine derived from one workspace's state.
type wsCache struct {
	mu sync.Mutex

	dict *dict
	// dictSeq is the workspace sequence at which dict was known to hold
	// every user of the workspace; covered is, per cohort, the cohort
	// sequence at which all its users were found in dict.
	dictSeq uint64
	covered map[cohortKey]uint64
	bitmaps map[cohortKey]cachedBitmap

	// cohorts are the workspace's cohorts and names as of namesSeq.
	namesSeq uint64
	cohorts  map[cohortKey]string
}

type cachedBitmap struct {
	seq, gen uint64
	bm       *roaring.Bitmap
}

func (e *Engine) cache(ws string) *wsCache {
	e.mu.Lock()
	defer e.mu.Unlock()
	c, ok := e.caches[ws]
	if !ok {
		c = &wsCache{dict: &dict{offs: []uint32{0}}, covered: map[cohortKey]uint64{}, bitmaps: map[cohortKey]cachedBitmap{}}
		e.caches[ws] = c
	}
	return c
}

// observe records a query's duration and failure.
func (e *Engine) observe(ctx context.Context, op string, start time.Time, err error) {
	e.m.duration.WithLabelValues(op).Observe(time.Since(start).Seconds())
	if err != nil {
		var fe *segments.FilterError
		if errors.As(err, &fe) || errors.Is(err, segments.ErrBadCursor) {
			return
		}
		e.m.errors.WithLabelValues(op).Inc()
		e.log.WarnContext(ctx, "query failed", "query", op, "err", err)
	}
}

type metrics struct {
	duration     *prometheus.HistogramVec
	errors       *prometheus.CounterVec
	dictBuilds   prometheus.Counter
	bitmapBuilds prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	const ns, sub = "cohortsync", "segments_embedded"
	m := &metrics{
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "query_duration_seconds",
			Help:    "Duration of the embedded segment engine's queries, by query.",
			Buckets: prometheus.ExponentialBuckets(0.00005, 4, 10),
		}, []string{"query"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "query_errors_total",
			Help: "Embedded segment engine queries that failed (not counting invalid filters and cursors), by query.",
		}, []string{"query"}),
		dictBuilds: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "dictionary_builds_total",
			Help: "Rebuilds of a workspace's user dictionary, each after new users arrived.",
		}),
		bitmapBuilds: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "bitmap_builds_total",
			Help: "Cohort member bitmaps built, each after the cohort changed or the dictionary was rebuilt.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.duration, m.errors, m.dictBuilds, m.bitmapBuilds} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
