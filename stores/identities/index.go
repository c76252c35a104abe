package identities

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Layout of the replica file. Keys of several components join them with NUL
// bytes; identifiers never contain NUL (checkID), so a key splits one way only
// and a prefix of whole components selects exactly the entries of an id.
//
//	meta     format → "1", topic → topic name, users → count(8)
//	offsets  partition(4) → next offset to apply(8)
//	users    ws \0 user_id → partition(4) topic value (JSON)
//	ext      ws \0 external_id \0 user_id → flags(1)
//	alias    ws \0 alias_label \0 alias_name \0 user_id → flags(1)
//	device   ws \0 device_id \0 user_id → flags(1)
//
// An index entry names the user in its key rather than in its value. Then
// the index is a pure function of the latest record of every user, whatever
// order the partitions were applied in: when two users claim the same id (a
// data error upstream), both entries exist, lookups choose the same one on
// every instance, and replacing one user's record removes exactly that
// user's entries.
const indexFormat = "1"

var (
	bucketMeta    = []byte("meta")
	bucketOffsets = []byte("offsets")
	bucketUsers   = []byte("users")
	bucketExt     = []byte("ext")
	bucketAlias   = []byte("alias")
	bucketDevice  = []byte("device")
	dataBuckets   = [][]byte{bucketOffsets, bucketUsers, bucketExt, bucketAlias, bucketDevice}
	keyFormat     = []byte("format")
	keyTopic      = []byte("topic")
	keyUsers      = []byte("users")
)

// flagIdentified is set in an index entry of a user who has an external id.
// Entries are rewritten whenever the user's record is, so the flag is current.
const flagIdentified = 1

// Message is one record of the identities topic, as Index.Apply takes it. A
// nil Value is a tombstone: the user is removed.
type Message struct {
	Offset int64
	Key    []byte
	Value  []byte
}

// Skipped is a message Apply could not use. Err never quotes identifiers.
type Skipped struct {
	Offset int64
	Err    error
}

// Applied reports what one Apply did.
type Applied struct {
	// Records is how many messages changed the index (tombstones included).
	Records int
	// Skipped are the invalid messages, left out of the index.
	Skipped []Skipped
	// Next is the partition's stored offset after the call.
	Next int64
}

// IndexOptions tune OpenIndex.
type IndexOptions struct {
	// Topic is the topic the index replicates. A file built from another
	// topic is emptied, since its offsets mean nothing for this one.
	Topic string
	// OpenTimeout bounds the wait for the file lock; zero means 5 s.
	OpenTimeout time.Duration
	// Logger receives the rare structural events (a reset). Nil discards.
	Logger *slog.Logger
}

// Index is the replica's file: the directory's indexes and, in the same
// transactions, the offset up to which each partition has been applied. A
// crash therefore loses either both an update and its offset or neither,
// and reopening the file resumes where the last commit left off.
type Index struct {
	db   *bolt.DB
	path string

	// users is the user count as of the latest commit, kept in memory so
	// that reading it (every metrics scrape, every Status) opens no
	// transaction: a read transaction waits while a commit that grows the
	// file remaps it, and the catch-up of a large directory grows it often.
	usersMu   sync.Mutex
	users     int64
	usersTxID int // transaction that wrote users; commits may report out of order

	group applyGroup

	closeOnce sync.Once
	closeErr  error
}

// OpenIndex opens or creates the replica file at path.
func OpenIndex(path string, opts IndexOptions) (*Index, error) {
	if opts.Topic == "" {
		return nil, errors.New("identities: open index: no topic")
	}
	if opts.OpenTimeout <= 0 {
		opts.OpenTimeout = 5 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("identities: open index: %w", err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout: opts.OpenTimeout,
		// Opens are rare and commits are the hot path: rebuild the freelist
		// by scanning at open rather than writing it at every commit.
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
		// Long read transactions (one per resolved batch) do not block a
		// commit that grows the file as long as the mapping is large enough.
		InitialMmapSize: 256 << 20,
	})
	if errors.Is(err, bolt.ErrTimeout) {
		return nil, fmt.Errorf("identities: open index %s: another process holds it: %w", path, err)
	}
	if err != nil {
		return nil, fmt.Errorf("identities: open index %s: %w", path, err)
	}
	var previous string
	var users int64
	err = db.Update(func(tx *bolt.Tx) error {
		var err error
		previous, err = initIndex(tx, opts.Topic)
		users = int64(readU64(tx.Bucket(bucketMeta).Get(keyUsers)))
		return err
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("identities: open index %s: %w", path, err)
	}
	if previous != "" && previous != opts.Topic {
		opts.Logger.Warn("identity index was built from another topic; rebuilding it", "path", path, "previous_topic", previous, "topic", opts.Topic)
	}
	return &Index{db: db, path: path, users: users}, nil
}

// initIndex creates the buckets and empties them when the file replicated
// another topic. It returns the topic the file replicated before.
func initIndex(tx *bolt.Tx, topic string) (string, error) {
	meta, err := tx.CreateBucketIfNotExists(bucketMeta)
	if err != nil {
		return "", err
	}
	switch v := meta.Get(keyFormat); {
	case v == nil:
		if err := meta.Put(keyFormat, []byte(indexFormat)); err != nil {
			return "", err
		}
	case string(v) != indexFormat:
		return "", fmt.Errorf("file format %q, this build reads %q", v, indexFormat)
	}
	previous := string(meta.Get(keyTopic))
	if previous != "" && previous != topic {
		for _, name := range dataBuckets {
			if tx.Bucket(name) != nil {
				if err := tx.DeleteBucket(name); err != nil {
					return "", err
				}
			}
		}
		if err := meta.Put(keyUsers, u64(0)); err != nil {
			return "", err
		}
	}
	if previous != topic {
		if err := meta.Put(keyTopic, []byte(topic)); err != nil {
			return "", err
		}
	}
	for _, name := range dataBuckets {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return "", err
		}
	}
	return previous, nil
}

// Path is the index's file.
func (x *Index) Path() string { return x.path }

// Close waits for running transactions and closes the file. It may be called
// more than once.
func (x *Index) Close() error {
	x.closeOnce.Do(func() {
		if err := x.db.Close(); err != nil {
			x.closeErr = fmt.Errorf("identities: close index: %w", err)
		}
	})
	return x.closeErr
}

// Offsets returns the next offset to apply of every partition applied so far.
func (x *Index) Offsets() (map[int]int64, error) {
	out := map[int]int64{}
	err := x.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketOffsets).ForEach(func(k, v []byte) error {
			if len(k) != 4 || len(v) != 8 {
				return errors.New("corrupt offsets entry")
			}
			out[int(binary.BigEndian.Uint32(k))] = int64(binary.BigEndian.Uint64(v))
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("identities: read offsets: %w", err)
	}
	return out, nil
}

// Users is the number of users in the index, over every workspace, as of
// the latest commit. It reads memory only.
func (x *Index) Users() int64 {
	x.usersMu.Lock()
	defer x.usersMu.Unlock()
	return x.users
}

// committedUsers records the count a committed transaction wrote. Commit
// handlers run after bbolt releases its writer lock, so two commits may
// report in either order: the later transaction wins.
func (x *Index) committedUsers(txID int, n int64) {
	x.usersMu.Lock()
	defer x.usersMu.Unlock()
	if txID >= x.usersTxID {
		x.users, x.usersTxID = n, txID
	}
}

// Apply folds msgs, read from partition in offset order, into the index and
// stores next (or the offset after the last message, if that is higher) as
// the partition's next offset, all in one transaction. Messages below the
// stored offset were applied before and are left alone, so delivering a range
// twice changes nothing. Invalid messages are skipped and reported, never
// fatal: one bad record from a foreign producer must not stop the directory.
func (x *Index) Apply(partition int, msgs []Message, next int64) (Applied, error) {
	// Decoding, and building the keys and values to write, happens before
	// the write transaction: bbolt has one writer, which every partition's
	// tail waits for, so only the puts belong inside it.
	req := &applyRequest{partition: partition, msgs: msgs, next: next, done: make(chan struct{}), lead: make(chan struct{})}
	req.prepared = make([]preparedMessage, len(msgs))
	for i, m := range msgs {
		req.prepared[i] = prepare(partition, m)
	}
	x.group.run(req, x.applyAll)
	if req.err != nil {
		return Applied{}, fmt.Errorf("identities: apply partition %d: %w", partition, req.err)
	}
	return req.out, nil
}

// applyRequest is one Apply waiting for its transaction.
type applyRequest struct {
	partition int
	msgs      []Message
	prepared  []preparedMessage
	next      int64
	out       Applied
	err       error
	done      chan struct{}
	lead      chan struct{} // closed when this request is to write for the group
}

// applyGroup lets the tails of several partitions share one write
// transaction: one Apply at a time leads, writing every request queued
// meanwhile (its own included) in one transaction, and then hands the lead
// to the oldest request still waiting. One transaction then writes all their
// users in key order (see fold), where each tail's own transaction, or
// bbolt's Batch of them, wrote one tail's sorted run after another into the
// same unsplit nodes. A leader writes once and returns, so no tail is kept
// from its own partition by serving the others.
type applyGroup struct {
	mu      sync.Mutex
	pending []*applyRequest
	busy    bool // a leader is writing or has been chosen
}

// groupWait is how long a request that finds no leader waits for others
// before it writes, bbolt's default MaxBatchDelay.
const groupWait = 10 * time.Millisecond

// run returns once req is written (or failed), by apply in this goroutine
// or in a leader's.
func (g *applyGroup) run(req *applyRequest, apply func([]*applyRequest)) {
	g.mu.Lock()
	g.pending = append(g.pending, req)
	if g.busy {
		g.mu.Unlock()
		select {
		case <-req.done:
			return
		case <-req.lead:
		}
		g.mu.Lock()
	} else {
		// Let the other tails' requests join the first transaction, as
		// bbolt's Batch did: a commit costs about as much small as large,
		// since random keys dirty pages all over the tree.
		g.busy = true
		g.mu.Unlock()
		time.Sleep(groupWait)
		g.mu.Lock()
	}
	// Only the leader takes from pending, so req is still there.
	reqs := g.pending
	g.pending = nil
	g.mu.Unlock()
	apply(reqs)
	for _, r := range reqs {
		close(r.done)
	}
	g.mu.Lock()
	if len(g.pending) > 0 {
		close(g.pending[0].lead)
	} else {
		g.busy = false
	}
	g.mu.Unlock()
}

// applyAll writes reqs in one transaction. Should it fail, each is tried
// alone, so that one request's error is not every partition's.
func (x *Index) applyAll(reqs []*applyRequest) {
	err := x.db.Update(func(tx *bolt.Tx) error {
		w := x.newWriteTx(tx)
		f := newFold()
		for _, r := range reqs {
			r.out = Applied{}
			stored := w.offset(r.partition)
			next := r.next
			for i, m := range r.msgs {
				if m.Offset < stored {
					continue
				}
				changed, err := f.add(w, r.prepared[i])
				if err != nil {
					r.out.Skipped = append(r.out.Skipped, Skipped{Offset: m.Offset, Err: err})
				} else if changed {
					r.out.Records++
				}
				next = max(next, m.Offset+1)
			}
			// Set at once: a later request of the same partition in this
			// transaction reads it.
			r.out.Next = max(stored, next)
			if err := w.setOffset(r.partition, r.out.Next); err != nil {
				return err
			}
		}
		if err := f.write(w); err != nil {
			return err
		}
		return w.flush()
	})
	if err == nil {
		return
	}
	if len(reqs) == 1 {
		reqs[0].err = err
		return
	}
	for _, r := range reqs {
		x.applyAll([]*applyRequest{r})
	}
}

// ResetPartition removes every user that came from partition and sets its
// next offset to next: for a topic recreated shorter than what was applied,
// whose records must be read again from scratch.
func (x *Index) ResetPartition(partition int, next int64) error {
	err := x.db.Update(func(tx *bolt.Tx) error {
		w := x.newWriteTx(tx)
		if err := w.dropPartition(partition); err != nil {
			return err
		}
		if err := w.setOffset(partition, next); err != nil {
			return err
		}
		return w.flush()
	})
	if err != nil {
		return fmt.Errorf("identities: reset partition %d: %w", partition, err)
	}
	return nil
}

// DropPartition removes every user that came from partition and forgets the
// partition: for a partition the topic no longer has.
func (x *Index) DropPartition(partition int) error {
	err := x.db.Update(func(tx *bolt.Tx) error {
		w := x.newWriteTx(tx)
		if err := w.dropPartition(partition); err != nil {
			return err
		}
		if err := w.offsets.Delete(u32(partition)); err != nil {
			return err
		}
		return w.flush()
	})
	if err != nil {
		return fmt.Errorf("identities: drop partition %d: %w", partition, err)
	}
	return nil
}

// SkipTo moves partition's next offset forward to next, keeping the index:
// for records deleted from the log before this replica read them.
func (x *Index) SkipTo(partition int, next int64) error {
	err := x.db.Update(func(tx *bolt.Tx) error {
		w := x.newWriteTx(tx)
		return w.setOffset(partition, max(next, w.offset(partition)))
	})
	if err != nil {
		return fmt.Errorf("identities: skip partition %d to %d: %w", partition, next, err)
	}
	return nil
}

// writeTx applies records within one read-write transaction.
type writeTx struct {
	x                                        *Index
	tx                                       *bolt.Tx
	meta, offsets, users, ext, alias, device *bolt.Bucket
	users0, usersN                           int64
}

func (x *Index) newWriteTx(tx *bolt.Tx) *writeTx {
	w := &writeTx{
		x:       x,
		tx:      tx,
		meta:    tx.Bucket(bucketMeta),
		offsets: tx.Bucket(bucketOffsets),
		users:   tx.Bucket(bucketUsers),
		ext:     tx.Bucket(bucketExt),
		alias:   tx.Bucket(bucketAlias),
		device:  tx.Bucket(bucketDevice),
	}
	w.users0 = int64(readU64(w.meta.Get(keyUsers)))
	w.usersN = w.users0
	return w
}

func (w *writeTx) offset(partition int) int64 {
	return int64(readU64(w.offsets.Get(u32(partition))))
}

func (w *writeTx) setOffset(partition int, next int64) error {
	return w.offsets.Put(u32(partition), u64(uint64(next)))
}

func (w *writeTx) flush() error {
	if w.usersN == w.users0 {
		return nil
	}
	if err := w.meta.Put(keyUsers, u64(uint64(w.usersN))); err != nil {
		return err
	}
	// Known to readers once durable; several Applies of one Batch share
	// the transaction and their handlers run in order, the last count last.
	id, n := w.tx.ID(), w.usersN
	w.tx.OnCommit(func() { w.x.committedUsers(id, n) })
	return nil
}

// preparedMessage is one message decoded, with what applying it writes.
type preparedMessage struct {
	err       error
	tombstone bool
	ws, user  string
	ukey      []byte     // key in the users bucket
	value     []byte     // value in the users bucket (a record only)
	entries   []entryKey // index entries (a record only)
	flags     byte
}

// prepare decodes m. bbolt keeps the slices given to Put until the commit,
// so every slice here is fresh.
func prepare(partition int, m Message) preparedMessage {
	if m.Value == nil {
		ws, user, ok := splitMessageKey(m.Key)
		if !ok || checkID(user) != nil {
			return preparedMessage{err: errors.New("tombstone with an invalid key")}
		}
		return preparedMessage{tombstone: true, ws: ws, user: user, ukey: joinKey(nil, ws, user)}
	}
	ws, rec, err := decodeValue(m.Key, m.Value)
	if err != nil {
		return preparedMessage{err: err}
	}
	p := preparedMessage{ws: ws, user: rec.UserID, ukey: joinKey(nil, ws, rec.UserID), entries: entryKeys(ws, rec.UserID, rec)}
	if rec.Identified() {
		p.flags = flagIdentified
	}
	p.value = make([]byte, 4+len(m.Value))
	binary.BigEndian.PutUint32(p.value, uint32(partition))
	copy(p.value[4:], m.Value)
	return p
}

// fold gathers what one transaction's Applies write: the last state of
// every user their messages touch, decided in offset order, and written
// afterwards in key order. bbolt splits a node only at commit, so within a
// transaction the keys put into one leaf pile up in one slice; in arrival
// order (hash order on the topic) every put moves half of that slice. In
// key order each put lands after the ones before it.
type fold struct {
	users map[string]*foldedUser
	order []*foldedUser
	flags [2][]byte // the entry values, shared: bbolt only reads them
}

// foldedUser is one user's stored state before the transaction and after
// the messages folded so far.
type foldedUser struct {
	ukey       []byte
	oldEntries []entryKey // of the stored record, if any
	existed    bool       // stored before the transaction
	exists     bool
	value      []byte
	entries    []entryKey
	flags      byte
}

func newFold() *fold {
	return &fold{users: map[string]*foldedUser{}, flags: [2][]byte{{0}, {flagIdentified}}}
}

// add folds one prepared message in and reports whether it changed the
// index, as applying it alone after the ones before would have.
func (f *fold) add(w *writeTx, p preparedMessage) (bool, error) {
	if p.err != nil {
		return false, p.err
	}
	u, ok := f.users[string(p.ukey)]
	if !ok {
		u = &foldedUser{ukey: p.ukey}
		if old := w.users.Get(p.ukey); old != nil {
			// Decoded now: old points into the file. A corrupt record is
			// not remembered, so every message of its user reports it.
			rec, err := storedRecord(old)
			if err != nil {
				return false, fmt.Errorf("stored record: %w", err)
			}
			u.existed, u.exists, u.oldEntries = true, true, entryKeys(p.ws, p.user, rec)
		}
		f.users[string(p.ukey)] = u
		f.order = append(f.order, u)
	}
	if p.tombstone {
		if !u.exists {
			return false, nil
		}
		u.exists, u.value, u.entries = false, nil, nil
		w.usersN--
		return true, nil
	}
	if !u.exists {
		w.usersN++
	}
	u.exists, u.value, u.entries, u.flags = true, p.value, p.entries, p.flags
	return true, nil
}

// write applies the folded states: per bucket, the deletes and then the
// puts, each sorted by key. An entry both deleted and put (the user kept
// the id) is only put; entry keys name their user, so no two users share
// one.
func (f *fold) write(w *writeTx) error {
	type put struct{ key, value []byte }
	var users []put
	var userDeletes [][]byte
	puts := map[byte][]put{}
	deletes := map[byte][][]byte{}
	for _, u := range f.order {
		if u.exists {
			users = append(users, put{u.ukey, u.value})
			for _, e := range u.entries {
				puts[e.which] = append(puts[e.which], put{e.key, f.flags[u.flags&flagIdentified]})
			}
		} else if u.existed {
			userDeletes = append(userDeletes, u.ukey)
		}
		// A user has a handful of entries: a scan of the new ones costs
		// less than a set of them. The bucket counts too: an external id
		// and a device id of the same text have the same key bytes.
		for _, e := range u.oldEntries {
			kept := u.exists && slices.ContainsFunc(u.entries, func(n entryKey) bool { return n.which == e.which && bytes.Equal(n.key, e.key) })
			if !kept {
				deletes[e.which] = append(deletes[e.which], e.key)
			}
		}
	}
	apply := func(b *bolt.Bucket, del [][]byte, ps []put) error {
		slices.SortFunc(del, bytes.Compare)
		for _, k := range del {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		slices.SortFunc(ps, func(a, b put) int { return bytes.Compare(a.key, b.key) })
		for _, p := range ps {
			if err := b.Put(p.key, p.value); err != nil {
				return err
			}
		}
		return nil
	}
	for _, which := range []byte{'e', 'a', 'd'} {
		if err := apply(entryKey{which: which}.bucket(w), deletes[which], puts[which]); err != nil {
			return err
		}
	}
	return apply(w.users, userDeletes, users)
}

func (w *writeTx) remove(ws, user string) (bool, error) {
	ukey := joinKey(nil, ws, user)
	old := w.users.Get(ukey)
	if old == nil {
		return false, nil
	}
	if err := w.removeEntries(ws, user, old); err != nil {
		return false, err
	}
	w.usersN--
	return true, w.users.Delete(ukey)
}

// removeEntries deletes the index entries of a user's stored record. The
// record is decoded before anything is deleted: old points into the file.
func (w *writeTx) removeEntries(ws, user string, old []byte) error {
	rec, err := storedRecord(old)
	if err != nil {
		return fmt.Errorf("stored record: %w", err)
	}
	for _, k := range entryKeys(ws, user, rec) {
		if err := k.bucket(w).Delete(k.key); err != nil {
			return err
		}
	}
	return nil
}

// dropPartition removes every user stored from partition. The keys are
// collected first: deleting while iterating makes a bbolt cursor skip items.
func (w *writeTx) dropPartition(partition int) error {
	var doomed [][]byte
	err := w.users.ForEach(func(k, v []byte) error {
		if len(v) >= 4 && int(binary.BigEndian.Uint32(v)) == partition {
			doomed = append(doomed, bytes.Clone(k))
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, k := range doomed {
		ws, user, ok := splitJoined(k)
		if !ok {
			return errors.New("corrupt users key")
		}
		if _, err := w.remove(ws, user); err != nil {
			return err
		}
	}
	return nil
}

type entryKey struct {
	which byte // 'e', 'a' or 'd'
	key   []byte
}

func (k entryKey) bucket(w *writeTx) *bolt.Bucket {
	switch k.which {
	case 'e':
		return w.ext
	case 'a':
		return w.alias
	default:
		return w.device
	}
}

// entryKeys lists the index entries of a record, each key freshly allocated.
func entryKeys(ws, user string, rec Record) []entryKey {
	out := make([]entryKey, 0, 1+len(rec.Aliases)+len(rec.DeviceIDs))
	if rec.ExternalID != "" {
		out = append(out, entryKey{'e', joinKey(nil, ws, rec.ExternalID, user)})
	}
	for _, a := range rec.Aliases {
		out = append(out, entryKey{'a', joinKey(nil, ws, a.Label, a.Name, user)})
	}
	for _, d := range rec.DeviceIDs {
		out = append(out, entryKey{'d', joinKey(nil, ws, d, user)})
	}
	return out
}

func storedRecord(v []byte) (Record, error) {
	if len(v) < 4 {
		return Record{}, errors.New("too short")
	}
	w, err := decodeWire(v[4:])
	if err != nil {
		return Record{}, err
	}
	return w.Record, nil
}

// joinKey appends parts separated by NUL to dst.
func joinKey(dst []byte, parts ...string) []byte {
	for i, p := range parts {
		if i > 0 {
			dst = append(dst, 0)
		}
		dst = append(dst, p...)
	}
	return dst
}

// splitJoined splits a two-component key.
func splitJoined(k []byte) (string, string, bool) {
	i := bytes.IndexByte(k, 0)
	if i < 0 {
		return "", "", false
	}
	return string(k[:i]), string(k[i+1:]), true
}

func u32(v int) []byte {
	b := make([]byte, 4)
	binary.BigEndian.PutUint32(b, uint32(v))
	return b
}

func u64(v uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, v)
	return b
}

func readU64(b []byte) uint64 {
	if len(b) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}

// Lookup answers which user an id of a workspace belongs to. Every method
// returns the user id, whether that user is identified, and whether the id
// matched at all.
type Lookup interface {
	// LookupExternalID finds the user with external id id.
	LookupExternalID(workspace, id string) (userID string, identified, found bool)
	// LookupAlias finds the user with alias name within alias label.
	LookupAlias(workspace, name, label string) (userID string, identified, found bool)
	// LookupDevice finds a user who recorded device id id. Device ids match
	// anonymous users only: if an anonymous user has the device it is
	// returned; otherwise an identified user who has it is returned with
	// identified set, for the caller to refuse.
	LookupDevice(workspace, id string) (userID string, identified, found bool)
}

// View runs fn with a Lookup over one consistent snapshot of the index: one
// read transaction, however many lookups fn makes. The Lookup is valid only
// inside fn and only for one goroutine.
func (x *Index) View(fn func(Lookup) error) error {
	return x.db.View(func(tx *bolt.Tx) error {
		return fn(newLookup(tx))
	})
}

// LookupExternalID is a single lookup in its own read transaction; batches
// should use View.
func (x *Index) LookupExternalID(workspace, id string) (userID string, identified, found bool) {
	_ = x.View(func(l Lookup) error {
		userID, identified, found = l.LookupExternalID(workspace, id)
		return nil
	})
	return userID, identified, found
}

// LookupAlias is a single lookup in its own read transaction.
func (x *Index) LookupAlias(workspace, name, label string) (userID string, identified, found bool) {
	_ = x.View(func(l Lookup) error {
		userID, identified, found = l.LookupAlias(workspace, name, label)
		return nil
	})
	return userID, identified, found
}

// LookupDevice is a single lookup in its own read transaction.
func (x *Index) LookupDevice(workspace, id string) (userID string, identified, found bool) {
	_ = x.View(func(l Lookup) error {
		userID, identified, found = l.LookupDevice(workspace, id)
		return nil
	})
	return userID, identified, found
}

// txLookup reuses one cursor per index and one key buffer for all lookups
// of a transaction, so a lookup allocates only the user id it returns.
type txLookup struct {
	ext, alias, device *bolt.Cursor
	users              *bolt.Bucket // for LookupUser (reverse.go)
	buf                []byte
}

func newLookup(tx *bolt.Tx) *txLookup {
	return &txLookup{
		ext:    tx.Bucket(bucketExt).Cursor(),
		alias:  tx.Bucket(bucketAlias).Cursor(),
		device: tx.Bucket(bucketDevice).Cursor(),
		users:  tx.Bucket(bucketUsers),
		buf:    make([]byte, 0, 256),
	}
}

// prefix builds the key prefix of parts, or reports false for parts that
// cannot occur in the index (empty, or containing NUL).
func (l *txLookup) prefix(parts ...string) bool {
	l.buf = l.buf[:0]
	for _, p := range parts {
		if p == "" || strings.IndexByte(p, 0) >= 0 {
			return false
		}
		l.buf = append(l.buf, p...)
		l.buf = append(l.buf, 0)
	}
	return true
}

// first returns the entry with the smallest user id under the prefix, which
// is the same choice on every instance when an id is claimed twice.
func (l *txLookup) first(c *bolt.Cursor) (string, bool, bool) {
	k, v := c.Seek(l.buf)
	if k == nil || !bytes.HasPrefix(k, l.buf) || len(k) == len(l.buf) {
		return "", false, false
	}
	return string(k[len(l.buf):]), len(v) > 0 && v[0]&flagIdentified != 0, true
}

func (l *txLookup) LookupExternalID(workspace, id string) (string, bool, bool) {
	if !l.prefix(workspace, id) {
		return "", false, false
	}
	return l.first(l.ext)
}

func (l *txLookup) LookupAlias(workspace, name, label string) (string, bool, bool) {
	if !l.prefix(workspace, label, name) {
		return "", false, false
	}
	return l.first(l.alias)
}

func (l *txLookup) LookupDevice(workspace, id string) (string, bool, bool) {
	if !l.prefix(workspace, id) {
		return "", false, false
	}
	var identifiedUser []byte
	for k, v := l.device.Seek(l.buf); k != nil && bytes.HasPrefix(k, l.buf); k, v = l.device.Next() {
		user := k[len(l.buf):]
		if len(user) == 0 {
			continue
		}
		if len(v) == 0 || v[0]&flagIdentified == 0 {
			return string(user), false, true
		}
		if identifiedUser == nil {
			identifiedUser = user
		}
	}
	if identifiedUser != nil {
		return string(identifiedUser), true, true
	}
	return "", false, false
}
