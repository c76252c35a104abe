package decode_test

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync/pipeline"
	"github.com/cohortsync/cohortsync/schemas"
	"github.com/cohortsync/cohortsync/transforms/decode"
)

var received = time.Date(2024, 11, 5, 9, 30, 0, 0, time.UTC)

func envelope(p schemas.Payload) schemas.Envelope {
	return schemas.Envelope{
		SchemaVersion: schemas.CurrentVersion,
		RecordID:      "0193a6f0-8a4e-7c1d-9b2a-3f4e5d6c7b8a",
		Workspace:     "acme",
		Partner:       "mixpanel",
		ReceivedAt:    received,
		EventTime:     received,
		KeyID:         "k1",
		Payload:       p,
	}
}

func encode(t testing.TB, e schemas.Envelope) []byte {
	t.Helper()
	b, err := schemas.Encode(e)
	if err != nil {
		t.Fatalf("encode: %v", err)
	}
	return b
}

func TestDecode(t *testing.T) {
	t.Parallel()
	changes := envelope(schemas.CohortChangesPayload{CohortID: "c1", Changes: []schemas.Change{
		{UserIDs: []string{"u1", "u2"}},
		{DeviceIDs: []string{"d1"}, Aliases: []schemas.Alias{{Name: "a", Label: "email"}}, ShouldRemove: true},
	}})
	cohort := envelope(schemas.CohortPayload{CohortID: "c1", Name: "Churn risk", CreatedAt: received})
	valid := string(encode(t, changes))

	cases := []struct {
		name   string
		value  []byte
		want   schemas.Envelope
		reason string
	}{
		{name: "changes", value: encode(t, changes), want: changes},
		{name: "cohort", value: encode(t, cohort), want: cohort},
		{name: "newer version", value: []byte(strings.Replace(valid, `"schema_version":1`, `"schema_version":2`, 1)), reason: decode.ReasonUnknownVersion},
		{name: "not json", value: []byte("\x00\xffgarbage"), reason: decode.ReasonMalformed},
		{name: "empty value", value: nil, reason: decode.ReasonMalformed},
		{name: "no version", value: []byte(`{"record_id":"r"}`), reason: decode.ReasonMalformed},
		{name: "truncated", value: []byte(valid[:len(valid)/2]), reason: decode.ReasonMalformed},
		{name: "unknown kind", value: []byte(strings.Replace(valid, `"kind":"cohort_changes"`, `"kind":"segment"`, 1)), reason: decode.ReasonMalformed},
		{name: "empty workspace", value: []byte(strings.Replace(valid, `"workspace":"acme"`, `"workspace":""`, 1)), reason: decode.ReasonMalformed},
	}
	d := decode.New()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			m := pipeline.Message{Topic: "cohortsync.exports", Partition: 4, Offset: 1234, Key: []byte("acme/mixpanel/c1"), Value: c.value}
			rec, err := d.Decode(m)
			if got := decode.Reason(err); got != c.reason {
				t.Fatalf("Reason(%v) = %q, want %q", err, got, c.reason)
			}
			if c.reason != "" {
				if !strings.Contains(err.Error(), "cohortsync.exports/4@1234") {
					t.Errorf("error %q does not name the message position", err)
				}
				if rec.Offset != 0 || rec.Envelope.RecordID != "" {
					t.Errorf("failed decode returned a record: %+v", rec)
				}
				return
			}
			if rec.Partition != 4 || rec.Offset != 1234 {
				t.Errorf("position = %d@%d, want 4@1234", rec.Partition, rec.Offset)
			}
			if got, want := string(encode(t, rec.Envelope)), string(encode(t, c.want)); got != want {
				t.Errorf("envelope:\n got %s\nwant %s", got, want)
			}
		})
	}
}

func TestReason(t *testing.T) {
	t.Parallel()
	cases := []struct {
		err  error
		want string
	}{
		{nil, ""},
		{fmt.Errorf("outer: %w", fmt.Errorf("x: %w", schemas.ErrUnknownVersion)), decode.ReasonUnknownVersion},
		{fmt.Errorf("outer: %w", schemas.ErrMalformed), decode.ReasonMalformed},
		// Validate wraps both when a record is of an unknown version and also
		// broken; the version is what matters to an operator.
		{errors.Join(schemas.ErrMalformed, schemas.ErrUnknownVersion), decode.ReasonUnknownVersion},
		{errors.New("disk on fire"), pipeline.ReasonUndecodable},
	}
	for _, c := range cases {
		if got := decode.Reason(c.err); got != c.want {
			t.Errorf("Reason(%v) = %q, want %q", c.err, got, c.want)
		}
	}
}

// benchPayload is a Mixpanel-like sync: mostly adds by distinct id, some
// removes, a few anonymous devices and aliases.
func benchPayload(ids int) schemas.CohortChangesPayload {
	uid := func(i int) string { return fmt.Sprintf("%08x-4e2b-4c1a-9d3f-%012x", i*2654435761, i) }
	adds, removes, devices := ids*70/100, ids*20/100, ids*5/100
	aliases := ids - adds - removes - devices
	add := schemas.Change{}
	for i := range adds {
		add.UserIDs = append(add.UserIDs, uid(i))
	}
	for i := range devices {
		add.DeviceIDs = append(add.DeviceIDs, "$device:"+uid(adds+i))
	}
	for i := range aliases {
		add.Aliases = append(add.Aliases, schemas.Alias{Name: fmt.Sprintf("user%d@example.com", i), Label: "email"})
	}
	rm := schemas.Change{ShouldRemove: true}
	for i := range removes {
		rm.UserIDs = append(rm.UserIDs, uid(ids+i))
	}
	changes := []schemas.Change{add}
	if removes > 0 {
		changes = append(changes, rm)
	}
	return schemas.CohortChangesPayload{CohortID: "3141592", Changes: changes}
}

func BenchmarkDecode(b *testing.B) {
	for _, ids := range []int{1, 10, 100, 1000} {
		p := benchPayload(ids)
		value := encode(b, envelope(p))
		m := pipeline.Message{Topic: "cohortsync.exports", Partition: 1, Offset: 99, Value: value}
		b.Run(fmt.Sprintf("ids=%d", ids), func(b *testing.B) {
			d := decode.New()
			b.SetBytes(int64(len(value)))
			b.ReportAllocs()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			for b.Loop() {
				if _, err := d.Decode(m); err != nil {
					b.Fatal(err)
				}
			}
			runtime.ReadMemStats(&after)
			total := float64(b.N) * float64(ids)
			b.ReportMetric(total/b.Elapsed().Seconds(), "ids/s")
			b.ReportMetric(float64(after.Mallocs-before.Mallocs)/total, "allocs/id")
		})
	}
}
