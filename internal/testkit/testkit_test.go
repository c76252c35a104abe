package testkit

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestSyncBufferConcurrentWriters(t *testing.T) {
	var b SyncBuffer
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 100; j++ {
				_, _ = b.Write([]byte("x"))
				_ = b.String()
			}
		}()
	}
	wg.Wait()
	if got := len(b.String()); got != 800 {
		t.Fatalf("len %d, want 800", got)
	}
	if strings.Trim(b.String(), "x") != "" {
		t.Fatalf("unexpected bytes %q", b.String())
	}
}

func TestContextEndsAfterDeadline(t *testing.T) {
	ctx := Context(t, 10*time.Millisecond)
	<-ctx.Done()
	if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatalf("err %v, want deadline exceeded", ctx.Err())
	}
}

func TestDetachedContextOutlivesTheBody(t *testing.T) {
	var detached, attached context.Context
	t.Run("body", func(t *testing.T) {
		detached = DetachedContext(t, time.Minute)
		attached = Context(t, time.Minute)
		t.Cleanup(func() {
			if detached.Err() != nil {
				t.Errorf("detached context ended before the cleanups: %v", detached.Err())
			}
			if attached.Err() == nil {
				t.Error("attached context still live after the body ended")
			}
		})
	})
	if detached.Err() == nil {
		t.Error("detached context not cancelled once the cleanups ran")
	}
}

func TestEnvCount(t *testing.T) {
	t.Setenv("COHORTSYNC_TEST_ENVCOUNT", "")
	if n := EnvCount(t, "COHORTSYNC_TEST_ENVCOUNT", 7, 1); n != 7 {
		t.Errorf("unset: %d, want the default 7", n)
	}
	t.Setenv("COHORTSYNC_TEST_ENVCOUNT", "250000")
	if n := EnvCount(t, "COHORTSYNC_TEST_ENVCOUNT", 7, 10); n != 250000 {
		t.Errorf("set: %d, want 250000", n)
	}
}
