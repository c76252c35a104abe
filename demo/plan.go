package demo

import (
	"fmt"
	"math/rand/v2"
	"slices"

	"github.com/cohortsync/cohortsync/stores/identities"
)

// Kinds of demo users. They differ in how a partner refers to them and in
// which of their ids still match (docs/ARCHITECTURE.md, Import rules).
const (
	// KindAnonymous users have device ids only; syncs name them by device id.
	KindAnonymous = "anonymous"
	// KindIdentifiedLater users started anonymous and now have an external
	// id; syncs name them by external id, and their old device ids no
	// longer match (device_id_of_identified_user).
	KindIdentifiedLater = "identified_later"
	// KindAliased users have an external id and an email alias; syncs name
	// them by alias.
	KindAliased = "aliased"
	// KindIdentified users have an external id only.
	KindIdentified = "identified"
)

// Change is one element of cohort_changes, as the partner API takes it.
type Change struct {
	UserIDs      []string           `json:"user_ids,omitempty"`
	DeviceIDs    []string           `json:"device_ids,omitempty"`
	Aliases      []identities.Alias `json:"aliases,omitempty"`
	ShouldRemove bool               `json:"should_remove,omitempty"`
}

// size is the number of ids the change carries.
func (c Change) size() int { return len(c.UserIDs) + len(c.DeviceIDs) + len(c.Aliases) }

// Request is the body of one POST /partners/{partner}/cohorts/users, without
// credentials.
type Request struct {
	CohortID string   `json:"cohort_id"`
	Changes  []Change `json:"cohort_changes"`
}

// Cohort is one demo cohort.
type Cohort struct {
	ID   string
	Name string
}

// Sync is what one dynamic sync sends for one cohort: the changes since the
// previous sync, in requests of at most Config.BatchSize ids. When
// RestartAfter >= 0 the sync fails after that many requests and is restarted
// from the top, as Mixpanel does, so those requests arrive twice.
type Sync struct {
	CohortID     string
	Requests     []Request
	RestartAfter int
	// Adds and Removes are the real membership changes the sync carries;
	// Noise counts the ids that match no one or an identified user's old device.
	Adds, Removes, Noise int
}

// Sent lists the requests in the order they are sent, restart included.
func (s Sync) Sent() []Request {
	if s.RestartAfter < 0 {
		return s.Requests
	}
	return append(slices.Clone(s.Requests[:s.RestartAfter]), s.Requests...)
}

// Plan is everything a demo run sends, derived from its Config alone.
type Plan struct {
	Identities []identities.Record
	// Kinds holds the kind of each record of Identities.
	Kinds   []string
	Cohorts []Cohort
	// Rounds[r][c] is round r+1's sync of Cohorts[c].
	Rounds [][]Sync
	// Members[c] is the membership Cohorts[c] must end with, ascending user ids.
	Members [][]string
}

// ref is how syncs name a user.
type ref struct {
	userIDs, deviceIDs []string
	aliases            []identities.Alias
}

var cohortNames = []string{"Churn risk", "Power users", "Trial ending", "Newsletter readers", "Cart abandoners", "Dormant", "Beta testers", "High value"}

// NewPlan derives the demo's identities, cohorts and syncs from cfg, which
// must be valid. The same Config always gives the same Plan.
func NewPlan(cfg Config) Plan {
	rng := rand.New(rand.NewPCG(cfg.Seed, 0x636f686f727473))
	p := Plan{}
	refs := make([]ref, cfg.Users)
	// identifiedDevices are the old device ids of identified users: sending
	// them is what the rules ignore.
	var identifiedDevices []string
	for i := range cfg.Users {
		r := identities.Record{UserID: fmt.Sprintf("%s-u%05d", cfg.Prefix, i)}
		external := fmt.Sprintf("%s-ext-%05d", cfg.Prefix, i)
		devices := []string{fmt.Sprintf("%s-dev-%05d-a", cfg.Prefix, i)}
		if rng.IntN(3) == 0 {
			devices = append(devices, fmt.Sprintf("%s-dev-%05d-b", cfg.Prefix, i))
		}
		var kind string
		switch x := rng.IntN(100); {
		case x < 35:
			kind = KindAnonymous
			r.DeviceIDs = devices
			refs[i] = ref{deviceIDs: devices[:1]}
		case x < 60:
			kind = KindIdentifiedLater
			r.ExternalID, r.DeviceIDs = external, devices
			refs[i] = ref{userIDs: []string{external}}
			identifiedDevices = append(identifiedDevices, devices...)
		case x < 75:
			kind = KindAliased
			r.ExternalID = external
			r.Aliases = []identities.Alias{{Name: fmt.Sprintf("%s-user%05d@example.com", cfg.Prefix, i), Label: "email"}}
			refs[i] = ref{aliases: r.Aliases}
		default:
			kind = KindIdentified
			r.ExternalID = external
			refs[i] = ref{userIDs: []string{external}}
		}
		p.Identities = append(p.Identities, r)
		p.Kinds = append(p.Kinds, kind)
	}

	for c := range cfg.Cohorts {
		name := fmt.Sprintf("Demo cohort %d", c+1)
		if c < len(cohortNames) {
			name = cohortNames[c]
		}
		p.Cohorts = append(p.Cohorts, Cohort{ID: fmt.Sprintf("%s-%d-c%d", cfg.Prefix, cfg.Seed, c+1), Name: name})
	}

	// The restarted sync is the second round's (the first's with one round).
	restartRound := min(1, cfg.Rounds-1)
	members := make([][]bool, cfg.Cohorts)
	ghost := 0
	for round := range cfg.Rounds {
		var syncs []Sync
		for c := range cfg.Cohorts {
			if members[c] == nil {
				members[c] = make([]bool, cfg.Users)
			}
			// Cohorts differ in size so that their overlaps are interesting.
			share := 0.30 - 0.05*float64(c%4)
			var adds, removes []int
			for u := range cfg.Users {
				in := members[c][u]
				switch {
				case round == 0 && rng.Float64() < share:
					adds = append(adds, u)
				case round > 0 && in && rng.Float64() < 0.15:
					removes = append(removes, u)
				case round > 0 && !in && rng.Float64() < 0.05:
					adds = append(adds, u)
				}
			}
			type op struct {
				ref    ref
				remove bool
			}
			ops := make([]op, 0, len(adds)+len(removes))
			for _, u := range adds {
				members[c][u] = true
				ops = append(ops, op{ref: refs[u]})
			}
			for _, u := range removes {
				members[c][u] = false
				ops = append(ops, op{ref: refs[u], remove: true})
			}
			// Noise: users the partner knows and we do not, and old device
			// ids of users identified since.
			noise := max(1, (len(adds)+len(removes))/25)
			for n := range noise {
				ghost++
				ops = append(ops, op{ref: ref{userIDs: []string{fmt.Sprintf("%s-ghost-%05d", cfg.Prefix, ghost)}}, remove: n%3 == 2})
				if n%2 == 0 {
					ops = append(ops, op{ref: ref{deviceIDs: []string{fmt.Sprintf("%s-ghost-dev-%05d", cfg.Prefix, ghost)}}})
				}
				if len(identifiedDevices) > 0 {
					ops = append(ops, op{ref: ref{deviceIDs: []string{identifiedDevices[rng.IntN(len(identifiedDevices))]}}, remove: n%2 == 1})
				}
			}
			rng.Shuffle(len(ops), func(i, j int) { ops[i], ops[j] = ops[j], ops[i] })

			s := Sync{CohortID: p.Cohorts[c].ID, RestartAfter: -1, Adds: len(adds), Removes: len(removes), Noise: len(ops) - len(adds) - len(removes)}
			for start := 0; start < len(ops); start += cfg.BatchSize {
				add, remove := Change{}, Change{ShouldRemove: true}
				for _, o := range ops[start:min(start+cfg.BatchSize, len(ops))] {
					ch := &add
					if o.remove {
						ch = &remove
					}
					ch.UserIDs = append(ch.UserIDs, o.ref.userIDs...)
					ch.DeviceIDs = append(ch.DeviceIDs, o.ref.deviceIDs...)
					ch.Aliases = append(ch.Aliases, o.ref.aliases...)
				}
				req := Request{CohortID: s.CohortID}
				for _, ch := range []Change{add, remove} {
					if ch.size() > 0 {
						req.Changes = append(req.Changes, ch)
					}
				}
				s.Requests = append(s.Requests, req)
			}
			if round == restartRound {
				s.RestartAfter = (len(s.Requests) + 1) / 2
			}
			syncs = append(syncs, s)
		}
		p.Rounds = append(p.Rounds, syncs)
	}
	for c := range cfg.Cohorts {
		var ids []string
		for u, in := range members[c] {
			if in {
				ids = append(ids, p.Identities[u].UserID)
			}
		}
		p.Members = append(p.Members, ids)
	}
	return p
}
