package files

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/cohortsync/cohortsync/connectors/partnerapi"
	"github.com/cohortsync/cohortsync/schemas"
)

// Errors of NDJSON lines, wrapped in a LineError.
var (
	errNotObject   = errors.New("not a JSON object")
	errUnknownLine = errors.New("neither a landing envelope (schema_version) nor a partner API body " +
		"(cohort_id with cohort_changes, or with name and created_at)")
	errEventTime = errors.New("event_time must be an RFC 3339 string")
)

func (r *Reader) nextNDJSON(ctx context.Context) (Item, error) {
	for {
		if err := ctx.Err(); err != nil {
			return Item{}, err
		}
		line, n, err := r.lines.next()
		if err != nil {
			if errors.Is(err, errLineTooLong) {
				return Item{}, r.lineError(n, err)
			}
			return Item{}, err
		}
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		e, err := r.parseNDJSONLine(line, n)
		if err != nil {
			if errors.Is(err, ErrNoWorkspace) {
				return Item{}, fmt.Errorf("files: %s:%d: %w (set the workspace and partner of the run)", r.path, n, err)
			}
			return Item{}, r.lineError(n, err)
		}
		return r.item(e, n)
	}
}

// parseNDJSONLine reads one non-blank line of number n. Errors never quote
// the line: a body line holds credentials.
func (r *Reader) parseNDJSONLine(line []byte, n int64) (schemas.Envelope, error) {
	// schemas.Encode writes schema_version first: lines dumped from the
	// topic skip the probe below, which would scan the whole line once more.
	if bytes.HasPrefix(bytes.TrimLeft(line, " \t"), []byte(`{"schema_version":`)) {
		return decodeEnvelope(line)
	}
	// One level deep, as the partner API reads bodies, to tell the kinds
	// of line apart by their fields (case-sensitively, unlike a struct).
	var f map[string]json.RawMessage
	if err := json.Unmarshal(line, &f); err != nil || f == nil {
		return schemas.Envelope{}, errNotObject
	}
	if _, ok := f["schema_version"]; ok {
		return decodeEnvelope(line)
	}

	var payload schemas.Payload
	var tag string
	_, changes := f["cohort_changes"]
	_, name := f["name"]
	_, created := f["created_at"]
	switch {
	case changes:
		p, err := partnerapi.ParseChangesBody(line)
		if err != nil {
			return schemas.Envelope{}, fmt.Errorf("/cohorts/users body: %w", err)
		}
		payload, tag = p, tagNDJSONBody
	case name || created:
		p, err := partnerapi.ParseCohortBody(line)
		if err != nil {
			return schemas.Envelope{}, fmt.Errorf("/cohorts body: %w", err)
		}
		payload, tag = p, tagNDJSONBody
	default:
		return schemas.Envelope{}, errUnknownLine
	}
	if r.opts.Workspace == "" || r.opts.Partner == "" {
		return schemas.Envelope{}, ErrNoWorkspace
	}
	at := r.modTime
	if raw, ok := f["event_time"]; ok && string(bytes.TrimSpace(raw)) != "null" {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return schemas.Envelope{}, errEventTime
		}
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return schemas.Envelope{}, errEventTime
		}
		at = t.UTC()
	}
	e := schemas.Envelope{
		SchemaVersion: schemas.CurrentVersion,
		Workspace:     r.opts.Workspace,
		Partner:       r.opts.Partner,
		// A body says when nothing was received; the event time is the
		// one instant the file itself fixes.
		ReceivedAt: at,
		EventTime:  at,
		Payload:    payload,
	}
	r.ids.start(tag)
	r.ids.str(e.Workspace)
	r.ids.str(e.Partner)
	r.ids.str(e.CohortID())
	r.ids.int(n)
	r.ids.time(at)
	r.ids.payload(payload)
	e.RecordID = r.ids.id()
	return e, nil
}

func decodeEnvelope(line []byte) (schemas.Envelope, error) {
	e, err := schemas.Decode(line)
	if err != nil {
		return schemas.Envelope{}, fmt.Errorf("landing envelope: %w", err)
	}
	return e, nil
}
