package kafka

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	kafkago "github.com/segmentio/kafka-go"

	"github.com/cohortsync/cohortsync/internal/promreg"
	"github.com/cohortsync/cohortsync/internal/retry"
	"github.com/cohortsync/cohortsync/pipeline"
)

// fetchWait is the broker-side long poll of one fetch. The broker answers as
// soon as a record is there, so it only bounds how often an idle partition
// is asked; stopping closes the connection and does not wait for it.
const fetchWait = 500 * time.Millisecond

// contendedFetchWait replaces fetchWait while fetchers wait for budget.
const contendedFetchWait = 10 * time.Millisecond

// readTimeout bounds reading one fetch response beyond the long poll.
const readTimeout = 10 * time.Second

// GroupSource is a pipeline.Source reading a topic as a member of a Kafka
// consumer group, built on kafka-go's ConsumerGroup and Generation API so
// that it sees every generation's assignments.
//
// Each owned partition has a fetcher on its own connection to the
// partition's leader (Conn.ReadBatch, the fastest read path of kafka-go).
// Fetched messages are buffered and cut into batches by Next. Memory is
// bounded: fetchers pause while the bytes fetched and not yet acked reach
// MaxInflightBytes.
//
// Commits: offsets are committed only from a batch's Ack(ctx, nil), and only
// up to the highest offset below which every delivered batch is acked (see
// commitTracker), synchronously, so Ack returning nil means the broker has
// the offset. When a generation ends (a rebalance) or the source closes,
// fetching stops and the batches already handed out get up to DrainTimeout
// to be acked and committed under the old generation; acks after that, or
// for partitions lost, are dropped, logged and counted, and those messages
// are delivered again to the partition's next owner.
//
// Ack(ctx, err) with an error rewinds: every partition of the batch drops its
// unacked batches and buffered messages and fetches again from its commit
// point, so the failed messages (and any delivered after them) come again.
// Acks for the dropped batches are dropped. A rewind does not leave the group,
// so other members are not disturbed.
type GroupSource struct {
	cfg    GroupConfig
	topic  string
	dialer *kafkago.Dialer
	seeds  []string
	log    *slog.Logger
	m      *groupMetrics

	cg       *kafkago.ConsumerGroup
	loopDone chan struct{}
	close    sync.Once

	// commitMu makes commits reach the broker in the order they were
	// computed, and lets a generation's drain wait for a commit in flight.
	commitMu sync.Mutex

	mu      sync.Mutex
	tracker *commitTracker
	gen     *genState
	queue   []*chunk
	// wake is closed and replaced whenever the queue, the budget, the
	// settled batches or the closed flag change.
	wake chan struct{}
	// used is fetched and not yet acked or discarded; reserved is held by
	// fetches in progress.
	used, reserved int64
	waiters        []*waiter
	closed         bool
}

type genState struct {
	gen    *kafkago.Generation
	parts  map[int]*fetchState
	ending bool
}

// fetchState is one owned partition. Its fields are guarded by the source's mu.
type fetchState struct {
	partition int
	epoch     uint64
	// offset is the next offset to fetch; negative until the start is known.
	offset int64
	// hwm is the high watermark seen by the latest fetch, -1 before.
	hwm int64
}

type chunk struct {
	gs    *genState
	fs    *fetchState
	epoch uint64
	msgs  []pipeline.Message
	bytes int64
}

// NewGroupSource joins group cfg.GroupID on topic. Joining happens in the
// background; Next returns once partitions are assigned and have data.
// Metrics go to reg (nil: none); log nil means slog.Default().
func (c *Client) NewGroupSource(topic string, cfg GroupConfig, reg prometheus.Registerer, log *slog.Logger) (*GroupSource, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("kafka: group source: %w", err)
	}
	if topic == "" {
		return nil, errors.New("kafka: group source: no topic")
	}
	if log == nil {
		log = slog.Default()
	}
	log = log.With("component", "group_source", "group", cfg.GroupID, "topic", topic)
	s := &GroupSource{
		cfg:      cfg,
		topic:    topic,
		dialer:   c.dialer,
		seeds:    c.cfg.Brokers,
		log:      log,
		loopDone: make(chan struct{}),
		tracker:  newCommitTracker(),
		wake:     make(chan struct{}),
	}
	s.m = newGroupMetrics(s)
	if err := s.m.register(reg); err != nil {
		return nil, fmt.Errorf("kafka: group source: %w", err)
	}
	heartbeat := min(max(cfg.SessionTimeout/10, 10*time.Millisecond), 3*time.Second)
	cg, err := kafkago.NewConsumerGroup(kafkago.ConsumerGroupConfig{
		ID:                    cfg.GroupID,
		Brokers:               c.cfg.Brokers,
		Dialer:                c.dialer,
		Topics:                []string{topic},
		HeartbeatInterval:     heartbeat,
		SessionTimeout:        cfg.SessionTimeout,
		RebalanceTimeout:      cfg.RebalanceTimeout,
		JoinGroupBackoff:      min(time.Second, cfg.SessionTimeout),
		WatchPartitionChanges: true,
		StartOffset:           kafkago.FirstOffset,
		ErrorLogger: kafkago.LoggerFunc(func(msg string, args ...any) {
			log.Debug("kafka-go: " + fmt.Sprintf(msg, args...))
		}),
	})
	if err != nil {
		s.m.Unregister()
		return nil, fmt.Errorf("kafka: group source: %w", err)
	}
	s.cg = cg
	go s.run()
	return s, nil
}

// broadcastLocked wakes every waiter and hands freed budget to fetchers;
// s.mu must be held.
func (s *GroupSource) broadcastLocked() {
	s.grantLocked()
	close(s.wake)
	s.wake = make(chan struct{})
}

func (s *GroupSource) run() {
	defer close(s.loopDone)
	for {
		gen, err := s.cg.Next(context.Background())
		if err != nil {
			if errors.Is(err, kafkago.ErrGroupClosed) {
				return
			}
			s.m.groupErrors.Inc()
			s.log.Warn("consumer group: join failed, retrying", "err", err)
			continue
		}
		s.startGeneration(gen)
	}
}

func (s *GroupSource) startGeneration(gen *kafkago.Generation) {
	gs := &genState{gen: gen, parts: map[int]*fetchState{}}
	var ids []int
	s.mu.Lock()
	for _, a := range gen.Assignments[s.topic] {
		epoch := s.tracker.assign(a.ID, a.Offset)
		gs.parts[a.ID] = &fetchState{partition: a.ID, epoch: epoch, offset: a.Offset, hwm: -1}
		ids = append(ids, a.ID)
	}
	s.gen = gs
	s.broadcastLocked()
	s.mu.Unlock()
	slices.Sort(ids)
	s.m.generations.Inc()
	s.log.Info("partitions assigned", "generation", gen.ID, "partitions", ids)
	gen.Start(func(ctx context.Context) { s.keep(ctx, gs) })
	for _, fs := range gs.parts {
		gen.Start(func(ctx context.Context) { s.fetchLoop(ctx, gs, fs) })
	}
}

// keep holds a generation open until it ends, then gives the batches handed
// out under it up to DrainTimeout to be acked and committed before the group
// moves on (the ConsumerGroup waits for this function to return).
func (s *GroupSource) keep(ctx context.Context, gs *genState) {
	<-ctx.Done()
	s.mu.Lock()
	gs.ending = true
	s.purgeLocked(func(c *chunk) bool { return c.gs == gs })
	s.broadcastLocked()
	s.mu.Unlock()

	deadline := time.NewTimer(s.cfg.DrainTimeout)
	defer deadline.Stop()
	for waiting := true; waiting; {
		s.mu.Lock()
		n := 0
		for p, fs := range gs.parts {
			n += s.tracker.unsettled(p, fs.epoch)
		}
		wake := s.wake
		s.mu.Unlock()
		if n == 0 {
			break
		}
		select {
		case <-wake:
		case <-deadline.C:
			waiting = false
		}
	}

	// An ack that settled the last batch may still be committing.
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	s.mu.Lock()
	dropped := 0
	var ids []int
	for p, fs := range gs.parts {
		n, _ := s.tracker.revoke(p, fs.epoch)
		dropped += n
		ids = append(ids, p)
		s.m.lag.DeleteLabelValues(s.topic, strconv.Itoa(p))
	}
	if s.gen == gs {
		s.gen = nil
	}
	s.broadcastLocked()
	s.mu.Unlock()
	slices.Sort(ids)
	if dropped > 0 {
		s.log.Warn("partitions revoked with batches still unacked; their acks will be dropped and the messages delivered again",
			"generation", gs.gen.ID, "partitions", ids, "unacked_ranges", dropped)
	} else {
		s.log.Info("partitions revoked", "generation", gs.gen.ID, "partitions", ids)
	}
}

// purgeLocked discards buffered chunks matching drop.
func (s *GroupSource) purgeLocked(drop func(*chunk) bool) {
	kept := s.queue[:0]
	for _, c := range s.queue {
		if drop(c) {
			s.used -= c.bytes
			continue
		}
		kept = append(kept, c)
	}
	clear(s.queue[len(kept):])
	s.queue = kept
}

// reserve waits until the in-flight budget has room for one more fetch.
// Waiters are served in arrival order: otherwise partitions that are caught
// up, whose long polls return empty and reserve again at once, could keep
// the budget from a partition that has data.
func (s *GroupSource) reserve(ctx context.Context) error {
	s.mu.Lock()
	if len(s.waiters) == 0 && s.used+s.reserved < s.cfg.MaxInflightBytes {
		s.reserved += int64(s.cfg.BatchMaxBytes)
		s.mu.Unlock()
		return nil
	}
	w := &waiter{ready: make(chan struct{})}
	s.waiters = append(s.waiters, w)
	s.mu.Unlock()
	s.m.paused.Inc()
	select {
	case <-w.ready:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		defer s.mu.Unlock()
		if w.granted {
			s.reserved -= int64(s.cfg.BatchMaxBytes)
			s.grantLocked()
		} else {
			s.waiters = slices.DeleteFunc(s.waiters, func(x *waiter) bool { return x == w })
		}
		return ctx.Err()
	}
}

type waiter struct {
	ready   chan struct{}
	granted bool
}

// grantLocked hands budget to waiting fetchers, first come first served.
func (s *GroupSource) grantLocked() {
	for len(s.waiters) > 0 && s.used+s.reserved < s.cfg.MaxInflightBytes {
		w := s.waiters[0]
		s.waiters[0] = nil
		s.waiters = s.waiters[1:]
		s.reserved += int64(s.cfg.BatchMaxBytes)
		w.granted = true
		close(w.ready)
	}
}

// partConn is a fetcher's connection, closable from another goroutine to cut
// a long poll short.
type partConn struct {
	mu   sync.Mutex
	conn *kafkago.Conn
	dead bool
}

func (pc *partConn) set(c *kafkago.Conn) bool {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if pc.dead {
		return false
	}
	pc.conn = c
	return true
}

func (pc *partConn) drop() {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if pc.conn != nil {
		_ = pc.conn.Close()
		pc.conn = nil
	}
}

func (pc *partConn) kill() {
	pc.mu.Lock()
	pc.dead = true
	pc.mu.Unlock()
	pc.drop()
}

func (pc *partConn) get() *kafkago.Conn {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	return pc.conn
}

// fetchBackoff spaces the reconnects of one partition's fetch loop.
var fetchBackoff = retry.Backoff{Initial: 50 * time.Millisecond, Max: 5 * time.Second}

func (s *GroupSource) fetchLoop(ctx context.Context, gs *genState, fs *fetchState) {
	pc := &partConn{}
	stop := context.AfterFunc(ctx, pc.kill)
	defer stop()
	defer pc.kill()
	var wait time.Duration
	for ctx.Err() == nil {
		if wait > 0 && retry.Sleep(ctx, wait) != nil {
			return
		}
		if err := s.reserve(ctx); err != nil {
			return
		}
		err := s.fetchOnce(ctx, gs, fs, pc)
		if err == nil {
			wait = 0
			continue
		}
		if ctx.Err() != nil {
			return
		}
		pc.drop()
		wait = fetchBackoff.Next(wait)
		s.m.fetchErrors.Inc()
		s.log.Warn("fetch failed, reconnecting", "partition", fs.partition, "retry_in", wait, "err", err)
	}
}

// fetchOnce runs one fetch of fs's partition and queues what it got. It
// holds one budget reservation, which it gives back.
func (s *GroupSource) fetchOnce(ctx context.Context, gs *genState, fs *fetchState, pc *partConn) (err error) {
	var got []pipeline.Message
	var bytes int64
	s.mu.Lock()
	epoch, offset := fs.epoch, fs.offset
	// While fetchers queue for budget, a long poll on a quiet partition
	// would sit on budget they need.
	wait := fetchWait
	if len(s.waiters) > 0 {
		wait = contendedFetchWait
	}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.reserved -= int64(s.cfg.BatchMaxBytes)
		if len(got) > 0 && fs.epoch == epoch && !gs.ending && !s.closed {
			s.queue = append(s.queue, &chunk{gs: gs, fs: fs, epoch: epoch, msgs: got, bytes: bytes})
			s.used += bytes
			fs.offset = got[len(got)-1].Offset + 1
		}
		s.broadcastLocked()
		s.mu.Unlock()
	}()

	conn := pc.get()
	if conn == nil {
		conn, err = s.dial(ctx, fs.partition)
		if err != nil {
			return err
		}
		if !pc.set(conn) {
			_ = conn.Close()
			return ctx.Err()
		}
	}
	if offset < 0 {
		if offset, err = s.resolveStart(conn, fs, epoch, offset); err != nil {
			return err
		}
	}
	if _, err := conn.Seek(offset, kafkago.SeekAbsolute|kafkago.SeekDontCheck); err != nil {
		return fmt.Errorf("seek %s/%d to %d: %w", s.topic, fs.partition, offset, err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(wait + readTimeout))
	batch := conn.ReadBatchWith(kafkago.ReadBatchConfig{MinBytes: 1, MaxBytes: s.cfg.BatchMaxBytes, MaxWait: wait})
	hwm := batch.HighWaterMark()
	for {
		m, rerr := batch.ReadMessage()
		if rerr != nil {
			break
		}
		if m.Offset < offset {
			// A compressed producer batch starts before the offset asked for.
			continue
		}
		got = append(got, pipeline.Message{
			Topic: s.topic, Partition: fs.partition, Offset: m.Offset,
			Key: m.Key, Value: m.Value, Time: m.Time,
		})
		bytes += messageBytes(m.Key, m.Value)
	}
	cerr := batch.Close()
	_ = conn.SetReadDeadline(time.Time{})
	if hwm > 0 {
		s.observeHWM(fs, hwm)
	}
	switch {
	case cerr == nil, errors.Is(cerr, io.EOF), errors.Is(cerr, kafkago.RequestTimedOut):
		return nil
	case errors.Is(cerr, kafkago.OffsetOutOfRange):
		_, err := s.resolveStart(conn, fs, epoch, offset)
		return err
	default:
		if len(got) > 0 {
			// Keep what arrived; the error is handled on the next fetch.
			return nil
		}
		return fmt.Errorf("fetch %s/%d at %d: %w", s.topic, fs.partition, offset, cerr)
	}
}

// resolveStart finds where to read when the start is not known (a new group)
// or offset is out of the partition's range (retention removed it, or the
// topic was recreated): the earliest offset, as for a new group.
func (s *GroupSource) resolveStart(conn *kafkago.Conn, fs *fetchState, epoch uint64, offset int64) (int64, error) {
	_ = conn.SetDeadline(time.Now().Add(readTimeout))
	first, last, err := conn.ReadOffsets()
	_ = conn.SetDeadline(time.Time{})
	if err != nil {
		return 0, fmt.Errorf("offsets of %s/%d: %w", s.topic, fs.partition, err)
	}
	start := offset
	switch {
	case offset < 0:
		start = first
	case offset < first:
		s.log.Warn("committed offset was removed by retention, skipping to the earliest offset",
			"partition", fs.partition, "offset", offset, "earliest", first, "skipped", first-offset)
		start = first
	case offset > last:
		s.log.Error("committed offset is past the end of the partition (topic recreated?), reading from the earliest offset",
			"partition", fs.partition, "offset", offset, "end", last)
		start = first
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if fs.epoch == epoch {
		fs.offset = start
		s.tracker.setStart(fs.partition, epoch, start)
	}
	return start, nil
}

func (s *GroupSource) observeHWM(fs *fetchState, hwm int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fs.hwm = hwm
	if c, ok := s.tracker.committed(fs.partition); ok && c >= 0 {
		s.m.lag.WithLabelValues(s.topic, strconv.Itoa(fs.partition)).Set(float64(max(hwm-c, 0)))
	}
}

func (s *GroupSource) dial(ctx context.Context, partition int) (*kafkago.Conn, error) {
	var last error
	for _, b := range s.seeds {
		conn, err := s.dialer.DialLeader(ctx, "tcp", b, s.topic, partition)
		if err == nil {
			return conn, nil
		}
		last = err
	}
	return nil, fmt.Errorf("dial leader of %s/%d: %w", s.topic, partition, last)
}

func messageBytes(key, value []byte) int64 { return int64(len(key) + len(value)) }

// groupBatch is the state behind one batch's AckFunc.
type groupBatch struct {
	s       *GroupSource
	msgs    []pipeline.Message
	ranges  []ackRange
	bytes   int64
	settled atomic.Bool
}

type ackRange struct {
	fs          *fetchState
	epoch       uint64
	first, last int64
}

// Next returns the next batch: up to BatchMaxRecords messages and about
// BatchMaxBytes, waiting at most BatchMaxWait after the first message for
// more. It blocks while nothing is buffered. After Close it returns
// pipeline.ErrClosed; when ctx ends it returns what it has, or ctx's error.
func (s *GroupSource) Next(ctx context.Context) (pipeline.Batch, error) {
	var b *groupBatch
	var expired <-chan time.Time
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			if b != nil {
				return s.hand(b), nil
			}
			return pipeline.Batch{}, pipeline.ErrClosed
		}
		b = s.takeLocked(b)
		wake := s.wake
		s.mu.Unlock()
		if b != nil {
			if len(b.msgs) >= s.cfg.BatchMaxRecords || b.bytes >= int64(s.cfg.BatchMaxBytes) {
				return s.hand(b), nil
			}
			if expired == nil {
				t := time.NewTimer(s.cfg.BatchMaxWait)
				defer t.Stop()
				expired = t.C
			}
		}
		select {
		case <-ctx.Done():
			if b != nil {
				return s.hand(b), nil
			}
			return pipeline.Batch{}, ctx.Err()
		case <-expired:
			return s.hand(b), nil
		case <-wake:
		}
	}
}

func (s *GroupSource) hand(b *groupBatch) pipeline.Batch {
	s.m.batches.Inc()
	return pipeline.Batch{Messages: b.msgs, Ack: b.ack}
}

// takeLocked moves buffered messages into b (allocated if nil and there is
// anything) until the batch is full, and records the delivered ranges.
func (s *GroupSource) takeLocked(b *groupBatch) *groupBatch {
	maxRecords, maxBytes := s.cfg.BatchMaxRecords, int64(s.cfg.BatchMaxBytes)
	for len(s.queue) > 0 {
		var n int
		var nb int64
		if b != nil {
			n, nb = len(b.msgs), b.bytes
			if n >= maxRecords || nb >= maxBytes {
				break
			}
		}
		c := s.queue[0]
		if c.gs.ending || !s.tracker.current(c.fs.partition, c.epoch) {
			s.used -= c.bytes
			s.queue[0] = nil
			s.queue = s.queue[1:]
			continue
		}
		k := 0
		var kb int64
		for k < len(c.msgs) && n+k < maxRecords {
			sz := messageBytes(c.msgs[k].Key, c.msgs[k].Value)
			// A message larger than the whole budget still goes, alone.
			if n+k > 0 && nb+kb+sz > maxBytes {
				break
			}
			kb += sz
			k++
		}
		if k == 0 {
			break
		}
		take := c.msgs[:k:k]
		first, last := take[0].Offset, take[k-1].Offset
		if err := s.tracker.deliver(c.fs.partition, c.epoch, first, last); err != nil {
			// Cannot happen while fetchers append in order; if it does,
			// refetch the partition rather than hand out untracked data.
			s.log.Error("delivery out of order, rewinding the partition", "partition", c.fs.partition, "err", err)
			s.rewindLocked(c.fs, c.epoch)
			continue
		}
		if b == nil {
			b = &groupBatch{s: s, msgs: make([]pipeline.Message, 0, min(maxRecords, 1024))}
		}
		b.msgs = append(b.msgs, take...)
		b.ranges = append(b.ranges, ackRange{fs: c.fs, epoch: c.epoch, first: first, last: last})
		b.bytes += kb
		c.msgs = c.msgs[k:]
		c.bytes -= kb
		if len(c.msgs) == 0 {
			s.queue[0] = nil
			s.queue = s.queue[1:]
		}
	}
	return b
}

// rewindLocked restarts fs from its commit point under a new epoch, dropping
// its buffered messages; acks of batches delivered before are then stale.
func (s *GroupSource) rewindLocked(fs *fetchState, epoch uint64) bool {
	newEpoch, from, ok := s.tracker.rewind(fs.partition, epoch)
	if !ok {
		return false
	}
	fs.epoch, fs.offset = newEpoch, from
	s.purgeLocked(func(c *chunk) bool { return c.fs == fs })
	s.m.rewinds.Inc()
	return true
}

func (b *groupBatch) ack(ctx context.Context, err error) error {
	if !b.settled.CompareAndSwap(false, true) {
		return errors.New("kafka: batch settled twice")
	}
	s := b.s
	if err != nil {
		s.mu.Lock()
		s.used -= b.bytes
		var rewound []int
		for _, r := range b.ranges {
			if s.rewindLocked(r.fs, r.epoch) {
				rewound = append(rewound, r.fs.partition)
			}
		}
		s.broadcastLocked()
		s.mu.Unlock()
		s.log.Warn("batch failed, partitions rewound to their commit point", "partitions", rewound, "err", err)
		return nil
	}

	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	s.mu.Lock()
	s.used -= b.bytes
	dropped := 0
	for _, r := range b.ranges {
		if !s.tracker.ack(r.fs.partition, r.epoch, r.first) {
			dropped++
		}
	}
	s.broadcastLocked()
	s.mu.Unlock()
	if dropped > 0 {
		s.m.acksDropped.Add(float64(dropped))
		s.log.Warn("ack dropped for partitions no longer owned or rewound; those messages are delivered again", "ranges", dropped)
	}
	return s.commitLocked(ctx)
}

// commitLocked sends the commit points that moved; s.commitMu must be held.
func (s *GroupSource) commitLocked(ctx context.Context) error {
	s.mu.Lock()
	gs := s.gen
	offs := s.tracker.committable()
	s.mu.Unlock()
	if gs == nil || len(offs) == 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("kafka: commit: %w", err)
	}
	req := map[int]int64{}
	for p, eo := range offs {
		req[p] = eo.offset
	}
	if err := gs.gen.CommitOffsets(map[string]map[int]int64{s.topic: req}); err != nil {
		s.m.commitErrors.Inc()
		return fmt.Errorf("kafka: commit %s %v in generation %d: %w", s.topic, req, gs.gen.ID, err)
	}
	s.mu.Lock()
	s.tracker.confirm(offs)
	for p, off := range req {
		if fs, ok := gs.parts[p]; ok && fs.hwm >= 0 && s.gen == gs {
			s.m.lag.WithLabelValues(s.topic, strconv.Itoa(p)).Set(float64(max(fs.hwm-off, 0)))
		}
	}
	s.mu.Unlock()
	s.m.commits.Inc()
	return nil
}

// Stats reports owned partitions, lag and in-flight bytes.
func (s *GroupSource) Stats() pipeline.SourceStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := pipeline.SourceStats{InflightBytes: s.used}
	if s.gen == nil {
		return st
	}
	st.Partitions = len(s.gen.parts)
	for p, fs := range s.gen.parts {
		if c, ok := s.tracker.committed(p); ok && c >= 0 && fs.hwm > c {
			st.Lag += fs.hwm - c
		}
	}
	return st
}

// Close stops fetching at once (Next returns pipeline.ErrClosed), then waits
// up to DrainTimeout for the batches handed out to be acked and committed,
// leaves the group and returns. Call it from another goroutine than the one
// acking, or after every batch is settled.
func (s *GroupSource) Close() error {
	s.close.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.purgeLocked(func(*chunk) bool { return true })
		s.broadcastLocked()
		s.mu.Unlock()
		_ = s.cg.Close()
		<-s.loopDone
		s.m.Unregister()
	})
	return nil
}

var _ pipeline.StatsSource = (*GroupSource)(nil)

type groupMetrics struct {
	lag          *prometheus.GaugeVec
	commits      prometheus.Counter
	commitErrors prometheus.Counter
	acksDropped  prometheus.Counter
	generations  prometheus.Counter
	groupErrors  prometheus.Counter
	rewinds      prometheus.Counter
	fetchErrors  prometheus.Counter
	paused       prometheus.Counter
	batches      prometheus.Counter
	inflight     prometheus.GaugeFunc

	promreg.Registration
}

func newGroupMetrics(s *GroupSource) *groupMetrics {
	const ns = "cohortsync"
	counter := func(sub, name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: name, Help: help})
	}
	return &groupMetrics{
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: "consumer", Name: "lag",
			Help: "High watermark minus committed offset, per owned partition, updated on every fetch and commit.",
		}, []string{"topic", "partition"}),
		commits:      counter("", "commits_total", "Offset commits the broker accepted."),
		commitErrors: counter("consumer", "commit_errors_total", "Offset commits that failed; the next ack commits again."),
		acksDropped:  counter("", "acks_dropped_total", "Acked ranges not committed because their partition was revoked or rewound; they are delivered again."),
		generations:  counter("consumer", "generations_total", "Consumer group generations joined (rebalances)."),
		groupErrors:  counter("consumer", "group_errors_total", "Failed attempts to join the consumer group."),
		rewinds:      counter("consumer", "rewinds_total", "Partitions rewound to their commit point after a failed batch."),
		fetchErrors:  counter("consumer", "fetch_errors_total", "Fetches that failed and were retried on a new connection."),
		paused:       counter("consumer", "fetch_paused_total", "Times a fetcher waited because in-flight bytes reached max_inflight_bytes."),
		batches:      counter("consumer", "batches_total", "Batches handed out."),
		inflight: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: "consumer", Name: "inflight_bytes",
			Help: "Bytes fetched and not yet acked (buffered or being processed).",
		}, func() float64 {
			s.mu.Lock()
			defer s.mu.Unlock()
			return float64(s.used)
		}),
	}
}

func (m *groupMetrics) register(reg prometheus.Registerer) error {
	return m.Registration.Register(reg, "", m.lag, m.commits, m.commitErrors, m.acksDropped, m.generations, m.groupErrors, m.rewinds, m.fetchErrors, m.paused, m.batches, m.inflight)
}
