// Package testkit holds the scaffolding that many packages' tests share: a
// bounded context per test and a log buffer that concurrent writers may use.
// Only tests and test-only packages (sinks/sinktest) import it.
package testkit

import (
	"bytes"
	"context"
	"os"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Context returns a context that ends when the test's body ends or after d,
// whichever comes first, so a hung broker or server fails the test instead of
// stalling the whole suite until go test's own timeout.
func Context(t testing.TB, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

// DetachedContext is Context for tests whose cleanups still need the context
// (closing a writer, draining a consumer): it is not cancelled when the body
// returns, only after d or once every cleanup has run.
func DetachedContext(t testing.TB, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// SyncBuffer is a bytes.Buffer that a logger and the test may use at once:
// slog handlers write from whichever goroutine logs, and the race detector
// flags a plain buffer read by the test meanwhile.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p.
func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// ProcessCPU is this process's user and system CPU time so far, for
// benchmarks that report CPU per unit of work; 0 where getrusage fails.
func ProcessCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// EnvCount reads a count from the environment variable name, so that a
// benchmark stays quick by default and its large runs are one variable
// away: def when unset, and a failure when the value is not a number of at
// least least.
func EnvCount(t testing.TB, name string, def, least int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < least {
		t.Fatalf("%s=%q: want a number, at least %d", name, v, least)
	}
	return n
}
