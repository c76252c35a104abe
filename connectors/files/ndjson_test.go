package files_test

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/cohortsync/cohortsync/connectors/files"
	"github.com/cohortsync/cohortsync/internal/testkit"
	"github.com/cohortsync/cohortsync/schemas"
)

// secret is a client secret with a body no message may ever show.
const secret = "csk_0a1b2c3d4e5f6a7b_SECRETBODY-never-in-any-error"

func landed(t testing.TB) schemas.Envelope {
	t.Helper()
	return schemas.Envelope{
		SchemaVersion: schemas.CurrentVersion,
		RecordID:      "0190f5a2-7b1c-7def-8abc-0123456789ab",
		Workspace:     "globex",
		Partner:       "amplitude",
		ReceivedAt:    time.Date(2024, 2, 1, 10, 0, 0, 123456789, time.UTC),
		EventTime:     time.Date(2024, 2, 1, 9, 59, 0, 0, time.UTC),
		KeyID:         "k1",
		Payload: schemas.CohortChangesPayload{CohortID: "c9", Changes: []schemas.Change{
			{UserIDs: []string{"u1"}, Aliases: []schemas.Alias{{Name: "a@x.com", Label: "email"}}},
			{DeviceIDs: []string{"d1"}, ShouldRemove: true},
		}},
	}
}

func ndjsonFixture(t testing.TB) []byte {
	t.Helper()
	env, err := schemas.Encode(landed(t))
	if err != nil {
		t.Fatal(err)
	}
	lines := []string{
		/* 1 */ string(env),
		/* 2 */ "   ",
		/* 3 */ `{"partner_api_key":"pak","client_secret":"` + secret + `","cohort_id":"c1","cohort_changes":[{"user_ids":["u1","u2"]},{"device_ids":["d1"],"should_remove":true}],"event_time":"2024-03-01T12:00:00+01:00"}`,
		/* 4 */ `{"client_secret":"` + secret + `","cohort_id":"c1","name":"Churn risk","created_at":"2024-01-02T03:04:05Z"}`,
		/* 5 */ `{"client_secret":"` + secret + `","cohort_id":"c1","cohort_changes":"` + secret + `"}`,
		/* 6 */ `not json ` + secret,
		/* 7 */ `{"cohort_id":"c1","cohort_changes":[{"user_ids":["u1"]}],"event_time":"yesterday"}`,
		/* 8 */ `{"schema_version":1,"record_id":"r"}`,
		/* 9 */ `{"partner_api_key":"pak","client_secret":"` + secret + `","cohort_id":"c1","cohort_changes":[{"user_ids":["u1","u2"]},{"device_ids":["d1"],"should_remove":true}],"event_time":"2024-03-01T12:00:00+01:00"}`,
		/* 10 */ `{"cohort_id":"c2","cohort_changes":[{"aliases":[{"alias_name":"n","alias_label":"l"}]}]}` + "\r",
		/* 11 */ `{"hello":"world"}`,
		/* 12 */ `{"schema_version":2}`,
	}
	// No newline after the last line: the end of the file ends it.
	return []byte(strings.Join(lines, "\n"))
}

func TestNDJSON(t *testing.T) {
	t.Parallel()
	opts := files.Options{Workspace: "acme", Partner: "mixpanel"}
	changesAt := time.Date(2024, 3, 1, 11, 0, 0, 0, time.UTC)
	wantPayloads := map[int64]schemas.Payload{
		3: schemas.CohortChangesPayload{CohortID: "c1", Changes: []schemas.Change{
			{UserIDs: []string{"u1", "u2"}}, {DeviceIDs: []string{"d1"}, ShouldRemove: true},
		}},
		4: schemas.CohortPayload{CohortID: "c1", Name: "Churn risk", CreatedAt: time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)},
		10: schemas.CohortChangesPayload{CohortID: "c2", Changes: []schemas.Change{
			{Aliases: []schemas.Alias{{Name: "n", Label: "l"}}},
		}},
	}
	wantTimes := map[int64]time.Time{3: changesAt, 4: mtime, 9: changesAt, 10: mtime}
	wantBad := map[int64]string{
		5:  "cohort_changes must be an array of objects each with key user_ids and/or device_ids mapping to an array of strings, or an aliases object",
		6:  "not a JSON object",
		7:  "event_time must be an RFC 3339 string",
		8:  "landing envelope",
		11: "neither a landing envelope",
		12: "unknown schema version",
	}

	var first []files.Item
	for _, c := range compressions {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			path := writeFile(t, t.TempDir(), "export.ndjson"+c.suffix, c.name, ndjsonFixture(t))
			rs := readAll(t, path, opts)
			var lines []int64
			for _, r := range rs {
				if r.badLine != 0 {
					lines = append(lines, -r.badLine)
					want, ok := wantBad[r.badLine]
					if !ok || !strings.Contains(r.badMsg, want) {
						t.Errorf("bad line %d: %q, want it to contain %q", r.badLine, r.badMsg, want)
					}
					if !strings.HasPrefix(r.badMsg, path+":"+strconv.FormatInt(r.badLine, 10)+": ") {
						t.Errorf("bad line message %q does not start with path:line", r.badMsg)
					}
					if strings.Contains(r.badMsg, "SECRETBODY") {
						t.Errorf("bad line message echoes the client secret: %q", r.badMsg)
					}
					continue
				}
				lines = append(lines, r.item.Line)
			}
			// Items and bad lines come in file order; negative = bad.
			if want := []int64{1, 3, 4, -5, -6, -7, -8, 9, 10, -11, -12}; !reflect.DeepEqual(lines, want) {
				t.Fatalf("lines = %v, want %v", lines, want)
			}
			items := itemsOf(rs)
			if !reflect.DeepEqual(items[0].Envelope, landed(t)) {
				t.Errorf("envelope line kept as is: got %+v, want %+v", items[0].Envelope, landed(t))
			}
			ids := map[string]int64{}
			for _, it := range items[1:] {
				e := it.Envelope
				if e.Workspace != "acme" || e.Partner != "mixpanel" || e.KeyID != "" {
					t.Errorf("line %d: workspace/partner/key %q/%q/%q", it.Line, e.Workspace, e.Partner, e.KeyID)
				}
				if want := wantTimes[it.Line]; !e.EventTime.Equal(want) || !e.ReceivedAt.Equal(want) {
					t.Errorf("line %d: times %v / %v, want both %v", it.Line, e.EventTime, e.ReceivedAt, want)
				}
				if want, ok := wantPayloads[it.Line]; ok && !reflect.DeepEqual(e.Payload, want) {
					t.Errorf("line %d: payload %+v, want %+v", it.Line, e.Payload, want)
				}
				u, err := uuid.Parse(e.RecordID)
				if err != nil || u.Version() != 8 || u.Variant() != uuid.RFC4122 {
					t.Errorf("line %d: record id %q is not a UUIDv8 (%v)", it.Line, e.RecordID, err)
				}
				if prev, dup := ids[e.RecordID]; dup {
					t.Errorf("lines %d and %d share record id %s", prev, it.Line, e.RecordID)
				}
				ids[e.RecordID] = it.Line
			}
			// Lines 3 and 9 are the same body: a re-sent sync is new data.
			if !reflect.DeepEqual(items[1].Envelope.Payload, items[3].Envelope.Payload) {
				t.Error("lines 3 and 9 should have the same payload")
			}
			if c.name == "plain" {
				first = items
			}
		})
	}
	// Parent cleanups run once every parallel subtest above is done.
	t.Cleanup(func() {
		dir := t.TempDir()
		a := itemsOf(readAll(t, writeFile(t, dir, "a.jsonl.zst", "zstd", ndjsonFixture(t)), opts))
		b := itemsOf(readAll(t, writeFile(t, dir, "other-name.json", "plain", ndjsonFixture(t)), opts))
		if !reflect.DeepEqual(a, b) {
			t.Error("the same content under another name and compression gave other envelopes")
		}
		if first == nil || !reflect.DeepEqual(a, first) {
			t.Error("a second read gave other envelopes")
		}
		other := itemsOf(readAll(t, writeFile(t, dir, "c.ndjson", "plain", ndjsonFixture(t)), files.Options{Workspace: "initech", Partner: "mixpanel"}))
		if other[1].Envelope.RecordID == a[1].Envelope.RecordID {
			t.Error("another workspace gave the same record id")
		}
	})
}

func TestNDJSONBodiesNeedAWorkspace(t *testing.T) {
	t.Parallel()
	path := writeFile(t, t.TempDir(), "x.ndjson", "plain", ndjsonFixture(t))
	r, err := files.Open(path, files.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ctx := testkit.DetachedContext(t, 60*time.Second)
	if it, err := r.Next(ctx); err != nil || it.Line != 1 {
		t.Fatalf("envelope line: %v, %v", it.Line, err)
	}
	_, err = r.Next(ctx)
	if !errors.Is(err, files.ErrNoWorkspace) || files.IsLineError(err) {
		t.Fatalf("body without workspace: %v, want a fatal ErrNoWorkspace", err)
	}
	if !strings.Contains(err.Error(), path+":3") {
		t.Errorf("error %q does not name the line", err)
	}
	if _, err2 := r.Next(ctx); !errors.Is(err2, files.ErrNoWorkspace) {
		t.Errorf("Next after a fatal error = %v, want the same error", err2)
	}
}

func TestLongLinesAreSkipped(t *testing.T) {
	t.Parallel()
	body := `{"cohort_id":"c","cohort_changes":[{"user_ids":["u"]}]}`
	long := `{"cohort_id":"c","cohort_changes":[{"user_ids":["` + strings.Repeat("x", 5000) + `"]}]}`
	data := strings.Join([]string{body, long, body, long}, "\n") + "\n"
	for _, c := range compressions {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			path := writeFile(t, t.TempDir(), "long.ndjson"+c.suffix, c.name, []byte(data))
			rs := readAll(t, path, files.Options{Workspace: "w", Partner: "p", MaxLineBytes: 1000})
			if len(rs) != 4 || rs[0].item.Line != 1 || rs[1].badLine != 2 || rs[2].item.Line != 3 || rs[3].badLine != 4 {
				t.Fatalf("results = %+v", rs)
			}
			if !strings.Contains(rs[1].badMsg, "line too long") {
				t.Errorf("message %q", rs[1].badMsg)
			}
		})
	}
}

func TestOpenErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tests := []struct {
		name string
		data string
		opts files.Options
		want string
	}{
		{"x.txt", "", files.Options{}, "unknown format"},
		{"x.csv", "", files.Options{}, "empty file"},
		{"y.csv", "a,b,c\n", files.Options{}, "header must be exactly"},
		{"z.csv", files.CSVHeader + "\n", files.Options{MaxIDsPerRecord: 70000}, "max_ids_per_record"},
		{"bad.parquet", "not parquet at all", files.Options{}, ""},
	}
	for _, tc := range tests {
		path := filepath.Join(dir, tc.name)
		if err := os.WriteFile(path, []byte(tc.data), 0o600); err != nil {
			t.Fatal(err)
		}
		r, err := files.Open(path, tc.opts)
		if tc.want == "" {
			// Parquet is opened lazily: the first Next reports it.
			if err != nil {
				t.Fatalf("%s: Open: %v", tc.name, err)
			}
			_, err = r.Next(testkit.DetachedContext(t, 60*time.Second))
			_ = r.Close()
			if err == nil || files.IsLineError(err) || !strings.Contains(err.Error(), "not a readable Parquet file") {
				t.Errorf("%s: Next = %v, want a fatal error", tc.name, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Open = %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
	if _, err := files.Open(filepath.Join(dir, "missing.ndjson"), files.Options{}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}
