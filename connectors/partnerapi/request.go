package partnerapi

import (
	"bytes"
	"encoding/json"
	"mime"
	"slices"
	"strings"
	"time"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/cohortsync/cohortsync/internal/jsonscan"
	"github.com/cohortsync/cohortsync/schemas"
)

// Response texts. The ones README lists under "The partner API" are the Braze-compatible
// contract: partners match on them, so they must not change by a byte.
const (
	msgCohortID           = "cohort_id must be a valid string"
	msgCohortChanges      = "cohort_changes must be an array of objects each with key user_ids and/or device_ids mapping to an array of strings, or an aliases object"
	msgTooManyIDs         = "Only 1,000 user_ids, device_ids, and aliases are allowed per request"
	msgName               = "name must be a non-empty string"
	msgCreatedAt          = "created_at must be a valid time as an ISO-8601 string"
	msgPartnerAPIKey      = "Invalid Partner API key"
	msgClientSecret       = "Invalid client secret"
	msgPartnerNotEnabled  = "Partner not enabled for client with client secret: "
	msgUnauthorized       = "Unauthorized access"
	msgContentType        = "Content-Type must be application/json"
	msgTooLarge           = "Request body too large"
	msgNotObject          = "Request body must be a JSON object"
	msgNotUTF8            = "Request body must be valid UTF-8"
	msgCharset            = "Content-Type charset must be utf-8"
	msgRateLimited        = "Rate limit exceeded"
	msgUnavailable        = "Service unavailable, retry later"
	msgInternal           = "Internal server error"
	maxIDsPerRequest      = 1000
	maskedSecretSuffix    = "****"
	secretPrefix          = "csk_"
	minMaskedSecretLength = 8
)

// fields is a request body decoded one level deep. Each field is decoded on
// its own afterwards, so that a wrong type anywhere maps to the message
// documented for that field instead of one generic JSON error.
type fields map[string]json.RawMessage

// contentTypeProblem says what is wrong with a request's Content-Type, or
// "" when it is application/json. Parameters are accepted, and a malformed
// one is forgiven when the media type itself is clear, since refusing it
// would only punish a sloppy client for no safety gain; but a charset other
// than UTF-8 is refused: the body would be read as what it is not.
func contentTypeProblem(header string) string {
	mediaType, params, err := mime.ParseMediaType(header)
	if err != nil && err != mime.ErrInvalidMediaParameter {
		return msgContentType
	}
	if mediaType != "application/json" {
		return msgContentType
	}
	if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") && !strings.EqualFold(cs, "utf8") {
		return msgCharset
	}
	return ""
}

// decodeObject returns the top-level fields, or the message of the 400 for
// anything but a JSON object in valid UTF-8. encoding/json would replace
// invalid bytes, and unpaired surrogate escapes, with U+FFFD: the id stored
// would not be the one the partner sent, so such a body is refused instead.
func decodeObject(body []byte) (fields, string) {
	if !utf8.Valid(body) || hasLoneSurrogate(body) {
		return nil, msgNotUTF8
	}
	var f fields
	// "null" decodes into a nil map without error, hence the nil check.
	if err := json.Unmarshal(body, &f); err != nil || f == nil {
		return nil, msgNotObject
	}
	return f, ""
}

// hasLoneSurrogate reports a \uD800-\uDFFF escape that is not half of a
// surrogate pair. An escaped backslash (\\u...) is not an escape of u.
func hasLoneSurrogate(body []byte) bool {
	for i := 0; i < len(body); i++ {
		if body[i] != '\\' {
			continue
		}
		if i+1 < len(body) && body[i+1] != 'u' {
			i++ // \\, \" and the like: skip the escaped byte
			continue
		}
		r, ok := hexRune(body, i)
		if !ok {
			continue // not valid JSON; the decoder refuses it
		}
		if !utf16.IsSurrogate(r) {
			i += 5
			continue
		}
		// A pair decodes to a rune; a lone half, or a low half first, to
		// the replacement character.
		low, _ := hexRune(body, i+6)
		if utf16.DecodeRune(r, low) == utf8.RuneError {
			return true
		}
		i += 11
	}
	return false
}

// hexRune reads the \uXXXX escape at body[i:].
func hexRune(body []byte, i int) (rune, bool) {
	if i+6 > len(body) || body[i] != '\\' || body[i+1] != 'u' {
		return 0, false
	}
	var r rune
	for _, c := range body[i+2 : i+6] {
		var v byte
		switch {
		case c >= '0' && c <= '9':
			v = c - '0'
		case c >= 'a' && c <= 'f':
			v = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			v = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(v)
	}
	return r, true
}

// jsonType is the first byte of a JSON value, which names its type:
// '"' string, '[' array, '{' object, 'n' null, 't'/'f' bool, else a number.
func jsonType(raw json.RawMessage) byte {
	raw = bytes.TrimLeft(raw, " \t\r\n")
	if len(raw) == 0 {
		return 0
	}
	return raw[0]
}

// stringField returns the string value of a field; false when the field is
// missing, null or not a string.
func stringField(f fields, name string) (string, bool) {
	raw, ok := f[name]
	if !ok || jsonType(raw) != '"' {
		return "", false
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", false
	}
	return s, true
}

// nonBlankString is stringField for identifiers and names, which are useless
// when they are only whitespace.
func nonBlankString(f fields, name string) (string, bool) {
	s, ok := stringField(f, name)
	if !ok || strings.TrimSpace(s) == "" {
		return "", false
	}
	return s, true
}

// parseCohort validates a POST .../cohorts body; the string is the 400 text,
// empty when the body is valid.
func parseCohort(f fields) (schemas.CohortPayload, string) {
	id, ok := nonBlankString(f, "cohort_id")
	if !ok {
		return schemas.CohortPayload{}, msgCohortID
	}
	name, ok := nonBlankString(f, "name")
	if !ok {
		return schemas.CohortPayload{}, msgName
	}
	created, ok := stringField(f, "created_at")
	if !ok {
		return schemas.CohortPayload{}, msgCreatedAt
	}
	t, ok := parseISO8601(created)
	if !ok {
		return schemas.CohortPayload{}, msgCreatedAt
	}
	return schemas.CohortPayload{CohortID: id, Name: name, CreatedAt: t}, ""
}

// parseISO8601 accepts the ISO-8601 forms partners are seen to send: RFC 3339
// with or without fractional seconds, an offset without a colon, a local
// date-time without zone and a bare date. The last two are taken as UTC,
// which is what the tools mean when they leave the zone out.
func parseISO8601(s string) (time.Time, bool) {
	layouts := [...]string{
		time.RFC3339, // also parses fractional seconds
		"2006-01-02T15:04:05Z0700",
		"2006-01-02T15:04:05",
		"2006-01-02",
	}
	for _, layout := range layouts {
		t, err := time.Parse(layout, s)
		if err != nil {
			continue
		}
		t = t.UTC()
		// An offset can push year 0000 or 9999 out of what RFC 3339, and
		// so the landed record, can hold.
		if t.IsZero() || t.Year() < 1 || t.Year() > 9999 {
			return time.Time{}, false
		}
		return t, true
	}
	return time.Time{}, false
}

// parseChanges validates a POST .../cohorts/users body and returns the
// number of ids it carries; the string is the 400 text, empty when valid.
func parseChanges(f fields) (schemas.CohortChangesPayload, int, string) {
	id, ok := nonBlankString(f, "cohort_id")
	if !ok {
		return schemas.CohortChangesPayload{}, 0, msgCohortID
	}
	raw, ok := f["cohort_changes"]
	if !ok || jsonType(raw) != '[' {
		return schemas.CohortChangesPayload{}, 0, msgCohortChanges
	}
	var entries []json.RawMessage
	if err := json.Unmarshal(raw, &entries); err != nil {
		return schemas.CohortChangesPayload{}, 0, msgCohortChanges
	}
	changes := make([]schemas.Change, 0, len(entries))
	total := 0
	for _, entry := range entries {
		c, ok := parseChange(entry)
		if !ok {
			return schemas.CohortChangesPayload{}, 0, msgCohortChanges
		}
		total += len(c.UserIDs) + len(c.DeviceIDs) + len(c.Aliases)
		changes = append(changes, c)
	}
	if total > maxIDsPerRequest {
		return schemas.CohortChangesPayload{}, 0, msgTooManyIDs
	}
	return schemas.CohortChangesPayload{CohortID: id, Changes: changes}, total, ""
}

// parseChange reads one cohort_changes entry. A null list counts as absent:
// serializers commonly write an empty list as null, and refusing that would
// reject well-meant requests.
func parseChange(raw json.RawMessage) (schemas.Change, bool) {
	if jsonType(raw) != '{' {
		return schemas.Change{}, false
	}
	var f fields
	if err := json.Unmarshal(raw, &f); err != nil {
		return schemas.Change{}, false
	}
	var c schemas.Change
	present := false
	for _, list := range []struct {
		name string
		dst  *[]string
	}{{"user_ids", &c.UserIDs}, {"device_ids", &c.DeviceIDs}} {
		v, ok := f[list.name]
		if !ok || jsonType(v) == 'n' {
			continue
		}
		ids, ok := idList(v)
		if !ok {
			return schemas.Change{}, false
		}
		*list.dst = ids
		present = true
	}
	if v, ok := f["aliases"]; ok && jsonType(v) != 'n' {
		aliases, ok := aliasList(v)
		if !ok {
			return schemas.Change{}, false
		}
		c.Aliases = aliases
		present = true
	}
	if !present {
		return schemas.Change{}, false
	}
	if v, ok := f["should_remove"]; ok {
		switch string(bytes.TrimSpace(v)) {
		case "true":
			c.ShouldRemove = true
		case "false", "null":
		default:
			return schemas.Change{}, false
		}
	}
	return c, true
}

// idList reads an array of non-empty strings.
func idList(raw json.RawMessage) ([]string, bool) {
	if jsonType(raw) != '[' {
		return nil, false
	}
	var ids []string
	// The common form, compact and without escapes, is sliced out of one
	// copy of the list (jsonscan); any other goes through encoding/json,
	// where a null element decodes to "" without error and is caught by the
	// empty check.
	s, fast := jsonscan.New(raw)
	if !fast || !s.Strings(&ids) || !s.End() {
		ids = nil
		if err := json.Unmarshal(raw, &ids); err != nil {
			return nil, false
		}
	}
	for _, id := range ids {
		if id == "" {
			return nil, false
		}
	}
	return ids, true
}

// aliasList reads an array of {alias_name, alias_label} objects with non-empty strings.
func aliasList(raw json.RawMessage) ([]schemas.Alias, bool) {
	if jsonType(raw) != '[' {
		return nil, false
	}
	var objects []json.RawMessage
	if err := json.Unmarshal(raw, &objects); err != nil {
		return nil, false
	}
	aliases := make([]schemas.Alias, 0, len(objects))
	for _, o := range objects {
		if jsonType(o) != '{' {
			return nil, false
		}
		var f fields
		if err := json.Unmarshal(o, &f); err != nil {
			return nil, false
		}
		name, ok := stringField(f, "alias_name")
		if !ok || name == "" {
			return nil, false
		}
		label, ok := stringField(f, "alias_label")
		if !ok || label == "" {
			return nil, false
		}
		aliases = append(aliases, schemas.Alias{Name: name, Label: label})
	}
	return aliases, true
}

// maskSecret shows enough of a client secret to tell keys apart in a support
// conversation, never enough to use it: csk_<key id>_**** for our own secrets.
// keyID comes from the verified credential and takes precedence over parsing,
// which would stop at the first underscore. Short foreign secrets show
// nothing, since four characters would be half of them.
func maskSecret(secret, keyID string) string {
	if rest, ok := strings.CutPrefix(secret, secretPrefix); ok {
		if keyID != "" && strings.HasPrefix(rest, keyID+"_") {
			return secretPrefix + keyID + "_" + maskedSecretSuffix
		}
		if id, _, ok := strings.Cut(rest, "_"); ok && id != "" {
			return secretPrefix + id + "_" + maskedSecretSuffix
		}
	}
	runes := []rune(secret)
	if len(runes) <= minMaskedSecretLength {
		return maskedSecretSuffix
	}
	return string(runes[:4]) + maskedSecretSuffix
}

// changesBody is a POST .../cohorts/users body read in one pass: the
// credentials the handler checks and the payload parseChanges would give.
type changesBody struct {
	apiKey    string
	secret    string
	hasSecret bool
	payload   schemas.CohortChangesPayload
	ids       int
}

// scanChanges reads a valid body in the compact form serializers write
// (no whitespace, no escapes, each key once, in any order; user_ids,
// device_ids and should_remove in each change) in one pass, where the
// general path decodes it level by level with encoding/json: the body
// object, the changes array, each change, each list. Anything else, every
// body that would be refused included, reports false and takes the general
// path, which has the exact message for it; FuzzScanChangesAgrees holds the
// two to the same answer.
func scanChanges(body []byte) (changesBody, bool) {
	s, ok := jsonscan.New(body)
	if !ok || !s.Literal("{") {
		return changesBody{}, false
	}
	var (
		b                          changesBody
		cohortID                   string
		changes                    []schemas.Change
		hasKey, hasCohort, hasList bool
	)
	for n := 0; !s.Literal("}"); n++ {
		var key string
		if (n > 0 && !s.Literal(",")) || !s.String(&key) || !s.Literal(":") {
			return changesBody{}, false
		}
		switch {
		case key == "partner_api_key" && !hasKey:
			hasKey = s.String(&b.apiKey)
			if !hasKey {
				return changesBody{}, false
			}
		case key == "client_secret" && !b.hasSecret:
			b.hasSecret = s.String(&b.secret)
			if !b.hasSecret {
				return changesBody{}, false
			}
		case key == "cohort_id" && !hasCohort:
			hasCohort = s.String(&cohortID)
			if !hasCohort {
				return changesBody{}, false
			}
		case key == "cohort_changes" && !hasList:
			hasList = s.Array(func() bool {
				c, ok := scanChange(s)
				changes = append(changes, c)
				return ok
			})
			if !hasList {
				return changesBody{}, false
			}
		default:
			return changesBody{}, false
		}
	}
	if !s.End() || !hasCohort || !hasList || strings.TrimSpace(cohortID) == "" {
		return changesBody{}, false
	}
	for _, c := range changes {
		b.ids += len(c.UserIDs) + len(c.DeviceIDs)
	}
	if b.ids > maxIDsPerRequest {
		return changesBody{}, false
	}
	if changes == nil {
		changes = []schemas.Change{}
	}
	b.payload = schemas.CohortChangesPayload{CohortID: cohortID, Changes: changes}
	return b, true
}

// scanChange reads one cohort_changes entry for scanChanges: at least one
// list of non-empty ids (null counts as absent, as in parseChange) and an
// optional should_remove. Aliases take the general path.
func scanChange(s *jsonscan.Scanner) (schemas.Change, bool) {
	var c schemas.Change
	if !s.Literal("{") {
		return c, false
	}
	var seenUsers, seenDevices, seenRemove, present bool
	for n := 0; !s.Literal("}"); n++ {
		var key string
		if (n > 0 && !s.Literal(",")) || !s.String(&key) || !s.Literal(":") {
			return c, false
		}
		var dst *[]string
		switch {
		case key == "user_ids" && !seenUsers:
			seenUsers, dst = true, &c.UserIDs
		case key == "device_ids" && !seenDevices:
			seenDevices, dst = true, &c.DeviceIDs
		case key == "should_remove" && !seenRemove:
			seenRemove = true
			switch {
			case s.Literal("true"):
				c.ShouldRemove = true
			case s.Literal("false"), s.Literal("null"):
			default:
				return c, false
			}
			continue
		default:
			return c, false
		}
		if s.Literal("null") {
			continue
		}
		var ids []string
		if !s.Strings(&ids) || slices.Contains(ids, "") {
			return c, false
		}
		*dst, present = ids, true
	}
	return c, present
}
