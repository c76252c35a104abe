package identities

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	kafkago "github.com/segmentio/kafka-go"

	"github.com/cohortsync/cohortsync/internal/retry"
	"github.com/cohortsync/cohortsync/kafka"
)

// ErrClosed is returned by operations on a closed Directory.
var ErrClosed = errors.New("identities: directory closed")

// Options are the parts of a Directory that are not configuration.
type Options struct {
	// Topic is the identities topic; empty means the client's Topics.Identities.
	Topic string
	// Logger receives lifecycle and tail events, never identifiers. Nil discards.
	Logger *slog.Logger
	// Registerer receives the directory's metrics. Nil registers nothing.
	Registerer prometheus.Registerer
}

// Directory is the local replica of the identity directory: an Index kept
// current by tailing every partition of the identities topic. Each partition
// is applied in offset order, which is the order its users' records were
// written; records of different users do not depend on each other (index.go),
// so partitions are applied independently.
//
// The partitions of the topic are read once, at Open: partitions added to
// the topic later are not tailed until the process restarts.
type Directory struct {
	client   *kafka.Client
	topic    string
	idx      *Index
	log      *slog.Logger
	pollWait time.Duration
	maxStale time.Duration
	metrics  *metrics

	// parts is fixed at Open; the fields of its values are guarded by mu.
	parts map[int]*partState

	mu     sync.RWMutex
	closed bool
	// advanced is closed and replaced whenever a partition's offset moves,
	// waking everyone waiting for records to be applied.
	advanced chan struct{}

	cancel    context.CancelFunc
	done      chan struct{} // closed by Close, releasing waiters
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

type partState struct {
	next     int64 // every record below it is applied, and stored as such
	hwm      int64 // high-water mark seen by the last fetch
	lastSync time.Time
	lastErr  error
}

// PartitionStatus is how far one partition has been applied.
type PartitionStatus struct {
	Partition     int
	Applied       int64 // every record below this offset is applied
	HighWaterMark int64
	LastSync      time.Time // when the tail last confirmed it was at the end
	LastError     error
}

// Status describes the replica, for readiness checks and diagnostics.
type Status struct {
	Topic      string
	Users      int64
	Lag        int64 // records written but not yet applied, over all partitions
	Partitions []PartitionStatus
}

// Open opens the replica file of cfg, resumes every partition of the topic
// from the offsets stored in it, and returns once every record written
// before Open was called is applied, so that the identity transform never
// starts on a partial directory. The topic must exist
// (kafka.Client.EnsureTopics).
func Open(ctx context.Context, client *kafka.Client, cfg Config, opts Options) (*Directory, error) {
	if client == nil {
		return nil, errors.New("identities: open: nil kafka client")
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("identities: open: %w", err)
	}
	d := &Directory{
		client:   client,
		topic:    opts.Topic,
		log:      opts.Logger,
		pollWait: cfg.PollWait,
		maxStale: cfg.MaxStaleness,
		parts:    map[int]*partState{},
		advanced: make(chan struct{}),
		done:     make(chan struct{}),
	}
	if d.topic == "" {
		d.topic = client.Config().Topics.Identities
	}
	if d.topic == "" {
		return nil, errors.New("identities: open: no identities topic configured")
	}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	d.log = d.log.With("component", "identities", "topic", d.topic)

	started := time.Now()
	idx, err := d.openIndex(cfg)
	if err != nil {
		return nil, err
	}
	d.idx = idx
	endAsOf := time.Now()
	ends, err := d.partitionEnds(ctx)
	if err != nil {
		_ = idx.Close()
		return nil, fmt.Errorf("identities: open: %w", err)
	}
	if err := d.resume(ends); err != nil {
		_ = idx.Close()
		return nil, fmt.Errorf("identities: open: %w", err)
	}
	d.metrics = newMetrics(d)

	// The tails outlive Open's ctx, which only bounds the catch-up.
	tailCtx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	for p := range d.parts {
		d.wg.Add(1)
		go d.tail(tailCtx, p)
	}
	if cfg.SnapshotPath != "" && cfg.SnapshotInterval > 0 {
		d.wg.Go(func() { d.snapshotLoop(tailCtx, cfg.SnapshotPath, cfg.SnapshotInterval) })
	}
	if err := d.waitOffsets(ctx, ends, cfg.CatchUpStall); err != nil {
		_ = d.Close()
		return nil, fmt.Errorf("identities: open: catch up with %s: %w", d.topic, err)
	}
	d.mu.Lock()
	for _, ps := range d.parts {
		if endAsOf.After(ps.lastSync) {
			ps.lastSync = endAsOf
		}
	}
	d.mu.Unlock()
	if err := d.metrics.register(opts.Registerer); err != nil {
		_ = d.Close()
		return nil, fmt.Errorf("identities: open: %w", err)
	}
	users := idx.Users()
	d.log.Info("identity directory ready", "users", users, "partitions", len(d.parts),
		"path", cfg.Path, "catch_up", time.Since(started).Round(time.Millisecond))
	return d, nil
}

// openIndex opens the replica, first restoring it from the snapshot when
// there is none yet. A restored copy that does not open is removed and the
// replica built from the topic instead, as without a snapshot.
func (d *Directory) openIndex(cfg Config) (*Index, error) {
	opts := IndexOptions{Topic: d.topic, OpenTimeout: cfg.OpenTimeout, Logger: d.log}
	if cfg.SnapshotPath == "" {
		return OpenIndex(cfg.Path, opts)
	}
	started := time.Now()
	restored, why, err := restoreSnapshot(cfg.SnapshotPath, cfg.Path, cfg.SnapshotMaxAge, started)
	if err != nil {
		d.log.Error("identity snapshot not restored; replaying the topic", "snapshot", cfg.SnapshotPath, "err", err)
	} else if !restored {
		d.log.Info("identity snapshot not restored", "snapshot", cfg.SnapshotPath, "reason", why)
	}
	if !restored {
		return OpenIndex(cfg.Path, opts)
	}
	idx, err := OpenIndex(cfg.Path, opts)
	if err != nil {
		d.log.Error("restored identity snapshot does not open; replaying the topic", "snapshot", cfg.SnapshotPath, "err", err)
		if rerr := os.Remove(cfg.Path); rerr != nil {
			return nil, errors.Join(err, rerr)
		}
		return OpenIndex(cfg.Path, opts)
	}
	offsets, _ := idx.Offsets()
	d.log.Info("identity replica restored from snapshot", "snapshot", cfg.SnapshotPath, "users", idx.Users(),
		"partitions", len(offsets), "took", time.Since(started).Round(time.Millisecond).String())
	return idx, nil
}

// resume sets every partition's starting offset from the file. A stored
// offset beyond the end of its partition means the topic was recreated: what
// was applied from it describes records that no longer exist.
func (d *Directory) resume(ends map[int]int64) error {
	stored, err := d.idx.Offsets()
	if err != nil {
		return err
	}
	for p, next := range stored {
		if _, ok := ends[p]; ok {
			continue
		}
		d.log.Error("identity index holds a partition the topic no longer has; dropping its users", "partition", p, "applied", next)
		if err := d.idx.DropPartition(p); err != nil {
			return err
		}
	}
	for p, end := range ends {
		next := stored[p]
		if next > end {
			d.log.Error("identities partition is shorter than what was applied (topic recreated?); rebuilding it", "partition", p, "applied", next, "end", end)
			if err := d.idx.ResetPartition(p, 0); err != nil {
				return err
			}
			next = 0
		}
		d.parts[p] = &partState{next: next}
	}
	return nil
}

// Close stops the tails and closes the file. It is safe to call more than once.
func (d *Directory) Close() error {
	d.closeOnce.Do(func() {
		d.mu.Lock()
		d.closed = true
		d.mu.Unlock()
		close(d.done)
		if d.cancel != nil {
			d.cancel()
		}
		d.wg.Wait()
		if d.metrics != nil {
			d.metrics.Unregister()
		}
		d.closeErr = d.idx.Close()
	})
	return d.closeErr
}

// Topic is the topic the directory replicates.
func (d *Directory) Topic() string { return d.topic }

// View runs fn over one consistent snapshot of the replica; see Index.View.
func (d *Directory) View(fn func(Lookup) error) error { return d.idx.View(fn) }

// LookupExternalID is one lookup in its own transaction; batches use View.
func (d *Directory) LookupExternalID(workspace, id string) (string, bool, bool) {
	return d.idx.LookupExternalID(workspace, id)
}

// LookupAlias is one lookup in its own transaction; batches use View.
func (d *Directory) LookupAlias(workspace, name, label string) (string, bool, bool) {
	return d.idx.LookupAlias(workspace, name, label)
}

// LookupDevice is one lookup in its own transaction; batches use View.
func (d *Directory) LookupDevice(workspace, id string) (string, bool, bool) {
	return d.idx.LookupDevice(workspace, id)
}

// WaitApplied blocks until every record written to the topic before the call
// is applied to the replica, which makes an identity landed elsewhere (by
// another instance or a load) visible to this one.
func (d *Directory) WaitApplied(ctx context.Context) error {
	ends, err := d.client.PartitionEnds(ctx, d.topic)
	if err != nil {
		return fmt.Errorf("identities: wait applied: %w", err)
	}
	if err := d.waitOffsets(ctx, ends, 0); err != nil {
		return fmt.Errorf("identities: wait applied: %w", err)
	}
	return nil
}

// catchUpReport is how often a long catch-up logs how far it got.
const catchUpReport = 10 * time.Second

// waitOffsets returns once every partition has applied up to ends. With a
// positive stall it fails when no record was applied for that long, however
// long the whole wait takes; ctx bounds it in any case. A long wait logs
// its progress every catchUpReport.
func (d *Directory) waitOffsets(ctx context.Context, ends map[int]int64, stall time.Duration) error {
	for p := range ends {
		if _, ok := d.parts[p]; !ok {
			return fmt.Errorf("partition %d of %s is not tailed (added after start?): restart to pick it up", p, d.topic)
		}
	}
	var stalled <-chan time.Time
	var stallTimer *time.Timer
	if stall > 0 {
		stallTimer = time.NewTimer(stall)
		defer stallTimer.Stop()
		stalled = stallTimer.C
	}
	report := time.NewTicker(catchUpReport)
	defer report.Stop()
	started := time.Now()
	var lastApplied int64 = -1
	for {
		d.mu.RLock()
		behind, closed, ch := -1, d.closed, d.advanced
		var at, want, applied, total int64
		for p, end := range ends {
			ps := d.parts[p]
			applied += min(ps.next, end)
			total += end
			if ps.next < end && behind < 0 {
				behind, at, want = p, ps.next, end
			}
		}
		d.mu.RUnlock()
		switch {
		case closed:
			return ErrClosed
		case behind < 0:
			return nil
		}
		if applied > lastApplied && stallTimer != nil {
			// Progress: the stall clock starts again.
			if !stallTimer.Stop() {
				select {
				case <-stallTimer.C:
				default:
				}
			}
			stallTimer.Reset(stall)
		}
		lastApplied = applied
		fail := func(cause error) error {
			err := fmt.Errorf("partition %d applied up to %d of %d: %w", behind, at, want, cause)
			if last := d.lastError(); last != nil {
				err = fmt.Errorf("%w (last tail error: %v)", err, last)
			}
			return err
		}
		select {
		case <-ctx.Done():
			return fail(ctx.Err())
		case <-stalled:
			return fail(fmt.Errorf("no record applied for %s", stall))
		case <-report.C:
			elapsed := time.Since(started)
			d.log.InfoContext(ctx, "catching up", "applied", applied, "of", total, "per_s", float64(applied)/elapsed.Seconds(), "elapsed", elapsed.Round(time.Second))
		case <-d.done:
			return ErrClosed
		case <-ch:
		}
	}
}

func (d *Directory) lastError() error {
	d.mu.RLock()
	defer d.mu.RUnlock()
	for _, ps := range d.parts {
		if ps.lastErr != nil {
			return ps.lastErr
		}
	}
	return nil
}

// CaughtUp reports whether every partition has applied everything up to the
// high-water mark its tail saw last.
func (d *Directory) CaughtUp() bool {
	d.mu.RLock()
	defer d.mu.RUnlock()
	for _, ps := range d.parts {
		if ps.next < ps.hwm {
			return false
		}
	}
	return true
}

// Healthy returns nil while every partition's tail keeps confirming that it
// has read its partition to the end. Otherwise identities landed recently
// may be missing and their users rejected as unknown: a caller should report
// itself not ready.
func (d *Directory) Healthy() error {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return ErrClosed
	}
	var errs []error
	for _, p := range sortedPartitions(d.parts) {
		ps := d.parts[p]
		age := time.Since(ps.lastSync)
		if age <= d.maxStale {
			continue
		}
		if ps.lastErr != nil {
			errs = append(errs, fmt.Errorf("partition %d not in sync for %s: %w", p, age.Round(time.Millisecond), ps.lastErr))
		} else {
			errs = append(errs, fmt.Errorf("partition %d not in sync for %s", p, age.Round(time.Millisecond)))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("identities: %s: %w", d.topic, err)
	}
	return nil
}

// Status reports how far the replica has read.
func (d *Directory) Status() Status {
	users := d.idx.Users()
	st := Status{Topic: d.topic, Users: users}
	d.mu.RLock()
	defer d.mu.RUnlock()
	for _, p := range sortedPartitions(d.parts) {
		ps := d.parts[p]
		st.Partitions = append(st.Partitions, PartitionStatus{
			Partition: p, Applied: ps.next, HighWaterMark: ps.hwm, LastSync: ps.lastSync, LastError: ps.lastErr,
		})
		if ps.hwm > ps.next {
			st.Lag += ps.hwm - ps.next
		}
	}
	return st
}

func sortedPartitions(m map[int]*partState) []int {
	out := make([]int, 0, len(m))
	for p := range m {
		out = append(out, p)
	}
	sort.Ints(out)
	return out
}

// partitionEnds lists the partitions and their end offsets, retrying errors
// the broker calls temporary (a topic created a moment ago has no leader yet).
func (d *Directory) partitionEnds(ctx context.Context) (map[int]int64, error) {
	for attempt := 1; ; attempt++ {
		ends, err := d.client.PartitionEnds(ctx, d.topic)
		var kerr kafkago.Error
		if err == nil && len(ends) > 0 {
			return ends, nil
		}
		if err == nil {
			err = fmt.Errorf("topic %s has no partitions", d.topic)
		} else if !errors.As(err, &kerr) || !kerr.Temporary() {
			return nil, err
		}
		if retry.Sleep(ctx, tailBackoff.Delay(attempt)) != nil {
			return nil, fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
		}
	}
}
