package jsonscan

import (
	"encoding/json"
	"reflect"
	"testing"
)

// FuzzStringsAgrees: whatever Strings reads as a whole document,
// encoding/json reads to the same strings.
func FuzzStringsAgrees(f *testing.F) {
	for _, seed := range []string{`[]`, `["a","b"]`, `["ü","\u00fc"]`, `["a\"b"]`, `["a",]`, `["x" ]`, "[\"\x01\"]"} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s, ok := New(data)
		if !ok {
			return
		}
		var got []string
		if !s.Strings(&got) || !s.End() {
			return
		}
		var want []string
		if err := json.Unmarshal(data, &want); err != nil {
			t.Fatalf("jsonscan read %q from %q, which encoding/json refuses: %v", got, data, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("jsonscan %q, encoding/json %q, from %q", got, want, data)
		}
	})
}

func TestScannerRefusesWhatItCannotSlice(t *testing.T) {
	t.Parallel()
	for _, in := range []string{`["a\nb"]`, `["a\u0041"]`, "[\"a\x1fb\"]", `["a"`, `["a" ,"b"]`, `[null]`} {
		s, ok := New([]byte(in))
		var out []string
		if ok && s.Strings(&out) && s.End() {
			t.Errorf("%q read as %q; want a refusal", in, out)
		}
	}
	if _, ok := New([]byte("[\"\xff\"]")); ok {
		t.Error("invalid UTF-8 accepted")
	}
}
