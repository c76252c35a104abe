package adminclient

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

var errGone = errors.New("gone")

func server(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		switch r.URL.Path {
		case "/echo":
			body, _ := io.ReadAll(r.Body)
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"got":` + string(body) + `,"ct":"` + r.Header.Get("Content-Type") + `"}`))
		case "/filter":
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte(`{"error":"unknown cohort","path":"/and/1"}`))
		case "/proxy":
			w.WriteHeader(http.StatusBadGateway)
			_, _ = w.Write([]byte("  upstream down \n"))
		case "/big":
			_, _ = w.Write([]byte(`{"x":"` + strings.Repeat("a", 100) + `"}`))
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestJSONRoundTripAndErrors(t *testing.T) {
	srv := server(t)
	c, err := New(srv.URL+"/", "tok", Options{Component: "things", Classify: func(s int) error {
		if s == http.StatusNotFound {
			return errGone
		}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var out struct {
		Got map[string]int `json:"got"`
		CT  string         `json:"ct"`
	}
	if err := c.JSON(ctx, http.MethodPost, "/echo", map[string]int{"n": 3}, http.StatusOK, &out); err != nil {
		t.Fatal(err)
	}
	if out.Got["n"] != 3 || out.CT != "application/json" {
		t.Fatalf("answer %+v", out)
	}

	err = c.JSON(ctx, http.MethodGet, "/filter", nil, http.StatusOK, nil)
	var e *Error
	if !errors.As(err, &e) || e.StatusCode != 400 || e.Message != "unknown cohort" || e.Path != "/and/1" {
		t.Fatalf("err %#v", err)
	}
	if want := "things api: 400 Bad Request: unknown cohort (at /and/1)"; err.Error() != want {
		t.Errorf("message %q, want %q", err.Error(), want)
	}

	err = c.JSON(ctx, http.MethodGet, "/proxy", nil, http.StatusOK, nil)
	if !errors.As(err, &e) || e.Message != "upstream down" {
		t.Fatalf("raw body error %v", err)
	}
	if err := c.JSON(ctx, http.MethodGet, "/nothing", nil, http.StatusOK, nil); !errors.Is(err, errGone) {
		t.Fatalf("404 = %v, want it to unwrap to the classified error", err)
	}

	bad, _ := New(srv.URL, "wrong", Options{})
	if err := bad.JSON(ctx, http.MethodGet, "/echo", nil, http.StatusOK, nil); !errors.As(err, &e) || e.StatusCode != 401 {
		t.Fatalf("wrong token = %v", err)
	}
}

func TestAnswerIsBounded(t *testing.T) {
	srv := server(t)
	c, err := New(srv.URL, "tok", Options{MaxAnswerBytes: 20})
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]string
	if err := c.JSON(context.Background(), http.MethodGet, "/big", nil, http.StatusOK, &out); err == nil {
		t.Fatal("an answer over MaxAnswerBytes decoded")
	}
}

func TestNewRefusesBadURLAndEmptyToken(t *testing.T) {
	for _, u := range []string{"", "127.0.0.1:8080", "ftp://x", "http://"} {
		if _, err := New(u, "tok", Options{}); err == nil {
			t.Errorf("New(%q) accepted", u)
		}
	}
	if _, err := New("http://127.0.0.1:1", "", Options{}); err == nil {
		t.Error("empty token accepted")
	}
}
