package files

import (
	"crypto/sha256"
	"encoding/binary"
	"hash"
	"time"

	"github.com/google/uuid"

	"github.com/cohortsync/cohortsync/schemas"
)

// idDomain separates our ids from any other sha256 over similar bytes, and
// versions the encoding: changing what goes into an id means a new domain,
// since ids already landed must keep meaning what they meant.
const idDomain = "cohortsync/connectors/files/record-id/v1"

// Format tags inside the id hash, so that a CSV row and a body line with
// the same content never share an id.
const (
	tagNDJSONBody  = "ndjson-body"
	tagCSV         = "csv"
	tagParquetPart = "parquet-renumbered"
)

// idHasher builds a record id from a canonical encoding: every value is
// length-prefixed, so no two different sequences of values encode alike.
// Neither the file path nor the clock goes in: the same input read from
// another place or at another time yields the same ids, which is what makes
// a second run of a backfill a redelivery instead of new data.
type idHasher struct {
	h   hash.Hash
	buf [binary.MaxVarintLen64]byte
	// scratch holds a string's bytes for Write, which would otherwise
	// allocate a copy of every id.
	scratch []byte
}

func newIDHasher() *idHasher { return &idHasher{h: sha256.New()} }

// start resets the hasher for a record of the given format tag.
func (x *idHasher) start(tag string) {
	x.h.Reset()
	x.str(idDomain)
	x.str(tag)
}

func (x *idHasher) str(s string) {
	n := binary.PutUvarint(x.buf[:], uint64(len(s)))
	// hash.Hash.Write never fails.
	_, _ = x.h.Write(x.buf[:n])
	x.scratch = append(x.scratch[:0], s...)
	_, _ = x.h.Write(x.scratch)
}

func (x *idHasher) int(v int64) {
	n := binary.PutVarint(x.buf[:], v)
	_, _ = x.h.Write(x.buf[:n])
}

func (x *idHasher) bool(b bool) {
	if b {
		x.int(1)
	} else {
		x.int(0)
	}
}

// time hashes an instant, not its zone or monotonic reading.
func (x *idHasher) time(t time.Time) {
	x.int(t.Unix())
	x.int(int64(t.Nanosecond()))
}

// payload hashes the content of a payload in a fixed field order.
func (x *idHasher) payload(p schemas.Payload) {
	switch v := p.(type) {
	case schemas.CohortPayload:
		x.str(string(schemas.KindCohort))
		x.str(v.CohortID)
		x.str(v.Name)
		x.time(v.CreatedAt)
	case schemas.CohortChangesPayload:
		x.str(string(schemas.KindCohortChanges))
		x.str(v.CohortID)
		x.int(int64(len(v.Changes)))
		for _, c := range v.Changes {
			x.bool(c.ShouldRemove)
			x.int(int64(len(c.UserIDs)))
			for _, id := range c.UserIDs {
				x.str(id)
			}
			x.int(int64(len(c.DeviceIDs)))
			for _, id := range c.DeviceIDs {
				x.str(id)
			}
			x.int(int64(len(c.Aliases)))
			for _, a := range c.Aliases {
				x.str(a.Label)
				x.str(a.Name)
			}
		}
	}
}

// id formats the first 16 bytes of the digest as a UUID of version 8 (the
// RFC 9562 version for custom hashes), so it fits wherever the stream's
// UUIDv7 record ids go (ClickHouse UUID columns included).
func (x *idHasher) id() string {
	var sum [sha256.Size]byte
	x.h.Sum(sum[:0])
	var u uuid.UUID
	copy(u[:], sum[:16])
	u[6] = u[6]&0x0f | 0x80
	u[8] = u[8]&0x3f | 0x80
	return u.String()
}
