package state

import (
	"context"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// CohortVersion names a cohort and the highest version applied to it.
type CohortVersion struct {
	Workspace, Partner, CohortID string
	Version                      uint64
}

// Workspaces lists the workspaces the store holds, in order.
func (s *Store) Workspaces() ([]string, error) {
	var out []string
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketWorkspaces).ForEachBucket(func(k []byte) error {
			ws, _, err := readTuple(k)
			if err != nil {
				return err
			}
			out = append(out, ws)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("state: workspaces: %w", err)
	}
	return out, nil
}

// CohortVersions lists every cohort of every workspace with its version.
func (s *Store) CohortVersions(ctx context.Context) ([]CohortVersion, error) {
	var out []CohortVersion
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketWorkspaces).ForEachBucket(func(k []byte) error {
			if err := ctx.Err(); err != nil {
				return err
			}
			ws, _, err := readTuple(k)
			if err != nil {
				return err
			}
			return forEachCohort(tx, ws, func(partner, cohort string, cb *bolt.Bucket) error {
				info, err := readInfo(cb)
				if err != nil {
					return err
				}
				out = append(out, CohortVersion{Workspace: ws, Partner: partner, CohortID: cohort, Version: info.MaxVersion})
				return nil
			})
		})
	})
	if err != nil {
		return nil, fmt.Errorf("state: cohort versions: %w", err)
	}
	return out, nil
}

// SnapshotMembers calls fn for every current member of the cohort in user id
// order and returns the cohort's version, both read in one transaction so
// the list is exactly the state as of that version.
func (s *Store) SnapshotMembers(ctx context.Context, ws, partner, cohort string, fn func(userID string) error) (uint64, error) {
	var version uint64
	err := s.db.View(func(tx *bolt.Tx) error {
		cb := cohortBucketRO(tx, ws, partner, cohort)
		if cb == nil {
			return nil
		}
		info, err := readInfo(cb)
		if err != nil {
			return err
		}
		version = info.MaxVersion
		n := 0
		return cb.Bucket(bucketMembers).ForEach(func(k, v []byte) error {
			if n++; n%4096 == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			if len(v) < memberFixed {
				return fmt.Errorf("corrupt membership value of %q", k)
			}
			if v[0] != 1 {
				return nil
			}
			return fn(string(k))
		})
	})
	if err != nil {
		return 0, fmt.Errorf("state: snapshot members of %s/%s/%s: %w", ws, partner, cohort, err)
	}
	return version, nil
}
