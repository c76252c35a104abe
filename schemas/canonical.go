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
