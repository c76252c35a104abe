package schemas

import (
	"bytes"

	"github.com/cohortsync/cohortsync/internal/jsonscan"
)

// decodeV1Canonical reads a cohort_changes record in exactly the form Encode
// writes it: the fields in Encode's order with their exact names, no
// whitespace, no escapes, valid UTF-8. That is every record this build lands
// and the whole stream's load, and jsonscan reads it without reflection or an
// allocation per id. Anything else (another kind, an escape, a field out of
// place, trailing bytes) reports false and is read by decodeV1, so this only
// ever gives the answer decodeV1 gives, faster (FuzzDecodeCanonicalAgrees).
func decodeV1Canonical(data []byte) (Envelope, bool) {
	if !bytes.HasPrefix(data, v1Prefix) {
		return Envelope{}, false
	}
	s, ok := jsonscan.New(data)
	if !ok || !s.Literal(string(v1Prefix)) {
		return Envelope{}, false
	}
	e := Envelope{SchemaVersion: 1}
	var received, event string
	var p CohortChangesPayload
	ok = s.Field(`"record_id":`, &e.RecordID) && s.Literal(",") &&
		s.Field(`"workspace":`, &e.Workspace) && s.Literal(",") &&
		s.Field(`"partner":`, &e.Partner) && s.Literal(",") &&
		s.Literal(`"kind":"`+string(KindCohortChanges)+`",`) &&
		s.Field(`"received_at":`, &received) && s.Literal(",") &&
		s.Field(`"event_time":`, &event) && s.Literal(",")
	if !ok {
		return Envelope{}, false
	}
	if s.Literal(`"key_id":`) && (!s.String(&e.KeyID) || !s.Literal(",")) {
		return Envelope{}, false
	}
	if !s.Literal(`"payload":{`) || !s.Field(`"cohort_id":`, &p.CohortID) || !s.Literal(",") ||
		!s.Literal(`"cohort_changes":[`) {
		return Envelope{}, false
	}
	p.Changes = []Change{}
	for !s.Literal("]") {
		if len(p.Changes) > 0 && !s.Literal(",") {
			return Envelope{}, false
		}
		ch, ok := canonicalChange(s)
		if !ok {
			return Envelope{}, false
		}
		p.Changes = append(p.Changes, ch)
	}
	if !s.Literal("}}") || !s.End() {
		return Envelope{}, false
	}
	var err error
	if e.ReceivedAt, err = parseTime(received); err != nil {
		return Envelope{}, false
	}
	if e.EventTime, err = parseTime(event); err != nil {
		return Envelope{}, false
	}
	e.Payload = p
	return e, true
}

// canonicalChange reads one element of cohort_changes: the lists Encode
// writes when they are not empty, then should_remove.
func canonicalChange(s *jsonscan.Scanner) (Change, bool) {
	var ch Change
	if !s.Literal("{") {
		return ch, false
	}
	if s.Literal(`"user_ids":`) && (!s.Strings(&ch.UserIDs) || !s.Literal(",")) {
		return ch, false
	}
	if s.Literal(`"device_ids":`) && (!s.Strings(&ch.DeviceIDs) || !s.Literal(",")) {
		return ch, false
	}
	if s.Literal(`"aliases":`) {
		ok := s.Array(func() bool {
			var a Alias
			if !s.Pair(`"alias_name":`, &a.Name, `"alias_label":`, &a.Label) {
				return false
			}
			ch.Aliases = append(ch.Aliases, a)
			return true
		})
		if !ok || !s.Literal(",") {
			return ch, false
		}
	}
	switch {
	case s.Literal(`"should_remove":false}`):
	case s.Literal(`"should_remove":true}`):
		ch.ShouldRemove = true
	default:
		return ch, false
	}
	return ch, true
}

// encodeV1Canonical writes a cohort_changes record as Encode does, without
// reflection, when every string in it is printable ASCII without a quote or
// a backslash: then encoding/json writes each one as it is, so the bytes
// are the same (FuzzEncodeCanonicalAgrees). Any other string (an escape, a
// control character, non-ASCII text, which encoding/json may rewrite)
// reports false, and Encode uses encoding/json. e must be valid.
func encodeV1Canonical(e Envelope, p CohortChangesPayload) ([]byte, bool) {
	received, event := formatTime(e.ReceivedAt), formatTime(e.EventTime)
	size := 256 + len(e.RecordID) + len(e.Workspace) + len(e.Partner) + len(e.KeyID) + len(p.CohortID)
	for _, c := range p.Changes {
		size += 48
		for _, id := range c.UserIDs {
			size += len(id) + 3
		}
		for _, id := range c.DeviceIDs {
			size += len(id) + 3
		}
		for _, a := range c.Aliases {
			size += len(a.Name) + len(a.Label) + 32
		}
	}
	w := plainWriter{b: make([]byte, 0, size), ok: true}
	w.raw(string(v1Prefix))
	w.field(`"record_id":`, e.RecordID)
	w.field(`,"workspace":`, e.Workspace)
	w.field(`,"partner":`, e.Partner)
	w.raw(`,"kind":"` + string(KindCohortChanges) + `"`)
	w.field(`,"received_at":`, received)
	w.field(`,"event_time":`, event)
	if e.KeyID != "" {
		w.field(`,"key_id":`, e.KeyID)
	}
	w.field(`,"payload":{"cohort_id":`, p.CohortID)
	w.raw(`,"cohort_changes":[`)
	for i, c := range p.Changes {
		if i > 0 {
			w.raw(",")
		}
		w.raw("{")
		// Fields with omitempty: a list is written only when it has ids.
		sep := ""
		if len(c.UserIDs) > 0 {
			w.list(`"user_ids":`, c.UserIDs)
			sep = ","
		}
		if len(c.DeviceIDs) > 0 {
			w.list(sep+`"device_ids":`, c.DeviceIDs)
			sep = ","
		}
		if len(c.Aliases) > 0 {
			w.raw(sep + `"aliases":[`)
			for j, a := range c.Aliases {
				if j > 0 {
					w.raw(",")
				}
				w.field(`{"alias_name":`, a.Name)
				w.field(`,"alias_label":`, a.Label)
				w.raw("}")
			}
			w.raw("]")
			sep = ","
		}
		if c.ShouldRemove {
			w.raw(sep + `"should_remove":true}`)
		} else {
			w.raw(sep + `"should_remove":false}`)
		}
	}
	w.raw("]}}")
	return w.b, w.ok
}

// plainWriter appends JSON, and clears ok at the first string that
// encoding/json would not write byte for byte as it is.
type plainWriter struct {
	b  []byte
	ok bool
}

func (w *plainWriter) raw(s string) { w.b = append(w.b, s...) }

func (w *plainWriter) str(s string) {
	for i := 0; i < len(s); i++ {
		// c-0x20 > 0x5e: below 0x20 (wrapping round) or above 0x7e.
		if c := s[i]; c-0x20 > 0x5e || c == '"' || c == '\\' {
			w.ok = false
			return
		}
	}
	w.b = append(w.b, '"')
	w.b = append(w.b, s...)
	w.b = append(w.b, '"')
}

func (w *plainWriter) field(name, v string) {
	w.raw(name)
	w.str(v)
}

func (w *plainWriter) list(name string, ids []string) {
	w.raw(name + "[")
	for i, id := range ids {
		if i > 0 {
			w.raw(",")
		}
		w.str(id)
	}
	w.raw("]")
}
