package pipeline

import "sort"

// Rejection reasons. Each one names a rule of the import (docs/ARCHITECTURE.md, Import rules).
const (
	ReasonRetention                = "retention"
	ReasonUnknownUser              = "unknown_user"
	ReasonDeviceIDOfIdentifiedUser = "device_id_of_identified_user"
	ReasonUndecodable              = "undecodable"
)

// RejectionKey says where rejected ids belonged and why they were refused.
// RecordID makes counts idempotent: a sink keyed by it replaces on replay.
type RejectionKey struct {
	Workspace string
	Partner   string
	CohortID  string
	RecordID  string
	Reason    string
}

// Rejections counts refused ids (and whole records) per key.
type Rejections struct {
	ids     map[RejectionKey]int64
	records map[RejectionKey]int64
}

// NewRejections returns an empty collector.
func NewRejections() *Rejections {
	return &Rejections{ids: map[RejectionKey]int64{}, records: map[RejectionKey]int64{}}
}

// AddIDs counts n refused ids under k.
func (r *Rejections) AddIDs(k RejectionKey, n int64) {
	if n > 0 {
		r.ids[k] += n
	}
}

// AddRecord counts one whole record refused under k (its ids go through AddIDs).
func (r *Rejections) AddRecord(k RejectionKey) { r.records[k]++ }

// Rejection is one row of the collector.
type Rejection struct {
	RejectionKey
	IDs     int64
	Records int64
}

// Rows lists the counts in a stable order.
func (r *Rejections) Rows() []Rejection {
	merged := map[RejectionKey]*Rejection{}
	for k, n := range r.ids {
		merged[k] = &Rejection{RejectionKey: k, IDs: n}
	}
	for k, n := range r.records {
		if m, ok := merged[k]; ok {
			m.Records = n
		} else {
			merged[k] = &Rejection{RejectionKey: k, Records: n}
		}
	}
	out := make([]Rejection, 0, len(merged))
	for _, m := range merged {
		out = append(out, *m)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i].RejectionKey, out[j].RejectionKey
		if a.Workspace != b.Workspace {
			return a.Workspace < b.Workspace
		}
		if a.Partner != b.Partner {
			return a.Partner < b.Partner
		}
		if a.CohortID != b.CohortID {
			return a.CohortID < b.CohortID
		}
		if a.RecordID != b.RecordID {
			return a.RecordID < b.RecordID
		}
		return a.Reason < b.Reason
	})
	return out
}

// TotalIDs is the number of refused ids, over every key.
func (r *Rejections) TotalIDs() int64 {
	var n int64
	for _, v := range r.ids {
		n += v
	}
	return n
}
