package chtest

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
)

// recorder is a testing.TB whose Skip and Fatal end only the goroutine
// running the helper, and record what they were told.
type recorder struct {
	testing.TB
	skipped, failed string
}

func (r *recorder) Helper() {}
func (r *recorder) Skip(args ...any) {
	r.skipped = fmt.Sprint(args...)
	runtime.Goexit()
}
func (r *recorder) Fatalf(format string, args ...any) {
	r.failed = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func runHelper(t *testing.T, fn func(testing.TB)) *recorder {
	r := &recorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(r)
	}()
	<-done
	return r
}

// TestAddrWithoutServer: locally a missing server skips with the way to
// start one; under CI=true it fails, because CI must run the integration tests.
func TestAddrWithoutServer(t *testing.T) {
	t.Setenv(EnvAddr, "127.0.0.1:1")

	t.Setenv("CI", "")
	r := runHelper(t, func(tb testing.TB) { Addr(tb) })
	if r.failed != "" || !strings.Contains(r.skipped, "ClickHouse not running: start one with `make clickhouse-up`") {
		t.Errorf("without CI: skipped %q, failed %q; want a skip saying how to start a server", r.skipped, r.failed)
	}

	t.Setenv("CI", "true")
	r = runHelper(t, func(tb testing.TB) { Addr(tb) })
	if r.skipped != "" || !strings.Contains(r.failed, "CI=true") {
		t.Errorf("with CI=true: skipped %q, failed %q; want a failure", r.skipped, r.failed)
	}
}

func TestNewDatabase(t *testing.T) {
	addr, name := NewDatabase(t)
	if !strings.HasPrefix(name, "cstest_testnewdatabase_") {
		t.Errorf("name = %q", name)
	}
	conn := Open(t, addr)
	var n uint64
	if err := conn.QueryRow(t.Context(), "SELECT count() FROM system.databases WHERE name = ?", name).Scan(&n); err != nil || n != 1 {
		t.Fatalf("database %s: count %d, err %v", name, n, err)
	}
	t.Run("another test gets another database", func(t *testing.T) {
		_, other := NewDatabase(t)
		if other == name {
			t.Errorf("same name %q twice", name)
		}
	})
}
