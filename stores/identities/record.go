// Package identities is the identity directory: which external ids, aliases
// and device ids belong to which user of a workspace, and whether the user is
// identified (docs/ARCHITECTURE.md, Import rules).
//
// The directory of record is the compacted topic cohortsync.identities,
// keyed by workspace/user_id, so that compaction keeps exactly the latest
// record of every user. Records arrive through the admin endpoint
// POST /v1/workspaces/{workspace}/identities (AdminAPI) or the command
// `cohortsync identities load` (Loader, Client). Every instance keeps a local
// replica in a bbolt file (Index), built and kept current by tailing the
// topic (Directory); the identity transform reads only the replica.
//
// A user is identified once their record has an external_id. A user first
// recorded with device ids only and later given an external_id is "created
// anonymous, later identified": the device ids stay in the record, but a
// device id matches only users without an external_id, so they no longer
// match that user.
package identities

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"

	"github.com/cohortsync/cohortsync/internal/jsonscan"
	"github.com/cohortsync/cohortsync/stores/keys"
)

// MaxIDBytes bounds every identifier of a record (user_id, external_id, each
// device id, alias name and label). Identifiers are keys of the index; a bound
// keeps bbolt pages and Kafka records small.
const MaxIDBytes = 512

// Record is one user of a workspace as the directory knows them. A record
// replaces the previous record with the same user_id entirely: ids absent
// from the new record no longer match the user.
type Record struct {
	UserID     string   `json:"user_id"`
	ExternalID string   `json:"external_id,omitempty"`
	DeviceIDs  []string `json:"device_ids,omitempty"`
	Aliases    []Alias  `json:"aliases,omitempty"`
}

// Alias names a user by alias_name within alias_label, as partners send it.
type Alias struct {
	Name  string `json:"alias_name"`
	Label string `json:"alias_label"`
}

// Identified reports whether the user has an external id. An identified
// user is not matched by device id any more.
func (r Record) Identified() bool { return r.ExternalID != "" }

// Validate reports every problem of r, naming the fields. Messages never
// quote an identifier: they end up in HTTP answers and logs.
func (r Record) Validate() error {
	var errs []error
	if r.UserID == "" {
		errs = append(errs, errors.New("user_id is required"))
	} else if err := checkID(r.UserID); err != nil {
		errs = append(errs, fmt.Errorf("user_id %w", err))
	}
	if r.ExternalID != "" {
		if err := checkID(r.ExternalID); err != nil {
			errs = append(errs, fmt.Errorf("external_id %w", err))
		}
	}
	for i, d := range r.DeviceIDs {
		if d == "" {
			errs = append(errs, fmt.Errorf("device_ids[%d] is empty", i))
		} else if err := checkID(d); err != nil {
			errs = append(errs, fmt.Errorf("device_ids[%d] %w", i, err))
		}
	}
	for i, a := range r.Aliases {
		if a.Name == "" || a.Label == "" {
			errs = append(errs, fmt.Errorf("aliases[%d] needs alias_name and alias_label", i))
			continue
		}
		if err := checkID(a.Name); err != nil {
			errs = append(errs, fmt.Errorf("aliases[%d].alias_name %w", i, err))
		}
		if err := checkID(a.Label); err != nil {
			errs = append(errs, fmt.Errorf("aliases[%d].alias_label %w", i, err))
		}
	}
	return errors.Join(errs...)
}

// checkID refuses what cannot be an index key component: NUL separates the
// components of a key (index.go), so an id containing it could match another.
func checkID(id string) error {
	switch {
	case len(id) > MaxIDBytes:
		return fmt.Errorf("is %d bytes, at most %d allowed", len(id), MaxIDBytes)
	case !utf8.ValidString(id):
		return errors.New("must be valid UTF-8")
	case strings.IndexByte(id, 0) >= 0:
		return errors.New("must not contain NUL characters")
	}
	return nil
}

// ParseLine decodes one NDJSON line into a record and validates it. Unknown
// fields are refused: in a bulk load a misspelt "externalId" would otherwise
// silently turn an identified user into an anonymous one.
func ParseLine(line []byte) (Record, error) {
	var w struct {
		UserID     *string  `json:"user_id"`
		ExternalID *string  `json:"external_id"`
		DeviceIDs  []string `json:"device_ids"`
		Aliases    []Alias  `json:"aliases"`
	}
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&w); err != nil {
		return Record{}, describeJSONError(err)
	}
	if rest := bytes.TrimSpace(line[dec.InputOffset():]); len(rest) > 0 {
		return Record{}, errors.New("a line must hold exactly one JSON object")
	}
	r := Record{DeviceIDs: w.DeviceIDs, Aliases: w.Aliases}
	if w.UserID != nil {
		r.UserID = *w.UserID
	}
	if w.ExternalID != nil {
		if *w.ExternalID == "" {
			return Record{}, errors.New("external_id must be a non-empty string or absent")
		}
		r.ExternalID = *w.ExternalID
	}
	if err := r.Validate(); err != nil {
		return Record{}, err
	}
	return r, nil
}

func describeJSONError(err error) error {
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syntax):
		return fmt.Errorf("malformed JSON at byte %d", syntax.Offset)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return errors.New("malformed JSON: unexpected end of line")
	case errors.As(err, &typ) && typ.Field == "":
		return errors.New("a line must be a JSON object")
	case errors.As(err, &typ):
		return fmt.Errorf("field %q must be %s", typ.Field, jsonTypeName(typ.Type.String()))
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		// The decoder quotes the field name, which is the caller's own key,
		// never a value.
		return fmt.Errorf("unknown field %s", truncate(strings.TrimPrefix(err.Error(), "json: unknown field ")))
	default:
		return errors.New("a line must be a JSON object")
	}
}

func jsonTypeName(goType string) string {
	switch goType {
	case "string", "*string":
		return "a string"
	case "[]string":
		return "an array of strings"
	case "[]identities.Alias":
		return "an array of {alias_name, alias_label} objects"
	case "identities.Alias":
		return "an {alias_name, alias_label} object"
	default:
		return "of type " + goType
	}
}

// recordVersion is the schema version of a value on the identities topic.
const recordVersion = 1

// wireRecord is the value of one message on the identities topic. The
// workspace travels in the value too, so that a record is self-describing
// and its message key can be checked against it.
type wireRecord struct {
	Version   int    `json:"v"`
	Workspace string `json:"workspace"`
	Record
}

// decodeWire reads a topic value: in the exact form EncodeValue writes it
// with jsonscan, which every record this build loads takes, and anything else
// with encoding/json (FuzzDecodeWireAgrees checks they agree).
func decodeWire(value []byte) (wireRecord, error) {
	if w, ok := decodeWireCanonical(value); ok {
		return w, nil
	}
	var w wireRecord
	err := json.Unmarshal(value, &w)
	return w, err
}

// decodeWireCanonical reads {"v":1,"workspace":…,"user_id":…} and the
// optional external_id, device_ids and aliases, in EncodeValue's order.
func decodeWireCanonical(value []byte) (wireRecord, bool) {
	var w wireRecord
	s, ok := jsonscan.New(value)
	if !ok || !s.Literal(`{"v":1,`) || !s.Field(`"workspace":`, &w.Workspace) || !s.Literal(",") ||
		!s.Field(`"user_id":`, &w.UserID) {
		return w, false
	}
	w.Version = 1
	if s.Literal(`,"external_id":`) && !s.String(&w.ExternalID) {
		return w, false
	}
	if s.Literal(`,"device_ids":`) && !s.Strings(&w.DeviceIDs) {
		return w, false
	}
	if s.Literal(`,"aliases":`) {
		w.Aliases = []Alias{} // `[]` decodes to an empty slice, as encoding/json gives it
		ok := s.Array(func() bool {
			var a Alias
			if !s.Pair(`"alias_name":`, &a.Name, `"alias_label":`, &a.Label) {
				return false
			}
			w.Aliases = append(w.Aliases, a)
			return true
		})
		if !ok {
			return w, false
		}
	}
	if !s.Literal("}") || !s.End() {
		return w, false
	}
	return w, true
}

// MessageKey is the Kafka record key of a user: workspace/user_id.
// Workspace names cannot contain '/', so the first '/' splits the key.
func MessageKey(workspace, userID string) []byte {
	k := make([]byte, 0, len(workspace)+1+len(userID))
	k = append(k, workspace...)
	k = append(k, '/')
	k = append(k, userID...)
	return k
}

// splitMessageKey is the inverse of MessageKey.
func splitMessageKey(k []byte) (workspace, userID string, ok bool) {
	i := bytes.IndexByte(k, '/')
	if i <= 0 || i == len(k)-1 {
		return "", "", false
	}
	return string(k[:i]), string(k[i+1:]), true
}

// EncodeValue returns the topic value of r in workspace. It validates both,
// so nothing lands that the replicas would skip.
func EncodeValue(workspace string, r Record) ([]byte, error) {
	if !keys.ValidWorkspace(workspace) {
		return nil, fmt.Errorf("identities: invalid workspace %q", truncate(workspace))
	}
	if err := r.Validate(); err != nil {
		return nil, fmt.Errorf("identities: %w", err)
	}
	b, err := json.Marshal(wireRecord{Version: recordVersion, Workspace: workspace, Record: r})
	if err != nil {
		return nil, fmt.Errorf("identities: encode record: %w", err)
	}
	return b, nil
}

// decodeValue reads a topic value and checks it against its message key.
// Compaction works on the key, so a value that disagrees with its key would
// survive or vanish for the wrong user: such a record is not trusted.
func decodeValue(key, value []byte) (string, Record, error) {
	w, err := decodeWire(value)
	if err != nil {
		return "", Record{}, fmt.Errorf("not a JSON record: %w", err)
	}
	if w.Version != recordVersion {
		return "", Record{}, fmt.Errorf("unsupported record version %d", w.Version)
	}
	if !keys.ValidWorkspace(w.Workspace) {
		return "", Record{}, errors.New("invalid workspace")
	}
	if err := w.Record.Validate(); err != nil {
		return "", Record{}, err
	}
	if !bytes.Equal(key, MessageKey(w.Workspace, w.UserID)) {
		return "", Record{}, errors.New("message key does not match workspace/user_id")
	}
	return w.Workspace, w.Record, nil
}

// truncate keeps messages about hostile input short.
func truncate(s string) string {
	const limit = 64
	if len(s) <= limit {
		return s
	}
	return s[:limit] + "..."
}
