package kafka

import (
	"fmt"
	"sort"
)

// commitTracker decides which offsets a consumer may commit. Batches are
// handed out in offset order per partition but may be acked in any order, so
// a partition's commit point only moves over the prefix of delivered ranges
// that are all acked: committing past an unacked range would lose it on a
// crash.
//
// Every assignment of a partition gets a new epoch. Acks carry the epoch their
// range was delivered under, so an ack that arrives after the partition was
// revoked (a rebalance) or rewound (a nack) is recognised as stale and
// dropped instead of moving a commit point it no longer owns.
//
// A commitTracker is not safe for concurrent use; the group source guards it
// with its mutex.
type commitTracker struct {
	parts     map[int]*partitionTrack
	nextEpoch uint64
}

type partitionTrack struct {
	epoch uint64
	// committed is the offset after the acked prefix: what a restart reads
	// next. It is negative (kafka-go's FirstOffset) until the start position
	// is known.
	committed int64
	// sent is the last committed offset the broker confirmed.
	sent int64
	// pending are the delivered, not yet settled ranges in delivery order.
	pending []trackedRange
}

type trackedRange struct {
	first, last int64
	acked       bool
}

func newCommitTracker() *commitTracker {
	return &commitTracker{parts: map[int]*partitionTrack{}}
}

// assign starts tracking partition p from start (the group's committed offset,
// or a negative value meaning "not known yet") and returns the new epoch. A
// previous assignment of p is forgotten.
func (t *commitTracker) assign(p int, start int64) uint64 {
	t.nextEpoch++
	t.parts[p] = &partitionTrack{epoch: t.nextEpoch, committed: start, sent: start}
	return t.nextEpoch
}

// current reports whether epoch is p's live assignment.
func (t *commitTracker) current(p int, epoch uint64) bool {
	pt, ok := t.parts[p]
	return ok && pt.epoch == epoch
}

// setStart fixes the start position of an assignment whose committed offset
// was not known (a new group) or no longer exists (removed by retention).
// Nothing may have been delivered yet. The start itself is not worth a
// commit: only acked batches move the group's offset.
func (t *commitTracker) setStart(p int, epoch uint64, start int64) bool {
	pt, ok := t.parts[p]
	if !ok || pt.epoch != epoch || len(pt.pending) > 0 {
		return false
	}
	pt.committed, pt.sent = start, start
	return true
}

// deliver records that offsets first..last of p were handed out under epoch.
// Ranges must come in increasing offset order; offsets between two ranges
// (compacted away, transaction markers) are simply never delivered.
func (t *commitTracker) deliver(p int, epoch uint64, first, last int64) error {
	pt, ok := t.parts[p]
	if !ok || pt.epoch != epoch {
		return fmt.Errorf("partition %d epoch %d is not assigned", p, epoch)
	}
	if first > last {
		return fmt.Errorf("partition %d: empty range %d..%d", p, first, last)
	}
	if n := len(pt.pending); n > 0 && first <= pt.pending[n-1].last {
		return fmt.Errorf("partition %d: range %d..%d overlaps or precedes %d..%d", p, first, last, pt.pending[n-1].first, pt.pending[n-1].last)
	}
	if pt.committed >= 0 && first < pt.committed {
		return fmt.Errorf("partition %d: range %d..%d is before the commit point %d", p, first, last, pt.committed)
	}
	pt.pending = append(pt.pending, trackedRange{first: first, last: last})
	return nil
}

// ack settles the range starting at first. It returns false when the ack is
// stale (the partition was revoked or rewound since) and must be dropped.
func (t *commitTracker) ack(p int, epoch uint64, first int64) bool {
	pt, ok := t.parts[p]
	if !ok || pt.epoch != epoch {
		return false
	}
	i := sort.Search(len(pt.pending), func(i int) bool { return pt.pending[i].first >= first })
	if i == len(pt.pending) || pt.pending[i].first != first {
		return false
	}
	pt.pending[i].acked = true
	n := 0
	for n < len(pt.pending) && pt.pending[n].acked {
		pt.committed = pt.pending[n].last + 1
		n++
	}
	if n > 0 {
		// Copy down instead of reslicing so the backing array does not
		// grow without bound over a long run.
		pt.pending = pt.pending[:copy(pt.pending, pt.pending[n:])]
	}
	return true
}

// rewind forgets every unsettled range of p and starts a new epoch at the
// commit point, which it returns: the offset to fetch from again.
func (t *commitTracker) rewind(p int, epoch uint64) (newEpoch uint64, from int64, ok bool) {
	pt, found := t.parts[p]
	if !found || pt.epoch != epoch {
		return 0, 0, false
	}
	t.nextEpoch++
	pt.epoch = t.nextEpoch
	pt.pending = pt.pending[:0]
	return pt.epoch, pt.committed, true
}

// revoke stops tracking p if epoch is its live assignment and returns how
// many ranges were still unsettled; their acks will be dropped.
func (t *commitTracker) revoke(p int, epoch uint64) (unsettled int, ok bool) {
	pt, found := t.parts[p]
	if !found || pt.epoch != epoch {
		return 0, false
	}
	delete(t.parts, p)
	return len(pt.pending), true
}

// unsettled counts the ranges of p's live assignment still waiting for an ack.
func (t *commitTracker) unsettled(p int, epoch uint64) int {
	pt, ok := t.parts[p]
	if !ok || pt.epoch != epoch {
		return 0
	}
	return len(pt.pending)
}

// committed returns p's commit point (negative while unknown).
func (t *commitTracker) committed(p int) (int64, bool) {
	pt, ok := t.parts[p]
	if !ok {
		return 0, false
	}
	return pt.committed, true
}

// committable returns the partitions whose commit point moved past what the
// broker last confirmed, with the epoch it was computed under.
func (t *commitTracker) committable() map[int]epochOffset {
	var out map[int]epochOffset
	for p, pt := range t.parts {
		if pt.committed >= 0 && pt.committed > pt.sent {
			if out == nil {
				out = map[int]epochOffset{}
			}
			out[p] = epochOffset{epoch: pt.epoch, offset: pt.committed}
		}
	}
	return out
}

type epochOffset struct {
	epoch  uint64
	offset int64
}

// confirm records that the broker stored offs. Entries for assignments that
// changed meanwhile are ignored, and a commit point never moves back.
func (t *commitTracker) confirm(offs map[int]epochOffset) {
	for p, eo := range offs {
		if pt, ok := t.parts[p]; ok && pt.epoch == eo.epoch && eo.offset > pt.sent {
			pt.sent = eo.offset
		}
	}
}
