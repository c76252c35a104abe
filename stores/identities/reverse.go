package identities

import (
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// UserLookup is a Lookup that also answers the reverse question: which ids
// does a user have. A backfill that must remove a user from a cohort needs
// an id naming that user, and asks this.
type UserLookup interface {
	Lookup
	// LookupUser returns the directory's current record of userID in
	// workspace. An error means the stored record could not be read (a
	// corrupt file), never that the user is missing.
	LookupUser(workspace, userID string) (rec Record, found bool, err error)
}

// ViewUsers is View with a UserLookup: one read transaction over one
// consistent snapshot, valid only inside fn and for one goroutine.
func (x *Index) ViewUsers(fn func(UserLookup) error) error {
	return x.db.View(func(tx *bolt.Tx) error {
		return fn(newLookup(tx))
	})
}

// LookupUser is a single reverse lookup in its own read transaction;
// batches should use ViewUsers.
func (x *Index) LookupUser(workspace, userID string) (rec Record, found bool, err error) {
	err = x.ViewUsers(func(l UserLookup) error {
		rec, found, err = l.LookupUser(workspace, userID)
		return err
	})
	return rec, found, err
}

// ViewUsers runs fn over one consistent snapshot of the replica; see
// Index.ViewUsers.
func (d *Directory) ViewUsers(fn func(UserLookup) error) error { return d.idx.ViewUsers(fn) }

// LookupUser is one reverse lookup in its own transaction; batches use ViewUsers.
func (d *Directory) LookupUser(workspace, userID string) (Record, bool, error) {
	return d.idx.LookupUser(workspace, userID)
}

func (l *txLookup) LookupUser(workspace, userID string) (Record, bool, error) {
	if !l.prefix(workspace, userID) {
		return Record{}, false, nil
	}
	// prefix ends every part with NUL; a users key has none after the id.
	v := l.users.Get(l.buf[:len(l.buf)-1])
	if v == nil {
		return Record{}, false, nil
	}
	rec, err := storedRecord(v)
	if err != nil {
		// The file holds only records Apply validated: this is corruption.
		// The message names no identifier.
		return Record{}, false, fmt.Errorf("identities: stored record of a user in workspace %s: %w", truncate(workspace), err)
	}
	return rec, true, nil
}
