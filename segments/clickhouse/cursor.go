package clickhouse

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"

	"github.com/cohortsync/cohortsync/segments"
	"github.com/cohortsync/cohortsync/segments/filter"
)

// A cursor is base64url (unpadded) of: a format byte (1), the first 8 bytes
// of SHA-256 over the resolved filter's canonical form (filter.Node.String),
// and the last user id of the page handed out. The hash ties a cursor to
// its filter, so a cursor of another filter is refused rather than silently
// skipping members; the user id makes paging stable under concurrent
// writes: the next page starts after it, whatever changed meanwhile.
const (
	cursorFormat = 1
	cursorHash   = 8
)

func filterHash(n filter.Node) []byte {
	sum := sha256.Sum256([]byte(n.String()))
	return sum[:cursorHash]
}

// encodeCursor returns the cursor that continues after lastUser.
func encodeCursor(n filter.Node, lastUser string) string {
	b := make([]byte, 0, 1+cursorHash+len(lastUser))
	b = append(b, cursorFormat)
	b = append(b, filterHash(n)...)
	b = append(b, lastUser...)
	return base64.RawURLEncoding.EncodeToString(b)
}

// decodeCursor returns the user id a cursor continues after, or
// segments.ErrBadCursor.
func decodeCursor(n filter.Node, cursor string) (string, error) {
	b, err := base64.RawURLEncoding.DecodeString(cursor)
	if err != nil || len(b) < 2+cursorHash || b[0] != cursorFormat || !bytes.Equal(b[1:1+cursorHash], filterHash(n)) {
		return "", segments.ErrBadCursor
	}
	return string(b[1+cursorHash:]), nil
}
