package adminauth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cohortsync/cohortsync/kafka"
)

// ErrNotFound is a token id unknown in the workspace.
var ErrNotFound = errors.New("adminauth: token not found")

// ErrInvalidWorkspace is a workspace name a token cannot be minted for.
var ErrInvalidWorkspace = errors.New("adminauth: invalid workspace")

// workspacePattern is the workspace syntax of keys.ValidWorkspace, repeated
// here because keys depends on this package.
var workspacePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// ValidWorkspace reports whether name is a workspace name.
func ValidWorkspace(name string) bool { return workspacePattern.MatchString(name) }

// WorkspaceProblem is the one wording, for every API and command, of why a
// workspace name is refused; "" when it is valid.
func WorkspaceProblem(name string) string {
	if ValidWorkspace(name) {
		return ""
	}
	return fmt.Sprintf("workspace %q must be 1-63 lowercase letters, digits, '_' or '-', starting with a letter or digit", truncate(name))
}

// A workspace token is "cst_<16 hex id>_<43 base64url chars>": the id lets
// the store find the record without comparing against every hash.
const tokenIDLen = 16

// Token is a workspace token as stored: its SHA-256, never the token.
type Token struct {
	ID        string     `json:"id"`
	Workspace string     `json:"workspace"`
	SHA256    string     `json:"sha256"`
	CreatedAt time.Time  `json:"created_at"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
}

// Revoked reports whether the token was revoked.
func (t Token) Revoked() bool { return t.RevokedAt != nil }

func (t Token) validate(key []byte) error {
	var errs []error
	if !validTokenID(t.ID) {
		errs = append(errs, errors.New("id is not 16 hex characters"))
	} else if string(key) != t.ID {
		errs = append(errs, fmt.Errorf("record key %q is not the id %q", key, t.ID))
	}
	if !ValidWorkspace(t.Workspace) {
		errs = append(errs, fmt.Errorf("workspace %q is invalid", t.Workspace))
	}
	if raw, err := hex.DecodeString(t.SHA256); err != nil || len(raw) != sha256.Size {
		errs = append(errs, errors.New("sha256 is not 64 hex characters"))
	}
	if t.CreatedAt.IsZero() {
		errs = append(errs, errors.New("created_at is missing"))
	}
	return errors.Join(errs...)
}

func validTokenID(id string) bool {
	if len(id) != tokenIDLen {
		return false
	}
	_, err := hex.DecodeString(id)
	return err == nil && strings.ToLower(id) == id
}

// parseWorkspaceToken returns the id inside a workspace token.
func parseWorkspaceToken(tok string) (string, bool) {
	rest, ok := strings.CutPrefix(tok, TokenPrefix)
	if !ok || len(rest) <= tokenIDLen+1 || rest[tokenIDLen] != '_' {
		return "", false
	}
	id := rest[:tokenIDLen]
	return id, validTokenID(id)
}

func newWorkspaceToken() (id, token string, err error) {
	var idb [tokenIDLen / 2]byte
	var secret [32]byte
	if _, err := rand.Read(idb[:]); err != nil {
		return "", "", fmt.Errorf("adminauth: generate token id: %w", err)
	}
	if _, err := rand.Read(secret[:]); err != nil {
		return "", "", fmt.Errorf("adminauth: generate token: %w", err)
	}
	id = hex.EncodeToString(idb[:])
	return id, TokenPrefix + id + "_" + base64.RawURLEncoding.EncodeToString(secret[:]), nil
}

// TokenStoreOptions tune a TokenStore. The zero value is usable.
type TokenStoreOptions struct {
	// Topic is the compacted tokens topic; empty means the client's Topics.Tokens.
	Topic string
	// Logger receives lifecycle events, never a token. Nil discards.
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// PollWait and MaxStaleness tune the topic's tail (kafka.TableOptions).
	PollWait     time.Duration
	MaxStaleness time.Duration
}

// TokenStore holds the workspace tokens of every instance sharing its topic:
// an in-memory index replayed from the compacted topic and kept current by
// tailing it, so a token minted on one instance works on all of them.
type TokenStore struct {
	table *kafka.Table
	log   *slog.Logger

	mu   sync.RWMutex
	byID map[string]tokenEntry
}

type tokenEntry struct {
	tok  Token
	hash [sha256.Size]byte
}

// OpenTokenStore replays the tokens topic and tails it until Close. The topic
// must exist (kafka.Client.EnsureTopics creates it with StandardTopics).
func OpenTokenStore(ctx context.Context, client *kafka.Client, opts TokenStoreOptions) (*TokenStore, error) {
	if client == nil {
		return nil, errors.New("adminauth: open token store: nil kafka client")
	}
	topic := opts.Topic
	if topic == "" {
		topic = client.Config().Topics.Tokens
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &TokenStore{log: log.With("component", "tokens"), byID: map[string]tokenEntry{}}
	table, err := client.OpenTable(ctx, kafka.TableOptions{
		Topic: topic, Name: "tokens", Apply: s.apply, Reset: s.reset,
		Logger: log, Registerer: opts.Registerer,
		PollWait: opts.PollWait, MaxStaleness: opts.MaxStaleness,
	})
	if err != nil {
		return nil, fmt.Errorf("adminauth: open token store: %w", err)
	}
	s.table = table
	return s, nil
}

// Close stops the tail.
func (s *TokenStore) Close() error { return s.table.Close() }

// Healthy reports whether the store is in step with its topic; otherwise a
// revocation made elsewhere may not be seen yet.
func (s *TokenStore) Healthy() error { return s.table.Healthy() }

// Create mints a token for workspace and returns it with its record. The
// token exists only in the return value; the store keeps its SHA-256. When
// Create returns, Verify on this store accepts the token.
func (s *TokenStore) Create(ctx context.Context, workspace string) (Token, string, error) {
	if !ValidWorkspace(workspace) {
		return Token{}, "", fmt.Errorf("%w: %q must match %s", ErrInvalidWorkspace, truncate(workspace), workspacePattern)
	}
	var id, token string
	for range 3 {
		var err error
		if id, token, err = newWorkspaceToken(); err != nil {
			return Token{}, "", err
		}
		s.mu.RLock()
		_, taken := s.byID[id]
		s.mu.RUnlock()
		if !taken {
			break
		}
	}
	sum := sha256.Sum256([]byte(token))
	t := Token{ID: id, Workspace: workspace, SHA256: hex.EncodeToString(sum[:]), CreatedAt: time.Now().UTC().Truncate(time.Millisecond)}
	if err := s.put(ctx, t); err != nil {
		return Token{}, "", err
	}
	s.log.InfoContext(ctx, "workspace token created", "token_id", id, "workspace", workspace)
	return t, token, nil
}

// Revoke invalidates a token of workspace; other instances refuse it within
// their poll wait. A revocation is a record with revoked_at, not a
// tombstone, so compaction keeps it.
func (s *TokenStore) Revoke(ctx context.Context, workspace, id string) error {
	s.mu.RLock()
	e, ok := s.byID[id]
	s.mu.RUnlock()
	if !ok || e.tok.Workspace != workspace {
		return fmt.Errorf("%w: %q in workspace %q", ErrNotFound, truncate(id), truncate(workspace))
	}
	if e.tok.Revoked() {
		return nil
	}
	t := e.tok
	now := time.Now().UTC().Truncate(time.Millisecond)
	t.RevokedAt = &now
	if err := s.put(ctx, t); err != nil {
		return err
	}
	s.log.InfoContext(ctx, "workspace token revoked", "token_id", id, "workspace", workspace)
	return nil
}

func (s *TokenStore) put(ctx context.Context, t Token) error {
	val, err := json.Marshal(t)
	if err != nil {
		return fmt.Errorf("adminauth: encode token %s: %w", t.ID, err)
	}
	if err := s.table.Put(ctx, []byte(t.ID), val); err != nil {
		return fmt.Errorf("adminauth: store token %s: %w", t.ID, err)
	}
	return nil
}

// Verify returns the token record a presented token belongs to, or false for
// a malformed, unknown, wrong or revoked token.
func (s *TokenStore) Verify(token string) (Token, bool) {
	id, ok := parseWorkspaceToken(token)
	if !ok {
		return Token{}, false
	}
	sum := sha256.Sum256([]byte(token))
	s.mu.RLock()
	e, found := s.byID[id]
	s.mu.RUnlock()
	if !found || subtle.ConstantTimeCompare(sum[:], e.hash[:]) != 1 || e.tok.Revoked() {
		return Token{}, false
	}
	return e.tok, true
}

// apply folds one record of the topic into the index. A bad record is
// logged and skipped: one record from a foreign producer must not stop the
// tail and with it every later revocation.
func (s *TokenStore) apply(r kafka.TableRecord) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r.Value == nil {
		delete(s.byID, string(r.Key))
		return
	}
	var t Token
	if err := json.Unmarshal(r.Value, &t); err != nil {
		s.log.Warn("skipping undecodable record on tokens topic", "offset", r.Offset, "error", err)
		return
	}
	if err := t.validate(r.Key); err != nil {
		s.log.Warn("skipping invalid record on tokens topic", "offset", r.Offset, "error", err)
		return
	}
	var e tokenEntry
	e.tok = t
	_, _ = hex.Decode(e.hash[:], []byte(t.SHA256))
	if prev, ok := s.byID[t.ID]; ok && prev.tok.Revoked() && !t.Revoked() {
		// Revocation is one-way: a stale write racing a revoke must not
		// bring a token back.
		e.tok.RevokedAt = prev.tok.RevokedAt
	}
	s.byID[t.ID] = e
}

func (s *TokenStore) reset() {
	s.mu.Lock()
	s.byID = map[string]tokenEntry{}
	s.mu.Unlock()
}

func truncate(s string) string {
	const limit = 64
	if len(s) <= limit {
		return s
	}
	return s[:limit] + "..."
}
