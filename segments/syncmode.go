package segments

import (
	"slices"
	"time"
)

// minDynamicSyncs is how many syncs it takes before a cohort counts as
// dynamic: two syncs make one gap, which could be a coincidence.
const minDynamicSyncs = 3

// SyncBurst is the longest pause between two landings of one sync. A sync of
// many changes arrives as many requests (at most 1,000 ids each) over
// seconds or minutes; landings closer than this to the previous one belong
// to the same sync, which starts at its first landing.
const SyncBurst = time.Minute

// InferSync tells from the landing times of a cohort's syncs whether it is
// synced dynamically (periodically) or was a one-time sync. Dynamic means at
// least three syncs whose gaps mostly (at least two thirds) lie within ±50%
// of their median; the period is that median. A dynamic cohort is stale when
// nothing arrived for more than twice its period. times are the landing
// times of the cohort's change records, in any order; they are first grouped
// into syncs (see SyncBurst).
func InferSync(times []time.Time, now time.Time) (mode SyncMode, period time.Duration, stale bool) {
	ts := slices.Clone(times)
	slices.SortFunc(ts, func(a, b time.Time) int { return a.Compare(b) })
	var last time.Time
	if len(ts) > 0 {
		last = ts[len(ts)-1]
	}
	ts = syncStarts(ts)
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
	return SyncDynamic, median, now.Sub(last) > 2*median
}

// syncStarts returns the first landing of each sync of sorted times.
func syncStarts(sorted []time.Time) []time.Time {
	var starts []time.Time
	for i, t := range sorted {
		if i == 0 || t.Sub(sorted[i-1]) > SyncBurst {
			starts = append(starts, t)
		}
	}
	return starts
}
