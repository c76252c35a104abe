package identities

import (
	"bytes"
	"sync"
)

// lookupCache keeps recent lookup answers in memory, so that the stream's
// resolution of an id it has seen lately costs a map read instead of a
// cursor seek through the replica's B+tree (about 1.2 µs an id, the larger
// part of resolving it). Answers that found nothing are kept too: unknown
// ids recur in every sync of the same cohort.
//
// A cached answer is always the latest committed one. Every write
// transaction of the index seals the cache before it starts and unseals it
// after it ended: while sealed, lookups go to the replica's snapshot and
// leave the cache alone; unseal drops the answers the transaction changed.
// A miss is filled only when no write transaction began since the read
// transaction it was answered from began (gen), so a lookup that read an
// older snapshot never stores what it saw.
//
// Two generations bound the memory: when the current map reaches max
// entries it becomes the previous one and a new current map starts; a hit in
// the previous map moves the answer back to the current one. Ids in steady
// use stay, ids not seen for two generations are dropped, and nothing is
// scanned to evict.
type lookupCache struct {
	max int

	mu        sync.RWMutex
	gen       uint64 // bumped at the start and the end of every commit
	sealed    int    // commits under way
	cur, prev map[string]cachedAnswer
}

type cachedAnswer struct {
	user              string
	identified, found bool
}

// newLookupCache returns a cache of at most 2*max answers; nil (no cache)
// when max is not positive.
func newLookupCache(max int) *lookupCache {
	if max <= 0 {
		return nil
	}
	return &lookupCache{max: max, cur: make(map[string]cachedAnswer)}
}

// begin is called as a read transaction starts; it returns the generation
// fill needs.
func (c *lookupCache) begin() uint64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.gen
}

// get returns the answer for key: which ('e', 'a' or 'd') followed by the
// lookup's key prefix.
func (c *lookupCache) get(key []byte) (cachedAnswer, bool) {
	c.mu.RLock()
	if c.sealed > 0 {
		c.mu.RUnlock()
		return cachedAnswer{}, false
	}
	a, ok := c.cur[string(key)]
	if ok {
		c.mu.RUnlock()
		return a, true
	}
	a, ok = c.prev[string(key)]
	c.mu.RUnlock()
	if ok {
		// Keep it for another generation; skipped if a commit began meanwhile.
		c.mu.Lock()
		if _, still := c.prev[string(key)]; still && c.sealed == 0 {
			c.putLocked(string(key), a)
		}
		c.mu.Unlock()
	}
	return a, ok
}

// fill stores the answer a read transaction begun at gen found for key.
func (c *lookupCache) fill(gen uint64, key []byte, a cachedAnswer) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen || c.sealed > 0 {
		return
	}
	c.putLocked(string(key), a)
}

func (c *lookupCache) putLocked(key string, a cachedAnswer) {
	if len(c.cur) >= c.max {
		c.prev, c.cur = c.cur, make(map[string]cachedAnswer, len(c.cur))
	}
	c.cur[key] = a
}

// seal starts a write transaction: until the matching unseal, lookups
// neither read nor fill the cache.
func (c *lookupCache) seal() {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	c.sealed++
}

// unseal ends a write transaction begun with seal, whether or not it
// committed, dropping the answers for keys, or every answer with all.
func (c *lookupCache) unseal(keys [][]byte, all bool) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	c.sealed--
	if all {
		clear(c.cur)
		c.prev = nil
		return
	}
	for _, k := range keys {
		delete(c.cur, string(k))
		delete(c.prev, string(k))
	}
}

// cacheKeyOfEntry is the cache key an index entry's change affects: its
// kind and the entry key without the user id, which is what lookups of that
// id seek.
func cacheKeyOfEntry(k entryKey) []byte {
	i := bytes.LastIndexByte(k.key, 0)
	out := make([]byte, 0, 1+i+1)
	out = append(out, k.which)
	return append(out, k.key[:i+1]...)
}

// cachedLookup answers from the cache and, on a miss, from the read
// transaction's snapshot, storing what it found.
type cachedLookup struct {
	tx    *txLookup
	cache *lookupCache
	gen   uint64
	key   []byte
}

func (l *cachedLookup) LookupExternalID(workspace, id string) (string, bool, bool) {
	if !l.tx.prefix(workspace, id) {
		return "", false, false
	}
	if a, ok := l.cached('e'); ok {
		return a.user, a.identified, a.found
	}
	return l.store(l.tx.first(l.tx.ext))
}

func (l *cachedLookup) LookupAlias(workspace, name, label string) (string, bool, bool) {
	if !l.tx.prefix(workspace, label, name) {
		return "", false, false
	}
	if a, ok := l.cached('a'); ok {
		return a.user, a.identified, a.found
	}
	return l.store(l.tx.first(l.tx.alias))
}

func (l *cachedLookup) LookupDevice(workspace, id string) (string, bool, bool) {
	if !l.tx.prefix(workspace, id) {
		return "", false, false
	}
	if a, ok := l.cached('d'); ok {
		return a.user, a.identified, a.found
	}
	return l.store(l.tx.device1())
}

// cached builds the key of which and the prefix the lookup just built, the
// same bytes cacheKeyOfEntry makes of an entry, and reads it.
func (l *cachedLookup) cached(which byte) (cachedAnswer, bool) {
	l.key = append(append(l.key[:0], which), l.tx.buf...)
	return l.cache.get(l.key)
}

// store fills the cache with the answer for the key cached built.
func (l *cachedLookup) store(user string, identified, found bool) (string, bool, bool) {
	l.cache.fill(l.gen, l.key, cachedAnswer{user: user, identified: identified, found: found})
	return user, identified, found
}
