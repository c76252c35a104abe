package state

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// ReadTx is one read transaction: everything read through it is one
// consistent state of the store. Byte slices it hands out point into the
// file's memory map and are valid until the transaction ends; copy what must
// outlive it. A long ReadTx holds back the growth of the file, so readers
// that derive something from the store do it inside and use it outside.
type ReadTx struct {
	ctx context.Context
	tx  *bolt.Tx
}

// View runs fn in one read transaction.
func (s *Store) View(ctx context.Context, fn func(*ReadTx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := s.db.View(func(tx *bolt.Tx) error { return fn(&ReadTx{ctx: ctx, tx: tx}) }); err != nil {
		return fmt.Errorf("state: view: %w", err)
	}
	return nil
}

func readSeq(b *bolt.Bucket) uint64 {
	if b == nil {
		return 0
	}
	v := b.Get(keySeq)
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

// WorkspaceSeq is the change sequence of a workspace: it grows whenever a
// membership change is applied to one of its cohorts or cohort metadata is
// stored, and 0 means nothing was. Equal sequences mean equal state.
func (t *ReadTx) WorkspaceSeq(ws string) uint64 { return readSeq(workspaceRO(t.tx, ws)) }

// CohortSeq is the change sequence of a cohort: it grows whenever a change
// is applied to its membership (metadata does not count), 0 if none was.
func (t *ReadTx) CohortSeq(ws, partner, cohort string) uint64 {
	return readSeq(cohortBucketRO(t.tx, ws, partner, cohort))
}

// HasCohort tells whether the workspace has the cohort: its metadata or one
// of its changes was stored.
func (t *ReadTx) HasCohort(ws, partner, cohort string) bool {
	return cohortBucketRO(t.tx, ws, partner, cohort) != nil
}

// ForEachCohort calls fn for every cohort of the workspace in (partner,
// cohort) order, with its change sequence.
func (t *ReadTx) ForEachCohort(ws string, fn func(c Cohort, seq uint64) error) error {
	return forEachCohort(t.tx, ws, func(partner, cohort string, cb *bolt.Bucket) error {
		if err := t.ctx.Err(); err != nil {
			return err
		}
		info, err := readInfo(cb)
		if err != nil {
			return fmt.Errorf("cohort %s/%s: %w", partner, cohort, err)
		}
		return fn(Cohort{
			Partner: partner, CohortID: cohort, Name: info.Name,
			CreatedAt: info.CreatedAt, ReceivedAt: info.ReceivedAt,
			LastSync: info.LastSync, Members: info.Members,
		}, readSeq(cb))
	})
}

// Member returns a user's current state in a cohort; ok is false if no
// change of that user in that cohort was stored.
func (t *ReadTx) Member(ws, partner, cohort, user string) (st MemberState, ok bool, err error) {
	cb := cohortBucketRO(t.tx, ws, partner, cohort)
	if cb == nil || user == "" {
		return MemberState{}, false, nil
	}
	v := cb.Bucket(bucketMembers).Get([]byte(user))
	if v == nil {
		return MemberState{}, false, nil
	}
	m, err := readMember(v)
	if err != nil {
		return MemberState{}, false, err
	}
	return MemberState{IsMember: m.isMember, Version: m.version, EventTime: time.UnixMicro(m.eventTime).UTC(), RecordID: m.recordID}, true, nil
}

// Known tells whether any change of the user was stored in any cohort of
// the workspace.
func (t *ReadTx) Known(ws, user string) (bool, error) {
	if user == "" {
		return false, nil
	}
	key := []byte(user)
	found := false
	err := forEachCohort(t.tx, ws, func(_, _ string, cb *bolt.Bucket) error {
		if !found && cb.Bucket(bucketMembers).Get(key) != nil {
			found = true
		}
		return nil
	})
	return found, err
}

// UserCursor walks the users of one cohort that have any stored change, in
// byte order of the user id.
type UserCursor struct {
	c        *bolt.Cursor
	k        []byte
	isMember bool
	started  bool
}

// Users returns a cursor over the users of a cohort; a cohort the store
// does not have has none.
func (t *ReadTx) Users(ws, partner, cohort string) *UserCursor {
	cb := cohortBucketRO(t.tx, ws, partner, cohort)
	if cb == nil {
		return &UserCursor{started: true}
	}
	return &UserCursor{c: cb.Bucket(bucketMembers).Cursor()}
}

// Next moves to the next user and tells whether there is one.
func (u *UserCursor) Next() bool {
	if u.c == nil {
		return false
	}
	var v []byte
	if !u.started {
		u.started = true
		u.k, v = u.c.First()
	} else {
		u.k, v = u.c.Next()
	}
	if u.k == nil {
		u.c = nil
		return false
	}
	u.isMember = len(v) > 0 && v[0] == 1
	return true
}

// User is the current user id.
func (u *UserCursor) User() []byte { return u.k }

// IsMember tells whether the current user is in the cohort now.
func (u *UserCursor) IsMember() bool { return u.isMember }

// HistoryEntry is one stored membership change. RecordID points into the
// transaction's memory.
type HistoryEntry struct {
	Version        uint64
	IsMember       bool
	EventMicros    int64
	ReceivedMicros int64
	RecordID       []byte
}

// ForEachHistory calls fn for every stored change of a cohort in (user,
// version) order.
func (t *ReadTx) ForEachHistory(ws, partner, cohort string, fn func(user []byte, e HistoryEntry) error) error {
	cb := cohortBucketRO(t.tx, ws, partner, cohort)
	if cb == nil {
		return nil
	}
	hb := cb.Bucket(bucketHistory)
	if hb == nil {
		return nil
	}
	c := hb.Cursor()
	n := 0
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if n++; n%8192 == 0 {
			if err := t.ctx.Err(); err != nil {
				return err
			}
		}
		user, e, err := historyEntry(k, v)
		if err != nil {
			return err
		}
		if err := fn(user, e); err != nil {
			return err
		}
	}
	return nil
}

func historyEntry(k, v []byte) ([]byte, HistoryEntry, error) {
	user, version, h, rid, err := readHistory(k, v)
	if err != nil {
		return nil, HistoryEntry{}, err
	}
	return user, HistoryEntry{Version: version, IsMember: h.isMember, EventMicros: h.eventTime, ReceivedMicros: h.receivedAt, RecordID: rid}, nil
}

// UserHistory returns the stored changes of one user in a cohort in version
// order.
func (t *ReadTx) UserHistory(ws, partner, cohort, user string) ([]HistoryEntry, error) {
	cb := cohortBucketRO(t.tx, ws, partner, cohort)
	if cb == nil || user == "" {
		return nil, nil
	}
	hb := cb.Bucket(bucketHistory)
	if hb == nil {
		return nil, nil
	}
	prefix := tuple(user)
	var out []HistoryEntry
	c := hb.Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) && len(k) == len(prefix)+8; k, v = c.Next() {
		_, e, err := historyEntry(k, v)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

// SyncTimes returns the distinct landing times, in whole seconds, of the
// cohort's stored changes, in order.
func (t *ReadTx) SyncTimes(ws, partner, cohort string) ([]time.Time, error) {
	cb := cohortBucketRO(t.tx, ws, partner, cohort)
	if cb == nil {
		return nil, nil
	}
	sb := cb.Bucket(bucketSyncs)
	if sb == nil {
		return nil, nil
	}
	var out []time.Time
	err := sb.ForEach(func(k, _ []byte) error {
		if len(k) != 8 {
			return fmt.Errorf("corrupt landing time of %s/%s", partner, cohort)
		}
		out = append(out, time.Unix(readSecond(k), 0).UTC())
		return nil
	})
	return out, err
}
