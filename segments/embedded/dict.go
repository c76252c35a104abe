package embedded

import (
	"bytes"
	"container/heap"
	"context"
	"errors"
	"math"
	"slices"
	"sort"

	"github.com/RoaringBitmap/roaring/v2"

	"github.com/cohortsync/cohortsync/sinks/state"
)

// dict numbers the user ids of a workspace densely and in byte order: user
// number i is the i-th smallest id. Order-preserving numbers make a bitmap's
// iteration order the members' order, so a page is a seek and a scan, and a
// cursor's user id becomes a number with one binary search. The price is
// that a user id never seen before renumbers everyone, which rebuilds the
// dictionary and the bitmaps; new users arrive with syncs, minutes apart.
//
// A dict is immutable once built: queries keep using the one they started
// with while a newer one replaces it.
type dict struct {
	data []byte
	offs []uint32 // user i is data[offs[i]:offs[i+1]]
	gen  uint64
}

// errDictTooLarge is returned for a workspace whose user ids do not fit
// 32-bit offsets and numbers.
var errDictTooLarge = errors.New("the workspace's user ids exceed the embedded engine's 4 GiB dictionary")

func (d *dict) len() int { return len(d.offs) - 1 }

func (d *dict) at(i int) []byte { return d.data[d.offs[i]:d.offs[i+1]] }

// search returns the number of the first user id >= u and whether it is u.
func (d *dict) search(u []byte) (int, bool) {
	i := sort.Search(d.len(), func(i int) bool { return bytes.Compare(d.at(i), u) >= 0 })
	return i, i < d.len() && bytes.Equal(d.at(i), u)
}

// seekFrom is search for a u known to be >= the id at from: it gallops
// forward, so walking a sorted list of m ids costs O(m log(n/m)).
func (d *dict) seekFrom(from int, u []byte) (int, bool) {
	n := d.len()
	lo, step := from, 1
	hi := from
	for hi < n && bytes.Compare(d.at(hi), u) < 0 {
		lo = hi + 1
		hi += step
		step *= 2
	}
	hi = min(hi, n)
	i := lo + sort.Search(hi-lo, func(j int) bool { return bytes.Compare(d.at(lo+j), u) >= 0 })
	return i, i < n && bytes.Equal(d.at(i), u)
}

// built is what one merge of a workspace's cohorts gives: the dictionary,
// every cohort's current members in its numbers, and the cohort sequences
// both cover.
type built struct {
	dict    *dict
	members map[cohortKey]*roaring.Bitmap
	covered map[cohortKey]uint64
}

// buildDict merges the sorted user lists of every cohort of the workspace.
// The merge meets every cohort's users in order and numbers them as it
// goes, so it collects each cohort's current members on the way: a second
// walk of the cohorts, searching each user in the new dictionary, was as
// long as the merge itself.
func buildDict(ctx context.Context, tx *state.ReadTx, ws string, gen uint64) (built, error) {
	var h cursorHeap
	b := built{members: map[cohortKey]*roaring.Bitmap{}, covered: map[cohortKey]uint64{}}
	// members sizes the dictionary before the merge: grown by append, its
	// slices were copied and faulted in again and again, half of a first
	// query's time at a million users.
	var members int64
	err := tx.ForEachCohort(ws, func(c state.Cohort, seq uint64) error {
		members += max(c.Members, 0)
		k := cohortKey{c.Partner, c.CohortID}
		b.covered[k] = seq
		b.members[k] = roaring.New()
		cur := &dictCursor{UserCursor: tx.Users(ws, c.Partner, c.CohortID), bm: b.members[k]}
		if cur.Next() {
			h = append(h, cur)
		}
		return nil
	})
	if err != nil {
		return built{}, err
	}
	// The merge covers every cohort of the workspace. When there are only a
	// handful, a scan of their heads costs less per user than the heap's
	// interface calls, which were a fifth of a first query over two cohorts.
	small := len(h) <= smallMerge
	if !small {
		heap.Init(&h)
	}
	d := &dict{offs: make([]uint32, 1, min(members, math.MaxUint32)+1), gen: gen}
	if len(h) > 0 {
		d.data = make([]byte, 0, min(members*int64(len(h[0].User())+1), math.MaxUint32))
	}
	var last []byte
	for n := 1; len(h) > 0; n++ {
		if n%65536 == 0 {
			if err := ctx.Err(); err != nil {
				return built{}, err
			}
		}
		i := 0
		if small {
			for j := 1; j < len(h); j++ {
				if bytes.Compare(h[j].User(), h[i].User()) < 0 {
					i = j
				}
			}
		}
		cur := h[i]
		u := cur.User()
		if last == nil || !bytes.Equal(u, last) {
			if len(d.data)+len(u) > math.MaxUint32 || len(d.offs) > math.MaxUint32 {
				return built{}, errDictTooLarge
			}
			d.data = appendDoubling(d.data, u...)
			d.offs = appendDoubling(d.offs, uint32(len(d.data)))
			// The cursor's bytes live in the file's memory map as long as
			// the transaction: no copy needed to compare with the next.
			last = u
		}
		if cur.IsMember() {
			cur.add(uint32(d.len() - 1))
		}
		switch {
		case cur.Next():
			if !small {
				heap.Fix(&h, 0)
			}
		case small:
			cur.flush()
			h[i] = h[len(h)-1]
			h = h[:len(h)-1]
		default:
			cur.flush()
			heap.Pop(&h)
		}
	}
	// Members counts each shared user once per cohort, and ids differ in
	// length: a dictionary far smaller than its estimate gives the rest back.
	if cap(d.data) > len(d.data)+len(d.data)/4 {
		d.data = slices.Clone(d.data)
	}
	if cap(d.offs) > len(d.offs)+len(d.offs)/4 {
		d.offs = slices.Clone(d.offs)
	}
	for _, bm := range b.members {
		bm.RunOptimize()
	}
	b.dict = d
	return b, nil
}

// dictCursor is one cohort's users in the merge, with the members it has
// numbered so far. Numbers arrive in ascending order, so they are added to
// the bitmap in runs.
type dictCursor struct {
	*state.UserCursor
	bm  *roaring.Bitmap
	buf []uint32
}

func (c *dictCursor) add(n uint32) {
	if c.buf == nil {
		c.buf = make([]uint32, 0, 4096)
	}
	if c.buf = append(c.buf, n); len(c.buf) == cap(c.buf) {
		c.flush()
	}
}

func (c *dictCursor) flush() {
	c.bm.AddMany(c.buf)
	c.buf = c.buf[:0]
}

// smallMerge is the most cursors buildDict merges by scanning their heads.
const smallMerge = 8

type cursorHeap []*dictCursor

func (h cursorHeap) Len() int           { return len(h) }
func (h cursorHeap) Less(i, j int) bool { return bytes.Compare(h[i].User(), h[j].User()) < 0 }
func (h cursorHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *cursorHeap) Push(x any)        { *h = append(*h, x.(*dictCursor)) }
func (h *cursorHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// appendDoubling is append that doubles a full slice's capacity, where
// append grows large slices by a quarter and so copies them many times.
func appendDoubling[T any](s []T, vs ...T) []T {
	if cap(s)-len(s) < len(vs) {
		s = slices.Grow(s, max(len(vs), cap(s)))
	}
	return append(s, vs...)
}
