package identities

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

func TestParseLine(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", MaxIDBytes+1)
	tests := []struct {
		name    string
		line    string
		want    Record
		wantErr string // substring; empty means success
	}{
		{
			name: "full record",
			line: `{"user_id":"u1","external_id":"e1","device_ids":["d1","d2"],"aliases":[{"alias_name":"a@x","alias_label":"email"}]}`,
			want: Record{UserID: "u1", ExternalID: "e1", DeviceIDs: []string{"d1", "d2"}, Aliases: []Alias{{Name: "a@x", Label: "email"}}},
		},
		{name: "anonymous", line: `{"user_id":"u2","device_ids":["d"]}`, want: Record{UserID: "u2", DeviceIDs: []string{"d"}}},
		{name: "null external id is absent", line: `{"user_id":"u3","external_id":null}`, want: Record{UserID: "u3"}},
		{name: "surrounding spaces", line: "  {\"user_id\":\"u4\"}  ", want: Record{UserID: "u4"}},
		{name: "missing user id", line: `{"external_id":"e"}`, wantErr: "user_id is required"},
		{name: "empty external id", line: `{"user_id":"u","external_id":""}`, wantErr: "external_id must be a non-empty string or absent"},
		{name: "unknown field", line: `{"user_id":"u","externalId":"e"}`, wantErr: `unknown field "externalId"`},
		{name: "not an object", line: `["u"]`, wantErr: "a line must be a JSON object"},
		{name: "malformed", line: `{"user_id":"u",}`, wantErr: "malformed JSON at byte"},
		{name: "truncated", line: `{"user_id":"u"`, wantErr: "unexpected end of line"},
		{name: "two objects", line: `{"user_id":"u"}{"user_id":"v"}`, wantErr: "exactly one JSON object"},
		{name: "number user id", line: `{"user_id":7}`, wantErr: `field "user_id" must be a string`},
		{name: "device ids not an array", line: `{"user_id":"u","device_ids":"d"}`, wantErr: `field "device_ids" must be an array of strings`},
		{name: "empty device id", line: `{"user_id":"u","device_ids":["d",""]}`, wantErr: "device_ids[1] is empty"},
		{name: "alias without label", line: `{"user_id":"u","aliases":[{"alias_name":"a"}]}`, wantErr: "aliases[0] needs alias_name and alias_label"},
		{name: "NUL in an id", line: `{"user_id":"u\u0000v"}`, wantErr: "user_id must not contain NUL"},
		{name: "id too long", line: `{"user_id":"` + long + `"}`, wantErr: "user_id is 513 bytes"},
		{
			name:    "every problem reported",
			line:    `{"user_id":"","device_ids":[""],"aliases":[{"alias_name":"","alias_label":"l"}]}`,
			wantErr: "user_id is required\ndevice_ids[0] is empty\naliases[0] needs alias_name and alias_label",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := ParseLine([]byte(tt.line))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				if strings.Contains(tt.line, long) && strings.Contains(err.Error(), long) {
					t.Error("the error quotes the identifier")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !equalRecords(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestValueRoundTripAndKeyCheck(t *testing.T) {
	t.Parallel()
	rec := Record{UserID: "a/b", ExternalID: "e", DeviceIDs: []string{"d"}}
	val, err := EncodeValue("acme", rec)
	if err != nil {
		t.Fatal(err)
	}
	// A user id may contain '/': the workspace never does, so the key splits.
	key := MessageKey("acme", rec.UserID)
	if ws, user, ok := splitMessageKey(key); !ok || ws != "acme" || user != "a/b" {
		t.Errorf("split %q = %q %q %v", key, ws, user, ok)
	}
	ws, got, err := decodeValue(key, val)
	if err != nil || ws != "acme" || !equalRecords(got, rec) {
		t.Fatalf("decode = %q %+v %v", ws, got, err)
	}
	if _, _, err := decodeValue(MessageKey("other", rec.UserID), val); err == nil {
		t.Error("a value under another workspace's key was accepted")
	}
	if _, err := EncodeValue("Not Valid", rec); err == nil {
		t.Error("an invalid workspace was encoded")
	}
	if _, _, err := decodeValue(key, []byte(`{"v":2,"workspace":"acme","user_id":"a/b"}`)); err == nil || !strings.Contains(err.Error(), "version 2") {
		t.Errorf("future version: %v", err)
	}
}

func equalRecords(a, b Record) bool {
	if a.UserID != b.UserID || a.ExternalID != b.ExternalID || len(a.DeviceIDs) != len(b.DeviceIDs) || len(a.Aliases) != len(b.Aliases) {
		return false
	}
	for i := range a.DeviceIDs {
		if a.DeviceIDs[i] != b.DeviceIDs[i] {
			return false
		}
	}
	for i := range a.Aliases {
		if a.Aliases[i] != b.Aliases[i] {
			return false
		}
	}
	return true
}

// FuzzDecodeWireAgrees: whatever the canonical reading accepts,
// encoding/json reads to the same record.
func FuzzDecodeWireAgrees(f *testing.F) {
	for _, r := range []Record{
		{UserID: "u1"},
		{UserID: "u1", ExternalID: "e1"},
		{UserID: "u2", DeviceIDs: []string{"d1", "d2"}, Aliases: []Alias{{Name: "a@x.io", Label: "email"}, {Name: "b", Label: "crm"}}},
		{UserID: "u<3", ExternalID: "ü"},
	} {
		v, err := EncodeValue("acme", r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(v)
	}
	f.Add([]byte(`{"v":1,"workspace":"acme","user_id":"u","device_ids":[],"aliases":[]}`))
	f.Fuzz(func(t *testing.T, value []byte) {
		got, ok := decodeWireCanonical(value)
		if !ok {
			return
		}
		var want wireRecord
		if err := json.Unmarshal(value, &want); err != nil {
			t.Fatalf("canonical reading accepted %q, which encoding/json refuses: %v", value, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("canonical %+v, encoding/json %+v, from %q", got, want, value)
		}
	})
}

// TestEncodedValuesTakeTheCanonicalReading: what EncodeValue writes (HTML
// characters aside, which it escapes) never falls back to encoding/json.
func TestEncodedValuesTakeTheCanonicalReading(t *testing.T) {
	t.Parallel()
	for _, r := range []Record{
		{UserID: "u1"},
		{UserID: "u1", ExternalID: "e1", DeviceIDs: []string{"d"}, Aliases: []Alias{{Name: "a@x.io", Label: "email"}}},
	} {
		v, err := EncodeValue("acme", r)
		if err != nil {
			t.Fatal(err)
		}
		w, ok := decodeWireCanonical(v)
		if !ok {
			t.Fatalf("canonical reading refused %s", v)
		}
		if w.Workspace != "acme" || !reflect.DeepEqual(w.Record, r) {
			t.Errorf("read %+v from %s", w, v)
		}
	}
}
