// Package adminauth decides who may call the admin HTTP API: the global
// admin token reaches every workspace; workspace tokens, minted by the global
// token and kept hashed in a compacted topic, reach one workspace. Handlers
// depend only on the Authorizer interface.
package adminauth

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// TokenPrefix marks admin tokens so that they are recognisable in config files
// and secret scanners, and cannot be confused with data import keys (csk_).
const TokenPrefix = "cst_"

// MinTokenLength is the shortest admin token accepted. Operators may bring
// their own token through COHORTSYNC_ADMIN_TOKEN; a short one would be
// guessable, so it is refused at start-up rather than silently accepted.
const MinTokenLength = 16

// Authorizer decides whether a request may act on workspace.
type Authorizer interface {
	// Authorize reports whether Check allows the request.
	Authorize(r *http.Request, workspace string) bool
	// Check tells apart a caller without a valid token (401) from a valid
	// token of another workspace (404, so that it learns nothing about
	// workspace B, not even that it exists).
	Check(r *http.Request, workspace string) Decision
}

// AdminToken authorizes requests that carry the global admin token, for every
// workspace. Only the SHA-256 of the token is kept in memory so that a heap
// dump or a debug print of the struct does not reveal it.
type AdminToken struct {
	sum [sha256.Size]byte
}

// NewAdminToken returns an Authorizer for token.
func NewAdminToken(token string) (*AdminToken, error) {
	if token == "" {
		return nil, errors.New("adminauth: admin token is empty")
	}
	if len(token) < MinTokenLength {
		return nil, fmt.Errorf("adminauth: admin token is %d characters, must be at least %d", len(token), MinTokenLength)
	}
	if strings.ContainsAny(token, " \t\r\n") {
		// Such a token could never arrive intact in an Authorization header.
		return nil, errors.New("adminauth: admin token must not contain whitespace")
	}
	return &AdminToken{sum: sha256.Sum256([]byte(token))}, nil
}

// NewAdminTokenFromHash returns an Authorizer from the hex SHA-256 of a token,
// as Hash returns it. It lets a generated token be persisted without ever
// storing the token itself: after the first start it exists only with the
// operator who was shown it.
func NewAdminTokenFromHash(hexSHA256 string) (*AdminToken, error) {
	raw, err := hex.DecodeString(hexSHA256)
	if err != nil || len(raw) != sha256.Size {
		return nil, errors.New("adminauth: admin token hash must be 64 hex characters")
	}
	a := &AdminToken{}
	copy(a.sum[:], raw)
	return a, nil
}

// Hash returns the hex SHA-256 of the token, for NewAdminTokenFromHash.
func (a *AdminToken) Hash() string { return hex.EncodeToString(a.sum[:]) }

// Authorize reports whether r carries the admin token as a bearer token.
func (a *AdminToken) Authorize(r *http.Request, workspace string) bool {
	return a.Check(r, workspace).Allowed()
}

// Check answers AllowedGlobal for the admin token and Unauthenticated for
// anything else.
func (a *AdminToken) Check(r *http.Request, _ string) Decision {
	if r == nil {
		return Unauthenticated
	}
	tok, ok := BearerToken(r)
	if !ok || !a.matches(tok) {
		return Unauthenticated
	}
	return AllowedGlobal
}

// matches compares hashes, which makes the comparison constant-time
// regardless of the presented token's length.
func (a *AdminToken) matches(tok string) bool {
	if a == nil {
		return false
	}
	got := sha256.Sum256([]byte(tok))
	return subtle.ConstantTimeCompare(got[:], a.sum[:]) == 1
}

// BearerToken extracts the token of an `Authorization: Bearer <token>` header.
// The scheme is matched case-insensitively as RFC 7235 requires.
func BearerToken(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	const scheme = "bearer "
	if len(h) <= len(scheme) || !strings.EqualFold(h[:len(scheme)], scheme) {
		return "", false
	}
	tok := strings.TrimSpace(h[len(scheme):])
	if tok == "" {
		return "", false
	}
	return tok, true
}

// GenerateToken returns a new random admin token: the prefix followed by 32
// bytes (256 bits) from crypto/rand, base64url-encoded without padding.
func GenerateToken() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("adminauth: generate token: %w", err)
	}
	return TokenPrefix + base64.RawURLEncoding.EncodeToString(b[:]), nil
}
