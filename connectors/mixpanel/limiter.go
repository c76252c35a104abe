package mixpanel

import (
	"context"
	"sync"
	"time"
)

// window is the span the query quota is counted over.
const window = time.Hour

// limiter keeps a client within the Query API's quota: at most perHour
// requests in any rolling hour and at most cap(slots) at once.
//
// The hourly quota is a log of the last perHour send times rather than a
// token bucket: a bucket holding perHour tokens, refilled at perHour per hour,
// lets through up to twice the quota within one rolling hour, which is
// exactly what Mixpanel answers with 429.
type limiter struct {
	perHour int
	slots   chan struct{}
	now     func() time.Time
	sleep   func(context.Context, time.Duration) error

	mu   sync.Mutex
	sent []time.Time // ascending; at most perHour entries
}

func newLimiter(perHour, concurrent int, now func() time.Time, sleep func(context.Context, time.Duration) error) *limiter {
	return &limiter{
		perHour: perHour,
		slots:   make(chan struct{}, concurrent),
		now:     now,
		sleep:   sleep,
		sent:    make([]time.Time, 0, perHour),
	}
}

// waitKind names what a request waited for, as in the metric label.
const (
	waitConcurrency = "concurrency"
	waitHourly      = "hourly"
)

// acquire blocks until one more request may be sent and returns the function
// that frees its concurrency slot. onWait is told about every wait before it
// starts, with its expected length (0 when unknown).
func (l *limiter) acquire(ctx context.Context, onWait func(kind string, d time.Duration)) (release func(), err error) {
	select {
	case l.slots <- struct{}{}:
	default:
		onWait(waitConcurrency, 0)
		select {
		case l.slots <- struct{}{}:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	release = func() { <-l.slots }
	for {
		d := l.reserve()
		if d <= 0 {
			return release, nil
		}
		onWait(waitHourly, d)
		if err := l.sleep(ctx, d); err != nil {
			release()
			return nil, err
		}
	}
}

// reserve records a send now if the rolling hour has room and returns 0;
// otherwise it returns how long until the oldest send leaves the window.
func (l *limiter) reserve() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	cut := 0
	for cut < len(l.sent) && !l.sent[cut].After(now.Add(-window)) {
		cut++
	}
	l.sent = append(l.sent[:0], l.sent[cut:]...)
	if len(l.sent) < l.perHour {
		l.sent = append(l.sent, now)
		return 0
	}
	return l.sent[0].Add(window).Sub(now)
}
