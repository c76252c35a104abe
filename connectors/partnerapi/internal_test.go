package partnerapi

import (
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync/schemas"
)

func TestMaskSecret(t *testing.T) {
	t.Parallel()
	tests := []struct {
		secret, keyID, want string
	}{
		{"csk_0a1b2c3d4e5f6a7b_Zm9vYmFyYmF6cXV4cXV1eHF1dXpxdXV4cXV1eHF1dXo", "0a1b2c3d4e5f6a7b", "csk_0a1b2c3d4e5f6a7b_****"},
		// The random part of a secret is base64url and may start with "_".
		{"csk_0a1b2c3d4e5f6a7b__Zm9vYmFy", "0a1b2c3d4e5f6a7b", "csk_0a1b2c3d4e5f6a7b_****"},
		// A key id with an underscore is kept whole when the credential names it.
		{"csk_key_one_rest", "key_one", "csk_key_one_****"},
		// Without a matching key id the first underscore ends the id.
		{"csk_abc_def_ghi", "", "csk_abc_****"},
		{"csk_abc_def", "other", "csk_abc_****"},
		{"csk__rest-of-it", "", "csk_****"},
		{"csk_noseparator", "", "csk_****"},
		{"sk-live-1234567890", "k1", "sk-l****"},
		{"ünïcödé-secret-value", "", "ünïc****"},
		{"shortone", "", "****"},
		{"abc", "", "****"},
		{"", "", "****"},
	}
	for _, tc := range tests {
		if got := maskSecret(tc.secret, tc.keyID); got != tc.want {
			t.Errorf("maskSecret(%q, %q) = %q, want %q", tc.secret, tc.keyID, got, tc.want)
		}
	}
}

func TestParseISO8601(t *testing.T) {
	t.Parallel()
	utc := func(y int, mo time.Month, d, h, mi, s, ns int) time.Time {
		return time.Date(y, mo, d, h, mi, s, ns, time.UTC)
	}
	tests := []struct {
		in   string
		want time.Time
		ok   bool
	}{
		{"2024-01-02T15:04:05Z", utc(2024, 1, 2, 15, 4, 5, 0), true},
		{"2024-01-02T15:04:05.123456Z", utc(2024, 1, 2, 15, 4, 5, 123456000), true},
		{"2024-01-02T15:04:05-05:00", utc(2024, 1, 2, 20, 4, 5, 0), true},
		{"2024-01-02T15:04:05+0530", utc(2024, 1, 2, 9, 34, 5, 0), true},
		{"2024-01-02T15:04:05", utc(2024, 1, 2, 15, 4, 5, 0), true},
		{"2024-01-02T15:04:05.5", utc(2024, 1, 2, 15, 4, 5, 5e8), true},
		{"2024-01-02", utc(2024, 1, 2, 0, 0, 0, 0), true},
		{"9999-12-31T23:59:59Z", utc(9999, 12, 31, 23, 59, 59, 0), true},
		{"9999-12-31T23:00:00-02:00", time.Time{}, false},
		{"0001-01-01T00:00:00Z", time.Time{}, false},
		{"2024-02-30", time.Time{}, false},
		{"2024-01-02 15:04:05", time.Time{}, false},
		{"20240102", time.Time{}, false},
		{"", time.Time{}, false},
		{"now", time.Time{}, false},
	}
	for _, tc := range tests {
		got, ok := parseISO8601(tc.in)
		if ok != tc.ok || !got.Equal(tc.want) || (ok && got.Location() != time.UTC) {
			t.Errorf("parseISO8601(%q) = %v, %v; want %v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestLimiterForgetsIdleWorkspaces(t *testing.T) {
	t.Parallel()
	l := newWorkspaceLimiter(3600, 1)
	now := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range minSweepSize {
		if ok, _ := l.allow(fmt.Sprintf("ws-%d", i), now); !ok {
			t.Fatalf("first request of ws-%d refused", i)
		}
	}
	// ws-0 is still empty when the sweep runs; every other bucket has refilled.
	later := now.Add(2 * time.Second)
	if ok, _ := l.allow("ws-0", later); !ok {
		t.Fatal("ws-0 refused after refill")
	}
	if ok, _ := l.allow("new", later); !ok {
		t.Fatal("new workspace refused")
	}
	if n := len(l.buckets); n != 2 {
		t.Fatalf("%d buckets after the sweep, want 2 (ws-0 and new)", n)
	}
	if ok, wait := l.allow("ws-0", later); ok || wait != time.Second {
		t.Errorf("ws-0 lost its state in the sweep: allowed %v, wait %v", ok, wait)
	}
}

func TestRetryAfterSeconds(t *testing.T) {
	t.Parallel()
	for d, want := range map[time.Duration]int64{0: 1, time.Millisecond: 1, time.Second: 1, 1001 * time.Millisecond: 2, time.Hour: 3600} {
		if got := retryAfterSeconds(d); got != want {
			t.Errorf("retryAfterSeconds(%v) = %d, want %d", d, got, want)
		}
	}
}

// FuzzParse checks that no body makes the parsers panic, and that whatever
// they accept the schema accepts too: otherwise a valid request would end
// in a 500 instead of landing.
func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		`{"cohort_id":"c","name":"n","created_at":"2024-01-02"}`,
		`{"cohort_id":"c","cohort_changes":[{"user_ids":["u"],"device_ids":null,"aliases":[{"alias_name":"a","alias_label":"l"}],"should_remove":true}]}`,
		`{"cohort_id":" ","cohort_changes":[]}`,
		`{"cohort_id":"c","cohort_changes":[{"user_ids":[null]}]}`,
		`{"cohort_id":"c","name":"\u0000","created_at":"0000-01-01T00:00:00-01:00"}`,
		`null`, `[]`, `{"cohort_changes":{"a":1}}`,
	} {
		f.Add([]byte(seed))
	}
	now := time.Date(2024, 11, 5, 9, 30, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, body []byte) {
		fields, msg := decodeObject(body)
		if msg != "" {
			return
		}
		check := func(p schemas.Payload) {
			env := schemas.Envelope{SchemaVersion: schemas.CurrentVersion, RecordID: "r", Workspace: "w", Partner: "p",
				ReceivedAt: now, EventTime: now, KeyID: "k", Payload: p}
			value, err := schemas.Encode(env)
			if err != nil {
				t.Fatalf("accepted %s but Encode failed: %v", body, err)
			}
			if _, err := schemas.Decode(value); err != nil {
				t.Fatalf("accepted %s but its record does not decode: %v", body, err)
			}
		}
		if p, msg := parseCohort(fields); msg == "" {
			check(p)
		}
		if p, n, msg := parseChanges(fields); msg == "" {
			if n > maxIDsPerRequest {
				t.Fatalf("accepted %d ids", n)
			}
			check(p)
		}
	})
}

// FuzzIDListAgrees: idList's reading of a list gives what encoding/json
// alone gives, whatever form the list takes.
func FuzzIDListAgrees(f *testing.F) {
	for _, seed := range []string{`["a","b"]`, `[ "a" , "b" ]`, `["a",""]`, `[null]`, `["\u00e9"]`, `["é"]`, `[]`, `["a"`, `[1]`} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		if !json.Valid(raw) {
			return // idList only ever gets a value encoding/json has read already
		}
		got, ok := idList(raw)
		var want []string
		wantOK := jsonType(raw) == '[' && json.Unmarshal(raw, &want) == nil && !slices.Contains(want, "")
		if ok != wantOK || (ok && !slices.Equal(got, want)) {
			t.Fatalf("idList(%q) = %q, %v; encoding/json: %q, %v", raw, got, ok, want, wantOK)
		}
	})
}

// scanChangesSeeds are bodies the one-pass reader takes and ones it leaves
// to the general path.
var scanChangesSeeds = []string{
	`{"partner_api_key":"k","client_secret":"s","cohort_id":"c","cohort_changes":[{"user_ids":["a","b"]}]}`,
	`{"client_secret":"s","cohort_changes":[{"user_ids":["a"],"should_remove":true},{"device_ids":["d"],"user_ids":null}],"cohort_id":"c","partner_api_key":"k"}`,
	`{"cohort_id":"c","cohort_changes":[]}`,
	`{"cohort_id":"c","cohort_changes":[{"user_ids":[]}]}`,
	`{"cohort_id":"c","cohort_changes":[{"user_ids":[""]}]}`,
	`{"cohort_id":" ","cohort_changes":[{"user_ids":["a"]}]}`,
	`{"cohort_id":"c","cohort_id":"d","cohort_changes":[{"user_ids":["a"]}]}`,
	`{"cohort_id":"c","cohort_changes":[{"user_ids":["a"],"user_ids":["b"]}]}`,
	`{"cohort_id":"c","cohort_changes":[{"should_remove":false}]}`,
	`{"cohort_id":"c","cohort_changes":[{"user_ids":["a"],"should_remove":nul}]}`,
	`{"cohort_id":"c","cohort_changes":[{"aliases":[{"alias_name":"n","alias_label":"l"}]}]}`,
	`{"cohort_id":"c","cohort_changes":[{"user_ids":["a"]}],"extra":1}`,
	`{"cohort_id":"c", "cohort_changes":[{"user_ids":["a"]}]}`,
	`{"cohort_id":"\u0063","cohort_changes":[{"user_ids":["a"]}]}`,
	`{"partner_api_key":null,"cohort_id":"c","cohort_changes":[{"user_ids":["a"]}]}`,
	`{"cohort_id":"c","cohort_changes":[{"user_ids":["a"]}]}x`,
	`{"cohort_id":"c","cohort_changes":[{"user_ids":["a"]},]}`,
	`{}`, `{`, `null`, `[]`,
}

// FuzzScanChangesAgrees: whatever body the one-pass reader takes, the
// general path (decodeObject, stringField, parseChanges) accepts too, with
// the same credentials, payload and id count.
func FuzzScanChangesAgrees(f *testing.F) {
	for _, seed := range scanChangesSeeds {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		got, ok := scanChanges(body)
		if !ok {
			return
		}
		fields, msg := decodeObject(body)
		if msg != "" {
			t.Fatalf("scanChanges took %q, decodeObject refuses it: %s", body, msg)
		}
		key, _ := stringField(fields, "partner_api_key")
		secret, hasSecret := stringField(fields, "client_secret")
		payload, ids, msg := parseChanges(fields)
		if msg != "" {
			t.Fatalf("scanChanges took %q, parseChanges refuses it: %s", body, msg)
		}
		want := changesBody{apiKey: key, secret: secret, hasSecret: hasSecret, payload: payload, ids: ids}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%q:\n scanChanges %+v\n general     %+v", body, got, want)
		}
	})
}

// The seeds the reader must take, and the ones it must leave to the
// general path (which refuses or reads them with their exact message).
func TestScanChangesTakesOnlyTheCompactForm(t *testing.T) {
	t.Parallel()
	taken := map[int]bool{0: true, 1: true, 2: true, 3: true}
	for i, body := range scanChangesSeeds {
		if _, ok := scanChanges([]byte(body)); ok != taken[i] {
			t.Errorf("scanChanges(%s) = %v, want %v", body, ok, taken[i])
		}
	}
	ids := make([]string, maxIDsPerRequest+1)
	for i := range ids {
		ids[i] = fmt.Sprintf("u%d", i)
	}
	body, _ := json.Marshal(map[string]any{"cohort_id": "c", "cohort_changes": []map[string]any{{"user_ids": ids}}})
	if _, ok := scanChanges(body); ok {
		t.Error("1,001 ids taken; the general path must refuse them with the limit's message")
	}
}
