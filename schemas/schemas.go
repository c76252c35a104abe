// Package schemas is the data contract of the landing log: the envelope every
// record on the cohortsync.exports topic carries, and its JSON codec.
//
// The wire format is versioned by schema_version. Decode dispatches on it so
// that records landed by an older release stay readable after the format
// moves on; Encode only ever writes CurrentVersion. Golden files under
// testdata/v<N>/ pin each version's bytes, so a format change shows up as a
// failing test rather than as a surprise in a consumer.
package schemas

import (
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// CurrentVersion is the schema version Encode writes.
const CurrentVersion = 1

// Errors returned by Decode (and Encode), always wrapped with detail. A
// dead-letter stage tells them apart with errors.Is to record why a record
// could not be read.
var (
	// ErrUnknownVersion means the record's schema_version is not one this
	// build can read, typically a record written by a newer release.
	ErrUnknownVersion = errors.New("schemas: unknown schema version")
	// ErrMalformed means the bytes are not a valid envelope of their version:
	// not JSON, a missing or mistyped field, an unknown kind, a bad payload.
	ErrMalformed = errors.New("schemas: malformed envelope")
)

// Kind says which request produced a record, and so what its payload is.
type Kind string

const (
	// KindCohort is a cohort created or renamed (POST /partners/{p}/cohorts).
	KindCohort Kind = "cohort"
	// KindCohortChanges is a batch of membership changes (POST /partners/{p}/cohorts/users).
	KindCohortChanges Kind = "cohort_changes"
)

// Envelope is one landed record. Its kind is not a field but follows from the
// type held in Payload, so the two cannot disagree.
type Envelope struct {
	SchemaVersion int
	// RecordID is unique per landed record (a UUIDv7 for pushes). A partner
	// that re-sends the same changes produces a new record with a new id;
	// a redelivery of the same record keeps its id.
	RecordID  string
	Workspace string
	Partner   string
	// ReceivedAt is when cohortsync accepted the record; EventTime is when
	// the change happened, as far as the source tells. For pushes the two
	// are the same instant. Both are encoded in UTC.
	ReceivedAt time.Time
	EventTime  time.Time
	// KeyID names the data import key that authenticated a push. It is empty
	// for sources that are not authenticated by such a key (pulls, backfills).
	// It is never the secret.
	KeyID string
	// Payload is CohortPayload or CohortChangesPayload. Decode always stores
	// values, never pointers, so a type switch on the value types is complete.
	Payload Payload
}

// Payload is the kind-specific body of an envelope. It is sealed: only the
// payload types of this package implement it.
type Payload interface {
	kind() Kind
	cohortID() string
	validate() error
}

// CohortPayload describes a cohort as the partner named it.
type CohortPayload struct {
	CohortID  string
	Name      string
	CreatedAt time.Time
}

// CohortChangesPayload is the membership changes of one request, in the order
// the partner sent them.
type CohortChangesPayload struct {
	CohortID string
	Changes  []Change
}

// Change adds (or, with ShouldRemove, removes) the listed users to the cohort.
type Change struct {
	UserIDs      []string
	DeviceIDs    []string
	Aliases      []Alias
	ShouldRemove bool
}

// Alias identifies a user by an alias name within an alias label.
type Alias struct {
	Name  string
	Label string
}

func (CohortPayload) kind() Kind                { return KindCohort }
func (p CohortPayload) cohortID() string        { return p.CohortID }
func (CohortChangesPayload) kind() Kind         { return KindCohortChanges }
func (p CohortChangesPayload) cohortID() string { return p.CohortID }

func (p CohortPayload) validate() error {
	var errs []error
	if p.CohortID == "" {
		errs = append(errs, errors.New("payload.cohort_id is empty"))
	}
	if p.Name == "" {
		errs = append(errs, errors.New("payload.name is empty"))
	}
	if err := checkTime(p.CreatedAt); err != nil {
		errs = append(errs, fmt.Errorf("payload.created_at: %w", err))
	}
	return errors.Join(errs...)
}

func (p CohortChangesPayload) validate() error {
	var errs []error
	if p.CohortID == "" {
		errs = append(errs, errors.New("payload.cohort_id is empty"))
	}
	for i, c := range p.Changes {
		for j, id := range c.UserIDs {
			if id == "" {
				errs = append(errs, fmt.Errorf("payload.cohort_changes[%d].user_ids[%d] is empty", i, j))
			}
		}
		for j, id := range c.DeviceIDs {
			if id == "" {
				errs = append(errs, fmt.Errorf("payload.cohort_changes[%d].device_ids[%d] is empty", i, j))
			}
		}
		for j, a := range c.Aliases {
			if a.Name == "" || a.Label == "" {
				errs = append(errs, fmt.Errorf("payload.cohort_changes[%d].aliases[%d] needs alias_name and alias_label", i, j))
			}
		}
	}
	return errors.Join(errs...)
}

// Kind is the kind of the payload, or "" when there is none.
func (e Envelope) Kind() Kind {
	p := deref(e.Payload)
	if p == nil {
		return ""
	}
	return p.kind()
}

// CohortID is the cohort the payload is about, or "" when there is none.
func (e Envelope) CohortID() string {
	p := deref(e.Payload)
	if p == nil {
		return ""
	}
	return p.cohortID()
}

// deref turns a pointer payload into its value and a nil pointer into nil.
// Pointers satisfy Payload too (their method sets include the value
// methods), and calling a value method through a nil one would panic.
func deref(p Payload) Payload {
	switch v := p.(type) {
	case *CohortPayload:
		if v == nil {
			return nil
		}
		return *v
	case *CohortChangesPayload:
		if v == nil {
			return nil
		}
		return *v
	}
	return p
}

// PartitionKey is the Kafka record key: workspace/partner/cohort_id. Records
// with the same key land on one partition, which keeps one cohort's changes
// in the order they were accepted.
func (e Envelope) PartitionKey() []byte {
	cohort := e.CohortID()
	b := make([]byte, 0, len(e.Workspace)+len(e.Partner)+len(cohort)+2)
	b = append(b, e.Workspace...)
	b = append(b, '/')
	b = append(b, e.Partner...)
	b = append(b, '/')
	b = append(b, cohort...)
	return b
}

// Validate reports every way e falls short of a well-formed envelope of its
// version, wrapped in ErrMalformed (or ErrUnknownVersion). Encode calls it, so
// a producer cannot land a record that consumers would dead-letter.
func (e Envelope) Validate() error {
	if e.SchemaVersion != CurrentVersion {
		return fmt.Errorf("%w: %d (this build reads %d)", ErrUnknownVersion, e.SchemaVersion, CurrentVersion)
	}
	var errs []error
	if e.RecordID == "" {
		errs = append(errs, errors.New("record_id is empty"))
	}
	if e.Workspace == "" {
		errs = append(errs, errors.New("workspace is empty"))
	}
	if e.Partner == "" {
		errs = append(errs, errors.New("partner is empty"))
	}
	if err := checkTime(e.ReceivedAt); err != nil {
		errs = append(errs, fmt.Errorf("received_at: %w", err))
	}
	if err := checkTime(e.EventTime); err != nil {
		errs = append(errs, fmt.Errorf("event_time: %w", err))
	}
	if p := deref(e.Payload); p == nil {
		errs = append(errs, errors.New("payload is missing"))
	} else if err := p.validate(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return nil
}

// checkTime rejects instants that would not survive the round trip through
// RFC 3339, whose four-digit year cannot hold them.
func checkTime(t time.Time) error {
	if t.IsZero() {
		return errors.New("is not set")
	}
	if y := t.UTC().Year(); y < 1 || y > 9999 {
		return fmt.Errorf("year %d is outside 1..9999", y)
	}
	return nil
}

// NewRecordID returns a fresh record id: a UUIDv7, so that ids sort roughly
// by the time they were issued, which keeps them friendly to index structures.
func NewRecordID() (string, error) {
	id, err := uuid.NewV7()
	if err != nil {
		return "", fmt.Errorf("schemas: new record id: %w", err)
	}
	return id.String(), nil
}
