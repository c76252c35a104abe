package schemas

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"
)

// Encode returns the wire form of e in CurrentVersion. It refuses an envelope
// that Validate rejects, so everything it returns decodes again.
func Encode(e Envelope) ([]byte, error) {
	if err := e.Validate(); err != nil {
		return nil, fmt.Errorf("schemas: encode: %w", err)
	}
	if p, ok := deref(e.Payload).(CohortChangesPayload); ok {
		if b, ok := encodeV1Canonical(e, p); ok {
			return b, nil
		}
	}
	return encodeV1(e)
}

// encodeV1 is Encode through encoding/json, for every record.
func encodeV1(e Envelope) ([]byte, error) {
	w := wireV1[any]{
		SchemaVersion: CurrentVersion,
		RecordID:      e.RecordID,
		Workspace:     e.Workspace,
		Partner:       e.Partner,
		Kind:          e.Kind(),
		ReceivedAt:    formatTime(e.ReceivedAt),
		EventTime:     formatTime(e.EventTime),
		KeyID:         e.KeyID,
	}
	switch p := deref(e.Payload).(type) {
	case CohortPayload:
		w.Payload = cohortToWireV1(p)
	case CohortChangesPayload:
		w.Payload = changesToWireV1(p)
	default:
		// Unreachable while Payload is sealed; kept so a new payload type
		// that is not wired here fails loudly instead of encoding nothing.
		return nil, fmt.Errorf("schemas: encode: %w: payload type %T", ErrMalformed, e.Payload)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	// HTML escaping would turn one byte of an id into six, and records are
	// never embedded in HTML; without it a record stays close to the size of
	// the request it came from, which the Kafka message limit depends on.
	enc.SetEscapeHTML(false)
	if err := enc.Encode(w); err != nil {
		return nil, fmt.Errorf("schemas: encode: %w", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte{'\n'}), nil
}

// Decode reads one record of any supported schema version. Errors wrap
// ErrUnknownVersion or ErrMalformed.
func Decode(data []byte) (Envelope, error) {
	v, err := probeVersion(data)
	if err != nil {
		return Envelope{}, fmt.Errorf("schemas: decode: %w: %w", ErrMalformed, err)
	}
	switch v {
	case 1:
		e, err := decodeV1(data)
		if err != nil {
			return Envelope{}, fmt.Errorf("schemas: decode v1: %w", err)
		}
		return e, nil
	default:
		return Envelope{}, fmt.Errorf("schemas: decode: %w: %d", ErrUnknownVersion, v)
	}
}

// MarshalJSON makes an Envelope embedded in other JSON (a dead-letter
// record, a debug endpoint) use the wire format rather than Go field names.
func (e Envelope) MarshalJSON() ([]byte, error) { return Encode(e) }

// UnmarshalJSON is the inverse of MarshalJSON.
func (e *Envelope) UnmarshalJSON(data []byte) error {
	d, err := Decode(data)
	if err != nil {
		return err
	}
	*e = d
	return nil
}

// probeVersion finds schema_version without decoding the rest, so that a
// record of a version whose shape this build does not know is reported as an
// unknown version rather than as a type error somewhere inside it. Encode
// writes schema_version first, so for our own records the probe stops after
// one field.
func probeVersion(data []byte) (int, error) {
	// Every record this build lands starts with exactly these bytes; reading
	// them is the whole probe for the stream, and the full decode that
	// follows still checks the rest.
	if bytes.HasPrefix(data, v1Prefix) {
		return 1, nil
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return 0, fmt.Errorf("not JSON: %w", err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return 0, errors.New("not a JSON object")
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return 0, fmt.Errorf("not JSON: %w", err)
		}
		name, _ := tok.(string)
		if name != "schema_version" {
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return 0, fmt.Errorf("not JSON: %w", err)
			}
			continue
		}
		var n json.Number
		if err := dec.Decode(&n); err != nil {
			return 0, fmt.Errorf("schema_version is not a number: %w", err)
		}
		v, err := n.Int64()
		if err != nil || v < 1 || v > math.MaxInt32 {
			return 0, fmt.Errorf("schema_version %q is not a positive integer", n.String())
		}
		return int(v), nil
	}
	return 0, errors.New("schema_version is missing")
}

// v1Prefix is how Encode starts a version 1 record.
var v1Prefix = []byte(`{"schema_version":1,`)

// wireV1 is the version 1 envelope as it is on the topic. P is the payload's
// wire type when encoding and json.RawMessage when decoding, where the kind
// must be known before the payload can be read. The field order is the byte
// order of the golden files: do not reorder.
type wireV1[P any] struct {
	SchemaVersion int    `json:"schema_version"`
	RecordID      string `json:"record_id"`
	Workspace     string `json:"workspace"`
	Partner       string `json:"partner"`
	Kind          Kind   `json:"kind"`
	ReceivedAt    string `json:"received_at"`
	EventTime     string `json:"event_time"`
	KeyID         string `json:"key_id,omitempty"`
	Payload       P      `json:"payload"`
}

type cohortWireV1 struct {
	CohortID  string `json:"cohort_id"`
	Name      string `json:"name"`
	CreatedAt string `json:"created_at"`
}

type changesWireV1 struct {
	CohortID      string         `json:"cohort_id"`
	CohortChanges []changeWireV1 `json:"cohort_changes"`
}

type changeWireV1 struct {
	UserIDs      []string      `json:"user_ids,omitempty"`
	DeviceIDs    []string      `json:"device_ids,omitempty"`
	Aliases      []aliasWireV1 `json:"aliases,omitempty"`
	ShouldRemove bool          `json:"should_remove"`
}

type aliasWireV1 struct {
	AliasName  string `json:"alias_name"`
	AliasLabel string `json:"alias_label"`
}

func cohortToWireV1(p CohortPayload) cohortWireV1 {
	return cohortWireV1{CohortID: p.CohortID, Name: p.Name, CreatedAt: formatTime(p.CreatedAt)}
}

func changesToWireV1(p CohortChangesPayload) changesWireV1 {
	// Never nil: an empty list is written as [], which decoding tells apart
	// from a missing field.
	changes := make([]changeWireV1, len(p.Changes))
	for i, c := range p.Changes {
		changes[i] = changeWireV1{UserIDs: c.UserIDs, DeviceIDs: c.DeviceIDs, ShouldRemove: c.ShouldRemove}
		if len(c.Aliases) > 0 {
			aliases := make([]aliasWireV1, len(c.Aliases))
			for j, a := range c.Aliases {
				aliases[j] = aliasWireV1{AliasName: a.Name, AliasLabel: a.Label}
			}
			changes[i].Aliases = aliases
		}
	}
	return changesWireV1{CohortID: p.CohortID, CohortChanges: changes}
}

// payloadWireV1 holds the fields of every kind's payload, so that a record
// is read in one pass instead of envelope first and payload again.
type payloadWireV1 struct {
	CohortID      string         `json:"cohort_id"`
	Name          string         `json:"name"`
	CreatedAt     string         `json:"created_at"`
	CohortChanges []changeWireV1 `json:"cohort_changes"`
}

// decodeV1 reads a record in one pass where it can and falls back to the
// two-pass reading (decodeV1Raw) for anything that pass does not accept, so
// that a record the fast path cannot read gets exactly the errors it always
// got. The fast path accepts only what the two-pass reading accepts with the
// same result: a payload object whose fields of the record's kind are the
// same either way, and fields of the other kind ignored.
func decodeV1(data []byte) (Envelope, error) {
	if e, ok := decodeV1Canonical(data); ok && e.Validate() == nil {
		return e, nil
	}
	// encoding/json merges a repeated object key into one struct but keeps
	// only the last of a repeated key of raw bytes, and it matches keys
	// without regard to case; a record that may name its payload twice is
	// therefore read the two-pass way only.
	if bytes.Contains(data, []byte(`\u`)) || countFold(data, `"payload"`) != 1 {
		return decodeV1Raw(data)
	}
	var w wireV1[*payloadWireV1]
	if err := json.Unmarshal(data, &w); err != nil || w.Payload == nil {
		return decodeV1Raw(data)
	}
	e := Envelope{
		SchemaVersion: w.SchemaVersion,
		RecordID:      w.RecordID,
		Workspace:     w.Workspace,
		Partner:       w.Partner,
		KeyID:         w.KeyID,
	}
	var err error
	if e.ReceivedAt, err = parseTime(w.ReceivedAt); err != nil {
		return decodeV1Raw(data)
	}
	if e.EventTime, err = parseTime(w.EventTime); err != nil {
		return decodeV1Raw(data)
	}
	p := w.Payload
	switch w.Kind {
	case KindCohort:
		created, err := parseTime(p.CreatedAt)
		if err != nil {
			return decodeV1Raw(data)
		}
		e.Payload = CohortPayload{CohortID: p.CohortID, Name: p.Name, CreatedAt: created}
	case KindCohortChanges:
		if p.CohortChanges == nil {
			return decodeV1Raw(data)
		}
		e.Payload = CohortChangesPayload{CohortID: p.CohortID, Changes: changesFromWire(p.CohortChanges)}
	default:
		return decodeV1Raw(data)
	}
	if err := e.Validate(); err != nil {
		return Envelope{}, err
	}
	return e, nil
}

// countFold counts the places where data holds word, ASCII case folded.
// word starts with '"', so only quotes are candidates.
func countFold(data []byte, word string) int {
	n := 0
	for i := 0; ; {
		j := bytes.IndexByte(data[i:], '"')
		if j < 0 {
			return n
		}
		i += j
		if len(data)-i >= len(word) && bytes.EqualFold(data[i:i+len(word)], []byte(word)) {
			n++
		}
		i++
	}
}

// decodeV1Raw reads the envelope first and then its payload by kind.
func decodeV1Raw(data []byte) (Envelope, error) {
	// Unknown fields are tolerated on purpose, here and in payloads: adding
	// an optional field is a compatible change that needs no new version,
	// and older readers must not dead-letter such records.
	var w wireV1[json.RawMessage]
	if err := json.Unmarshal(data, &w); err != nil {
		return Envelope{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	e := Envelope{
		SchemaVersion: w.SchemaVersion,
		RecordID:      w.RecordID,
		Workspace:     w.Workspace,
		Partner:       w.Partner,
		KeyID:         w.KeyID,
	}
	var errs []error
	var err error
	if e.ReceivedAt, err = parseTime(w.ReceivedAt); err != nil {
		errs = append(errs, fmt.Errorf("received_at: %w", err))
	}
	if e.EventTime, err = parseTime(w.EventTime); err != nil {
		errs = append(errs, fmt.Errorf("event_time: %w", err))
	}
	if len(w.Payload) == 0 {
		errs = append(errs, errors.New("payload is missing"))
	} else {
		switch w.Kind {
		case KindCohort:
			e.Payload, err = cohortFromWireV1(w.Payload)
		case KindCohortChanges:
			e.Payload, err = changesFromWireV1(w.Payload)
		default:
			err = fmt.Errorf("kind %q is unknown", w.Kind)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return Envelope{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if err := e.Validate(); err != nil {
		return Envelope{}, err
	}
	return e, nil
}

func cohortFromWireV1(raw json.RawMessage) (CohortPayload, error) {
	var w cohortWireV1
	if err := json.Unmarshal(raw, &w); err != nil {
		return CohortPayload{}, fmt.Errorf("payload: %w", err)
	}
	created, err := parseTime(w.CreatedAt)
	if err != nil {
		return CohortPayload{}, fmt.Errorf("payload.created_at: %w", err)
	}
	return CohortPayload{CohortID: w.CohortID, Name: w.Name, CreatedAt: created}, nil
}

func changesFromWireV1(raw json.RawMessage) (CohortChangesPayload, error) {
	var w changesWireV1
	if err := json.Unmarshal(raw, &w); err != nil {
		return CohortChangesPayload{}, fmt.Errorf("payload: %w", err)
	}
	if w.CohortChanges == nil {
		return CohortChangesPayload{}, errors.New("payload.cohort_changes is missing")
	}
	return CohortChangesPayload{CohortID: w.CohortID, Changes: changesFromWire(w.CohortChanges)}, nil
}

func changesFromWire(wire []changeWireV1) []Change {
	changes := make([]Change, len(wire))
	for i, c := range wire {
		changes[i] = Change{UserIDs: c.UserIDs, DeviceIDs: c.DeviceIDs, ShouldRemove: c.ShouldRemove}
		if len(c.Aliases) > 0 {
			aliases := make([]Alias, len(c.Aliases))
			for j, a := range c.Aliases {
				aliases[j] = Alias{Name: a.AliasName, Label: a.AliasLabel}
			}
			changes[i].Aliases = aliases
		}
	}
	return changes
}

func formatTime(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

func parseTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, errors.New("is missing")
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("not an RFC 3339 time: %w", err)
	}
	return t.UTC(), nil
}
