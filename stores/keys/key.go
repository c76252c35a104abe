// Package keys manages data import keys: the client secrets partners send as
// `client_secret`. Keys are generated here, stored only as SHA-256 hashes in a
// compacted Kafka topic that every instance replays and tails, and managed
// through an admin HTTP API (see docs/ARCHITECTURE.md, "Data import keys").
package keys

import (
	"errors"
	"fmt"
	"github.com/cohortsync/cohortsync/internal/httpjson"
	"regexp"
	"time"
	"unicode"
	"unicode/utf8"
)

var (
	// ErrNotFound is returned for a key that does not exist, or that belongs to
	// another workspace: the two are deliberately indistinguishable so that
	// key ids of other workspaces cannot be probed.
	ErrNotFound = errors.New("key not found")
	// ErrInvalid wraps every validation failure of caller input.
	ErrInvalid = errors.New("invalid argument")
	// ErrClosed is returned by operations on a closed Store.
	ErrClosed = errors.New("keys: store closed")
)

// MaxLabelLength bounds a key's label in bytes; labels are for humans and a
// bound keeps records small.
const MaxLabelLength = 200

var namePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// Key is one data import key as stored. It never carries the secret.
type Key struct {
	ID           string     `json:"key_id"`
	Workspace    string     `json:"workspace"`
	Partner      string     `json:"partner"`
	Label        string     `json:"label"`
	SecretSHA256 string     `json:"secret_sha256"`
	CreatedAt    time.Time  `json:"created_at"`
	RevokedAt    *time.Time `json:"revoked_at,omitempty"`
}

// Revoked reports whether the key has been invalidated.
func (k Key) Revoked() bool { return k.RevokedAt != nil }

// Status is "revoked" or "active", as the admin API shows it.
func (k Key) Status() string {
	if k.Revoked() {
		return "revoked"
	}
	return "active"
}

// clone copies k so that callers cannot reach the index through RevokedAt.
func (k Key) clone() Key {
	if k.RevokedAt != nil {
		t := *k.RevokedAt
		k.RevokedAt = &t
	}
	return k
}

// ValidWorkspace reports whether name is an acceptable workspace name. The
// pattern keeps names safe in URLs, Kafka record keys and file paths.
func ValidWorkspace(name string) bool { return namePattern.MatchString(name) }

// ValidPartner reports whether name is syntactically a partner name; whether
// the partner is enabled is the caller's configuration.
func ValidPartner(name string) bool { return namePattern.MatchString(name) }

func validateCreate(workspace, partner, label string) error {
	var errs []error
	if !ValidWorkspace(workspace) {
		errs = append(errs, fmt.Errorf("%w: workspace %q must match %s", ErrInvalid, httpjson.Truncate(workspace), namePattern))
	}
	if partner == "" {
		errs = append(errs, fmt.Errorf("%w: partner is required", ErrInvalid))
	} else if !ValidPartner(partner) {
		errs = append(errs, fmt.Errorf("%w: partner %q must match %s", ErrInvalid, httpjson.Truncate(partner), namePattern))
	}
	if err := validateLabel(label); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func validateLabel(label string) error {
	if len(label) > MaxLabelLength {
		return fmt.Errorf("%w: label is %d bytes, at most %d allowed", ErrInvalid, len(label), MaxLabelLength)
	}
	if !utf8.ValidString(label) {
		return fmt.Errorf("%w: label must be valid UTF-8", ErrInvalid)
	}
	for _, r := range label {
		if unicode.IsControl(r) {
			// Control characters would let a label forge lines in terminal output.
			return fmt.Errorf("%w: label must not contain control characters", ErrInvalid)
		}
	}
	return nil
}

// recordVersion is the schema version of a record on the keys topic, so that
// the format can evolve while old records remain readable.
const recordVersion = 1

// record is the value of one message on the keys topic; its message key is the key id.
type record struct {
	Version int `json:"v"`
	Key
}

func (r record) validate(msgKey []byte) error {
	switch {
	case r.Version != recordVersion:
		return fmt.Errorf("unsupported record version %d", r.Version)
	case !ValidKeyID(r.ID):
		return errors.New("invalid key_id")
	case string(msgKey) != r.ID:
		// Compaction works on the message key: a mismatch would let the wrong
		// record survive, so such a record is not trusted at all.
		return errors.New("message key does not match key_id")
	case !ValidWorkspace(r.Workspace):
		return errors.New("invalid workspace")
	case !ValidPartner(r.Partner):
		return errors.New("invalid partner")
	case len(r.SecretSHA256) != 64:
		return errors.New("invalid secret_sha256")
	case r.CreatedAt.IsZero():
		return errors.New("missing created_at")
	}
	return nil
}
