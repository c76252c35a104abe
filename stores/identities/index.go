package identities

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// Layout of the replica, a pebble database (an LSM tree: writes go to a
// memtable and a log and are sorted into files in the background, so a fresh
// replica taking users in hash order costs a few appends per user rather than
// the rewritten B-tree pages that bounded the former bbolt file at about 27k
// users/s). Every key starts with one byte naming its table; keys of several
// components join them with NUL bytes; identifiers never contain NUL
// (checkID), so a key splits one way only and a prefix of whole components
// selects exactly the entries of an id.
//
//	m  format → "2", topic → topic name, users → count(8)
//	o  partition(4) → next offset to apply(8)
//	u  ws \0 user_id → partition(4) topic value (JSON)
//	e  ws \0 external_id \0 user_id → flags(1)
//	a  ws \0 alias_label \0 alias_name \0 user_id → flags(1)
//	d  ws \0 device_id \0 user_id → flags(1)
//
// An index entry names the user in its key rather than in its value. Then
// the index is a pure function of the latest record of every user, whatever
// order the partitions were applied in: when two users claim the same id (a
// data error upstream), both entries exist, lookups choose the same one on
// every instance, and replacing one user's record removes exactly that
// user's entries.
const indexFormat = "2"

// Table prefixes.
const (
	tableMeta    byte = 'm'
	tableOffsets byte = 'o'
	tableUsers   byte = 'u'
	tableExt     byte = 'e'
	tableAlias   byte = 'a'
	tableDevice  byte = 'd'
)

var (
	dataTables = []byte{tableOffsets, tableUsers, tableExt, tableAlias, tableDevice}
	keyFormat  = metaKey("format")
	keyTopic   = metaKey("topic")
	keyUsers   = metaKey("users")
)

func metaKey(name string) []byte { return append([]byte{tableMeta}, name...) }

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
	// Topic is the topic the index replicates. A replica built from another
	// topic is emptied, since its offsets mean nothing for this one.
	Topic string
	// OpenTimeout bounds the wait for the directory's lock; zero means 5 s.
	OpenTimeout time.Duration
	// Logger receives the rare structural events (a reset). Nil discards.
	Logger *slog.Logger
}

// Index is the replica: the directory's indexes and, in the same atomic
// batches, the offset up to which each partition has been applied. A crash
// therefore loses either both an update and its offset or neither, and
// reopening resumes where the last surviving batch left off.
//
// Batches are committed without an fsync. The replica is a copy of the
// topic: a crash may lose its last batches (never a batch in part, and
// never a later batch while keeping an earlier one), and the tails read
// those records again from the stored offsets.
type Index struct {
	db   *pebble.DB
	path string

	// mu makes Apply and the partition operations one writer at a time:
	// each reads what it replaces (a user's old record, the user count)
	// before it writes.
	mu sync.Mutex
	// users is the user count as of the latest commit, kept in memory so
	// that reading it (every metrics scrape, every Status) touches no
	// storage. Written under mu after each commit.
	users atomic.Int64

	closeOnce sync.Once
	closeErr  error
}

// OpenIndex opens or creates the replica at path, a directory. A regular
// file there is a replica of an older build (a bbolt file): it is removed
// and the replica rebuilt from the topic.
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
	if fi, err := os.Stat(path); err == nil && fi.Mode().IsRegular() {
		opts.Logger.Warn("identity index is in an older build's format; rebuilding it from the topic", "path", path)
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("identities: open index: remove the older format's file: %w", err)
		}
	}
	db, err := openPebble(path, opts.OpenTimeout)
	if err != nil {
		return nil, err
	}
	previous, err := initIndex(db, opts.Topic)
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("identities: open index %s: %w", path, err)
	}
	if previous != "" && previous != opts.Topic {
		opts.Logger.Warn("identity index was built from another topic; rebuilding it", "path", path, "previous_topic", previous, "topic", opts.Topic)
	}
	x := &Index{db: db, path: path}
	n, err := get(db, keyUsers)
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("identities: open index %s: count users: %w", path, err)
	}
	x.users.Store(int64(readU64(n)))
	return x, nil
}

// openPebble opens the database, waiting up to timeout for another process
// to release its lock: pebble fails at once when the lock is held.
func openPebble(path string, timeout time.Duration) (*pebble.DB, error) {
	opts := &pebble.Options{
		// A larger memtable lets a fresh replica sort more users in memory
		// before its first flush; two of them bound the memory.
		MemTableSize:                64 << 20,
		MemTableStopWritesThreshold: 2,
		Logger:                      quietLogger{},
	}
	deadline := time.Now().Add(timeout)
	for {
		db, err := pebble.Open(path, opts)
		if err == nil {
			return db, nil
		}
		if !isLocked(err) {
			return nil, fmt.Errorf("identities: open index %s: %w", path, err)
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("identities: open index %s: another process holds it: %w", path, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// isLocked tells a lock held by another process (or another Index of this
// one) from other open failures; pebble reports the former only in its text.
func isLocked(err error) bool {
	msg := err.Error()
	return errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EWOULDBLOCK) ||
		strings.Contains(msg, "lock held by current process") || strings.Contains(msg, "resource temporarily unavailable")
}

// quietLogger drops pebble's informational lines (it logs every WAL it
// replays); its fatal path still panics, as pebble requires.
type quietLogger struct{}

func (quietLogger) Infof(string, ...any)           {}
func (quietLogger) Errorf(string, ...any)          {}
func (quietLogger) Fatalf(format string, a ...any) { panic(fmt.Sprintf(format, a...)) }

// initIndex sets the format and topic and empties the data tables when the
// replica followed another topic. It returns the topic replicated before.
func initIndex(db *pebble.DB, topic string) (string, error) {
	format, err := get(db, keyFormat)
	if err != nil {
		return "", err
	}
	if format != nil && string(format) != indexFormat {
		return "", fmt.Errorf("format %q, this build reads %q", format, indexFormat)
	}
	prev, err := get(db, keyTopic)
	if err != nil {
		return "", err
	}
	previous := string(prev)
	b := db.NewBatch()
	defer b.Close()
	if format == nil {
		_ = b.Set(keyFormat, []byte(indexFormat), nil)
	}
	if previous != "" && previous != topic {
		for _, t := range dataTables {
			_ = b.DeleteRange([]byte{t}, []byte{t + 1}, nil)
		}
		_ = b.Set(keyUsers, u64(0), nil)
	}
	if previous != topic {
		_ = b.Set(keyTopic, []byte(topic), nil)
	}
	if b.Empty() {
		return previous, nil
	}
	return previous, b.Commit(pebble.Sync)
}

// reader is what both the database and a batch or snapshot answer.
type reader interface {
	Get(key []byte) ([]byte, io.Closer, error)
}

// get returns a copy of key's value, or nil when there is none.
func get(r reader, key []byte) ([]byte, error) {
	v, closer, err := r.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	out := bytes.Clone(v)
	return out, closer.Close()
}

// Path is the index's directory.
func (x *Index) Path() string { return x.path }

// Close flushes nothing (batches are in the log) and closes the database.
// It may be called more than once.
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
	err := scan(x.db, []byte{tableOffsets}, func(k, v []byte) error {
		if len(k) != 4 || len(v) != 8 {
			return errors.New("corrupt offsets entry")
		}
		out[int(binary.BigEndian.Uint32(k))] = int64(binary.BigEndian.Uint64(v))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("identities: read offsets: %w", err)
	}
	return out, nil
}

// iterable is the database or a batch: what scan reads.
type iterable interface {
	NewIter(*pebble.IterOptions) (*pebble.Iterator, error)
}

// scan calls fn with every key under prefix, the prefix cut off.
func scan(r iterable, prefix []byte, fn func(k, v []byte) error) error {
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return err
	}
	for it.First(); it.Valid(); it.Next() {
		if err := fn(it.Key()[len(prefix):], it.Value()); err != nil {
			_ = it.Close()
			return err
		}
	}
	return it.Close()
}

// prefixEnd is the smallest key above every key with prefix p, or nil.
func prefixEnd(p []byte) []byte {
	end := bytes.Clone(p)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

// Users is the number of users in the index, over every workspace, as of
// the latest commit. It reads memory only.
func (x *Index) Users() int64 { return x.users.Load() }

// Apply folds msgs, read from partition in offset order, into the index and
// stores next (or the offset after the last message, if that is higher) as
// the partition's next offset, all in one atomic batch. Messages below the
// stored offset were applied before and are left alone, so delivering a range
// twice changes nothing. Invalid messages are skipped and reported, never
// fatal: one bad record from a foreign producer must not stop the directory.
func (x *Index) Apply(partition int, msgs []Message, next int64) (Applied, error) {
	// Decoding, and building the keys and values to write, happens before
	// taking the writer's lock, which every partition's tail waits for.
	prepared := make([]preparedMessage, len(msgs))
	for i, m := range msgs {
		prepared[i] = prepare(partition, m)
	}
	var out Applied
	err := x.write(func(w *writeTx) error {
		stored, err := w.offset(partition)
		if err != nil {
			return err
		}
		for i, m := range msgs {
			if m.Offset < stored {
				continue
			}
			changed, err := w.apply(prepared[i])
			if err != nil {
				if w.err != nil {
					return w.err
				}
				out.Skipped = append(out.Skipped, Skipped{Offset: m.Offset, Err: err})
			} else if changed {
				out.Records++
			}
			next = max(next, m.Offset+1)
		}
		out.Next = max(stored, next)
		return w.setOffset(partition, out.Next)
	})
	if err != nil {
		return Applied{}, fmt.Errorf("identities: apply partition %d: %w", partition, err)
	}
	return out, nil
}

// write runs fn over one indexed batch, which reads its own writes, and
// commits it.
func (x *Index) write(fn func(*writeTx) error) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	b := x.db.NewIndexedBatch()
	defer b.Close()
	w, err := newWriteTx(b)
	if err != nil {
		return err
	}
	if err := fn(w); err != nil {
		return err
	}
	if err := w.flush(); err != nil {
		return err
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		return err
	}
	x.users.Store(w.usersN)
	return nil
}

// ResetPartition removes every user that came from partition and sets its
// next offset to next: for a topic recreated shorter than what was applied,
// whose records must be read again from scratch.
func (x *Index) ResetPartition(partition int, next int64) error {
	err := x.write(func(w *writeTx) error {
		if err := w.dropPartition(partition); err != nil {
			return err
		}
		return w.setOffset(partition, next)
	})
	if err != nil {
		return fmt.Errorf("identities: reset partition %d: %w", partition, err)
	}
	return nil
}

// DropPartition removes every user that came from partition and forgets the
// partition: for a partition the topic no longer has.
func (x *Index) DropPartition(partition int) error {
	err := x.write(func(w *writeTx) error {
		if err := w.dropPartition(partition); err != nil {
			return err
		}
		return w.b.Delete(offsetKey(partition), nil)
	})
	if err != nil {
		return fmt.Errorf("identities: drop partition %d: %w", partition, err)
	}
	return nil
}

// SkipTo moves partition's next offset forward to next, keeping the index:
// for records deleted from the log before this replica read them.
func (x *Index) SkipTo(partition int, next int64) error {
	err := x.write(func(w *writeTx) error {
		stored, err := w.offset(partition)
		if err != nil {
			return err
		}
		return w.setOffset(partition, max(next, stored))
	})
	if err != nil {
		return fmt.Errorf("identities: skip partition %d to %d: %w", partition, next, err)
	}
	return nil
}

// writeTx applies records within one indexed batch.
type writeTx struct {
	b              *pebble.Batch
	users0, usersN int64
	// err is a failure of the batch itself, as opposed to a bad record:
	// it ends the Apply instead of skipping the record.
	err error
}

func newWriteTx(b *pebble.Batch) (*writeTx, error) {
	v, err := get(b, keyUsers)
	if err != nil {
		return nil, err
	}
	n := int64(readU64(v))
	return &writeTx{b: b, users0: n, usersN: n}, nil
}

func offsetKey(partition int) []byte {
	k := []byte{tableOffsets, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(k[1:], uint32(partition))
	return k
}

func (w *writeTx) offset(partition int) (int64, error) {
	v, err := get(w.b, offsetKey(partition))
	return int64(readU64(v)), err
}

func (w *writeTx) setOffset(partition int, next int64) error {
	return w.b.Set(offsetKey(partition), u64(uint64(next)), nil)
}

func (w *writeTx) flush() error {
	if w.usersN == w.users0 {
		return nil
	}
	return w.b.Set(keyUsers, u64(uint64(w.usersN)), nil)
}

// preparedMessage is one message decoded, with what applying it writes.
type preparedMessage struct {
	err       error
	tombstone bool
	ws, user  string
	ukey      []byte     // key in the users table
	value     []byte     // value in the users table (a record only)
	entries   []entryKey // index entries (a record only)
	flags     byte
}

// prepare decodes m into the keys and values that applying it writes.
func prepare(partition int, m Message) preparedMessage {
	if m.Value == nil {
		ws, user, ok := splitMessageKey(m.Key)
		if !ok || checkID(user) != nil {
			return preparedMessage{err: errors.New("tombstone with an invalid key")}
		}
		return preparedMessage{tombstone: true, ws: ws, user: user, ukey: tableKey(tableUsers, ws, user)}
	}
	ws, rec, err := decodeValue(m.Key, m.Value)
	if err != nil {
		return preparedMessage{err: err}
	}
	p := preparedMessage{ws: ws, user: rec.UserID, ukey: tableKey(tableUsers, ws, rec.UserID), entries: entryKeys(ws, rec.UserID, rec)}
	if rec.Identified() {
		p.flags = flagIdentified
	}
	p.value = make([]byte, 4+len(m.Value))
	binary.BigEndian.PutUint32(p.value, uint32(partition))
	copy(p.value[4:], m.Value)
	return p
}

// apply folds one prepared message in and reports whether the index changed.
// A failure of the batch itself is also kept in w.err.
func (w *writeTx) apply(p preparedMessage) (bool, error) {
	if p.err != nil {
		return false, p.err
	}
	if p.tombstone {
		return w.fail(w.remove(p.ukey))
	}
	old, err := get(w.b, p.ukey)
	if err != nil {
		return w.fail(false, err)
	}
	if old != nil {
		if err := w.removeEntries(p.ws, p.user, old); err != nil {
			return false, err
		}
	} else {
		w.usersN++
	}
	flags := []byte{p.flags}
	for _, k := range p.entries {
		if err := w.b.Set(k, flags, nil); err != nil {
			return w.fail(false, err)
		}
	}
	return w.fail(true, w.b.Set(p.ukey, p.value, nil))
}

// fail records err as a failure of the batch.
func (w *writeTx) fail(changed bool, err error) (bool, error) {
	if err != nil && w.err == nil {
		w.err = err
	}
	return changed, err
}

// remove deletes the user stored under ukey, if any.
func (w *writeTx) remove(ukey []byte) (bool, error) {
	old, err := get(w.b, ukey)
	if err != nil || old == nil {
		return false, err
	}
	ws, user, ok := splitJoined(ukey[1:])
	if !ok {
		return false, errors.New("corrupt users key")
	}
	if err := w.removeEntries(ws, user, old); err != nil {
		return false, err
	}
	w.usersN--
	return true, w.b.Delete(ukey, nil)
}

// removeEntries deletes the index entries of a user's stored record.
func (w *writeTx) removeEntries(ws, user string, old []byte) error {
	rec, err := storedRecord(old)
	if err != nil {
		return fmt.Errorf("stored record: %w", err)
	}
	for _, k := range entryKeys(ws, user, rec) {
		if err := w.b.Delete(k, nil); err != nil {
			return w.batchErr(err)
		}
	}
	return nil
}

func (w *writeTx) batchErr(err error) error {
	_, err = w.fail(false, err)
	return err
}

// dropPartition removes every user stored from partition. The keys are
// collected first, then removed.
func (w *writeTx) dropPartition(partition int) error {
	var doomed [][]byte
	err := scan(w.b, []byte{tableUsers}, func(k, v []byte) error {
		if len(v) >= 4 && int(binary.BigEndian.Uint32(v)) == partition {
			doomed = append(doomed, append([]byte{tableUsers}, k...))
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, k := range doomed {
		if _, err := w.remove(k); err != nil {
			return err
		}
	}
	return nil
}

// entryKey is the full key of one index entry, table byte first.
type entryKey = []byte

// entryKeys lists the index entries of a record, each key freshly allocated.
func entryKeys(ws, user string, rec Record) []entryKey {
	out := make([]entryKey, 0, 1+len(rec.Aliases)+len(rec.DeviceIDs))
	if rec.ExternalID != "" {
		out = append(out, tableKey(tableExt, ws, rec.ExternalID, user))
	}
	for _, a := range rec.Aliases {
		out = append(out, tableKey(tableAlias, ws, a.Label, a.Name, user))
	}
	for _, d := range rec.DeviceIDs {
		out = append(out, tableKey(tableDevice, ws, d, user))
	}
	return out
}

// tableKey is the key of parts in table t.
func tableKey(t byte, parts ...string) []byte {
	return joinKey([]byte{t}, parts...)
}

func storedRecord(v []byte) (Record, error) {
	if len(v) < 4 {
		return Record{}, errors.New("too short")
	}
	var w wireRecord
	if err := json.Unmarshal(v[4:], &w); err != nil {
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

// View runs fn with a Lookup over one consistent snapshot of the index,
// however many lookups fn makes. The Lookup is valid only inside fn and only
// for one goroutine.
func (x *Index) View(fn func(Lookup) error) error {
	l, err := x.newLookup()
	if err != nil {
		return err
	}
	defer l.close()
	return fn(l)
}

// LookupExternalID is a single lookup over its own snapshot; batches should
// use View.
func (x *Index) LookupExternalID(workspace, id string) (userID string, identified, found bool) {
	_ = x.View(func(l Lookup) error {
		userID, identified, found = l.LookupExternalID(workspace, id)
		return nil
	})
	return userID, identified, found
}

// LookupAlias is a single lookup over its own snapshot.
func (x *Index) LookupAlias(workspace, name, label string) (userID string, identified, found bool) {
	_ = x.View(func(l Lookup) error {
		userID, identified, found = l.LookupAlias(workspace, name, label)
		return nil
	})
	return userID, identified, found
}

// LookupDevice is a single lookup over its own snapshot.
func (x *Index) LookupDevice(workspace, id string) (userID string, identified, found bool) {
	_ = x.View(func(l Lookup) error {
		userID, identified, found = l.LookupDevice(workspace, id)
		return nil
	})
	return userID, identified, found
}

// txLookup reuses one iterator and one key buffer for all lookups over a
// snapshot, so a lookup allocates only the user id it returns.
type txLookup struct {
	snap *pebble.Snapshot
	it   *pebble.Iterator
	buf  []byte
	err  error // the first failure of the iterator, reported by close
}

func (x *Index) newLookup() (*txLookup, error) {
	snap := x.db.NewSnapshot()
	it, err := snap.NewIter(nil)
	if err != nil {
		_ = snap.Close()
		return nil, fmt.Errorf("identities: read index: %w", err)
	}
	return &txLookup{snap: snap, it: it, buf: make([]byte, 0, 256)}, nil
}

func (l *txLookup) close() {
	_ = l.it.Close()
	_ = l.snap.Close()
}

// prefix builds the key prefix of parts in table t, or reports false for
// parts that cannot occur in the index (empty, or containing NUL).
func (l *txLookup) prefix(t byte, parts ...string) bool {
	l.buf = append(l.buf[:0], t)
	for _, p := range parts {
		if p == "" || strings.IndexByte(p, 0) >= 0 {
			return false
		}
		l.buf = append(l.buf, p...)
		l.buf = append(l.buf, 0)
	}
	return true
}

// seek positions the iterator at the first key under the prefix and reports
// whether there is one.
func (l *txLookup) seek() bool {
	if !l.it.SeekGE(l.buf) {
		l.noteErr()
		return false
	}
	return bytes.HasPrefix(l.it.Key(), l.buf)
}

func (l *txLookup) noteErr() {
	if err := l.it.Error(); err != nil && l.err == nil {
		l.err = err
	}
}

// first returns the entry with the smallest user id under the prefix, which
// is the same choice on every instance when an id is claimed twice.
func (l *txLookup) first() (string, bool, bool) {
	if !l.seek() || len(l.it.Key()) == len(l.buf) {
		return "", false, false
	}
	v := l.it.Value()
	return string(l.it.Key()[len(l.buf):]), len(v) > 0 && v[0]&flagIdentified != 0, true
}

func (l *txLookup) LookupExternalID(workspace, id string) (string, bool, bool) {
	if !l.prefix(tableExt, workspace, id) {
		return "", false, false
	}
	return l.first()
}

func (l *txLookup) LookupAlias(workspace, name, label string) (string, bool, bool) {
	if !l.prefix(tableAlias, workspace, label, name) {
		return "", false, false
	}
	return l.first()
}

func (l *txLookup) LookupDevice(workspace, id string) (string, bool, bool) {
	if !l.prefix(tableDevice, workspace, id) {
		return "", false, false
	}
	identifiedUser := ""
	for ok := l.seek(); ok && bytes.HasPrefix(l.it.Key(), l.buf); ok = l.it.Next() {
		user := l.it.Key()[len(l.buf):]
		if len(user) == 0 {
			continue
		}
		if v := l.it.Value(); len(v) == 0 || v[0]&flagIdentified == 0 {
			return string(user), false, true
		}
		if identifiedUser == "" {
			// The iterator's key is valid only until it moves.
			identifiedUser = string(user)
		}
	}
	l.noteErr()
	if identifiedUser != "" {
		return identifiedUser, true, true
	}
	return "", false, false
}
