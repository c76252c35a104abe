package keys

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/cohortsync/cohortsync/internal/httpjson"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cohortsync/cohortsync/kafka"
)

// Defaults of Options: those of the compacted-topic table the store reads.
const (
	DefaultPollWait     = kafka.DefaultTablePollWait
	DefaultMaxStaleness = kafka.DefaultTableMaxStaleness
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
// replaying the keys topic and kept current by tailing it (a kafka.Table).
// Every instance sharing the topic converges on the same index, which is how
// a revocation reaches all of them.
type Store struct {
	table   *kafka.Table
	topic   string
	log     *slog.Logger
	metrics *metrics

	mu     sync.RWMutex
	byID   map[string]entry
	byWS   map[string]map[string]struct{}
	active int
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
		topic: opts.Topic,
		log:   opts.Logger,
		byID:  make(map[string]entry),
		byWS:  make(map[string]map[string]struct{}),
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
	s.metrics = newMetrics(s)

	started := time.Now()
	table, err := client.OpenTable(ctx, kafka.TableOptions{
		Topic: s.topic, Name: "keys", Apply: s.apply, Reset: s.reset,
		Logger: opts.Logger, Registerer: opts.Registerer,
		PollWait: opts.PollWait, MaxStaleness: opts.MaxStaleness,
	})
	if err != nil {
		return nil, fmt.Errorf("keys: open: %w", err)
	}
	s.table = table
	if err := s.metrics.register(opts.Registerer); err != nil {
		_ = table.Close()
		return nil, fmt.Errorf("keys: open: %w", err)
	}
	st := s.Status()
	s.log.Info("key store ready", "keys", st.Keys, "active", st.ActiveKeys,
		"offset", st.AppliedOffset, "replay", time.Since(started).Round(time.Millisecond))
	return s, nil
}

// Close stops the tail. It is safe to call more than once.
func (s *Store) Close() error {
	err := s.table.Close()
	s.metrics.Unregister()
	if err != nil {
		return fmt.Errorf("keys: close: %w", err)
	}
	return nil
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

// put writes k with acks from every in-sync replica and returns once this
// store's own tail has applied it, which gives callers read-your-writes.
// applied double-checks the index: a record of this key written elsewhere
// just before may have been applied over it.
func (s *Store) put(ctx context.Context, k Key, applied func(Key) bool) error {
	val, err := json.Marshal(record{Version: recordVersion, Key: k})
	if err != nil {
		return fmt.Errorf("keys: encode key %s: %w", k.ID, err)
	}
	if err := s.table.Put(ctx, []byte(k.ID), val); err != nil {
		if errors.Is(err, kafka.ErrTableClosed) {
			return ErrClosed
		}
		return fmt.Errorf("keys: write key %s to %s: %w", k.ID, s.topic, err)
	}
	s.mu.RLock()
	e, ok := s.byID[k.ID]
	s.mu.RUnlock()
	if !ok || !applied(e.key) {
		return fmt.Errorf("keys: key %s was overwritten by a concurrent write", k.ID)
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
	ts := s.table.Status()
	s.mu.RLock()
	defer s.mu.RUnlock()
	return Status{
		Topic:         s.topic,
		AppliedOffset: ts.AppliedOffset,
		HighWaterMark: ts.HighWaterMark,
		LastSync:      ts.LastSync,
		LastError:     ts.LastError,
		Keys:          len(s.byID),
		ActiveKeys:    s.active,
	}
}

// Healthy returns nil while the tail keeps confirming that it has read the
// whole topic. Otherwise revocations written elsewhere may be missed, and a
// caller should answer 503 rather than trust VerifySecret.
func (s *Store) Healthy() error {
	err := s.table.Healthy()
	switch {
	case err == nil:
		return nil
	case errors.Is(err, kafka.ErrTableClosed):
		return ErrClosed
	}
	return fmt.Errorf("keys: %w", err)
}

// apply folds one record of the topic into the index. Bad records are logged
// and skipped rather than stopping the tail, because one bad record written
// by a buggy or foreign producer must not freeze revocations.
func (s *Store) apply(m kafka.TableRecord) {
	s.mu.Lock()
	defer func() {
		s.metrics.active.Set(float64(s.active))
		s.mu.Unlock()
	}()
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

// reset forgets the index before the table replays a topic that became
// shorter than what was applied (deleted and recreated): keys of the old log
// must not stay alive.
func (s *Store) reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.byID = make(map[string]entry)
	s.byWS = make(map[string]map[string]struct{})
	s.active = 0
	s.metrics.active.Set(0)
}
