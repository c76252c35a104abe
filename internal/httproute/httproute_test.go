package httproute

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
)

func TestRecorderRecordsAndServes(t *testing.T) {
	t.Parallel()
	r := NewRecorder()
	var _ Router = r
	var _ Router = http.NewServeMux()
	r.HandleFunc("GET /b", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusTeapot) })
	r.Handle("POST /a/{x}", http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		_, _ = w.Write([]byte(req.PathValue("x")))
	}))
	if got, want := r.Patterns(), []string{"GET /b", "POST /a/{x}"}; !slices.Equal(got, want) {
		t.Fatalf("Patterns() = %v, want %v", got, want)
	}
	rec := httptest.NewRecorder()
	r.Mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/b", nil))
	if rec.Code != http.StatusTeapot {
		t.Fatalf("GET /b = %d, want 418", rec.Code)
	}
	rec = httptest.NewRecorder()
	r.Mux.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/a/zz", nil))
	if rec.Body.String() != "zz" {
		t.Fatalf("POST /a/zz body = %q", rec.Body.String())
	}
}
