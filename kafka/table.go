package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	kafkago "github.com/segmentio/kafka-go"

	"github.com/cohortsync/cohortsync/internal/retry"
)

// Defaults of TableOptions.
const (
	DefaultTablePollWait     = 200 * time.Millisecond
	DefaultTableMaxStaleness = 3 * time.Second
)

const tableProduceTries = 5

// tableBackoff spaces the retries of a table's writes, offset queries and
// reconnects.
var tableBackoff = retry.Backoff{Initial: 100 * time.Millisecond, Max: 2 * time.Second}

// ErrTableClosed is returned by a Table's operations after Close.
var ErrTableClosed = errors.New("kafka: table closed")

// TableRecord is one record of a table's topic, as handed to Apply.
type TableRecord struct {
	Key []byte
	// Value is nil for a tombstone.
	Value  []byte
	Offset int64
	Time   time.Time
}

// TableOptions configure a Table.
type TableOptions struct {
	// Topic is the compacted topic; it must exist and have one partition.
	Topic string
	// Name labels logs and metrics, e.g. "tokens".
	Name string
	// Apply folds one record into the caller's state. It is called from a
	// single goroutine, in offset order, and must not block on the Table.
	Apply func(TableRecord)
	// Reset, when set, is called before the topic is replayed again from
	// the start because it became shorter than what was applied (it was
	// deleted and recreated): state built from the old log must be dropped.
	Reset func()
	// Logger receives lifecycle and tail events. Nil discards.
	Logger *slog.Logger
	// Registerer receives the table's metrics, labelled table=Name. Nil
	// registers nothing.
	Registerer prometheus.Registerer
	// PollWait is how long one fetch may wait at the broker for new records;
	// it bounds how late this process sees a write made elsewhere.
	PollWait time.Duration
	// MaxStaleness is how long the tail may go without confirming it has
	// read to the end of the topic before Healthy reports an error.
	MaxStaleness time.Duration
}

// TableStatus tells how far a Table has read its topic.
type TableStatus struct {
	Topic string
	// AppliedOffset is the offset of the next record to apply: every record
	// below it has been handed to Apply.
	AppliedOffset int64
	HighWaterMark int64
	// LastSync is when the tail last confirmed it was at the end of the topic.
	LastSync  time.Time
	LastError error
}

// Table keeps a caller's state in step with a one-partition compacted
// topic: OpenTable replays the topic to its end, then a goroutine tails it
// and hands every record to Apply in offset order. Every process sharing the
// topic converges on the same state, which is how a write made on one
// instance reaches all of them; Put waits for its own record to be applied,
// so a caller reads its own writes.
type Table struct {
	client   *Client
	opts     TableOptions
	log      *slog.Logger
	pollWait time.Duration
	maxStale time.Duration
	metrics  *tableMetrics

	mu       sync.Mutex
	next     int64
	hwm      int64
	lastSync time.Time
	lastErr  error
	closed   bool
	// moved is closed and replaced each time next changes, waking waiters.
	moved chan struct{}

	cancel    context.CancelFunc
	done      chan struct{}
	closeOnce sync.Once
}

// OpenTable replays opts.Topic up to the end it has when OpenTable is called
// and keeps tailing it until Close. It returns only once every record written
// before the call has been applied, so a process never serves with a partial
// state. ctx bounds only the replay.
func (c *Client) OpenTable(ctx context.Context, opts TableOptions) (*Table, error) {
	var errs []error
	if opts.Topic == "" {
		errs = append(errs, errors.New("topic is empty"))
	}
	if opts.Apply == nil {
		errs = append(errs, errors.New("apply is nil"))
	}
	if opts.PollWait <= 0 {
		opts.PollWait = DefaultTablePollWait
	}
	if opts.MaxStaleness <= 0 {
		opts.MaxStaleness = DefaultTableMaxStaleness
	}
	if opts.MaxStaleness <= opts.PollWait {
		errs = append(errs, fmt.Errorf("max staleness %s must exceed poll wait %s", opts.MaxStaleness, opts.PollWait))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("kafka: open table %q: %w", opts.Name, err)
	}
	if opts.Name == "" {
		opts.Name = opts.Topic
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t := &Table{
		client:   c,
		opts:     opts,
		log:      log.With("component", "table", "table", opts.Name, "topic", opts.Topic),
		pollWait: opts.PollWait,
		maxStale: opts.MaxStaleness,
		moved:    make(chan struct{}),
		done:     make(chan struct{}),
	}
	t.metrics = newTableMetrics(t)

	started := time.Now()
	first, err := t.offsetRetry(ctx, kafkago.FirstOffset)
	if err != nil {
		return nil, fmt.Errorf("kafka: open table %q: %w", opts.Name, err)
	}
	// Records acknowledged before this instant are below end, so reaching end
	// proves the state was current at this instant.
	endAsOf := time.Now()
	end, err := t.offsetRetry(ctx, kafkago.LastOffset)
	if err != nil {
		return nil, fmt.Errorf("kafka: open table %q: %w", opts.Name, err)
	}
	t.next = first

	tailCtx, cancel := context.WithCancel(context.Background())
	t.cancel = cancel
	go t.tail(tailCtx)

	if err := t.WaitApplied(ctx, end); err != nil {
		if st := t.Status(); st.LastError != nil {
			err = fmt.Errorf("%w (last tail error: %v)", err, st.LastError)
		}
		_ = t.Close()
		return nil, fmt.Errorf("kafka: open table %q: replay to offset %d: %w", opts.Name, end, err)
	}
	t.mu.Lock()
	if endAsOf.After(t.lastSync) {
		t.lastSync = endAsOf
	}
	t.mu.Unlock()
	if err := t.metrics.register(opts.Registerer); err != nil {
		_ = t.Close()
		return nil, fmt.Errorf("kafka: open table %q: %w", opts.Name, err)
	}
	t.log.Info("table replayed", "records_up_to", end, "took", time.Since(started).Round(time.Millisecond))
	return t, nil
}

// Close stops the tail. It is safe to call more than once.
func (t *Table) Close() error {
	t.closeOnce.Do(func() {
		t.mu.Lock()
		t.closed = true
		t.mu.Unlock()
		t.cancel()
		<-t.done
		t.metrics.unregister()
	})
	return nil
}

// Put writes one record with acks from every in-sync replica and returns once
// this Table has applied it. A nil value writes a tombstone.
func (t *Table) Put(ctx context.Context, key, value []byte) error {
	off, err := t.produce(ctx, key, value)
	if err != nil {
		return err
	}
	if err := t.WaitApplied(ctx, off+1); err != nil {
		return fmt.Errorf("kafka: table %q: record at offset %d written but not yet applied: %w", t.opts.Name, off, err)
	}
	return nil
}

// produce writes one record to partition 0 and returns its offset. The
// produce request answers with the offset, which lets Put wait for exactly
// its own record instead of for an end offset read afterwards.
func (t *Table) produce(ctx context.Context, key, value []byte) (int64, error) {
	t.mu.Lock()
	closed := t.closed
	t.mu.Unlock()
	if closed {
		return 0, ErrTableClosed
	}
	rec := kafkago.Record{Key: kafkago.NewBytes(key)}
	if value != nil {
		rec.Value = kafkago.NewBytes(value)
	}
	wctx, cancel := context.WithTimeout(ctx, t.client.cfg.WriteTimeout)
	defer cancel()
	var last error
	for attempt := 1; attempt <= tableProduceTries; attempt++ {
		if attempt > 1 && retry.Sleep(wctx, tableBackoff.Delay(attempt-1)) != nil {
			break
		}
		// A retry after a lost answer may write the record twice; for a
		// compacted table that is harmless, the second copy wins with the
		// same content.
		resp, err := t.client.admin.Produce(wctx, &kafkago.ProduceRequest{
			Topic:        t.opts.Topic,
			Partition:    0,
			RequiredAcks: kafkago.RequireAll,
			Records:      kafkago.NewRecordReader(rec),
		})
		if err == nil && resp.Error != nil {
			err = resp.Error
		}
		if err == nil {
			return resp.BaseOffset, nil
		}
		last = err
		var kerr kafkago.Error
		if errors.As(err, &kerr) && !kerr.Temporary() {
			break
		}
	}
	return 0, fmt.Errorf("kafka: table %q: write to %s: %w", t.opts.Name, t.opts.Topic, last)
}

// WaitApplied blocks until every record below offset has been applied.
func (t *Table) WaitApplied(ctx context.Context, offset int64) error {
	for {
		t.mu.Lock()
		next, ch := t.next, t.moved
		t.mu.Unlock()
		if next >= offset {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("applied up to offset %d of %d: %w", next, offset, ctx.Err())
		case <-t.done:
			return ErrTableClosed
		case <-ch:
		}
	}
}

// Sync waits until every record written to the topic before the call,
// by any process, has been applied here.
func (t *Table) Sync(ctx context.Context) error {
	end, err := t.client.PartitionOffset(ctx, t.opts.Topic, 0, kafkago.LastOffset)
	if err != nil {
		return fmt.Errorf("kafka: table %q: %w", t.opts.Name, err)
	}
	return t.WaitApplied(ctx, end)
}

// Status reports how far the table has read.
func (t *Table) Status() TableStatus {
	t.mu.Lock()
	defer t.mu.Unlock()
	return TableStatus{Topic: t.opts.Topic, AppliedOffset: t.next, HighWaterMark: t.hwm, LastSync: t.lastSync, LastError: t.lastErr}
}

// Healthy returns nil while the tail keeps confirming it has read the whole
// topic; otherwise writes made elsewhere may be missing from the state.
func (t *Table) Healthy() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return ErrTableClosed
	}
	age := time.Since(t.lastSync)
	if age <= t.maxStale {
		return nil
	}
	if t.lastErr != nil {
		return fmt.Errorf("kafka: table %q not in sync with %s for %s: %w", t.opts.Name, t.opts.Topic, age.Round(time.Millisecond), t.lastErr)
	}
	return fmt.Errorf("kafka: table %q not in sync with %s for %s", t.opts.Name, t.opts.Topic, age.Round(time.Millisecond))
}

// tail follows the topic's one partition until ctx ends; the Table is its
// own Follower.
func (t *Table) tail(ctx context.Context) {
	defer close(t.done)
	t.client.FollowPartition(ctx, t.opts.Topic, 0, FollowOptions{
		PollWait: t.pollWait,
		Backoff:  tableBackoff,
	}, (*tableFollower)(t))
}

// tableFollower is the Table seen as a Follower; its methods are not part
// of the Table's own API.
type tableFollower Table

func (f *tableFollower) Position() int64 {
	t := (*Table)(f)
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.next
}

func (f *tableFollower) Fetched(from int64, recs []TableRecord, complete bool, after, hwm int64, asked time.Time) error {
	(*Table)(f).applyFetched(from, recs, complete, after, hwm, asked)
	return nil
}

func (f *tableFollower) OutOfRange(at, first, last int64) error {
	(*Table)(f).outOfRange(at, first, last)
	return nil
}

func (f *tableFollower) Interrupted(err error) {
	t := (*Table)(f)
	t.metrics.tailErrors.Inc()
	t.mu.Lock()
	t.lastErr = err
	t.mu.Unlock()
	t.log.Warn("table tail interrupted, reconnecting", "error", err)
}

// applyFetched hands recs to Apply and moves next past them. Apply runs
// without the lock so that it may call back into Status or Healthy.
func (t *Table) applyFetched(from int64, recs []TableRecord, complete bool, after, hwm int64, asked time.Time) {
	for _, r := range recs {
		t.opts.Apply(r)
		t.metrics.applied.Inc()
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	next := t.next
	if from == t.next {
		if n := len(recs); n > 0 {
			next = recs[n-1].Offset + 1
		}
		// The batch may end in offsets compaction removed; its position
		// steps past them.
		if complete && after > next {
			next = after
		}
	}
	if complete {
		t.hwm = hwm
		if next >= hwm {
			t.lastSync = asked
			t.lastErr = nil
		}
	}
	if next != t.next {
		t.next = next
		close(t.moved)
		t.moved = make(chan struct{})
	}
	t.metrics.offset.Set(float64(t.next))
}

// outOfRange handles a fetch position outside the log.
func (t *Table) outOfRange(at, first, last int64) {
	switch {
	case at < first:
		t.log.Warn("records were deleted before they were read; skipping ahead", "from", at, "to", first)
	case at > last:
		// The state describes a log that no longer exists.
		t.log.Error("topic is shorter than what was applied (recreated?); replaying it from the start", "applied", at, "end", last)
		if t.opts.Reset != nil {
			t.opts.Reset()
		}
	default:
		return
	}
	t.mu.Lock()
	t.next = first
	close(t.moved)
	t.moved = make(chan struct{})
	t.mu.Unlock()
}

// offsetRetry retries what the broker calls temporary, such as a leader not
// elected yet for a topic created a moment ago.
func (t *Table) offsetRetry(ctx context.Context, which int64) (int64, error) {
	for attempt := 1; ; attempt++ {
		off, err := t.client.PartitionOffset(ctx, t.opts.Topic, 0, which)
		var kerr kafkago.Error
		if err == nil || !errors.As(err, &kerr) || !kerr.Temporary() {
			return off, err
		}
		if retry.Sleep(ctx, tableBackoff.Delay(attempt)) != nil {
			return 0, fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
		}
	}
}

type tableMetrics struct {
	offset     prometheus.Gauge
	applied    prometheus.Counter
	tailErrors prometheus.Counter
	syncAge    prometheus.GaugeFunc

	mu  sync.Mutex
	reg prometheus.Registerer
}

func newTableMetrics(t *Table) *tableMetrics {
	labels := prometheus.Labels{"table": t.opts.Name}
	return &tableMetrics{
		offset: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "cohortsync", Subsystem: "table", Name: "applied_offset",
			Help: "Offset of the next record the table will apply.", ConstLabels: labels,
		}),
		applied: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "cohortsync", Subsystem: "table", Name: "records_applied_total",
			Help: "Records handed to the table's state.", ConstLabels: labels,
		}),
		tailErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "cohortsync", Subsystem: "table", Name: "tail_errors_total",
			Help: "Interruptions of the table's tail (it reconnects).", ConstLabels: labels,
		}),
		syncAge: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "cohortsync", Subsystem: "table", Name: "sync_age_seconds",
			Help: "Seconds since the tail last confirmed it was at the end of the topic.", ConstLabels: labels,
		}, func() float64 { return time.Since(t.Status().LastSync).Seconds() }),
	}
}

func (m *tableMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.offset, m.applied, m.tailErrors, m.syncAge}
}

func (m *tableMetrics) register(reg prometheus.Registerer) error {
	if reg == nil {
		return nil
	}
	for i, c := range m.collectors() {
		if err := reg.Register(c); err != nil {
			for _, done := range m.collectors()[:i] {
				reg.Unregister(done)
			}
			return fmt.Errorf("register metrics: %w", err)
		}
	}
	m.mu.Lock()
	m.reg = reg
	m.mu.Unlock()
	return nil
}

func (m *tableMetrics) unregister() {
	m.mu.Lock()
	reg := m.reg
	m.reg = nil
	m.mu.Unlock()
	if reg == nil {
		return
	}
	for _, c := range m.collectors() {
		reg.Unregister(c)
	}
}
