package demo

import (
	"sort"

	"github.com/cohortsync/cohortsync/pipeline"
)

// CohortOutcome is what one cohort must look like after the demo.
type CohortOutcome struct {
	ID, Name string
	// Members is the final member count.
	Members int
	// Billable counts accepted adds and removes (data points), re-sent ones
	// included; Transitions the ones that changed membership.
	Billable, Transitions int64
	// Requests is how many requests the cohort's syncs send, re-sent ones included.
	Requests int
}

// Expected is the outcome a run must produce on a fresh workspace, computed
// by applying the import rules (docs/ARCHITECTURE.md, Import rules) to the plan here, independently
// of the service.
type Expected struct {
	Cohorts []CohortOutcome
	// IDsSent counts every user id, device id and alias sent.
	IDsSent               int64
	Billable, Transitions int64
	// Rejected counts refused ids by reason (pipeline.Reason*).
	Rejected map[string]int64
	// MembersANotB is the size of "in Cohorts[0] and not in Cohorts[1]";
	// -1 with fewer than two cohorts.
	MembersANotB int
	// Final holds each cohort's final members, ascending.
	Final [][]string
}

// Expect applies the plan to an empty state with the import rules: user_ids
// match external ids, aliases match (alias_name, alias_label), device ids
// match only users without an external id; the rest is refused. Every
// accepted id is one data point; a transition is one that changed membership.
func (p Plan) Expect() Expected {
	type device struct {
		user       string
		identified bool
	}
	external := map[string]string{}
	alias := map[[2]string]string{}
	devices := map[string]device{}
	for _, r := range p.Identities {
		if r.ExternalID != "" {
			external[r.ExternalID] = r.UserID
		}
		for _, a := range r.Aliases {
			alias[[2]string{a.Label, a.Name}] = r.UserID
		}
		for _, d := range r.DeviceIDs {
			devices[d] = device{user: r.UserID, identified: r.Identified()}
		}
	}

	e := Expected{Rejected: map[string]int64{pipeline.ReasonUnknownUser: 0, pipeline.ReasonDeviceIDOfIdentifiedUser: 0}, MembersANotB: -1}
	state := make([]map[string]bool, len(p.Cohorts))
	for c, co := range p.Cohorts {
		state[c] = map[string]bool{}
		e.Cohorts = append(e.Cohorts, CohortOutcome{ID: co.ID, Name: co.Name})
	}
	for _, round := range p.Rounds {
		for c, s := range round {
			out := &e.Cohorts[c]
			apply := func(user string, add bool) {
				out.Billable++
				if state[c][user] != add {
					out.Transitions++
					state[c][user] = add
				}
			}
			for _, req := range s.Sent() {
				out.Requests++
				for _, ch := range req.Changes {
					add := !ch.ShouldRemove
					e.IDsSent += int64(ch.size())
					for _, id := range ch.UserIDs {
						if u, ok := external[id]; ok {
							apply(u, add)
						} else {
							e.Rejected[pipeline.ReasonUnknownUser]++
						}
					}
					for _, id := range ch.DeviceIDs {
						switch d, ok := devices[id]; {
						case !ok:
							e.Rejected[pipeline.ReasonUnknownUser]++
						case d.identified:
							e.Rejected[pipeline.ReasonDeviceIDOfIdentifiedUser]++
						default:
							apply(d.user, add)
						}
					}
					for _, a := range ch.Aliases {
						if u, ok := alias[[2]string{a.Label, a.Name}]; ok {
							apply(u, add)
						} else {
							e.Rejected[pipeline.ReasonUnknownUser]++
						}
					}
				}
			}
		}
	}
	for c := range p.Cohorts {
		var members []string
		for u, in := range state[c] {
			if in {
				members = append(members, u)
			}
		}
		sort.Strings(members)
		e.Final = append(e.Final, members)
		e.Cohorts[c].Members = len(members)
		e.Billable += e.Cohorts[c].Billable
		e.Transitions += e.Cohorts[c].Transitions
	}
	if len(p.Cohorts) >= 2 {
		inB := map[string]bool{}
		for _, u := range e.Final[1] {
			inB[u] = true
		}
		e.MembersANotB = 0
		for _, u := range e.Final[0] {
			if !inB[u] {
				e.MembersANotB++
			}
		}
	}
	return e
}
