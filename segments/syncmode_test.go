package segments

import (
	"testing"
	"time"
)

func TestInferSync(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	every := func(n int, d time.Duration, jitter ...time.Duration) []time.Time {
		out := make([]time.Time, n)
		for i := range out {
			out[i] = t0.Add(time.Duration(i) * d)
			if i < len(jitter) {
				out[i] = out[i].Add(jitter[i])
			}
		}
		return out
	}
	last := func(ts []time.Time) time.Time { return ts[len(ts)-1] }
	// burst makes each sync ten requests landing 20 seconds apart.
	burst := func(starts []time.Time) []time.Time {
		var out []time.Time
		for _, s := range starts {
			for i := range 10 {
				out = append(out, s.Add(time.Duration(i)*20*time.Second))
			}
		}
		return out
	}
	q := 15 * time.Minute
	cases := []struct {
		name   string
		times  []time.Time
		now    time.Time
		mode   SyncMode
		period time.Duration
		stale  bool
	}{
		{"never synced", nil, t0, SyncOneTime, 0, false},
		{"one sync", every(1, q), t0.Add(48 * time.Hour), SyncOneTime, 0, false},
		{"two syncs are not a period yet", every(2, q), t0.Add(q), SyncOneTime, 0, false},
		{"every 15 minutes, fresh", every(8, q), last(every(8, q)).Add(20 * time.Minute), SyncDynamic, q, false},
		{"every 15 minutes with jitter", every(6, q, 0, time.Minute, -time.Minute, 2*time.Minute), last(every(6, q)).Add(time.Minute), SyncDynamic, q, false},
		{"every 15 minutes, silent for 31 minutes", every(8, q), last(every(8, q)).Add(31 * time.Minute), SyncDynamic, q, true},
		{"irregular", []time.Time{t0, t0.Add(time.Minute), t0.Add(5 * time.Hour), t0.Add(5*time.Hour + 2*time.Minute), t0.Add(40 * time.Hour)}, t0.Add(41 * time.Hour), SyncOneTime, 0, false},
		{"duplicates count once", append(every(2, q), t0, t0.Add(q)), t0.Add(time.Hour), SyncOneTime, 0, false},
		{"one sync of many requests", every(50, 2*time.Second), t0.Add(time.Hour), SyncOneTime, 0, false},
		{"bursts every 15 minutes", burst(every(4, q)), last(every(4, q)).Add(10 * time.Minute), SyncDynamic, q, false},
		{"bursts every 15 minutes, silent for 31 minutes after the last landing", burst(every(4, q)), last(every(4, q)).Add(34 * time.Minute), SyncDynamic, q, true},
	}
	for _, c := range cases {
		mode, period, stale := InferSync(c.times, c.now)
		if mode != c.mode || period != c.period || stale != c.stale {
			t.Errorf("%s: got %s %s stale=%v, want %s %s stale=%v", c.name, mode, period, stale, c.mode, c.period, c.stale)
		}
	}
}
