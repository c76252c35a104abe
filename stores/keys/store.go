package keys

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/cohortsync/cohortsync/internal/httpjson"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	kafkago "github.com/segmentio/kafka-go"

	"github.com/cohortsync/cohortsync/kafka"
)

// Defaults of Options.
const (
	DefaultPollWait     = 200 * time.Millisecond
	DefaultMaxStaleness = 3 * time.Second
)

// Options tune a Store. The zero value is usable.
type Options struct {
	// Topic is the compacted keys topic; empty means the client's Topics.Keys.
	Topic string
	// Logger receives lifecycle and tail events; never a secret. Nil discards.
	Logger *slog.Logger
	// Registerer receives the store's metrics. Nil registers nothing.
	Registerer prometheus.Registerer
	// PollWait is how long one fetch may wait at the broker for new records.
	// It bounds how late this instance sees a revocation written elsewhere,
	// so it must stay well under the 5 s the contract allows.
	PollWait time.Duration
	// MaxStaleness is how long the tail may go without confirming that it has
	// read up to the end of the topic before Healthy reports an error.
	MaxStaleness time.Duration
}

// Store is the key store of one process: an in-memory index built by
// replaying the keys topic and kept current by tailing it. Every instance
// sharing the topic converges on the same index, which is how a revocation
// reaches all of them.
type Store struct {
	client   *kafka.Client
	topic    string
	log      *slog.Logger
	writer   *kafkago.Writer
	pollWait time.Duration
	maxStale time.Duration
	metrics  *metrics

	mu       sync.RWMutex
	byID     map[string]entry
	byWS     map[string]map[string]struct{}
	active   int
	next     int64 // offset of the next record to apply: all before it are applied
	hwm      int64 // high-water mark seen by the last fetch
	lastSync time.Time
	lastErr  error
	closed   bool
	// advanced is closed and replaced whenever next moves, waking everyone
	// waiting for their own write to be applied.
	advanced chan struct{}

	cancel    context.CancelFunc
	done      chan struct{}
	closeOnce sync.Once
	closeErr  error
}

type entry struct {
	key  Key
	hash [sha256.Size]byte
}

// Status describes how far the store has read the topic, for readiness checks
// and diagnostics.
type Status struct {
	Topic         string
	AppliedOffset int64 // every record below this offset is applied
	HighWaterMark int64
	LastSync      time.Time // when the tail last confirmed it was at the end of the topic
	LastError     error
	Keys          int
	ActiveKeys    int
}

// Open replays the keys topic up to its current end and keeps tailing it until
// Close. The topic must exist (kafka.Client.EnsureTopics). Open returns only
// once every key written before it was called is in the index, so a process
// never starts serving with a partial set of keys or revocations.
func Open(ctx context.Context, client *kafka.Client, opts Options) (*Store, error) {
	if client == nil {
		return nil, errors.New("keys: open: nil kafka client")
	}
	s := &Store{
		client:   client,
		topic:    opts.Topic,
		log:      opts.Logger,
		pollWait: opts.PollWait,
		maxStale: opts.MaxStaleness,
		byID:     make(map[string]entry),
		byWS:     make(map[string]map[string]struct{}),
		advanced: make(chan struct{}),
		done:     make(chan struct{}),
	}
	if s.topic == "" {
		s.topic = client.Config().Topics.Keys
	}
	if s.topic == "" {
		return nil, errors.New("keys: open: no keys topic configured")
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.log = s.log.With("component", "keys", "topic", s.topic)
	if s.pollWait <= 0 {
		s.pollWait = DefaultPollWait
	}
	if s.maxStale <= 0 {
		s.maxStale = DefaultMaxStaleness
	}
	if s.maxStale <= s.pollWait {
		return nil, fmt.Errorf("keys: open: max staleness %s must exceed poll wait %s", s.maxStale, s.pollWait)
	}
	s.metrics = newMetrics(s)

	started := time.Now()
	first, err := s.listOffsetRetry(ctx, kafkago.FirstOffset)
	if err != nil {
		return nil, fmt.Errorf("keys: open: %w", err)
	}
	endAsOf := time.Now()
	end, err := s.listOffsetRetry(ctx, kafkago.LastOffset)
	if err != nil {
		return nil, fmt.Errorf("keys: open: %w", err)
	}
	s.next = first

	// The tail outlives Open's ctx, which only bounds the replay.
	tailCtx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.writer = client.Writer(s.topic)
	go s.tail(tailCtx)

	if err := s.waitApplied(ctx, end); err != nil {
		// The tail's own failure says more than "deadline exceeded".
		if tailErr := s.Status().LastError; tailErr != nil {
			err = fmt.Errorf("%w (last tail error: %v)", err, tailErr)
		}
		_ = s.Close()
		return nil, fmt.Errorf("keys: open: replay %s up to offset %d: %w", s.topic, end, err)
	}
	s.markSynced(endAsOf)
	if err := s.metrics.register(opts.Registerer); err != nil {
		_ = s.Close()
		return nil, fmt.Errorf("keys: open: %w", err)
	}
	st := s.Status()
	s.log.Info("key store ready", "keys", st.Keys, "active", st.ActiveKeys,
		"offset", st.AppliedOffset, "replay", time.Since(started).Round(time.Millisecond))
	return s, nil
}

// Close stops the tail and the writer. It is safe to call more than once.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		s.cancel()
		<-s.done
		if err := s.writer.Close(); err != nil {
			s.closeErr = fmt.Errorf("keys: close writer: %w", err)
		}
		s.metrics.Unregister()
	})
	return s.closeErr
}

// Create generates a key for workspace and partner and returns it with its
// secret. The secret exists only in the return value: it is shown once and
// cannot be recovered. When Create returns, VerifySecret on this store
// accepts the secret.
func (s *Store) Create(ctx context.Context, workspace, partner, label string) (Key, string, error) {
	if err := validateCreate(workspace, partner, label); err != nil {
		return Key{}, "", err
	}
	id, err := s.unusedKeyID()
	if err != nil {
		return Key{}, "", err
	}
	secret, err := newSecret(id)
	if err != nil {
		return Key{}, "", err
	}
	k := Key{
		ID:           id,
		Workspace:    workspace,
		Partner:      partner,
		Label:        label,
		SecretSHA256: HashSecret(secret),
		CreatedAt:    time.Now().UTC().Truncate(time.Millisecond),
	}
	err = s.put(ctx, k, func(got Key) bool { return got.SecretSHA256 == k.SecretSHA256 })
	if err != nil {
		return Key{}, "", err
	}
	s.log.Info("data import key created", "key_id", k.ID, "workspace", k.Workspace, "partner", k.Partner)
	return k.clone(), secret, nil
}

// unusedKeyID draws key ids until one is not in the index. With 64 random
// bits a second draw is already astronomically unlikely; the loop only turns
// a collision into a clear error instead of overwriting a key.
func (s *Store) unusedKeyID() (string, error) {
	for range 3 {
		id, err := newKeyID()
		if err != nil {
			return "", err
		}
		s.mu.RLock()
		_, taken := s.byID[id]
		s.mu.RUnlock()
		if !taken {
			return id, nil
		}
	}
	return "", errors.New("keys: could not draw an unused key id")
}

// Revoke invalidates a key of workspace. A key of another workspace is
// reported as ErrNotFound. Revoking a revoked key succeeds and keeps the
// original revocation time. When Revoke returns, this store refuses the key;
// other instances refuse it within their poll wait.
func (s *Store) Revoke(ctx context.Context, workspace, keyID string) error {
	s.mu.RLock()
	e, ok := s.byID[keyID]
	s.mu.RUnlock()
	if !ok || e.key.Workspace != workspace {
		return fmt.Errorf("keys: revoke %q in workspace %q: %w", httpjson.Truncate(keyID), httpjson.Truncate(workspace), ErrNotFound)
	}
	if e.key.Revoked() {
		return nil
	}
	k := e.key.clone()
	now := time.Now().UTC().Truncate(time.Millisecond)
	k.RevokedAt = &now
	if err := s.put(ctx, k, Key.Revoked); err != nil {
		return err
	}
	s.log.Info("data import key revoked", "key_id", k.ID, "workspace", k.Workspace, "partner", k.Partner)
	return nil
}

// put writes k with acks from every in-sync replica and then waits until this
// store's own tail has applied it, which gives callers read-your-writes.
// Waiting on the index itself, rather than on an end offset read after the
// write, needs no extra round trip that could fail after the write succeeded.
func (s *Store) put(ctx context.Context, k Key, applied func(Key) bool) error {
	s.mu.RLock()
	closed := s.closed
	s.mu.RUnlock()
	if closed {
		return ErrClosed
	}
	val, err := json.Marshal(record{Version: recordVersion, Key: k})
	if err != nil {
		return fmt.Errorf("keys: encode key %s: %w", k.ID, err)
	}
	if err := s.writer.WriteMessages(ctx, kafkago.Message{Key: []byte(k.ID), Value: val}); err != nil {
		return fmt.Errorf("keys: write key %s to %s: %w", k.ID, s.topic, err)
	}
	err = s.waitUntil(ctx, func() bool {
		e, ok := s.byID[k.ID]
		return ok && applied(e.key)
	})
	if err != nil {
		return fmt.Errorf("keys: key %s written but not yet applied: %w", k.ID, err)
	}
	return nil
}

// VerifySecret returns the key a client secret belongs to, or false when the
// secret is malformed, unknown, wrong or revoked. Callers should also check
// Healthy: an index that has lost contact with the topic may miss a recent
// revocation.
func (s *Store) VerifySecret(secret string) (Key, bool) {
	id, ok := ParseSecret(secret)
	if !ok {
		s.metrics.verified(resultMalformed)
		return Key{}, false
	}
	sum := sha256.Sum256([]byte(secret))
	s.mu.RLock()
	e, found := s.byID[id]
	s.mu.RUnlock()
	switch {
	case !found:
		s.metrics.verified(resultUnknown)
		return Key{}, false
	case subtle.ConstantTimeCompare(sum[:], e.hash[:]) != 1:
		s.metrics.verified(resultMismatch)
		return Key{}, false
	case e.key.Revoked():
		s.metrics.verified(resultRevoked)
		return Key{}, false
	}
	s.metrics.verified(resultOK)
	return e.key.clone(), true
}

// Get returns the key with id, revoked or not.
func (s *Store) Get(keyID string) (Key, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	e, ok := s.byID[keyID]
	if !ok {
		return Key{}, false
	}
	return e.key.clone(), true
}

// List returns the keys of workspace, revoked ones included, oldest first.
func (s *Store) List(workspace string) []Key {
	s.mu.RLock()
	ids := s.byWS[workspace]
	out := make([]Key, 0, len(ids))
	for id := range ids {
		out = append(out, s.byID[id].key.clone())
	}
	s.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.Before(out[j].CreatedAt)
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// Workspaces returns every workspace that has ever had a key, sorted. It is
// the list of workspaces an instance serves, whichever sink holds their data.
func (s *Store) Workspaces() []string {
	s.mu.RLock()
	out := make([]string, 0, len(s.byWS))
	for ws := range s.byWS {
		out = append(out, ws)
	}
	s.mu.RUnlock()
	sort.Strings(out)
	return out
}

// Status reports how far the store has read.
func (s *Store) Status() Status {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return Status{
		Topic:         s.topic,
		AppliedOffset: s.next,
		HighWaterMark: s.hwm,
		LastSync:      s.lastSync,
		LastError:     s.lastErr,
		Keys:          len(s.byID),
		ActiveKeys:    s.active,
	}
}

// Healthy returns nil while the tail keeps confirming that it has read the
// whole topic. Otherwise revocations written elsewhere may be missed, and a
// caller should answer 503 rather than trust VerifySecret.
func (s *Store) Healthy() error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	age := time.Since(s.lastSync)
	if age <= s.maxStale {
		return nil
	}
	if s.lastErr != nil {
		return fmt.Errorf("keys: not in sync with %s for %s: %w", s.topic, age.Round(time.Millisecond), s.lastErr)
	}
	return fmt.Errorf("keys: not in sync with %s for %s", s.topic, age.Round(time.Millisecond))
}

// waitApplied blocks until every record below offset is applied.
func (s *Store) waitApplied(ctx context.Context, offset int64) error {
	err := s.waitUntil(ctx, func() bool { return s.next >= offset })
	if err != nil {
		return fmt.Errorf("waiting for offset %d: %w", offset, err)
	}
	return nil
}

// waitUntil blocks until cond, evaluated under the read lock, holds. It is
// re-evaluated each time the tail applies records.
func (s *Store) waitUntil(ctx context.Context, cond func() bool) error {
	for {
		s.mu.RLock()
		ok, ch, next := cond(), s.advanced, s.next
		s.mu.RUnlock()
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("applied up to offset %d: %w", next, ctx.Err())
		case <-s.done:
			return ErrClosed
		case <-ch:
		}
	}
}

func (s *Store) markSynced(at time.Time) {
	s.mu.Lock()
	if at.After(s.lastSync) {
		s.lastSync = at
	}
	s.mu.Unlock()
}

// apply folds one record into the index; the caller holds mu. Bad records are
// logged and skipped rather than stopping the tail, because one bad record
// written by a buggy or foreign producer must not freeze revocations.
func (s *Store) apply(m kafkago.Message) {
	if m.Value == nil {
		s.removeLocked(string(m.Key), m.Offset)
		return
	}
	var rec record
	if err := json.Unmarshal(m.Value, &rec); err != nil {
		s.skip(m.Offset, err)
		return
	}
	if err := rec.validate(m.Key); err != nil {
		s.skip(m.Offset, err)
		return
	}
	var e entry
	if n, err := hex.Decode(e.hash[:], []byte(rec.SecretSHA256)); err != nil || n != sha256.Size {
		s.skip(m.Offset, errors.New("secret_sha256 is not hex"))
		return
	}
	e.key = rec.Key
	prev, existed := s.byID[rec.ID]
	if existed && prev.key.Revoked() && !e.key.Revoked() {
		// Revocation is one-way: a later record without revoked_at (a stale
		// write racing a revoke, or a bug) must not bring a key back.
		s.log.Warn("ignoring un-revocation of a revoked key", "key_id", rec.ID, "offset", m.Offset)
		e.key.RevokedAt = prev.key.RevokedAt
	}
	if existed {
		s.dropLocked(prev)
	}
	s.byID[rec.ID] = e
	ws := s.byWS[e.key.Workspace]
	if ws == nil {
		ws = make(map[string]struct{})
		s.byWS[e.key.Workspace] = ws
	}
	ws[rec.ID] = struct{}{}
	if !e.key.Revoked() {
		s.active++
	}
}

// removeLocked handles a tombstone: an operator purging a key for good.
func (s *Store) removeLocked(id string, offset int64) {
	prev, ok := s.byID[id]
	if !ok {
		return
	}
	s.dropLocked(prev)
	delete(s.byID, id)
	s.log.Info("data import key deleted by tombstone", "key_id", id, "offset", offset)
}

func (s *Store) dropLocked(prev entry) {
	if ws := s.byWS[prev.key.Workspace]; ws != nil {
		delete(ws, prev.key.ID)
		if len(ws) == 0 {
			delete(s.byWS, prev.key.Workspace)
		}
	}
	if !prev.key.Revoked() {
		s.active--
	}
}

func (s *Store) skip(offset int64, err error) {
	s.metrics.invalidRecords.Inc()
	s.log.Warn("skipping invalid record on keys topic", "offset", offset, "error", err)
}

// resetLocked forgets the index so the topic can be replayed from scratch.
func (s *Store) resetLocked(from int64) {
	s.byID = make(map[string]entry)
	s.byWS = make(map[string]map[string]struct{})
	s.active = 0
	s.next = from
}
