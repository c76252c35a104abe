package filter_test

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/cohortsync/cohortsync/segments"
	"github.com/cohortsync/cohortsync/segments/filter"
)

func TestCursorRoundTripAndRefusals(t *testing.T) {
	t.Parallel()
	a, err := filter.Parse(json.RawMessage(`{"cohort":{"partner":"mixpanel","id":"a"}}`))
	if err != nil {
		t.Fatal(err)
	}
	b, err := filter.Parse(json.RawMessage(`{"not":{"cohort":{"partner":"mixpanel","id":"a"}}}`))
	if err != nil {
		t.Fatal(err)
	}
	c := filter.EncodeCursor(a, "user-42")
	if got, err := filter.DecodeCursor(a, c); err != nil || got != "user-42" {
		t.Fatalf("DecodeCursor = %q, %v", got, err)
	}
	for name, cur := range map[string]string{"other filter": filter.EncodeCursor(b, "user-42"), "not base64": "%%%", "truncated": c[:4]} {
		if _, err := filter.DecodeCursor(a, cur); !errors.Is(err, segments.ErrBadCursor) {
			t.Errorf("%s: %v, want ErrBadCursor", name, err)
		}
	}
}
