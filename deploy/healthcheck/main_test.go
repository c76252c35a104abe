package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestRun(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/readyz" {
			_, _ = w.Write([]byte("ok"))
			return
		}
		http.Error(w, "kafka unreachable: dial tcp", http.StatusServiceUnavailable)
	}))
	t.Cleanup(srv.Close)
	for _, tc := range []struct {
		name    string
		args    []string
		want    int
		wantErr string
	}{
		{"ready", []string{srv.URL + "/readyz"}, 0, ""},
		{"not ready says why", []string{srv.URL + "/other"}, 1, "kafka unreachable"},
		{"nobody listening", []string{"http://127.0.0.1:1/readyz"}, 1, "GET http://127.0.0.1:1/readyz"},
		{"too many args", []string{"a", "b"}, 2, "usage"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var stderr bytes.Buffer
			if got := run(tc.args, &stderr); got != tc.want {
				t.Fatalf("exit %d, want %d (%s)", got, tc.want, stderr.String())
			}
			if !strings.Contains(stderr.String(), tc.wantErr) {
				t.Fatalf("stderr %q does not contain %q", stderr.String(), tc.wantErr)
			}
		})
	}
}
