package state

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

// MemberState is the stored state of one user in one cohort: the change with
// the highest version applied so far.
type MemberState struct {
	IsMember  bool
	Version   uint64
	EventTime time.Time
	RecordID  string
}

// DataPointRow is the data-point count of one cohort on one UTC day.
type DataPointRow struct {
	Partner  string
	CohortID string
	// Day is midnight UTC of the landing (received_at) day, the billing day.
	Day time.Time
	// Billable counts accepted assignments (adds and removes), each landed
	// record once however often it is delivered.
	Billable int64
	// Effective counts the assignments that changed is_member when applied.
	Effective int64
}

// RejectionTotal is the ids and records refused for one reason in one cohort,
// summed over record ids.
type RejectionTotal struct {
	Partner  string
	CohortID string
	Reason   string
	IDs      int64
	Records  int64
}

// Cohort is a cohort of a workspace as the store knows it. A cohort whose
// changes arrived before (or without) its metadata has an empty Name.
type Cohort struct {
	Partner    string
	CohortID   string
	Name       string
	CreatedAt  time.Time
	ReceivedAt time.Time
	// LastSync is the latest received_at of a change accepted for the cohort,
	// zero if none was.
	LastSync time.Time
	// Members is the number of users currently in the cohort.
	Members int64
}

func cohortBucketRO(tx *bolt.Tx, ws, partner, cohort string) *bolt.Bucket {
	wb := workspaceRO(tx, ws)
	if wb == nil {
		return nil
	}
	return wb.Bucket(bucketCohorts).Bucket(tuple(partner, cohort))
}

func workspaceRO(tx *bolt.Tx, ws string) *bolt.Bucket {
	return tx.Bucket(bucketWorkspaces).Bucket(tuple(ws))
}

// Member returns a user's stored state in a cohort; ok is false if the store
// has never seen a change of that user in that cohort.
func (s *Store) Member(ws, partner, cohort, user string) (st MemberState, ok bool, err error) {
	if user == "" {
		return MemberState{}, false, nil
	}
	err = s.db.View(func(tx *bolt.Tx) error {
		cb := cohortBucketRO(tx, ws, partner, cohort)
		if cb == nil {
			return nil
		}
		v := cb.Bucket(bucketMembers).Get([]byte(user))
		if v == nil {
			return nil
		}
		m, err := readMember(v)
		if err != nil {
			return err
		}
		st, ok = MemberState{IsMember: m.isMember, Version: m.version, EventTime: time.UnixMicro(m.eventTime).UTC(), RecordID: m.recordID}, true
		return nil
	})
	if err != nil {
		return MemberState{}, false, fmt.Errorf("state: member: %w", err)
	}
	return st, ok, nil
}

// IsMember says whether user is currently in the cohort.
func (s *Store) IsMember(ws, partner, cohort, user string) (bool, error) {
	st, ok, err := s.Member(ws, partner, cohort, user)
	return ok && st.IsMember, err
}

// ForEachMember calls fn with every member of the cohort in byte order of
// the user id, inside one read transaction: the listing is consistent as of
// its start. fn must not call the store's write methods; an error from fn
// stops the listing and is returned.
func (s *Store) ForEachMember(ws, partner, cohort string, fn func(userID string) error) error {
	err := s.db.View(func(tx *bolt.Tx) error {
		cb := cohortBucketRO(tx, ws, partner, cohort)
		if cb == nil {
			return nil
		}
		return cb.Bucket(bucketMembers).ForEach(func(k, v []byte) error {
			if len(v) == 0 || v[0] != 1 {
				return nil
			}
			return fn(string(k))
		})
	})
	if err != nil {
		return fmt.Errorf("state: members of %s/%s/%s: %w", ws, partner, cohort, err)
	}
	return nil
}

// Members lists the members of a cohort, sorted.
func (s *Store) Members(ws, partner, cohort string) ([]string, error) {
	out := []string{}
	err := s.ForEachMember(ws, partner, cohort, func(u string) error {
		out = append(out, u)
		return nil
	})
	return out, err
}

// forEachCohort visits the cohorts of a workspace in (partner, cohort) order.
func forEachCohort(tx *bolt.Tx, ws string, fn func(partner, cohort string, cb *bolt.Bucket) error) error {
	wb := workspaceRO(tx, ws)
	if wb == nil {
		return nil
	}
	return wb.Bucket(bucketCohorts).ForEachBucket(func(name []byte) error {
		partner, rest, err := readTuple(name)
		if err != nil {
			return err
		}
		cohort, _, err := readTuple(rest)
		if err != nil {
			return err
		}
		return fn(partner, cohort, wb.Bucket(bucketCohorts).Bucket(name))
	})
}

// DataPoints returns the per-day data-point counts of a workspace for the UTC
// days that overlap [from, to), by partner, cohort and day. A zero from or to
// leaves that side open.
func (s *Store) DataPoints(ws string, from, to time.Time) ([]DataPointRow, error) {
	out := []DataPointRow{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return forEachCohort(tx, ws, func(partner, cohort string, cb *bolt.Bucket) error {
			cur := cb.Bucket(bucketDays).Cursor()
			var k, v []byte
			if from.IsZero() {
				k, v = cur.First()
			} else {
				k, v = cur.Seek(appendDay(nil, dayOf(from)))
			}
			for ; k != nil; k, v = cur.Next() {
				day := dayTime(readDay(k))
				if !to.IsZero() && !day.Before(to) {
					break
				}
				b, e, err := readPair(v)
				if err != nil {
					return err
				}
				out = append(out, DataPointRow{Partner: partner, CohortID: cohort, Day: day, Billable: b, Effective: e})
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("state: data points of %s: %w", ws, err)
	}
	return out, nil
}

// Rejections returns what the transforms refused in a workspace, by partner,
// cohort and reason.
func (s *Store) Rejections(ws string) ([]RejectionTotal, error) {
	out := []RejectionTotal{}
	err := s.db.View(func(tx *bolt.Tx) error {
		wb := workspaceRO(tx, ws)
		if wb == nil {
			return nil
		}
		sums := map[[3]string]*RejectionTotal{}
		err := wb.Bucket(bucketRejections).ForEach(func(k, v []byte) error {
			var parts [4]string
			rest := k
			for i := range parts {
				var err error
				if parts[i], rest, err = readTuple(rest); err != nil {
					return err
				}
			}
			ids, recs, err := readPair(v)
			if err != nil {
				return err
			}
			key := [3]string{parts[0], parts[1], parts[3]}
			t, ok := sums[key]
			if !ok {
				t = &RejectionTotal{Partner: parts[0], CohortID: parts[1], Reason: parts[3]}
				sums[key] = t
			}
			t.IDs += ids
			t.Records += recs
			return nil
		})
		if err != nil {
			return err
		}
		for _, t := range sums {
			out = append(out, *t)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("state: rejections of %s: %w", ws, err)
	}
	slices.SortFunc(out, func(a, b RejectionTotal) int {
		return bytes.Compare(tuple(a.Partner, a.CohortID, a.Reason), tuple(b.Partner, b.CohortID, b.Reason))
	})
	return out, nil
}

// Cohorts lists the cohorts of a workspace in (partner, cohort) order.
func (s *Store) Cohorts(ws string) ([]Cohort, error) {
	out := []Cohort{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return forEachCohort(tx, ws, func(partner, cohort string, cb *bolt.Bucket) error {
			info, err := readInfo(cb)
			if err != nil {
				return err
			}
			out = append(out, Cohort{
				Partner: partner, CohortID: cohort, Name: info.Name,
				CreatedAt: info.CreatedAt, ReceivedAt: info.ReceivedAt,
				LastSync: info.LastSync, Members: info.Members,
			})
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("state: cohorts of %s: %w", ws, err)
	}
	return out, nil
}

// Positions returns, per partition, the highest source offset of a batch the
// store has written. Snapshots use it to say what state they reflect.
func (s *Store) Positions() (map[int]int64, error) {
	out := map[int]int64{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketPositions).ForEach(func(k, v []byte) error {
			if len(k) != 4 || len(v) != 8 {
				return errors.New("corrupt position entry")
			}
			out[int(int32(binary.BigEndian.Uint32(k)))] = int64(binary.BigEndian.Uint64(v))
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("state: positions: %w", err)
	}
	return out, nil
}
