package segments

import (
	"slices"
	"time"
)

// minDynamicSyncs is how many syncs it takes before a cohort counts as
// dynamic: two syncs make one gap, which could be a coincidence.
const minDynamicSyncs = 3

// InferSync tells from the landing times of a cohort's syncs whether it is
// synced dynamically (periodically) or was a one-time sync. Dynamic means at
// least three syncs whose gaps mostly (at least two thirds) lie within ±50%
// of their median; the period is that median. A dynamic cohort is stale when
// nothing arrived for more than twice its period. times need not be sorted;
// equal times count once.
func InferSync(times []time.Time, now time.Time) (mode SyncMode, period time.Duration, stale bool) {
	ts := slices.Clone(times)
	slices.SortFunc(ts, func(a, b time.Time) int { return a.Compare(b) })
	ts = slices.CompactFunc(ts, func(a, b time.Time) bool { return a.Equal(b) })
	if len(ts) < minDynamicSyncs {
		return SyncOneTime, 0, false
	}
	gaps := make([]time.Duration, len(ts)-1)
	for i := 1; i < len(ts); i++ {
		gaps[i-1] = ts[i].Sub(ts[i-1])
	}
	sorted := slices.Clone(gaps)
	slices.Sort(sorted)
	median := sorted[len(sorted)/2]
	if len(sorted)%2 == 0 {
		median = (sorted[len(sorted)/2-1] + sorted[len(sorted)/2]) / 2
	}
	if median <= 0 {
		return SyncOneTime, 0, false
	}
	regular := 0
	for _, g := range gaps {
		if g >= median/2 && g <= median+median/2 {
			regular++
		}
	}
	if 3*regular < 2*len(gaps) {
		return SyncOneTime, 0, false
	}
	return SyncDynamic, median, now.Sub(ts[len(ts)-1]) > 2*median
}
