package httpjson

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestDecode(t *testing.T) {
	t.Parallel()
	type body struct {
		Name  string `json:"name"`
		Count int    `json:"count"`
	}
	cases := []struct{ in, want string }{
		{`{"name":"a","count":1}`, ""},
		{``, "request body must be a JSON object"},
		{`{"name":`, "malformed JSON: unexpected end of body"},
		{`{"name" "a"}`, "malformed JSON at byte 9"},
		{`[1]`, "request body must be a JSON object"},
		{`{"count":"x"}`, `field "count" must be a int`},
		{`{"nmae":"a"}`, `invalid request body: json: unknown field "nmae"`},
		{`{} {}`, "request body must contain a single JSON object"},
		{`{"name":"` + strings.Repeat("x", 100) + `"}`, "request body larger than 64 bytes"},
	}
	for _, c := range cases {
		r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(c.in))
		var b body
		if got := Decode(httptest.NewRecorder(), r, 64, &b); got != c.want {
			t.Errorf("Decode(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestErrorAndTruncate(t *testing.T) {
	t.Parallel()
	rec := httptest.NewRecorder()
	Error(rec, http.StatusTeapot, "nope")
	if rec.Code != http.StatusTeapot || rec.Body.String() != "{\"error\":\"nope\"}\n" || rec.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("Error wrote %d %q %v", rec.Code, rec.Body.String(), rec.Header())
	}
	if got := Truncate(strings.Repeat("y", 70)); got != strings.Repeat("y", 64)+"..." {
		t.Fatalf("Truncate = %q", got)
	}
}
