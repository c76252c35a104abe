// Package retry holds the waiting that every reconnect and retry loop in
// cohortsync shares: a context-aware sleep and a capped exponential backoff.
package retry

import (
	"context"
	"time"
)

// Sleep waits d, or less if ctx ends first, and returns ctx.Err() in that
// case (nil once d passed). A d of zero or less only checks ctx.
func Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Backoff is a capped exponential backoff: Initial, then doubling up to Max.
type Backoff struct {
	Initial time.Duration `yaml:"initial"`
	Max     time.Duration `yaml:"max"`
}

// Delay is the wait before retry number attempt (1 for the first retry).
func (b Backoff) Delay(attempt int) time.Duration {
	d := b.Initial
	for i := 1; i < attempt && d < b.Max; i++ {
		d *= 2
	}
	return min(d, b.Max)
}

// Next is the wait after a failure that followed a wait of prev (zero for
// the first failure).
func (b Backoff) Next(prev time.Duration) time.Duration {
	if prev <= 0 {
		return b.Initial
	}
	return min(2*prev, b.Max)
}
