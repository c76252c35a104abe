package service

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"testing"

	"github.com/cohortsync/cohortsync/internal/httproute"
)

func TestModulesRoutesReadinessAndCloseOrder(t *testing.T) {
	var closed []string
	closer := func(name string, err error) func() error {
		return func() error { closed = append(closed, name); return err }
	}
	var failing error
	errStale := errors.New("stale")
	m := &modules{log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	m.add(module{name: "core", close: closer("core", nil), ready: func(context.Context) error { return nil }})
	m.add(module{name: "api", routes: func(r httproute.Router) {
		r.Handle("GET /x", http.NotFoundHandler())
	}})
	m.add(module{name: "store", close: closer("store", errStale), ready: func(context.Context) error { return failing }})

	rec := httproute.NewRecorder()
	m.register(rec)
	if got := rec.Patterns(); !slices.Equal(got, []string{"GET /x"}) {
		t.Errorf("routes %v", got)
	}
	if err := m.ready(context.Background()); err != nil {
		t.Errorf("ready = %v with every module healthy", err)
	}
	failing = errStale
	if err := m.ready(context.Background()); !errors.Is(err, errStale) {
		t.Errorf("ready = %v, want the failing module's error", err)
	}
	if err := m.close(); !errors.Is(err, errStale) {
		t.Errorf("close = %v, want the failing closer's error", err)
	}
	if !slices.Equal(closed, []string{"store", "core"}) {
		t.Errorf("close order %v, want the reverse of the start order", closed)
	}
}
