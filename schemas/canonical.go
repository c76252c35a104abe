package schemas

import (
	"bytes"
	"unicode/utf8"
)

// decodeV1Canonical reads a cohort_changes record in exactly the form Encode
// writes it: the fields in Encode's order with their exact names, no
// whitespace, no escapes, valid UTF-8. That is every record this build lands
// and the whole stream's load, and reading it needs no reflection: the
// record is copied into one string once and every field and id is a slice
// of it, instead of an allocation per id. Anything else (another kind, an
// escape, a field out of place, trailing bytes) reports false and is read by
// decodeV1, so this only ever gives the answer decodeV1 gives, faster
// (FuzzDecodeCanonicalAgrees).
func decodeV1Canonical(data []byte) (Envelope, bool) {
	if !bytes.HasPrefix(data, v1Prefix) || !utf8.Valid(data) {
		return Envelope{}, false
	}
	c := canonicalScanner{data: data, text: string(data), i: len(v1Prefix)}
	e := Envelope{SchemaVersion: 1}
	var received, event string
	var p CohortChangesPayload
	ok := c.field(`"record_id":`, &e.RecordID) && c.comma() &&
		c.field(`"workspace":`, &e.Workspace) && c.comma() &&
		c.field(`"partner":`, &e.Partner) && c.comma() &&
		c.literal(`"kind":"`+string(KindCohortChanges)+`",`) &&
		c.field(`"received_at":`, &received) && c.comma() &&
		c.field(`"event_time":`, &event) && c.comma()
	if !ok {
		return Envelope{}, false
	}
	if c.literal(`"key_id":`) {
		if !c.str(&e.KeyID) || !c.comma() {
			return Envelope{}, false
		}
	}
	if !c.literal(`"payload":{`) || !c.field(`"cohort_id":`, &p.CohortID) || !c.comma() ||
		!c.literal(`"cohort_changes":[`) {
		return Envelope{}, false
	}
	p.Changes = []Change{}
	for !c.literal("]") {
		if len(p.Changes) > 0 && !c.comma() {
			return Envelope{}, false
		}
		ch, ok := c.change()
		if !ok {
			return Envelope{}, false
		}
		p.Changes = append(p.Changes, ch)
	}
	if !c.literal("}}") || c.i != len(data) {
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

// canonicalScanner walks data; text is the same bytes as one string, which
// every string it reads is a slice of.
type canonicalScanner struct {
	data []byte
	text string
	i    int
}

func (c *canonicalScanner) literal(lit string) bool {
	if len(c.data)-c.i < len(lit) || c.text[c.i:c.i+len(lit)] != lit {
		return false
	}
	c.i += len(lit)
	return true
}

func (c *canonicalScanner) comma() bool { return c.literal(",") }

func (c *canonicalScanner) field(name string, dst *string) bool {
	return c.literal(name) && c.str(dst)
}

// str reads a JSON string without escapes. A backslash or a control
// character (invalid in JSON unescaped) makes it fail, as does a missing
// closing quote.
func (c *canonicalScanner) str(dst *string) bool {
	if c.i >= len(c.data) || c.data[c.i] != '"' {
		return false
	}
	start := c.i + 1
	for j := start; j < len(c.data); j++ {
		switch b := c.data[j]; {
		case b == '"':
			*dst = c.text[start:j]
			c.i = j + 1
			return true
		case b == '\\' || b < 0x20:
			return false
		}
	}
	return false
}

// strings reads a non-empty array of strings; an empty one is `[]`, which
// decodes to an empty, non-nil slice as encoding/json gives it.
func (c *canonicalScanner) strings(dst *[]string) bool {
	if !c.literal("[") {
		return false
	}
	out := []string{}
	for !c.literal("]") {
		if len(out) > 0 && !c.comma() {
			return false
		}
		var s string
		if !c.str(&s) {
			return false
		}
		out = append(out, s)
	}
	*dst = out
	return true
}

// change reads one element of cohort_changes: the lists Encode writes when
// they are not empty, then should_remove.
func (c *canonicalScanner) change() (Change, bool) {
	var ch Change
	if !c.literal("{") {
		return ch, false
	}
	if c.literal(`"user_ids":`) && (!c.strings(&ch.UserIDs) || !c.comma()) {
		return ch, false
	}
	if c.literal(`"device_ids":`) && (!c.strings(&ch.DeviceIDs) || !c.comma()) {
		return ch, false
	}
	if c.literal(`"aliases":[`) {
		for !c.literal("]") {
			if len(ch.Aliases) > 0 && !c.comma() {
				return ch, false
			}
			var a Alias
			if !c.literal("{") || !c.field(`"alias_name":`, &a.Name) || !c.comma() ||
				!c.field(`"alias_label":`, &a.Label) || !c.literal("}") {
				return ch, false
			}
			ch.Aliases = append(ch.Aliases, a)
		}
		if !c.comma() {
			return ch, false
		}
	}
	switch {
	case c.literal(`"should_remove":false}`):
	case c.literal(`"should_remove":true}`):
		ch.ShouldRemove = true
	default:
		return ch, false
	}
	return ch, true
}
