package mixpanel

import (
	"bytes"
	"encoding/json"
	"strings"

	"github.com/cohortsync/cohortsync/schemas"
)

// Profile properties that carry identities, asked for in output_properties.
const (
	PropBrazeExternalID = "$braze_external_id"
	PropUserID          = "$user_id"
	PropDeviceID        = "$device_id"
	// deviceDistinctPrefix marks the distinct_id of an anonymous profile
	// under Mixpanel's simplified ID merge.
	deviceDistinctPrefix = "$device:"
)

// Profile is one cohort member as the Engage API returns it, with its
// identities already picked from its properties.
type Profile struct {
	// DistinctID is the profile's $distinct_id (numbers as their decimal text).
	DistinctID string
	// ExternalID is the first non-empty of the configured identity property,
	// $braze_external_id and $user_id.
	ExternalID string
	// DeviceID is $device_id, or the DistinctID without its "$device:" prefix.
	DeviceID string
	// Properties holds the returned properties as text: strings as they
	// are, numbers and booleans as JSON literals, arrays and objects as
	// compact JSON; null properties are left out.
	Properties map[string]string
}

// Identity is the id by which cohortsync matches the profile: its external
// id when it has one, else (an anonymous profile) its device id. The kind is
// schemas.IDKindExternalID or schemas.IDKindDeviceID; ok is false when the
// profile carries neither.
func (p Profile) Identity() (kind, value string, ok bool) {
	switch {
	case p.ExternalID != "":
		return schemas.IDKindExternalID, p.ExternalID, true
	case p.DeviceID != "":
		return schemas.IDKindDeviceID, p.DeviceID, true
	default:
		return "", "", false
	}
}

// outputProperties are the properties requested: only the identity ones,
// so that a page of 1,000 profiles stays small.
func outputProperties(identityProperty string) []string {
	props := []string{PropBrazeExternalID, PropUserID, PropDeviceID}
	if identityProperty != "" && identityProperty != PropBrazeExternalID &&
		identityProperty != PropUserID && identityProperty != PropDeviceID {
		props = append(props, identityProperty)
	}
	return props
}

// rawProfile is one element of an answer's results.
type rawProfile struct {
	DistinctID json.RawMessage            `json:"$distinct_id"`
	Properties map[string]json.RawMessage `json:"$properties"`
}

// toProfile converts a result, picking its identities.
func (r rawProfile) toProfile(identityProperty string) Profile {
	p := Profile{DistinctID: jsonText(r.DistinctID), Properties: make(map[string]string, len(r.Properties))}
	for k, v := range r.Properties {
		if t := jsonText(v); t != "" || isJSONString(v) {
			p.Properties[k] = t
		}
	}
	for _, name := range []string{identityProperty, PropBrazeExternalID, PropUserID} {
		if name == "" {
			continue
		}
		if v := strings.TrimSpace(p.Properties[name]); v != "" {
			p.ExternalID = v
			break
		}
	}
	p.DeviceID = strings.TrimSpace(p.Properties[PropDeviceID])
	if p.DeviceID == "" && strings.HasPrefix(p.DistinctID, deviceDistinctPrefix) {
		p.DeviceID = strings.TrimPrefix(p.DistinctID, deviceDistinctPrefix)
	}
	return p
}

// jsonText renders a JSON value as text; null and absent values are "".
func jsonText(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return ""
	}
	if raw[0] == '"' {
		var s string
		if json.Unmarshal(raw, &s) == nil {
			return s
		}
		return ""
	}
	if raw[0] == '[' || raw[0] == '{' {
		var buf bytes.Buffer
		if json.Compact(&buf, raw) == nil {
			return buf.String()
		}
	}
	return string(raw)
}

func isJSONString(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) > 0 && raw[0] == '"'
}
