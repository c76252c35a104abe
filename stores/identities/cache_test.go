package identities

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
)

func openIndexWith(t *testing.T, entries int) *Index {
	t.Helper()
	x, err := OpenIndex(filepath.Join(t.TempDir(), FileName), IndexOptions{Topic: "ids", LookupCacheEntries: entries})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = x.Close() })
	return x
}

// everyAnswer looks up every id the random feeds below can hold, and some
// they never hold, in one View: the answers a resolved batch would get.
func everyAnswer(t *testing.T, x *Index) []match {
	t.Helper()
	var out []match
	err := x.View(func(l Lookup) error {
		for _, ws := range []string{"acme", "other"} {
			for i := range 6 {
				u, id, f := l.LookupExternalID(ws, fmt.Sprintf("e%d", i))
				out = append(out, match{u, id, f})
				u, id, f = l.LookupDevice(ws, fmt.Sprintf("d%d", i))
				out = append(out, match{u, id, f})
				u, id, f = l.LookupAlias(ws, fmt.Sprintf("a%d", i), "email")
				out = append(out, match{u, id, f})
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestIndexCacheAnswersLikeTheReplica applies random records, tombstones and
// partition resets to an index with a tiny cache (which rotates its
// generations all the time) and to one without, and asks both everything
// after every step: the answers must be the same.
func TestIndexCacheAnswersLikeTheReplica(t *testing.T) {
	t.Parallel()
	for seed := range uint64(4) {
		r := rand.New(rand.NewPCG(seed, 11))
		cached, plain := openIndexWith(t, 3), openIndexWith(t, -1)
		if cached.cache == nil || plain.cache != nil {
			t.Fatal("cache options not applied")
		}
		next := map[int]int64{}
		for step := range 80 {
			partition := r.IntN(2)
			ws := []string{"acme", "other"}[r.IntN(2)]
			user := fmt.Sprintf("u%d", r.IntN(6))
			f := &feed{t: t}
			switch n := r.IntN(20); {
			case n == 0:
				for _, x := range []*Index{cached, plain} {
					if err := x.ResetPartition(partition, 0); err != nil {
						t.Fatal(err)
					}
				}
				next[partition] = 0
				continue
			case n < 3:
				f.tombstone(ws, user)
			default:
				rec := Record{UserID: user}
				if r.IntN(2) == 0 {
					rec.ExternalID = fmt.Sprintf("e%d", r.IntN(4))
				}
				for range r.IntN(3) {
					rec.DeviceIDs = append(rec.DeviceIDs, fmt.Sprintf("d%d", r.IntN(5)))
				}
				slices.Sort(rec.DeviceIDs)
				rec.DeviceIDs = slices.Compact(rec.DeviceIDs)
				if r.IntN(3) == 0 {
					rec.Aliases = []Alias{{Name: fmt.Sprintf("a%d", r.IntN(3)), Label: "email"}}
				}
				f.put(ws, rec)
			}
			f.msgs[0].Offset = next[partition]
			next[partition]++
			for _, x := range []*Index{cached, plain} {
				apply(t, x, partition, f.msgs)
			}
			// Twice: the first fills the cache, the second reads it.
			for range 2 {
				if got, want := everyAnswer(t, cached), everyAnswer(t, plain); !slices.Equal(got, want) {
					t.Fatalf("seed %d step %d: with the cache\n%v\nwithout\n%v", seed, step, got, want)
				}
			}
		}
	}
}

// TestIndexCacheNeverAnswersStale moves one external id from user to user
// while readers look it up: a lookup that starts after an Apply returned
// must see that Apply's owner or a later one, never an earlier one.
func TestIndexCacheNeverAnswersStale(t *testing.T) {
	t.Parallel()
	x := openIndexWith(t, 0)
	const moves = 300
	var committed atomic.Int64 // the owner every new lookup must see at least
	committed.Store(-1)
	done := make(chan struct{})
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				floor := committed.Load()
				err := x.View(func(l Lookup) error {
					u, _, found := l.LookupExternalID("acme", "e")
					if floor < 0 {
						return nil
					}
					var owner int64
					if _, err := fmt.Sscanf(u, "u%d", &owner); !found || err != nil || owner < floor {
						return fmt.Errorf("lookup answered %q (found %v) after u%06d owned the id", u, found, floor)
					}
					return nil
				})
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	for i := range int64(moves) {
		f := &feed{t: t}
		f.put("acme", Record{UserID: fmt.Sprintf("u%06d", i), ExternalID: "e"})
		if i > 0 {
			f.put("acme", Record{UserID: fmt.Sprintf("u%06d", i-1)})
		}
		for j := range f.msgs {
			f.msgs[j].Offset = 2*i + int64(j)
		}
		apply(t, x, 0, f.msgs)
		committed.Store(i)
	}
	close(done)
	wg.Wait()
}
