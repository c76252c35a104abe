package kafka

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	kafkago "github.com/segmentio/kafka-go"

	"github.com/cohortsync/cohortsync/internal/promreg"
	"github.com/cohortsync/cohortsync/pipeline"
)

// RangeOptions chooses the records a RangeSource replays.
type RangeOptions struct {
	// Since is the start of the window, inclusive; zero means the earliest
	// record still in each partition. Until is its end, exclusive; zero
	// means the end of each partition when the source is opened.
	Since, Until time.Time
	// Resume is a checkpoint (see RangeSource.Done): the next offset to
	// read per partition. It overrides Since for the partitions it names.
	Resume map[int]int64
	// MaxBatchMessages and MaxBatchBytes cut batches; zero takes
	// DefaultRangeBatchMessages and DefaultRangeBatchBytes.
	MaxBatchMessages int
	MaxBatchBytes    int64
}

// Defaults of RangeOptions, the same as the live consumer's batches so a
// replay writes files and versions of the same sizes.
const (
	DefaultRangeBatchMessages       = 1000
	DefaultRangeBatchBytes    int64 = 4 << 20
)

const (
	// rangeFetchWait bounds a fetch's long poll. The range only reads
	// offsets below the high-water mark seen at open, so data is there and
	// a fetch normally answers at once.
	rangeFetchWait = 500 * time.Millisecond
	// rangeMinFetchBytes keeps fetches efficient when batches are small.
	rangeMinFetchBytes = 1 << 20
)

// RangeSource is a finite pipeline.Source over a time window of one topic.
// It reads partitions directly, positioned by the broker's offset-for-time
// lookup, so no consumer group is joined and the live group's offsets are
// never touched. Messages carry the same Topic, Partition, Offset, Key,
// Value and Time as GroupSource's, so sinks that name their output by
// position write the same files and versions when a replay covers records
// the stream already processed.
//
// Next returns pipeline.ErrClosed once every partition was read to its end
// and every batch handed out was acked; a nacked batch makes its
// partitions be read again from their first unacked offset.
//
// Records inside the offset range whose timestamp falls outside
// [Since, Until) are skipped (counted by Skipped): producer timestamps need
// not grow with offsets, and the window is defined by time.
type RangeSource struct {
	client *Client
	topic  string
	opts   RangeOptions
	log    *slog.Logger
	m      *rangeMetrics
	total  int64

	// closeCtx ends when Close is called, to interrupt a fetch in progress.
	closeCtx  context.Context
	closeFn   context.CancelFunc
	closeOnce sync.Once

	// fetchMu is held by Next while it fetches, and by Close while it
	// closes the connections, so a connection is never closed under a
	// fetch that is still using it.
	fetchMu sync.Mutex
	conns   map[int]*kafkago.Conn

	mu          sync.Mutex
	parts       map[int]*rangePart
	order       []int // partitions in ascending order, for round-robin
	cursor      int   // index in order where the next batch starts
	outstanding int   // batches handed out and not yet settled
	closed      bool
	wake        chan struct{} // closed and replaced whenever state changes
	skipped     atomic.Int64
}

// rangePart is the reading state of one partition. Offsets satisfy
// done ≤ pos ≤ fetched, except that acks of batches handed out before a
// rewind may move done past pos (their data is durable either way).
type rangePart struct {
	partition int
	end       int64 // exclusive
	// epoch changes on every rewind; acks and fetches of an older epoch
	// no longer move pos or fetched.
	epoch uint64
	// pos is where the next handed-out piece starts; fetched is where the
	// next fetch reads. buf holds the messages of [pos, fetched) that are
	// inside the time window.
	pos, fetched int64
	buf          []pipeline.Message
	bufBytes     int64
	// done is the end of the contiguous acked prefix; acked holds acked
	// spans beyond it, unordered.
	done  int64
	acked []span
}

// span is a half-open offset interval [from, to).
type span struct{ from, to int64 }

// piece is the part of one partition that a batch covers.
type piece struct {
	partition int
	epoch     uint64
	span
}

// NewRangeSource looks up the start and end offset of every partition of
// topic and returns a source that reads them. The offsets are fixed here:
// records landed after this call are not part of the range.
func (c *Client) NewRangeSource(ctx context.Context, topic string, opts RangeOptions, reg prometheus.Registerer, log *slog.Logger) (*RangeSource, error) {
	if opts.MaxBatchMessages < 0 || opts.MaxBatchBytes < 0 {
		return nil, fmt.Errorf("kafka: range source: batch limits must not be negative (messages %d, bytes %d)", opts.MaxBatchMessages, opts.MaxBatchBytes)
	}
	if opts.MaxBatchMessages == 0 {
		opts.MaxBatchMessages = DefaultRangeBatchMessages
	}
	if opts.MaxBatchBytes == 0 {
		opts.MaxBatchBytes = DefaultRangeBatchBytes
	}
	if !opts.Until.IsZero() && !opts.Until.After(opts.Since) {
		return nil, fmt.Errorf("kafka: range source: until (%s) must be after since (%s)", opts.Until.Format(time.RFC3339), opts.Since.Format(time.RFC3339))
	}
	if log == nil {
		log = slog.Default()
	}
	log = log.With("component", "kafka_range", "topic", topic)

	bounds, err := c.rangeBounds(ctx, topic, opts, log)
	if err != nil {
		return nil, err
	}
	s := &RangeSource{
		client: c,
		topic:  topic,
		opts:   opts,
		log:    log,
		conns:  map[int]*kafkago.Conn{},
		parts:  map[int]*rangePart{},
		wake:   make(chan struct{}),
	}
	s.closeCtx, s.closeFn = context.WithCancel(context.Background())
	for p, b := range bounds {
		s.parts[p] = &rangePart{partition: p, end: b.to, pos: b.from, fetched: b.from, done: b.from}
		s.order = append(s.order, p)
		if b.to > b.from {
			s.total += b.to - b.from
		}
	}
	slices.Sort(s.order)
	s.m = newRangeMetrics(s)
	if err := s.m.register(reg); err != nil {
		s.closeFn()
		return nil, fmt.Errorf("kafka: range source: %w", err)
	}
	log.Info("range source opened", "since", opts.Since, "until", opts.Until, "partitions", len(s.parts), "messages", s.total)
	return s, nil
}

// rangeBounds computes [start, end) for every partition of topic.
func (c *Client) rangeBounds(ctx context.Context, topic string, opts RangeOptions, log *slog.Logger) (map[int]span, error) {
	md, err := c.admin.Metadata(ctx, &kafkago.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return nil, fmt.Errorf("kafka: range source: metadata of %s: %w", topic, err)
	}
	if len(md.Topics) != 1 || md.Topics[0].Error != nil || len(md.Topics[0].Partitions) == 0 {
		return nil, fmt.Errorf("kafka: range source: topic %s not found", topic)
	}
	var ids []int
	for _, p := range md.Topics[0].Partitions {
		ids = append(ids, p.ID)
	}
	for p := range opts.Resume {
		if !slices.Contains(ids, p) {
			return nil, fmt.Errorf("kafka: range source: checkpoint names partition %d, which %s does not have", p, topic)
		}
	}

	// One lookup per request: kafka-go keys time lookups by the timestamp
	// the broker answers, which clashes with the first/last markers.
	first, err := c.listOffsets(ctx, topic, ids, func(p int) kafkago.OffsetRequest { return kafkago.FirstOffsetOf(p) })
	if err != nil {
		return nil, err
	}
	last, err := c.listOffsets(ctx, topic, ids, func(p int) kafkago.OffsetRequest { return kafkago.LastOffsetOf(p) })
	if err != nil {
		return nil, err
	}
	atTime := func(t time.Time) (map[int]int64, error) {
		got, err := c.listOffsets(ctx, topic, ids, func(p int) kafkago.OffsetRequest { return kafkago.TimeOffsetOf(p, t) })
		if err != nil {
			return nil, err
		}
		out := map[int]int64{}
		for p, po := range got {
			// No record at or after t: the answer carries no offset,
			// and the range of that side ends at the high-water mark.
			off := last[p].LastOffset
			for o := range po.Offsets {
				if o >= 0 && o < off {
					off = o
				}
			}
			out[p] = off
		}
		return out, nil
	}
	starts := map[int]int64{}
	if opts.Since.IsZero() {
		for p, po := range first {
			starts[p] = po.FirstOffset
		}
	} else if starts, err = atTime(opts.Since); err != nil {
		return nil, err
	}
	ends := map[int]int64{}
	if opts.Until.IsZero() {
		for p, po := range last {
			ends[p] = po.LastOffset
		}
	} else if ends, err = atTime(opts.Until); err != nil {
		return nil, err
	}

	out := map[int]span{}
	for _, p := range ids {
		from, to := starts[p], ends[p]
		if r, ok := opts.Resume[p]; ok {
			from = r
		}
		if lo := first[p].FirstOffset; from < lo {
			// Retention removed records a checkpoint still needed;
			// they are gone, so say so rather than wait for them.
			log.Warn("range start was removed by retention, starting at the earliest offset",
				"partition", p, "from", from, "earliest", lo, "lost", lo-from)
			from = lo
		}
		out[p] = span{from: from, to: max(to, from)}
	}
	return out, nil
}

func (c *Client) listOffsets(ctx context.Context, topic string, ids []int, req func(int) kafkago.OffsetRequest) (map[int]kafkago.PartitionOffsets, error) {
	reqs := make([]kafkago.OffsetRequest, len(ids))
	for i, p := range ids {
		reqs[i] = req(p)
	}
	resp, err := c.admin.ListOffsets(ctx, &kafkago.ListOffsetsRequest{Topics: map[string][]kafkago.OffsetRequest{topic: reqs}})
	if err != nil {
		return nil, fmt.Errorf("kafka: range source: list offsets of %s: %w", topic, err)
	}
	out := map[int]kafkago.PartitionOffsets{}
	for _, po := range resp.Topics[topic] {
		if po.Error != nil {
			return nil, fmt.Errorf("kafka: range source: list offsets of %s/%d: %w", topic, po.Partition, po.Error)
		}
		out[po.Partition] = po
	}
	for _, p := range ids {
		if _, ok := out[p]; !ok {
			return nil, fmt.Errorf("kafka: range source: no offsets for %s/%d in the broker's answer", topic, p)
		}
	}
	return out, nil
}

// Total is the number of offsets in the range when the source was opened,
// from the start positions (checkpoint or Since) to the ends: the figure to
// measure progress against. Skipped records are included.
func (s *RangeSource) Total() int64 { return s.total }

// Skipped counts the records read inside the offset range whose timestamp
// is outside [Since, Until), which were not handed out.
func (s *RangeSource) Skipped() int64 { return s.skipped.Load() }

// Done returns, per partition, the offset after the contiguous prefix of
// acked records: a checkpoint to pass as RangeOptions.Resume.
func (s *RangeSource) Done() map[int]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[int]int64, len(s.parts))
	for p, rp := range s.parts {
		out[p] = rp.done
	}
	return out
}

// Next returns the next batch. While the partitions still have records it
// fetches them; once all are handed out it waits for the outstanding
// batches to settle, and returns pipeline.ErrClosed when they were all
// acked (a nack makes records available again). It also returns
// pipeline.ErrClosed after Close, and ctx's error when ctx ends first.
// Next must not be called from two goroutines at once.
func (s *RangeSource) Next(ctx context.Context) (pipeline.Batch, error) {
	for {
		b, err := s.collect(ctx)
		if err != nil || b != nil {
			if b != nil {
				return s.hand(b), nil
			}
			return pipeline.Batch{}, err
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return pipeline.Batch{}, pipeline.ErrClosed
		}
		if s.outstanding == 0 {
			if s.finishedLocked() {
				s.mu.Unlock()
				return pipeline.Batch{}, pipeline.ErrClosed
			}
			if !s.anyToReadLocked() {
				// Every batch settled, nothing left to fetch, yet a
				// prefix is not acked: cannot happen with the ack
				// rules below. Read it again rather than end short.
				s.rewindIncompleteLocked()
			}
			s.mu.Unlock()
			continue
		}
		wake := s.wake
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return pipeline.Batch{}, ctx.Err()
		case <-wake:
		}
	}
}

// rangeBatch is the state behind one batch's AckFunc.
type rangeBatch struct {
	s       *RangeSource
	msgs    []pipeline.Message
	bytes   int64
	pieces  []piece
	settled atomic.Bool
}

func (s *RangeSource) hand(b *rangeBatch) pipeline.Batch {
	s.m.batches.Inc()
	s.m.messages.Add(float64(len(b.msgs)))
	return pipeline.Batch{Messages: b.msgs, Ack: b.ack}
}

// collect gathers up to one batch, fetching partitions whose buffer is
// empty, round-robin from where the previous batch stopped. It returns a
// nil batch and nil error when nothing is left to hand out right now. A
// fetch error is returned only when nothing was collected; otherwise the
// partition is tried again on the next call.
func (s *RangeSource) collect(ctx context.Context) (*rangeBatch, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, pipeline.ErrClosed
	}
	order := s.order
	start := s.cursor
	s.mu.Unlock()

	var b *rangeBatch
	var fetchErr error
	for i := range order {
		p := order[(start+i)%len(order)]
		if err := s.fill(ctx, p); err != nil {
			if ctx.Err() != nil || s.closeCtx.Err() != nil {
				if b != nil {
					return b, nil
				}
				if s.closeCtx.Err() != nil {
					return nil, pipeline.ErrClosed
				}
				return nil, ctx.Err()
			}
			s.m.fetchErrors.Inc()
			s.log.Warn("fetch failed, the partition is tried again", "partition", p, "err", err)
			fetchErr = errors.Join(fetchErr, err)
			continue
		}
		s.mu.Lock()
		b = s.takeLocked(s.parts[p], b)
		full := b != nil && (len(b.msgs) >= s.opts.MaxBatchMessages || b.bytes >= s.opts.MaxBatchBytes)
		if full {
			// The next batch starts with this partition, which
			// may have more buffered.
			s.cursor = (start + i) % len(order)
		}
		s.mu.Unlock()
		if full {
			return b, nil
		}
	}
	s.mu.Lock()
	s.cursor = (start + 1) % len(order)
	s.mu.Unlock()
	if b != nil {
		return b, nil
	}
	return nil, fetchErr
}

// fill fetches the next records of partition p when its buffer is empty
// and it has records left in the range.
func (s *RangeSource) fill(ctx context.Context, p int) error {
	s.mu.Lock()
	rp := s.parts[p]
	if len(rp.buf) == 0 && rp.pos == rp.fetched && rp.done > rp.fetched {
		// Acks of batches from before a rewind already made these
		// records durable: no need to read them again.
		rp.pos, rp.fetched = rp.done, rp.done
	}
	need := len(rp.buf) == 0 && rp.pos == rp.fetched && rp.fetched < rp.end
	epoch, from, end := rp.epoch, rp.fetched, rp.end
	s.mu.Unlock()
	if !need {
		return nil
	}
	msgs, bytes, next, err := s.fetch(ctx, p, from, end)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if rp.epoch != epoch || rp.fetched != from {
		// A nack rewound the partition while this fetch ran.
		return nil
	}
	rp.buf, rp.bufBytes, rp.fetched = msgs, bytes, next
	return nil
}

// fetch reads records of partition p from offset from, below end. It
// returns the messages inside the time window and the offset the next
// fetch starts at, which is past from whenever it returns no error.
func (s *RangeSource) fetch(ctx context.Context, p int, from, end int64) ([]pipeline.Message, int64, int64, error) {
	s.fetchMu.Lock()
	defer s.fetchMu.Unlock()
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stopClose := context.AfterFunc(s.closeCtx, cancel)
	defer stopClose()
	if err := fctx.Err(); err != nil {
		return nil, 0, 0, err
	}

	conn := s.conns[p]
	if conn == nil {
		c, err := s.client.DialLeader(fctx, s.topic, p)
		if err != nil {
			return nil, 0, 0, err
		}
		conn = c
		s.conns[p] = conn
	}
	// A cancelled ctx or Close interrupts a blocked read through the
	// deadline; the connection is dropped below as its state is unknown.
	stopInterrupt := context.AfterFunc(fctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stopInterrupt()
	drop := func() {
		_ = conn.Close()
		delete(s.conns, p)
	}

	if _, err := conn.Seek(from, kafkago.SeekAbsolute|kafkago.SeekDontCheck); err != nil {
		drop()
		return nil, 0, 0, fmt.Errorf("kafka: seek %s/%d to %d: %w", s.topic, p, from, err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(rangeFetchWait + readTimeout))
	maxBytes := int(max(s.opts.MaxBatchBytes, rangeMinFetchBytes))
	batch := conn.ReadBatchWith(kafkago.ReadBatchConfig{MinBytes: 1, MaxBytes: maxBytes, MaxWait: rangeFetchWait})
	var got []pipeline.Message
	var bytes, skipped int64
	next := from
	for {
		m, err := batch.ReadMessage()
		if err != nil {
			break
		}
		if m.Offset < from {
			// A compressed producer batch starts before the offset asked for.
			continue
		}
		if m.Offset >= end {
			next = end
			break
		}
		next = m.Offset + 1
		if !s.inWindow(m.Time) {
			skipped++
			continue
		}
		got = append(got, pipeline.Message{
			Topic: s.topic, Partition: p, Offset: m.Offset,
			Key: m.Key, Value: m.Value, Time: m.Time,
		})
		bytes += messageBytes(m.Key, m.Value)
	}
	if next == from {
		// Records that are not messages (transaction markers) still
		// move the batch's offset.
		if o := batch.Offset(); o > from {
			next = min(o, end)
		}
	}
	cerr := batch.Close()
	if !stopInterrupt() {
		// The interrupt ran or is running: the connection's deadline
		// is in the past, and it may be mid-response.
		drop()
		return nil, 0, 0, context.Cause(fctx)
	}
	_ = conn.SetDeadline(time.Time{})
	switch {
	case cerr == nil, errors.Is(cerr, io.EOF), errors.Is(cerr, kafkago.RequestTimedOut):
	case errors.Is(cerr, kafkago.OffsetOutOfRange):
		return s.skipRemoved(fctx, conn, p, from, end)
	default:
		if next == from {
			drop()
			return nil, 0, 0, fmt.Errorf("kafka: fetch %s/%d at %d: %w", s.topic, p, from, cerr)
		}
		// Keep what arrived; a broken connection shows on the next fetch.
	}
	if next == from {
		return nil, 0, 0, fmt.Errorf("kafka: fetch %s/%d at %d returned no records below the range end %d", s.topic, p, from, end)
	}
	s.skipped.Add(skipped)
	s.m.skipped.Add(float64(skipped))
	return got, bytes, next, nil
}

// skipRemoved handles a fetch below the log start: retention removed
// records of the range since it was opened. They cannot be read; the
// partition continues at the earliest offset, and the loss is logged.
func (s *RangeSource) skipRemoved(ctx context.Context, conn *kafkago.Conn, p int, from, end int64) ([]pipeline.Message, int64, int64, error) {
	_ = conn.SetDeadline(time.Now().Add(readTimeout))
	first, _, err := conn.ReadOffsets()
	_ = conn.SetDeadline(time.Time{})
	if err != nil {
		_ = conn.Close()
		delete(s.conns, p)
		return nil, 0, 0, fmt.Errorf("kafka: offsets of %s/%d: %w", s.topic, p, err)
	}
	if first <= from {
		return nil, 0, 0, fmt.Errorf("kafka: fetch %s/%d at %d: offset out of range (log starts at %d)", s.topic, p, from, first)
	}
	next := min(first, end)
	s.m.lost.Add(float64(next - from))
	s.log.ErrorContext(ctx, "records of the range were removed by retention before they were read",
		"partition", p, "from", from, "earliest", first, "lost", next-from)
	return nil, 0, next, nil
}

func (s *RangeSource) inWindow(t time.Time) bool {
	if !s.opts.Since.IsZero() && t.Before(s.opts.Since) {
		return false
	}
	return s.opts.Until.IsZero() || t.Before(s.opts.Until)
}

// takeLocked moves buffered messages of rp into b (allocated when nil and
// anything is taken) until the batch is full, and records the piece of the
// partition the batch covers. A piece with no messages (every record of a
// fetch skipped) is acked at once, as nothing has to be written for it.
func (s *RangeSource) takeLocked(rp *rangePart, b *rangeBatch) *rangeBatch {
	if rp.pos >= rp.fetched {
		return b
	}
	var n int
	var nb int64
	if b != nil {
		n, nb = len(b.msgs), b.bytes
	}
	k := 0
	var kb int64
	for k < len(rp.buf) && n+k < s.opts.MaxBatchMessages {
		sz := messageBytes(rp.buf[k].Key, rp.buf[k].Value)
		// A message larger than the whole budget still goes, alone.
		if n+k > 0 && nb+kb+sz > s.opts.MaxBatchBytes {
			break
		}
		kb += sz
		k++
	}
	if len(rp.buf) == 0 {
		s.ackSpanLocked(rp, span{rp.pos, rp.fetched})
		rp.pos = rp.fetched
		return b
	}
	if k == 0 {
		return b
	}
	to := rp.fetched
	if k < len(rp.buf) {
		to = rp.buf[k-1].Offset + 1
	}
	if b == nil {
		b = &rangeBatch{s: s, msgs: make([]pipeline.Message, 0, min(s.opts.MaxBatchMessages, 1024))}
	}
	b.msgs = append(b.msgs, rp.buf[:k]...)
	b.bytes += kb
	b.pieces = append(b.pieces, piece{partition: rp.partition, epoch: rp.epoch, span: span{rp.pos, to}})
	if len(b.pieces) == 1 {
		s.outstanding++
	}
	rp.pos = to
	if k == len(rp.buf) {
		rp.buf, rp.bufBytes = nil, 0
	} else {
		// Copy so the handed-out messages and the buffer share no array.
		rp.buf = slices.Clone(rp.buf[k:])
		rp.bufBytes -= kb
	}
	return b
}

// ackSpanLocked records [sp.from, sp.to) of rp as durable and moves the
// contiguous prefix.
func (s *RangeSource) ackSpanLocked(rp *rangePart, sp span) {
	if sp.to <= rp.done {
		return
	}
	rp.acked = append(rp.acked, sp)
	for moved := true; moved; {
		moved = false
		kept := rp.acked[:0]
		for _, a := range rp.acked {
			switch {
			case a.from <= rp.done:
				if a.to > rp.done {
					rp.done = a.to
				}
				moved = true
			default:
				kept = append(kept, a)
			}
		}
		rp.acked = kept
	}
}

// rewindLocked makes rp read again from its first unacked offset and
// drops what it buffered; pieces handed out before are of an older epoch.
func (s *RangeSource) rewindLocked(rp *rangePart) {
	rp.epoch++
	rp.pos, rp.fetched = rp.done, rp.done
	rp.buf, rp.bufBytes = nil, 0
	s.m.rewinds.Inc()
}

func (s *RangeSource) finishedLocked() bool {
	for _, rp := range s.parts {
		if rp.done < rp.end {
			return false
		}
	}
	return true
}

func (s *RangeSource) anyToReadLocked() bool {
	for _, rp := range s.parts {
		if rp.pos < rp.fetched || rp.fetched < rp.end {
			return true
		}
	}
	return false
}

func (s *RangeSource) rewindIncompleteLocked() {
	for _, rp := range s.parts {
		if rp.done < rp.end {
			s.log.Error("partition read to its end without every record acked, reading the rest again",
				"partition", rp.partition, "done", rp.done, "end", rp.end)
			s.rewindLocked(rp)
		}
	}
}

func (s *RangeSource) broadcastLocked() {
	close(s.wake)
	s.wake = make(chan struct{})
}

// ack settles a batch. A nil err marks its records durable, whatever
// happened since it was handed out. An error rewinds each of its
// partitions to the first unacked offset, unless a newer rewind already
// did (the records are then already due again).
func (b *rangeBatch) ack(_ context.Context, err error) error {
	if !b.settled.CompareAndSwap(false, true) {
		return errors.New("kafka: range batch settled twice")
	}
	s := b.s
	s.mu.Lock()
	defer s.mu.Unlock()
	s.outstanding--
	var rewound []int
	for _, pc := range b.pieces {
		rp := s.parts[pc.partition]
		if err == nil {
			s.ackSpanLocked(rp, pc.span)
			continue
		}
		if pc.epoch == rp.epoch {
			s.rewindLocked(rp)
			rewound = append(rewound, pc.partition)
		}
	}
	s.broadcastLocked()
	if err != nil {
		s.log.Warn("batch failed, partitions are read again from their first unacked offset", "partitions", rewound, "err", err)
	}
	return nil
}

// Close stops the source: a fetch in progress is interrupted, Next returns
// pipeline.ErrClosed, and the connections are closed. Batches handed out
// may still be settled afterwards; Done reflects them.
func (s *RangeSource) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.broadcastLocked()
		s.mu.Unlock()
		s.closeFn()
		s.fetchMu.Lock()
		for p, c := range s.conns {
			_ = c.Close()
			delete(s.conns, p)
		}
		s.fetchMu.Unlock()
		s.m.Unregister()
		s.log.Info("range source closed", "done", s.Done())
	})
	return nil
}

var _ pipeline.StatsSource = (*RangeSource)(nil)

// Stats reports the partitions and the records of the range not yet acked.
func (s *RangeSource) Stats() pipeline.SourceStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := pipeline.SourceStats{Partitions: len(s.parts)}
	for _, rp := range s.parts {
		st.Lag += max(rp.end-rp.done, 0)
		st.InflightBytes += rp.bufBytes
	}
	return st
}

type rangeMetrics struct {
	batches     prometheus.Counter
	messages    prometheus.Counter
	skipped     prometheus.Counter
	lost        prometheus.Counter
	rewinds     prometheus.Counter
	fetchErrors prometheus.Counter
	remaining   prometheus.GaugeFunc

	promreg.Registration
}

func newRangeMetrics(s *RangeSource) *rangeMetrics {
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Namespace: "cohortsync", Subsystem: "backfill_kafka", Name: name, Help: help})
	}
	return &rangeMetrics{
		batches:     counter("batches_total", "Batches handed out by the Kafka range source."),
		messages:    counter("messages_total", "Messages handed out by the Kafka range source, redeliveries included."),
		skipped:     counter("skipped_total", "Records inside the offset range whose timestamp is outside the time window."),
		lost:        counter("lost_total", "Records of the range removed by retention before they were read."),
		rewinds:     counter("rewinds_total", "Partitions read again from their first unacked offset after a failed batch."),
		fetchErrors: counter("fetch_errors_total", "Fetches that failed and were tried again."),
		remaining: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "cohortsync", Subsystem: "backfill_kafka", Name: "remaining_messages",
			Help: "Offsets of the range not yet acked.",
		}, func() float64 { return float64(s.Stats().Lag) }),
	}
}

func (m *rangeMetrics) register(reg prometheus.Registerer) error {
	return m.Registration.Register(reg, "", m.batches, m.messages, m.skipped, m.lost, m.rewinds, m.fetchErrors, m.remaining)
}
