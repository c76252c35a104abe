// Package clickhouse is the ClickHouse sink: it writes each batch's resolved
// membership changes, data points, cohort metadata and rejection counts as
// columnar batch inserts over the native protocol, creates and upgrades the
// tables (Migrate), and answers the read queries tests and segments need.
//
// Every statement runs on ClickHouse 18.16 (Debian's, used in CI) and on
// current releases; docs/ARCHITECTURE.md ("ClickHouse dialect limits") lists the limits this follows. Inserts
// never use INSERT ... VALUES, which hangs on 18.16.
//
// Redelivery is harmless by construction: every table is a ReplacingMergeTree
// keyed so that a batch written twice leaves one copy after merges and under
// FINAL, which is how every read helper queries.
package clickhouse

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"
)

// Options carries what a Sink needs besides its configuration.
type Options struct {
	// Logger receives retries, outages and recoveries; nil discards them.
	Logger *slog.Logger
	// Registerer receives the sink's metrics; nil keeps them unregistered.
	Registerer prometheus.Registerer
}

// healthRecheck is how old the last observation of the server may be before
// Healthy asks the server again, so an idle sink still notices an outage and
// its end.
const (
	healthRecheck = 5 * time.Second
	outageRecheck = time.Second
)

// Sink writes pipeline outputs to ClickHouse. It is safe for concurrent use.
type Sink struct {
	cfg    Config
	layout layout
	conn   driver.Conn
	log    *slog.Logger
	m      *metrics

	// probe serialises the pings Healthy sends; a caller that finds one in
	// flight answers from the last observation instead of waiting.
	probe sync.Mutex

	// closed makes Write fail at once after Close: the insert loop would
	// otherwise retry a closed connection until the caller's deadline.
	closed atomic.Bool

	mu sync.Mutex
	// lastErr is the error of the latest attempt or ping, nil after a success.
	lastErr error
	// downSince is when the current outage began; zero when healthy.
	downSince time.Time
	// observed is when the server was last heard from, well or not.
	observed time.Time
	// insertFailed is when an insert attempt last failed.
	insertFailed time.Time
}

// New returns a sink for cfg (zero fields take their defaults). It does not
// connect: the server may be down, and writes wait for it.
func New(cfg Config, opts Options) (*Sink, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("clickhouse: invalid configuration: %w", err)
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
		return nil, fmt.Errorf("clickhouse: metrics: %w", err)
	}
	conn, err := cfg.Open("cohortsync")
	if err != nil {
		return nil, err
	}
	m.up.Set(1)
	return &Sink{cfg: cfg, layout: newLayout(cfg), conn: conn, log: log.With("sink", "clickhouse"), m: m}, nil
}

// Name implements pipeline.Sink.
func (s *Sink) Name() string { return "clickhouse" }

// Close releases the connections.
func (s *Sink) Close() error {
	s.closed.Store(true)
	if err := s.conn.Close(); err != nil {
		return fmt.Errorf("clickhouse: close: %w", err)
	}
	return nil
}

// Config returns the configuration in use, defaults filled in.
func (s *Sink) Config() Config { return s.cfg }

// Healthy returns nil while the server takes writes, and an error describing
// the outage while it does not (for /readyz). It asks the server itself when
// the sink has not heard from it recently, so it recovers on its own once the
// server is back even if no batch is waiting.
func (s *Sink) Healthy() error {
	s.mu.Lock()
	// During an outage ask more often, so the recovery shows soon.
	stale := time.Since(s.observed) > healthRecheck ||
		(s.lastErr != nil && time.Since(s.observed) > outageRecheck)
	s.mu.Unlock()
	if stale && s.probe.TryLock() {
		ctx, cancel := context.WithTimeout(context.Background(), min(s.cfg.DialTimeout, 2*time.Second))
		err := s.conn.Ping(ctx)
		cancel()
		s.probe.Unlock()
		s.observe(fromPing, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lastErr == nil {
		return nil
	}
	return fmt.Errorf("clickhouse %s unavailable since %s: %w",
		s.cfg.Addr, s.downSince.UTC().Format(time.RFC3339), s.lastErr)
}

// observation is where an outcome comes from: a ping says the server
// answers, an insert that it takes writes.
type observation int

const (
	fromPing observation = iota
	fromInsert
)

// observe records the outcome of talking to the server and logs the edges
// of an outage.
func (s *Sink) observe(from observation, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	s.observed = now
	if err != nil && from == fromInsert {
		s.insertFailed = now
	}
	// A server that answers pings may still refuse inserts (too many parts,
	// read-only, disk full). While a write is retrying, which it does at
	// least every Retry.Max, only an accepted insert ends the outage.
	if err == nil && from == fromPing && now.Sub(s.insertFailed) < s.cfg.Retry.Max+outageRecheck {
		return
	}
	switch {
	case err == nil && s.lastErr != nil:
		s.log.Info("clickhouse is back", "addr", s.cfg.Addr, "outage", now.Sub(s.downSince).Round(time.Millisecond).String())
		s.lastErr, s.downSince = nil, time.Time{}
		s.m.up.Set(1)
	case err != nil && s.lastErr == nil:
		s.log.Error("clickhouse unavailable; writes wait and retry", "addr", s.cfg.Addr, "err", err)
		s.lastErr, s.downSince = err, now
		s.m.up.Set(0)
	case err != nil:
		s.lastErr = err
	}
}

// exec runs one statement under the query timeout. It is for DDL and other
// statements without data: INSERT ... VALUES hangs on 18.16.
func (s *Sink) exec(ctx context.Context, query string) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.QueryTimeout)
	defer cancel()
	if err := s.conn.Exec(s.queryContext(ctx), query); err != nil {
		return fmt.Errorf("clickhouse: %s: %w", firstLine(query), err)
	}
	return nil
}

// queryContext adds the settings every statement needs. With a cluster,
// inserts into Distributed tables return only once every shard has its rows,
// instead of once they are queued on the local disk. Replicated tables also
// drop a block identical to one inserted before, and then skip the views
// over it too: a retry after the history row was written but a view's insert
// failed would leave the derived rows out for good. Every table is a
// ReplacingMergeTree keyed so that a repeated block collapses anyway, so the
// block check is turned off.
func (s *Sink) queryContext(ctx context.Context) context.Context {
	if s.cfg.Cluster == "" {
		return ctx
	}
	return ch.Context(ctx, ch.WithSettings(ch.Settings{"insert_distributed_sync": 1, "insert_deduplicate": 0}))
}

func firstLine(q string) string {
	for i, r := range q {
		if r == '\n' {
			return q[:i] + " ..."
		}
	}
	return q
}

// Open connects with cfg's address, credentials and timeouts over the native
// protocol; product names the client in the server's query log. It does
// not dial: the first statement does.
func (cfg Config) Open(product string) (driver.Conn, error) {
	conn, err := ch.Open(&ch.Options{
		Protocol: ch.Native,
		Addr:     cfg.Addrs(),
		Auth: ch.Auth{
			// Not cfg.Database: the handshake fails on a database that
			// does not exist yet, and Migrate is what creates it. Every
			// statement names its database instead.
			Database: "default",
			Username: cfg.Username,
			Password: cfg.Password,
		},
		DialTimeout:     cfg.DialTimeout,
		ReadTimeout:     cfg.QueryTimeout,
		ConnMaxLifetime: time.Hour,
		Compression:     &ch.Compression{Method: ch.CompressionLZ4},
		ClientInfo: ch.ClientInfo{Products: []struct{ Name, Version string }{
			{Name: product, Version: "1"},
		}},
	})
	if err != nil {
		return nil, fmt.Errorf("clickhouse: open %s: %w", cfg.Addr, err)
	}
	return conn, nil
}
