package mixpanel

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/cohortsync/cohortsync/schemas"
	"github.com/cohortsync/cohortsync/stores/identities"
	"github.com/cohortsync/cohortsync/stores/keys"
	"github.com/cohortsync/cohortsync/transforms/identity"
)

// MaxIDsPerEnvelope is the most ids a planned record carries: the partner
// API's limit per request, so that a planned record looks like a push.
const MaxIDsPerEnvelope = 1000

// Reasons a plan leaves a profile or a current member out, besides the
// stream's own pipeline.ReasonUnknownUser and
// pipeline.ReasonDeviceIDOfIdentifiedUser (which identity.ResolveID gives).
const (
	// SkipNoIdentity: the profile has neither an external id nor a device id.
	SkipNoIdentity = "no_identity"
	// SkipDuplicate: the profile resolved to a user an earlier profile of
	// the pull already resolved to.
	SkipDuplicate = "duplicate"
	// SkipRemoveUnknownUser: a current member to remove is no longer in the
	// identity directory, so no id can name them.
	SkipRemoveUnknownUser = "remove_unknown_user"
	// SkipRemoveUnaddressable: a current member to remove is in the
	// directory, but none of their ids resolves back to them under the
	// stream's rules (e.g. an id claimed by two users).
	SkipRemoveUnaddressable = "remove_unaddressable"
)

// resolveBatch is how many ids are resolved in one read transaction of the
// directory: large enough to amortise the transaction, small enough that a
// transaction never spans a network wait.
const resolveBatch = 1000

// UserLookups is the identity directory as a plan reads it:
// *identities.Directory, or an *identities.Index on its own.
type UserLookups interface {
	ViewUsers(fn func(identities.UserLookup) error) error
}

// PlanRequest says which cohort to sync and how to stamp what lands.
type PlanRequest struct {
	// Workspace and Partner are those of the landed records; CohortID is
	// both the Mixpanel cohort pulled and the cohort_id of the records.
	Workspace, Partner, CohortID string
	// CreatedAt is the plan's time: every record's event_time and
	// received_at, and part of every record id.
	CreatedAt time.Time
}

// Validate reports every problem of r, naming the fields.
func (r PlanRequest) Validate() error {
	var errs []error
	if !keys.ValidWorkspace(r.Workspace) {
		errs = append(errs, fmt.Errorf("workspace: invalid name %q", snippet([]byte(r.Workspace))))
	}
	if !keys.ValidPartner(r.Partner) {
		errs = append(errs, fmt.Errorf("partner: invalid name %q", snippet([]byte(r.Partner))))
	}
	if strings.TrimSpace(r.CohortID) == "" {
		errs = append(errs, errors.New("cohort_id: is required"))
	}
	if r.CreatedAt.IsZero() {
		errs = append(errs, errors.New("created_at: is required"))
	} else if y := r.CreatedAt.UTC().Year(); y < 1 || y > 9999 {
		errs = append(errs, fmt.Errorf("created_at: year %d is outside 1..9999", y))
	}
	return errors.Join(errs...)
}

// Plan is what a sync would land: the changes that bring the cohort's
// current members to Mixpanel's member list, and the accounting of what was
// left out.
//
// Pulled = Adds + Unchanged + the profile reasons of Skipped (no_identity,
// duplicate, unknown_user, device_id_of_identified_user); every current
// member not in Mixpanel's list is in Removes or under a remove_* reason.
type Plan struct {
	Request PlanRequest
	// Envelopes are cohort_changes records of at most MaxIDsPerEnvelope ids
	// each, adds first, then removes, ids ordered by user id.
	Envelopes []schemas.Envelope
	Pulled    int
	Adds      int
	Removes   int
	Unchanged int
	// Skipped counts profiles and current members not landed, by reason.
	Skipped map[string]int
	// Pull describes the requests made to Mixpanel.
	Pull Stats
}

// Member states of a planner: a user may be a current member, in
// Mixpanel's list, or both.
const (
	stateCurrent uint8 = 1 << iota
	statePulled
)

// planned is one user to land and the id that names them.
type planned struct {
	user string
	id   identity.ID
}

// PlanSync pulls the full member list of req.CohortID, resolves every
// profile to a user of req.Workspace with the stream's own rule
// (identity.ResolveID), diffs the users against current (the cohort's
// current members, by user id) and returns the records that land only the
// adds and the removes.
//
// Adds name the user with the profile's own id (an external id, or the
// device id of an anonymous profile). Removes name the user with an id that
// resolves back to them under the same rule: their external id, else an
// alias, else a device id.
//
// current is read after the pull, which may take hours on a large cohort,
// so that the diff is against the membership closest to when the plan
// lands. Memory is one map entry per user of either list plus the planned
// ids; nothing is held per profile.
func PlanSync(ctx context.Context, c *Client, req PlanRequest, dir UserLookups,
	current func(ctx context.Context, fn func(userID string) error) error) (Plan, error) {
	switch {
	case c == nil:
		return Plan{}, errors.New("mixpanel: plan: no client")
	case dir == nil:
		return Plan{}, errors.New("mixpanel: plan: no identity directory")
	case current == nil:
		return Plan{}, errors.New("mixpanel: plan: no reader of the current members")
	}
	if err := req.Validate(); err != nil {
		return Plan{}, fmt.Errorf("mixpanel: plan: invalid request: %w", err)
	}
	req.CreatedAt = req.CreatedAt.UTC()
	req.CohortID = strings.TrimSpace(req.CohortID)
	p := &planner{
		req:     req,
		dir:     dir,
		state:   map[string]uint8{},
		pending: make([]identity.ID, 0, resolveBatch),
		plan:    Plan{Request: req, Skipped: map[string]int{}},
	}
	started := c.now()
	st, err := c.CohortMembers(ctx, req.CohortID, p.addProfile)
	p.plan.Pull = st
	if err != nil {
		return Plan{}, fmt.Errorf("mixpanel: plan: pull cohort %s: %w", req.CohortID, err)
	}
	if err := p.flush(); err != nil {
		return Plan{}, err
	}
	n := 0
	err = current(ctx, func(userID string) error {
		if n++; n%resolveBatch == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		p.state[userID] |= stateCurrent
		return nil
	})
	if err != nil {
		return Plan{}, fmt.Errorf("mixpanel: plan: read current members of cohort %s: %w", req.CohortID, err)
	}
	if err := p.diff(ctx); err != nil {
		return Plan{}, err
	}
	c.log.Info("mixpanel sync planned", "cohort_id", req.CohortID, "workspace", req.Workspace,
		"pulled", p.plan.Pulled, "adds", p.plan.Adds, "removes", p.plan.Removes, "unchanged", p.plan.Unchanged,
		"skipped", p.plan.Skipped, "records", len(p.plan.Envelopes), "elapsed", c.now().Sub(started))
	return p.plan, nil
}

type planner struct {
	req     PlanRequest
	dir     UserLookups
	state   map[string]uint8
	pending []identity.ID // pulled ids not yet resolved
	adds    []planned     // resolved pulled users, current or not
	plan    Plan
}

// addProfile takes one pulled profile; ids are resolved a batch at a time.
func (p *planner) addProfile(pr Profile) error {
	p.plan.Pulled++
	kind, value, ok := pr.Identity()
	if !ok {
		p.plan.Skipped[SkipNoIdentity]++
		return nil
	}
	p.pending = append(p.pending, identity.ID{Kind: kind, Value: value})
	if len(p.pending) < resolveBatch {
		return nil
	}
	return p.flush()
}

// flush resolves the pending ids in one read transaction.
func (p *planner) flush() error {
	if len(p.pending) == 0 {
		return nil
	}
	err := p.dir.ViewUsers(func(l identities.UserLookup) error {
		for _, id := range p.pending {
			user, reason := identity.ResolveID(l, p.req.Workspace, id)
			switch {
			case reason != "":
				p.plan.Skipped[reason]++
			case p.state[user]&statePulled != 0:
				p.plan.Skipped[SkipDuplicate]++
			default:
				p.state[user] |= statePulled
				p.adds = append(p.adds, planned{user: user, id: id})
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("mixpanel: plan: resolve %d profiles: %w", len(p.pending), err)
	}
	p.pending = p.pending[:0]
	return nil
}

// diff turns the states into the plan's adds and removes.
func (p *planner) diff(ctx context.Context) error {
	// Pulled users already current are unchanged; the rest are adds.
	adds := p.adds[:0]
	for _, a := range p.adds {
		if p.state[a.user]&stateCurrent != 0 {
			p.plan.Unchanged++
			continue
		}
		adds = append(adds, a)
	}
	p.adds = nil
	var gone []string
	for user, s := range p.state {
		if s == stateCurrent {
			gone = append(gone, user)
		}
	}
	p.state = nil // the largest structure; not needed any more
	removes, err := p.addressRemoves(ctx, gone)
	if err != nil {
		return err
	}
	// Sorted by user, so that two pulls returning the same members in
	// another order plan the same records.
	byUser := func(a, b planned) int { return strings.Compare(a.user, b.user) }
	slices.SortFunc(adds, byUser)
	slices.SortFunc(removes, byUser)
	p.plan.Adds, p.plan.Removes = len(adds), len(removes)
	if err := p.appendEnvelopes(adds, false); err != nil {
		return err
	}
	return p.appendEnvelopes(removes, true)
}

// addressRemoves finds, for every user to remove, an id that the stream
// resolves back to that user, a batch of users per read transaction.
func (p *planner) addressRemoves(ctx context.Context, users []string) ([]planned, error) {
	out := make([]planned, 0, len(users))
	for start := 0; start < len(users); start += resolveBatch {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("mixpanel: plan: %w", err)
		}
		batch := users[start:min(start+resolveBatch, len(users))]
		err := p.dir.ViewUsers(func(l identities.UserLookup) error {
			for _, user := range batch {
				rec, found, err := l.LookupUser(p.req.Workspace, user)
				if err != nil {
					return err
				}
				if !found {
					p.plan.Skipped[SkipRemoveUnknownUser]++
					continue
				}
				if id, ok := addressOf(l, p.req.Workspace, rec); ok {
					out = append(out, planned{user: user, id: id})
				} else {
					p.plan.Skipped[SkipRemoveUnaddressable]++
				}
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("mixpanel: plan: address %d members to remove: %w", len(batch), err)
		}
	}
	return out, nil
}

// addressOf picks the id naming rec's user: the external id, else an alias,
// else a device id, the first that the stream's rule resolves to that very
// user. Checking with identity.ResolveID rather than trusting the record
// keeps ids claimed by two users, and device ids of identified users, out.
func addressOf(l identities.Lookup, workspace string, rec identities.Record) (identity.ID, bool) {
	ok := func(id identity.ID) bool {
		user, reason := identity.ResolveID(l, workspace, id)
		return reason == "" && user == rec.UserID
	}
	if rec.ExternalID != "" {
		if id := identity.ExternalID(rec.ExternalID); ok(id) {
			return id, true
		}
	}
	for _, a := range rec.Aliases {
		if id := identity.AliasID(schemas.Alias{Name: a.Name, Label: a.Label}); ok(id) {
			return id, true
		}
	}
	for _, d := range rec.DeviceIDs {
		if id := identity.DeviceID(d); ok(id) {
			return id, true
		}
	}
	return identity.ID{}, false
}

// appendEnvelopes lands ids in records of at most MaxIDsPerEnvelope ids.
func (p *planner) appendEnvelopes(ids []planned, remove bool) error {
	for start := 0; start < len(ids); start += MaxIDsPerEnvelope {
		chunk := ids[start:min(start+MaxIDsPerEnvelope, len(ids))]
		ch := schemas.Change{ShouldRemove: remove}
		for _, pl := range chunk {
			switch pl.id.Kind {
			case schemas.IDKindExternalID:
				ch.UserIDs = append(ch.UserIDs, pl.id.Value)
			case schemas.IDKindDeviceID:
				ch.DeviceIDs = append(ch.DeviceIDs, pl.id.Value)
			case schemas.IDKindAlias:
				ch.Aliases = append(ch.Aliases, pl.id.Alias)
			default:
				return fmt.Errorf("mixpanel: plan: id of unknown kind %q", pl.id.Kind)
			}
		}
		e := schemas.Envelope{
			SchemaVersion: schemas.CurrentVersion,
			RecordID:      recordID(p.req, ch),
			Workspace:     p.req.Workspace,
			Partner:       p.req.Partner,
			ReceivedAt:    p.req.CreatedAt,
			EventTime:     p.req.CreatedAt,
			Payload:       schemas.CohortChangesPayload{CohortID: p.req.CohortID, Changes: []schemas.Change{ch}},
		}
		if err := e.Validate(); err != nil {
			return fmt.Errorf("mixpanel: plan: record %d: %w", len(p.plan.Envelopes), err)
		}
		p.plan.Envelopes = append(p.plan.Envelopes, e)
	}
	return nil
}

// planNamespace is the UUID namespace of planned record ids.
var planNamespace = uuid.MustParse("5c0f3e1a-8f2b-4d55-9a57-6b1f0c2d7e41")

// recordID derives a record's id from everything the record says, so that
// the same plan landed twice is the same records: sinks key data points by
// record id and position, and a redelivery replaces its rows. Every field is
// length-prefixed, so no two different records hash the same bytes.
func recordID(req PlanRequest, ch schemas.Change) string {
	var b []byte
	field := func(s string) {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	field("cohortsync/mixpanel-plan/v1")
	field(req.Workspace)
	field(req.Partner)
	field(req.CohortID)
	field(req.CreatedAt.UTC().Format(time.RFC3339Nano))
	if ch.ShouldRemove {
		field("remove")
	} else {
		field("add")
	}
	for _, list := range [][]string{ch.UserIDs, ch.DeviceIDs} {
		b = binary.AppendUvarint(b, uint64(len(list)))
		for _, id := range list {
			field(id)
		}
	}
	b = binary.AppendUvarint(b, uint64(len(ch.Aliases)))
	for _, a := range ch.Aliases {
		field(a.Label)
		field(a.Name)
	}
	return uuid.NewSHA1(planNamespace, b).String()
}
