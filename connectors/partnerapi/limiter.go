package partnerapi

import (
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// minSweepSize is the number of workspaces tracked before idle buckets are
// looked for. Below it the map is too small to be worth scanning.
const minSweepSize = 1024

// workspaceLimiter is one token bucket per workspace. Buckets are created on
// first use, and only for authenticated requests, so the map is bounded by
// the workspaces that hold keys rather than by anything a client controls.
type workspaceLimiter struct {
	limit rate.Limit
	burst int

	mu        sync.Mutex
	buckets   map[string]*rate.Limiter
	sweepSize int
}

func newWorkspaceLimiter(perHour, burst int) *workspaceLimiter {
	return &workspaceLimiter{
		limit:     rate.Limit(float64(perHour) / 3600),
		burst:     burst,
		buckets:   make(map[string]*rate.Limiter),
		sweepSize: minSweepSize,
	}
}

// quota is what the X-RateLimit-* headers tell a partner about its
// workspace's bucket, as Braze's API does on every response.
type quota struct {
	limit     int       // requests per hour (X-RateLimit-Limit)
	remaining int       // requests that may be sent at once now (X-RateLimit-Remaining)
	reset     time.Time // when the bucket is full again (X-RateLimit-Reset, unix seconds)
}

// quotaAt reads workspace's bucket at now without taking from it.
func (l *workspaceLimiter) quotaAt(workspace string, now time.Time, perHour int) quota {
	l.mu.Lock()
	b := l.buckets[workspace]
	l.mu.Unlock()
	tokens := float64(l.burst)
	if b != nil {
		tokens = b.TokensAt(now)
	}
	q := quota{limit: perHour, remaining: max(0, int(math.Floor(tokens))), reset: now}
	if missing := float64(l.burst) - tokens; missing > 0 && l.limit > 0 {
		q.reset = now.Add(time.Duration(math.Ceil(missing / float64(l.limit) * float64(time.Second))))
	}
	return q
}

// allow takes one token of workspace at now. When none is left it returns
// false and how long until one will be.
func (l *workspaceLimiter) allow(workspace string, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	b, ok := l.buckets[workspace]
	if !ok {
		if len(l.buckets) >= l.sweepSize {
			l.sweepLocked(now)
		}
		b = rate.NewLimiter(l.limit, l.burst)
		l.buckets[workspace] = b
	}
	l.mu.Unlock()

	// Reserve rather than Allow, to learn the delay for Retry-After; the
	// reservation is cancelled at once since the request is refused, not queued.
	r := b.ReserveN(now, 1)
	if !r.OK() {
		return false, time.Hour
	}
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

// sweepLocked forgets buckets that have refilled completely: a full bucket
// behaves exactly like a new one, so dropping it changes nothing. The next
// sweep waits until the map has doubled, which keeps sweeps amortised O(1).
func (l *workspaceLimiter) sweepLocked(now time.Time) {
	for ws, b := range l.buckets {
		if b.TokensAt(now) >= float64(l.burst) {
			delete(l.buckets, ws)
		}
	}
	l.sweepSize = max(minSweepSize, 2*len(l.buckets))
}

// retryAfterSeconds rounds a delay up to whole seconds, at least one, as the
// Retry-After header counts them.
func retryAfterSeconds(d time.Duration) int64 {
	return max(1, int64(math.Ceil(d.Seconds())))
}
