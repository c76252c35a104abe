package pipeline

import "maps"

// Totals is what a runner made durable, summed over the batches every sink
// acknowledged. Unlike the Prometheus counters, which count work as it
// happens (a batch cut off by the drain deadline and delivered again counts
// twice there), Totals counts each acked batch once, so a caller such as a
// backfill can report its outcome as a value.
type Totals struct {
	// Batches is the number of acked batches.
	Batches int64 `json:"batches"`
	// Messages is the number of source messages in them.
	Messages int64 `json:"messages"`
	// DeadLettered counts messages sent to the dead letter, by reason.
	DeadLettered map[string]int64 `json:"dead_lettered,omitempty"`
	// DroppedRecords counts records a transform (retention, say) dropped,
	// by reason.
	DroppedRecords map[string]int64 `json:"dropped_records,omitempty"`
	// Changes is the number of change rows the resolver emitted: accepted
	// assignments, one billable data point each.
	Changes int64 `json:"changes"`
	// RejectedIDs counts ids the resolver refused, by reason.
	RejectedIDs map[string]int64 `json:"rejected_ids,omitempty"`
}

// add folds another tally into t.
func (t *Totals) add(o Totals) {
	t.Batches += o.Batches
	t.Messages += o.Messages
	t.Changes += o.Changes
	t.DeadLettered = addCounts(t.DeadLettered, o.DeadLettered)
	t.DroppedRecords = addCounts(t.DroppedRecords, o.DroppedRecords)
	t.RejectedIDs = addCounts(t.RejectedIDs, o.RejectedIDs)
}

func addCounts(dst, src map[string]int64) map[string]int64 {
	if len(src) == 0 {
		return dst
	}
	if dst == nil {
		dst = make(map[string]int64, len(src))
	}
	for k, n := range src {
		dst[k] += n
	}
	return dst
}

// clone returns a copy that shares no map with t.
func (t Totals) clone() Totals {
	t.DeadLettered = maps.Clone(t.DeadLettered)
	t.DroppedRecords = maps.Clone(t.DroppedRecords)
	t.RejectedIDs = maps.Clone(t.RejectedIDs)
	return t
}
