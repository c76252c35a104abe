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
	var coreDown error
	m.add(module{name: "core", ingest: true, close: closer("core", nil), ready: func(context.Context) error { return coreDown }})
	m.add(module{name: "api", routes: func(r httproute.Router) {
		r.Handle("GET /x", http.NotFoundHandler())
	}})
	m.add(module{name: "store", close: closer("store", errStale), ready: func(context.Context) error { return failing }})

	rec := httproute.NewRecorder()
	m.register(rec)
	if got := rec.Patterns(); !slices.Equal(got, []string{"GET /x"}) {
		t.Errorf("routes %v", got)
	}
	ctx := context.Background()
	if got := append(m.failing(ctx, true), m.failing(ctx, false)...); len(got) != 0 {
		t.Errorf("failing %v with every module healthy", got)
	}
	// A failing store is pipeline health, not readiness.
	failing = errStale
	if got := m.failing(ctx, true); len(got) != 0 {
		t.Errorf("ingest failing %v, want none: only the store fails", got)
	}
	if got := m.failing(ctx, false); !slices.Equal(got, []string{"store"}) {
		t.Errorf("pipeline failing %v, want [store]", got)
	}
	coreDown = errors.New("kafka unreachable at 10.0.0.1:9092")
	if got := m.failing(ctx, true); !slices.Equal(got, []string{"core"}) {
		t.Errorf("ingest failing %v, want [core]", got)
	}
	if err := m.close(); !errors.Is(err, errStale) {
		t.Errorf("close = %v, want the failing closer's error", err)
	}
	if !slices.Equal(closed, []string{"store", "core"}) {
		t.Errorf("close order %v, want the reverse of the start order", closed)
	}
}
