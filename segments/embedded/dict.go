package embedded

import (
	"bytes"
	"container/heap"
	"context"
	"errors"
	"math"
	"sort"

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

// buildDict merges the sorted user lists of every cohort of the workspace
// and returns the cohorts' sequences it covers.
func buildDict(ctx context.Context, tx *state.ReadTx, ws string, gen uint64) (*dict, map[cohortKey]uint64, error) {
	var h cursorHeap
	covered := map[cohortKey]uint64{}
	err := tx.ForEachCohort(ws, func(c state.Cohort, seq uint64) error {
		covered[cohortKey{c.Partner, c.CohortID}] = seq
		cur := tx.Users(ws, c.Partner, c.CohortID)
		if cur.Next() {
			h = append(h, cur)
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	heap.Init(&h)
	d := &dict{offs: []uint32{0}, gen: gen}
	var last []byte
	for n := 1; len(h) > 0; n++ {
		if n%65536 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, nil, err
			}
		}
		cur := h[0]
		u := cur.User()
		if last == nil || !bytes.Equal(u, last) {
			if len(d.data)+len(u) > math.MaxUint32 || len(d.offs) > math.MaxUint32 {
				return nil, nil, errDictTooLarge
			}
			d.data = append(d.data, u...)
			d.offs = append(d.offs, uint32(len(d.data)))
			// The cursor's bytes live in the file's memory map as long as
			// the transaction: no copy needed to compare with the next.
			last = u
		}
		if cur.Next() {
			heap.Fix(&h, 0)
		} else {
			heap.Pop(&h)
		}
	}
	return d, covered, nil
}

type cursorHeap []*state.UserCursor

func (h cursorHeap) Len() int           { return len(h) }
func (h cursorHeap) Less(i, j int) bool { return bytes.Compare(h[i].User(), h[j].User()) < 0 }
func (h cursorHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *cursorHeap) Push(x any)        { *h = append(*h, x.(*state.UserCursor)) }
func (h *cursorHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
