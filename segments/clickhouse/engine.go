// Package clickhouse is the segment engine over the tables the ClickHouse
// sink (sinks/clickhouse) writes. It evaluates filters, explains answers,
// exports members and reports data points and cohorts with SQL that runs on
// ClickHouse 18.16 and on current releases (docs/ARCHITECTURE.md, ClickHouse dialect limits).
//
// Semantics, shared with the embedded engine:
//
//   - A user is in cohort C now when the newest change (highest version) of
//     (workspace, partner, C, user) is an add. The membership table is read
//     with argMax(is_member, version), never trusting that merges are done.
//   - As of an instant T, the user is in C when the newest change with
//     event_time <= T is an add. Times are compared at whole seconds (the
//     tables store DateTime): T is truncated to the second.
//   - "not F" is relative to the universe: every user who appears in the
//     workspace's membership history, in any cohort and at any time (also for
//     as_of queries: a user first seen after T is in the universe at T).
//   - Members are ordered by user id, ascending bytewise.
//
// Every value reaches the server as a bound parameter (clickhouse-go's "?"
// binding); only identifiers from the configuration and fixed SQL fragments
// are written into statements.
package clickhouse

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cohortsync/cohortsync/segments"
	chsink "github.com/cohortsync/cohortsync/sinks/clickhouse"
)

var _ segments.Engine = (*Engine)(nil)

// DefaultExportTimeout bounds an Export whose context has no deadline.
const DefaultExportTimeout = time.Hour

// DefaultSpillBytes is where an aggregation starts spilling to disk.
const DefaultSpillBytes = 1 << 30

// Options carries what an Engine needs besides its configuration.
type Options struct {
	// Logger receives slow or failed queries; nil discards them.
	Logger *slog.Logger
	// Registerer receives the engine's metrics; nil keeps them unregistered.
	Registerer prometheus.Registerer
	// ExportTimeout bounds an Export whose context has no deadline; zero
	// means DefaultExportTimeout.
	ExportTimeout time.Duration
	// SpillBytes is the memory a query's GROUP BY may use before it spills
	// to disk (max_bytes_before_external_group_by); zero means
	// DefaultSpillBytes, negative never spills. Data points over 100M rows
	// keep ~10 GB of per-user histories otherwise, beyond the server's
	// max_memory_usage; keep it under half of that.
	SpillBytes int64
}

// Engine answers segment and data-point queries from ClickHouse. It is safe
// for concurrent use.
type Engine struct {
	cfg           chsink.Config
	conn          driver.Conn
	log           *slog.Logger
	m             *metrics
	exportTimeout time.Duration
	spillBytes    int64
}

// New returns an engine reading the tables of cfg's database (the sink's
// configuration; zero fields take their defaults). It does not connect: the
// first query does.
func New(cfg chsink.Config, opts Options) (*Engine, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("segments/clickhouse: invalid configuration: %w", err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	reg := opts.Registerer
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("segments/clickhouse: metrics: %w", err)
	}
	conn, err := cfg.Open("cohortsync-segments")
	if err != nil {
		return nil, fmt.Errorf("segments/clickhouse: %w", err)
	}
	et := opts.ExportTimeout
	if et <= 0 {
		et = DefaultExportTimeout
	}
	spill := opts.SpillBytes
	if spill == 0 {
		spill = DefaultSpillBytes
	}
	return &Engine{cfg: cfg, conn: conn, log: log.With("component", "segments-clickhouse"), m: m, exportTimeout: et, spillBytes: spill}, nil
}

// Close releases the connections.
func (e *Engine) Close() error {
	if err := e.conn.Close(); err != nil {
		return fmt.Errorf("segments/clickhouse: close: %w", err)
	}
	return nil
}

func quote(ident string) string { return "`" + ident + "`" }

// table is the qualified name of one of the sink's tables. The database name
// is checked by Config.Validate to be a plain identifier.
func (e *Engine) table(name string) string { return quote(e.cfg.Database) + "." + quote(name) }

// query runs q under the query timeout and hands each row to scan; op names
// the query in metrics and logs.
func (e *Engine) query(ctx context.Context, op, q string, args []any, scan func(driver.Rows) error) error {
	ctx, cancel := context.WithTimeout(ctx, e.cfg.QueryTimeout)
	defer cancel()
	return e.stream(ctx, op, q, args, scan)
}

// stream runs q under ctx's own deadline.
func (e *Engine) stream(ctx context.Context, op, q string, args []any, scan func(driver.Rows) error) (err error) {
	start := time.Now()
	defer func() {
		e.m.duration.WithLabelValues(op).Observe(time.Since(start).Seconds())
		if err != nil && !errors.Is(err, errStop) {
			e.m.errors.WithLabelValues(op).Inc()
			e.log.WarnContext(ctx, "query failed", "query", op, "elapsed", time.Since(start).Round(time.Millisecond).String(), "err", err)
		}
	}()
	if e.spillBytes > 0 {
		// An int: 18.16 takes only int and bool settings from the client.
		ctx = ch.Context(ctx, ch.WithSettings(ch.Settings{"max_bytes_before_external_group_by": int(e.spillBytes)}))
	}
	rows, err := e.conn.Query(ctx, q, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := scan(rows); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	return ctx.Err()
}

// errStop ends a scan early without counting as a failed query.
var errStop = errors.New("stop")

type metrics struct {
	duration *prometheus.HistogramVec
	errors   *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "cohortsync", Subsystem: "segments_clickhouse", Name: "query_duration_seconds",
			Help:    "Duration of the segment engine's ClickHouse queries, by query.",
			Buckets: prometheus.ExponentialBuckets(0.005, 3, 10),
		}, []string{"query"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "cohortsync", Subsystem: "segments_clickhouse", Name: "query_errors_total",
			Help: "Segment engine ClickHouse queries that failed, by query.",
		}, []string{"query"}),
	}
	for _, c := range []prometheus.Collector{m.duration, m.errors} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
