// Package state is the embedded membership state store: the state of record
// in the embedded deployment, from which snapshots and segment queries read.
// It is a pipeline.Sink over one bbolt file (DATA_DIR/state.db).
//
// Every Write is one read-write transaction, fsynced on commit, so a batch is
// stored entirely or not at all. Everything it stores is idempotent under
// redelivery, which is what makes a crash between the write and the Kafka
// offset commit harmless:
//
//   - membership keeps, per (workspace, partner, cohort, user), the change
//     with the highest version (ReplacingMergeTree semantics); a change whose
//     version is not higher than the stored one is a no-op;
//   - data points are keyed by (record id, position): a key that exists is a
//     redelivery and is neither stored nor counted again, while a partner's
//     re-sent sync has new record ids and does count;
//   - rejections are keyed by record id and replaced, never added to;
//   - cohort metadata keeps the record with the highest version;
//   - history is keyed by (user, version), the syncs by landing second, and
//     both are written only with a new data point, so a replay adds nothing.
//
// Layout (keys of several strings use the order-preserving tuple encoding of
// encoding.go; "(b)" marks a bucket):
//
//	meta(b)       format → "1"
//	positions(b)  partition(4) → highest offset written(8)
//	ws(b) / tuple(workspace)(b) /
//	    c(b) / tuple(partner, cohort_id)(b) /
//	        m(b) user_id → memberState
//	        p(b) tuple(record_id) position(4) → flags day version user_id
//	        d(b) day(4) → billable(8) effective(8)
//	        h(b) tuple(user_id) version(8) → is_member(1) event µs(8) received µs(8) record_id
//	        s(b) landing second(8) → "" (the distinct landing times of changes)
//	        i     cohort metadata and bookkeeping (JSON)
//	        q     change sequence(8): id of the last transaction that applied a change
//	    q     change sequence(8): id of the last transaction that applied a
//	          change or cohort metadata anywhere in the workspace
//	    r(b) / tuple(partner, cohort_id, record_id, reason) → ids(8) records(8)
//
// The change sequences let readers cache what they derive from a cohort (a
// member bitmap, say) and know without reading it whether it changed.
// Cohorts written by a build without history have no h and s entries for
// those changes.
package state

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"

	"github.com/cohortsync/cohortsync/pipeline"

	"github.com/cohortsync/cohortsync/internal/promreg"
)

const formatVersion = "1"

var (
	bucketMeta       = []byte("meta")
	bucketPositions  = []byte("positions")
	bucketWorkspaces = []byte("ws")
	bucketCohorts    = []byte("c")
	bucketRejections = []byte("r")
	bucketMembers    = []byte("m")
	bucketPoints     = []byte("p")
	bucketDays       = []byte("d")
	bucketHistory    = []byte("h")
	bucketSyncs      = []byte("s")
	keySeq           = []byte("q")
	keyFormat        = []byte("format")
	keyInfo          = []byte("i")
)

// Store is the embedded state store.
type Store struct {
	db   *bolt.DB
	path string
	m    *metrics

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

var _ pipeline.Sink = (*Store)(nil)

// Open opens (or creates) the store of cfg. Its metrics go to reg (nil: not
// registered).
func Open(cfg Config, reg prometheus.Registerer) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(cfg.Path), 0o700); err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	db, err := bolt.Open(cfg.Path, 0o600, &bolt.Options{
		Timeout: cfg.OpenTimeout,
		// The freelist is rebuilt by scanning at open instead of being
		// written on every commit: commits are the hot path, opens are rare.
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
	})
	if err != nil {
		return nil, fmt.Errorf("state: open %s: %w", cfg.Path, err)
	}
	if err := db.Update(initBuckets); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("state: open %s: %w", cfg.Path, err)
	}
	s := &Store{db: db, path: cfg.Path}
	s.m = newMetrics(s)
	s.measureFile()
	if err := s.m.register(reg); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("state: %w", err)
	}
	return s, nil
}

func initBuckets(tx *bolt.Tx) error {
	meta, err := tx.CreateBucketIfNotExists(bucketMeta)
	if err != nil {
		return err
	}
	switch v := meta.Get(keyFormat); {
	case v == nil:
		if err := meta.Put(keyFormat, []byte(formatVersion)); err != nil {
			return err
		}
	case string(v) != formatVersion:
		return fmt.Errorf("file format %q, this build reads %q", v, formatVersion)
	}
	for _, name := range [][]byte{bucketPositions, bucketWorkspaces} {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return err
		}
	}
	return nil
}

// Name is the sink name used in metrics and logs.
func (*Store) Name() string { return "state" }

// Path is the store's file.
func (s *Store) Path() string { return s.path }

// Close unregisters the metrics and closes the file. It waits for running
// transactions and may be called more than once.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		s.m.Unregister()
		if err := s.db.Close(); err != nil {
			s.closeErr = fmt.Errorf("state: close: %w", err)
		}
	})
	return s.closeErr
}

// Results of a change and of a data point, as metric labels.
const (
	resultApplied  = "applied"
	resultStale    = "stale"
	resultNew      = "new"
	resultReplayed = "replayed"
)

type metrics struct {
	writeDuration prometheus.Histogram
	writeErrors   prometheus.Counter
	changes       *prometheus.CounterVec
	points        *prometheus.CounterVec
	fileBytes     prometheus.Gauge

	promreg.Registration
}

func newMetrics(s *Store) *metrics {
	const ns, sub = "cohortsync", "state"
	m := &metrics{
		writeDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "write_duration_seconds",
			Help:    "Time to apply and fsync one batch.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
		writeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "write_errors_total",
			Help: "Batches that were not stored (nothing of them was).",
		}),
		changes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "changes_total",
			Help: "Membership changes by result: applied, or stale (a redelivery or an older version than the stored one).",
		}, []string{"result"}),
		points: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "data_points_total",
			Help: "Data points by result: new (billable), or replayed (already stored, not counted again).",
		}, []string{"result"}),
	}
	// Set by measureFile at open and after each write, the only times the
	// file grows, rather than by a stat on every scrape: a scrape must not
	// wait on the disk the store lives on.
	m.fileBytes = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: ns, Subsystem: sub, Name: "file_bytes",
		Help: "Size of the state store file, as of the last write.",
	})
	for _, r := range []string{resultApplied, resultStale} {
		m.changes.WithLabelValues(r)
	}
	for _, r := range []string{resultNew, resultReplayed} {
		m.points.WithLabelValues(r)
	}
	return m
}

// measureFile sets the file size gauge; a failed stat keeps the last value.
func (s *Store) measureFile() {
	if fi, err := os.Stat(s.path); err == nil {
		s.m.fileBytes.Set(float64(fi.Size()))
	}
}

// register lets the component be re-opened on the same registry after
// Close, which calls Unregister.
func (m *metrics) register(reg prometheus.Registerer) error {
	return m.Registration.Register(reg, "state store", m.writeDuration, m.writeErrors, m.changes, m.points, m.fileBytes)
}
