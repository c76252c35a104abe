package schemas

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/ from the fixtures")

// goldenFixtures holds, per schema version, the envelope each golden file
// must decode to. A version stays here after it stops being current: its
// files must keep decoding for as long as such records can be on the topic.
func goldenFixtures() map[int]map[string]Envelope {
	received := time.Date(2024, 11, 5, 9, 30, 0, 123456789, time.UTC)
	return map[int]map[string]Envelope{
		1: {
			"cohort": {
				SchemaVersion: 1,
				RecordID:      "01933b6e-5c2a-7d41-9b7e-2f64c3a1d0e8",
				Workspace:     "acme",
				Partner:       "mixpanel",
				ReceivedAt:    received,
				EventTime:     received,
				KeyID:         "k7f3a9c2e",
				Payload: CohortPayload{
					CohortID:  "1234567",
					Name:      "Churn risk <30d> & \"VIP\" é",
					CreatedAt: time.Date(2024, 1, 2, 15, 4, 5, 0, time.UTC),
				},
			},
			"cohort_changes": {
				SchemaVersion: 1,
				RecordID:      "01933b6e-5c2b-7a0f-8c11-9d2e4b6f8a13",
				Workspace:     "acme",
				Partner:       "amplitude",
				ReceivedAt:    received,
				EventTime:     received,
				KeyID:         "k7f3a9c2e",
				Payload: CohortChangesPayload{
					CohortID: "1234567",
					Changes: []Change{
						{UserIDs: []string{"user-1", "user-2"}, DeviceIDs: []string{"dev-9"}},
						{Aliases: []Alias{{Name: "jane@example.com", Label: "email"}}, ShouldRemove: true},
						{DeviceIDs: []string{"dev-3"}, ShouldRemove: false},
					},
				},
			},
		},
	}
}

func TestGolden(t *testing.T) {
	for version, fixtures := range goldenFixtures() {
		for name, want := range fixtures {
			t.Run(fmt.Sprintf("v%d/%s", version, name), func(t *testing.T) {
				path := filepath.Join("testdata", "v"+strconv.Itoa(version), name+".json")
				if version == CurrentVersion {
					got, err := Encode(want)
					if err != nil {
						t.Fatalf("Encode: %v", err)
					}
					if *update {
						if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
							t.Fatal(err)
						}
						if err := os.WriteFile(path, got, 0o644); err != nil {
							t.Fatal(err)
						}
					}
					golden := readFile(t, path)
					if !bytes.Equal(got, golden) {
						t.Errorf("Encode differs from %s (a format change needs a new schema version, or -update if intended)\n got: %s\nwant: %s", path, got, golden)
					}
				}
				got, err := Decode(readFile(t, path))
				if err != nil {
					t.Fatalf("Decode %s: %v", path, err)
				}
				if !reflect.DeepEqual(got, want) {
					t.Errorf("Decode %s:\n got: %#v\nwant: %#v", path, got, want)
				}
			})
		}
	}
}

// TestGoldenFilesHaveFixtures catches a golden file that no test reads any
// more, which would let its version silently stop being covered.
func TestGoldenFilesHaveFixtures(t *testing.T) {
	t.Parallel()
	fixtures := goldenFixtures()
	if _, ok := fixtures[CurrentVersion]; !ok {
		t.Fatalf("no fixtures for the current version %d", CurrentVersion)
	}
	paths, err := filepath.Glob(filepath.Join("testdata", "v*", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) == 0 {
		t.Fatal("no golden files")
	}
	for _, p := range paths {
		v, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(filepath.Dir(p)), "v"))
		if err != nil {
			t.Errorf("%s: folder is not v<N>", p)
			continue
		}
		if _, ok := fixtures[v][strings.TrimSuffix(filepath.Base(p), ".json")]; !ok {
			t.Errorf("%s has no fixture", p)
		}
	}
	for _, kind := range []Kind{KindCohort, KindCohortChanges} {
		if _, ok := fixtures[CurrentVersion][string(kind)]; !ok {
			t.Errorf("kind %q has no golden file in the current version", kind)
		}
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./schemas -run TestGolden -update to create it)", err)
	}
	return b
}

// validV1 is a decodable v1 record as a map, for tests to break one field at a time.
func validV1() map[string]any {
	return map[string]any{
		"schema_version": 1,
		"record_id":      "r1",
		"workspace":      "acme",
		"partner":        "mixpanel",
		"kind":           "cohort_changes",
		"received_at":    "2024-11-05T09:30:00Z",
		"event_time":     "2024-11-05T09:30:00Z",
		"key_id":         "k1",
		"payload": map[string]any{
			"cohort_id":      "c1",
			"cohort_changes": []any{map[string]any{"user_ids": []any{"u1"}}},
		},
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecodeErrors(t *testing.T) {
	t.Parallel()
	with := func(edit func(m map[string]any)) func(*testing.T) []byte {
		return func(t *testing.T) []byte {
			m := validV1()
			edit(m)
			return mustJSON(t, m)
		}
	}
	raw := func(s string) func(*testing.T) []byte { return func(*testing.T) []byte { return []byte(s) } }
	payload := func(m map[string]any) map[string]any { return m["payload"].(map[string]any) }

	tests := []struct {
		name  string
		input func(*testing.T) []byte
		want  error
	}{
		{"empty input", raw(""), ErrMalformed},
		{"not JSON", raw("cohort"), ErrMalformed},
		{"truncated", raw(`{"schema_version":1,"record_id":"r`), ErrMalformed},
		{"null", raw("null"), ErrMalformed},
		{"array", raw(`[{"schema_version":1}]`), ErrMalformed},
		{"no version", with(func(m map[string]any) { delete(m, "schema_version") }), ErrMalformed},
		{"version as string", with(func(m map[string]any) { m["schema_version"] = "1" }), ErrMalformed},
		{"version fractional", with(func(m map[string]any) { m["schema_version"] = 1.5 }), ErrMalformed},
		{"version zero", with(func(m map[string]any) { m["schema_version"] = 0 }), ErrMalformed},
		{"version negative", with(func(m map[string]any) { m["schema_version"] = -1 }), ErrMalformed},
		{"version huge", raw(`{"schema_version":1e100}`), ErrMalformed},
		{"version 2", with(func(m map[string]any) { m["schema_version"] = 2 }), ErrUnknownVersion},
		{"version 2 of another shape", raw(`{"payload":[1,2],"schema_version":2,"received_at":7}`), ErrUnknownVersion},
		{"trailing data", func(t *testing.T) []byte { return append(mustJSON(t, validV1()), []byte(" {}")...) }, ErrMalformed},
		{"no record_id", with(func(m map[string]any) { delete(m, "record_id") }), ErrMalformed},
		{"record_id not a string", with(func(m map[string]any) { m["record_id"] = 7 }), ErrMalformed},
		{"no workspace", with(func(m map[string]any) { m["workspace"] = "" }), ErrMalformed},
		{"no partner", with(func(m map[string]any) { delete(m, "partner") }), ErrMalformed},
		{"unknown kind", with(func(m map[string]any) { m["kind"] = "cohort_deleted" }), ErrMalformed},
		{"no kind", with(func(m map[string]any) { delete(m, "kind") }), ErrMalformed},
		{"bad received_at", with(func(m map[string]any) { m["received_at"] = "yesterday" }), ErrMalformed},
		{"no event_time", with(func(m map[string]any) { delete(m, "event_time") }), ErrMalformed},
		{"no payload", with(func(m map[string]any) { delete(m, "payload") }), ErrMalformed},
		{"payload null", with(func(m map[string]any) { m["payload"] = nil }), ErrMalformed},
		{"payload not an object", with(func(m map[string]any) { m["payload"] = "c1" }), ErrMalformed},
		{"kind does not match payload", with(func(m map[string]any) { m["kind"] = "cohort" }), ErrMalformed},
		{"no cohort_id", with(func(m map[string]any) { delete(payload(m), "cohort_id") }), ErrMalformed},
		{"no cohort_changes", with(func(m map[string]any) { delete(payload(m), "cohort_changes") }), ErrMalformed},
		{"cohort_changes not an array", with(func(m map[string]any) { payload(m)["cohort_changes"] = map[string]any{} }), ErrMalformed},
		{"empty user id", with(func(m map[string]any) {
			payload(m)["cohort_changes"] = []any{map[string]any{"user_ids": []any{""}}}
		}), ErrMalformed},
		{"numeric user id", with(func(m map[string]any) {
			payload(m)["cohort_changes"] = []any{map[string]any{"user_ids": []any{1}}}
		}), ErrMalformed},
		{"alias without label", with(func(m map[string]any) {
			payload(m)["cohort_changes"] = []any{map[string]any{"aliases": []any{map[string]any{"alias_name": "a"}}}}
		}), ErrMalformed},
		{"cohort without name", with(func(m map[string]any) {
			m["kind"] = "cohort"
			m["payload"] = map[string]any{"cohort_id": "c1", "created_at": "2024-01-02T00:00:00Z"}
		}), ErrMalformed},
		{"cohort with bad created_at", with(func(m map[string]any) {
			m["kind"] = "cohort"
			m["payload"] = map[string]any{"cohort_id": "c1", "name": "n", "created_at": "2024-01-02"}
		}), ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := Decode(tc.input(t))
			if !errors.Is(err, tc.want) {
				t.Fatalf("Decode error = %v, want %v", err, tc.want)
			}
			other := ErrUnknownVersion
			if tc.want == ErrUnknownVersion {
				other = ErrMalformed
			}
			if errors.Is(err, other) {
				t.Fatalf("Decode error %v is both %v and %v", err, tc.want, other)
			}
		})
	}
}

func TestDecodeTolerates(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		edit  func(m map[string]any)
		check func(t *testing.T, e Envelope)
	}{
		{"unknown fields", func(m map[string]any) {
			m["trace_id"] = "abc"
			m["payload"].(map[string]any)["source"] = map[string]any{"x": 1}
		}, func(t *testing.T, e Envelope) {}},
		{"no key_id", func(m map[string]any) { delete(m, "key_id") }, func(t *testing.T, e Envelope) {
			if e.KeyID != "" {
				t.Errorf("KeyID = %q", e.KeyID)
			}
		}},
		{"schema_version not first", func(m map[string]any) {}, func(t *testing.T, e Envelope) {}},
		{"offset times become UTC", func(m map[string]any) {
			m["received_at"] = "2024-11-05T10:30:00.5+01:00"
		}, func(t *testing.T, e Envelope) {
			want := time.Date(2024, 11, 5, 9, 30, 0, 5e8, time.UTC)
			if !e.ReceivedAt.Equal(want) || e.ReceivedAt.Location() != time.UTC {
				t.Errorf("ReceivedAt = %v, want %v in UTC", e.ReceivedAt, want)
			}
		}},
		{"empty change list", func(m map[string]any) {
			m["payload"].(map[string]any)["cohort_changes"] = []any{}
		}, func(t *testing.T, e Envelope) {
			if p := e.Payload.(CohortChangesPayload); len(p.Changes) != 0 {
				t.Errorf("Changes = %v", p.Changes)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m := validV1()
			tc.edit(m)
			// encoding/json sorts map keys, so these records do not start
			// with schema_version: the probe must look past other fields.
			e, err := Decode(mustJSON(t, m))
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if e.Kind() != KindCohortChanges || e.CohortID() != "c1" || e.Workspace != "acme" {
				t.Errorf("decoded %#v", e)
			}
			tc.check(t, e)
		})
	}
}

func validEnvelope() Envelope {
	now := time.Date(2024, 11, 5, 9, 30, 0, 0, time.UTC)
	return Envelope{
		SchemaVersion: CurrentVersion,
		RecordID:      "r1",
		Workspace:     "acme",
		Partner:       "mixpanel",
		ReceivedAt:    now,
		EventTime:     now,
		KeyID:         "k1",
		Payload:       CohortPayload{CohortID: "c1", Name: "n", CreatedAt: now},
	}
}

func TestEncodeRejectsInvalid(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		edit func(e *Envelope)
		want error
	}{
		{"version 0", func(e *Envelope) { e.SchemaVersion = 0 }, ErrUnknownVersion},
		{"version 2", func(e *Envelope) { e.SchemaVersion = 2 }, ErrUnknownVersion},
		{"no record id", func(e *Envelope) { e.RecordID = "" }, ErrMalformed},
		{"no workspace", func(e *Envelope) { e.Workspace = "" }, ErrMalformed},
		{"no partner", func(e *Envelope) { e.Partner = "" }, ErrMalformed},
		{"zero received_at", func(e *Envelope) { e.ReceivedAt = time.Time{} }, ErrMalformed},
		{"event_time past year 9999", func(e *Envelope) {
			e.EventTime = time.Date(9999, 12, 31, 23, 0, 0, 0, time.FixedZone("", -2*3600))
		}, ErrMalformed},
		{"nil payload", func(e *Envelope) { e.Payload = nil }, ErrMalformed},
		{"nil pointer payload", func(e *Envelope) { e.Payload = (*CohortPayload)(nil) }, ErrMalformed},
		{"empty cohort id", func(e *Envelope) { e.Payload = CohortChangesPayload{} }, ErrMalformed},
		{"empty device id", func(e *Envelope) {
			e.Payload = CohortChangesPayload{CohortID: "c", Changes: []Change{{DeviceIDs: []string{"d", ""}}}}
		}, ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := validEnvelope()
			tc.edit(&e)
			if b, err := Encode(e); !errors.Is(err, tc.want) {
				t.Fatalf("Encode = %s, %v; want error %v", b, err, tc.want)
			}
		})
	}
}

func TestEncodeRoundTrip(t *testing.T) {
	t.Parallel()
	paris := time.FixedZone("CET", 3600)
	e := validEnvelope()
	e.ReceivedAt = time.Date(2024, 11, 5, 10, 30, 0, 1, paris)
	e.EventTime = e.ReceivedAt
	e.Payload = &CohortChangesPayload{CohortID: "c/1", Changes: []Change{{UserIDs: []string{"<u&1>"}}}}

	b, err := Encode(e)
	if err != nil {
		t.Fatalf("Encode: %v", err)
	}
	for _, want := range []string{`"received_at":"2024-11-05T09:30:00.000000001Z"`, `"user_ids":["<u&1>"]`, `"kind":"cohort_changes"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("%s does not contain %s", b, want)
		}
	}
	got, err := Decode(b)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if _, ok := got.Payload.(CohortChangesPayload); !ok {
		t.Fatalf("Decode payload is %T, want the value type", got.Payload)
	}
	if !got.ReceivedAt.Equal(e.ReceivedAt) || got.ReceivedAt.Location() != time.UTC {
		t.Errorf("ReceivedAt = %v, want %v in UTC", got.ReceivedAt, e.ReceivedAt)
	}
	if !reflect.DeepEqual(got.Payload, *e.Payload.(*CohortChangesPayload)) {
		t.Errorf("payload = %#v", got.Payload)
	}
	if string(got.PartitionKey()) != "acme/mixpanel/c/1" {
		t.Errorf("PartitionKey = %q", got.PartitionKey())
	}
}

func TestEnvelopeEmbeddedInJSON(t *testing.T) {
	t.Parallel()
	type deadLetter struct {
		Reason   string   `json:"reason"`
		Envelope Envelope `json:"envelope"`
	}
	in := deadLetter{Reason: "test", Envelope: validEnvelope()}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatalf("Marshal: %v", err)
	}
	if !strings.Contains(string(b), `"envelope":{"schema_version":1,`) {
		t.Errorf("embedded envelope not in wire form: %s", b)
	}
	var out deadLetter
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("Unmarshal: %v", err)
	}
	if !reflect.DeepEqual(out, in) {
		t.Errorf("round trip:\n got %#v\nwant %#v", out, in)
	}
}

func TestPartitionKeyAndAccessors(t *testing.T) {
	t.Parallel()
	e := validEnvelope()
	if got := string(e.PartitionKey()); got != "acme/mixpanel/c1" {
		t.Errorf("PartitionKey = %q", got)
	}
	if e.Kind() != KindCohort || e.CohortID() != "c1" {
		t.Errorf("Kind, CohortID = %q, %q", e.Kind(), e.CohortID())
	}
	e.Payload = nil
	if e.Kind() != "" || e.CohortID() != "" || string(e.PartitionKey()) != "acme/mixpanel/" {
		t.Errorf("nil payload: %q %q %q", e.Kind(), e.CohortID(), e.PartitionKey())
	}
	e.Payload = (*CohortChangesPayload)(nil)
	if e.Kind() != "" {
		t.Errorf("nil pointer payload: Kind = %q", e.Kind())
	}
}

func TestNewRecordID(t *testing.T) {
	t.Parallel()
	seen := make(map[string]bool)
	for range 1000 {
		id, err := NewRecordID()
		if err != nil {
			t.Fatal(err)
		}
		if len(id) != 36 || id[14] != '7' || seen[id] {
			t.Fatalf("record id %q is not a fresh UUIDv7", id)
		}
		seen[id] = true
	}
}

// BenchmarkEncode writes a record of 1,000 user ids, the partner API's
// largest, with the canonical writer (what Encode does for it) and with
// encoding/json (what Encode does for any other record).
//
//	go test -run '^$' -bench Encode -benchtime 5000x ./schemas/
func BenchmarkEncode(b *testing.B) {
	ids := make([]string, 1000)
	for i := range ids {
		ids[i] = fmt.Sprintf("user-%08d", i)
	}
	e := validEnvelope()
	p := CohortChangesPayload{CohortID: "1234567", Changes: []Change{{UserIDs: ids}}}
	e.Payload = p
	b.Run("writer=canonical", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, ok := encodeV1Canonical(e, p); !ok {
				b.Fatal("canonical writer refused the record")
			}
		}
	})
	b.Run("writer=encoding_json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := encodeV1(e); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkDecode(b *testing.B) {
	now := time.Date(2024, 11, 5, 9, 30, 0, 0, time.UTC)
	changes := func(n int) Payload {
		ids := make([]string, n)
		for i := range ids {
			ids[i] = fmt.Sprintf("user-%08d", i)
		}
		return CohortChangesPayload{CohortID: "1234567", Changes: []Change{{UserIDs: ids}}}
	}
	cases := []struct {
		name    string
		payload Payload
	}{
		{"cohort", CohortPayload{CohortID: "1234567", Name: "Churn risk", CreatedAt: now}},
		{"changes_10", changes(10)},
		{"changes_100", changes(100)},
		{"changes_1000", changes(1000)},
	}
	for _, c := range cases {
		e := validEnvelope()
		e.Payload = c.payload
		data, err := Encode(e)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Decode(data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// FuzzDecode checks that no input panics Decode, that every error is one of
// the two a dead-letter stage tells apart, and that what decodes re-encodes
// to bytes that are stable from then on.
func FuzzDecode(f *testing.F) {
	paths, _ := filepath.Glob(filepath.Join("testdata", "v*", "*.json"))
	for _, p := range paths {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte(`{"schema_version":2}`))
	f.Add([]byte(`{"payload":{},"schema_version":1}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := Decode(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnknownVersion) {
				t.Fatalf("error %v is neither ErrMalformed nor ErrUnknownVersion", err)
			}
			return
		}
		once, err := Encode(e)
		if err != nil {
			t.Fatalf("decoded envelope does not encode: %v\n%s", err, data)
		}
		e2, err := Decode(once)
		if err != nil {
			t.Fatalf("re-encoded envelope does not decode: %v\n%s", err, once)
		}
		twice, err := Encode(e2)
		if err != nil || !bytes.Equal(once, twice) {
			t.Fatalf("encoding is not stable (%v):\n%s\n%s", err, once, twice)
		}
	})
}

// FuzzDecodeOnePassAgrees checks that the one-pass reading of a version 1
// record gives exactly what the two-pass reading gives, error or envelope.
func FuzzDecodeOnePassAgrees(f *testing.F) {
	paths, _ := filepath.Glob(filepath.Join("testdata", "v1", "*.json"))
	for _, p := range paths {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
			// The same record with its payload named twice, once in capitals.
			f.Add(bytes.Replace(b, []byte(`"payload":{`), []byte(`"PAYLOAD":{"cohort_id":"x"},"payload":{`), 1))
		}
	}
	f.Add([]byte(`{"schema_version":1,"payload":null}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		fast, errFast := decodeV1(data)
		slow, errSlow := decodeV1Raw(data)
		if (errFast == nil) != (errSlow == nil) {
			t.Fatalf("one pass: %v, two passes: %v\n%s", errFast, errSlow, data)
		}
		if !reflect.DeepEqual(fast, slow) {
			t.Fatalf("one pass %+v, two passes %+v\n%s", fast, slow, data)
		}
	})
}

// FuzzDecodeCanonicalAgrees checks that whatever the canonical reading
// accepts, the two-pass reading decodes to the same envelope.
func FuzzDecodeCanonicalAgrees(f *testing.F) {
	paths, _ := filepath.Glob(filepath.Join("testdata", "v1", "*.json"))
	for _, p := range paths {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	at := time.Date(2026, 12, 4, 10, 11, 12, 345678000, time.UTC)
	for _, p := range []CohortChangesPayload{
		{CohortID: "c", Changes: []Change{}},
		{CohortID: "c", Changes: []Change{{UserIDs: []string{"u1", "ü2", "\u2028x"}}, {DeviceIDs: []string{"d"}, ShouldRemove: true}}},
		{CohortID: "c", Changes: []Change{{Aliases: []Alias{{Name: "a@x", Label: "email"}, {Name: "b", Label: "l"}}}}},
	} {
		for _, key := range []string{"", "key-1"} {
			b, err := Encode(Envelope{SchemaVersion: 1, RecordID: "r", Workspace: "ws", Partner: "mixpanel",
				ReceivedAt: at, EventTime: at.Add(-time.Hour), KeyID: key, Payload: p})
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fast, ok := decodeV1Canonical(data)
		if !ok {
			return
		}
		slow, err := decodeV1Raw(data)
		if err != nil {
			if fast.Validate() == nil {
				t.Fatalf("canonical reading accepted a record the two-pass reading refuses (%v):\n%s", err, data)
			}
			return
		}
		if !reflect.DeepEqual(fast, slow) {
			t.Fatalf("canonical %+v, two passes %+v\n%s", fast, slow, data)
		}
	})
}

// TestCanonicalReadsWhatEncodeWrites: every record Encode writes takes the
// canonical path, so the stream's load never falls back.
func TestCanonicalReadsWhatEncodeWrites(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 12, 4, 10, 11, 12, 0, time.UTC)
	for _, p := range []CohortChangesPayload{
		{CohortID: "c", Changes: []Change{{UserIDs: []string{"u1", "u2"}}, {DeviceIDs: []string{"d"}, ShouldRemove: true}}},
		{CohortID: "c", Changes: []Change{{Aliases: []Alias{{Name: "a@x", Label: "email"}}, UserIDs: []string{"x"}, DeviceIDs: []string{"y"}}}},
	} {
		want := Envelope{SchemaVersion: 1, RecordID: "r", Workspace: "ws", Partner: "mixpanel", ReceivedAt: at, EventTime: at, KeyID: "k", Payload: p}
		b, err := Encode(want)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := decodeV1Canonical(b)
		if !ok {
			t.Fatalf("the canonical reading refused what Encode wrote:\n%s", b)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("canonical reading:\n got %+v\nwant %+v", got, want)
		}
	}
}

// FuzzEncodeCanonicalAgrees checks that whenever the canonical writer takes
// a record it writes the bytes encoding/json writes: the golden files and
// every reader rely on one wire form.
func FuzzEncodeCanonicalAgrees(f *testing.F) {
	f.Add("r", "ws", "mixpanel", "", "c", "u1,u2", "d", "a@x|email", true, int64(0))
	f.Add("r", "ws", "mixpanel", "key-1", "c", "", "", "", false, int64(345678000))
	f.Add("r", "ws", "p", "k", "c", "ü,\u2028x", "<&>", "a\"b|l", false, int64(1))
	f.Add("r", "ws", "p", "k", "c", "a\\b,\x7f", "\x01", "", true, int64(-5))
	f.Fuzz(func(t *testing.T, record, ws, partner, key, cohort, users, devices, aliases string, remove bool, nanos int64) {
		at := time.Date(2026, 12, 6, 10, 11, 12, 0, time.UTC).Add(time.Duration(nanos))
		split := func(s string) []string {
			if s == "" {
				return nil
			}
			return strings.Split(s, ",")
		}
		c := Change{UserIDs: split(users), DeviceIDs: split(devices), ShouldRemove: remove}
		for _, a := range split(aliases) {
			name, label, _ := strings.Cut(a, "|")
			c.Aliases = append(c.Aliases, Alias{Name: name, Label: label})
		}
		e := Envelope{SchemaVersion: 1, RecordID: record, Workspace: ws, Partner: partner, ReceivedAt: at, EventTime: at.Add(-time.Hour),
			KeyID: key, Payload: CohortChangesPayload{CohortID: cohort, Changes: []Change{c, {UserIDs: []string{"tail"}}}}}
		if e.Validate() != nil {
			return
		}
		got, ok := encodeV1Canonical(e, e.Payload.(CohortChangesPayload))
		if !ok {
			return
		}
		want, err := encodeV1(e)
		if err != nil {
			t.Fatalf("canonical writer took a record encoding/json refuses: %v", err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("canonical writer:\n%s\nencoding/json:\n%s", got, want)
		}
	})
}

// TestCanonicalWriterTakesPlainRecords: the partner API's usual record takes
// the canonical writer, and one with a string encoding/json may rewrite
// does not.
func TestCanonicalWriterTakesPlainRecords(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 12, 6, 10, 11, 12, 0, time.UTC)
	for ids, want := range map[string]bool{"u1,u2,a@b.c": true, "u1,ü": false, "u1,a\"b": false, "\u2028": false, "u1,a<b": true} {
		p := CohortChangesPayload{CohortID: "c", Changes: []Change{{UserIDs: strings.Split(ids, ",")}}}
		e := Envelope{SchemaVersion: 1, RecordID: "r", Workspace: "ws", Partner: "mixpanel", ReceivedAt: at, EventTime: at, KeyID: "k", Payload: p}
		if _, ok := encodeV1Canonical(e, p); ok != want {
			t.Errorf("ids %q: canonical writer took it %v, want %v", ids, ok, want)
		}
	}
}
