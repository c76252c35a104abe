package partnerapi

import (
	"encoding/json"
	"fmt"
	"testing"
)

// BenchmarkParseChanges reads a cohort_changes body of 1,000 user ids, the
// API's limit per request: in one pass (scanChanges, what the handler does
// with a compact body) and field by field (decodeObject and parseChanges,
// what it does with any other).
//
//	go test -run '^$' -bench ParseChanges -benchtime 2000x ./connectors/partnerapi/
func BenchmarkParseChanges(b *testing.B) {
	ids := make([]string, maxIDsPerRequest)
	for i := range ids {
		ids[i] = fmt.Sprintf("user-%07d", i)
	}
	body, err := json.Marshal(map[string]any{"partner_api_key": "k", "client_secret": "s", "cohort_id": "c",
		"cohort_changes": []map[string]any{{"user_ids": ids}}})
	if err != nil {
		b.Fatal(err)
	}
	b.Run("path=scan", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		b.ReportAllocs()
		for b.Loop() {
			if p, ok := scanChanges(body); !ok || p.ids != len(ids) {
				b.Fatalf("scanned %d ids: %v", p.ids, ok)
			}
		}
	})
	b.Run("path=fields", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		b.ReportAllocs()
		for b.Loop() {
			f, msg := decodeObject(body)
			if msg != "" {
				b.Fatal(msg)
			}
			if _, n, msg := parseChanges(f); msg != "" || n != len(ids) {
				b.Fatalf("parsed %d ids: %q", n, msg)
			}
		}
	})
}
