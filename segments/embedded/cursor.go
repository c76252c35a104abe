package embedded

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"

	"github.com/cohortsync/cohortsync/segments"
	"github.com/cohortsync/cohortsync/segments/filter"
)

// A cursor is base64url (unpadded) of a format byte, the first 8 bytes of
// SHA-256 over the resolved filter's canonical form and the last user id
// handed out. The hash refuses a cursor of another filter instead of
// silently skipping members; the user id, not a position, keeps paging
// stable while members come and go: the next page starts after it.
const (
	cursorFormat = 1
	cursorHash   = 8
)

func filterHash(n filter.Node) []byte {
	sum := sha256.Sum256([]byte(n.String()))
	return sum[:cursorHash]
}

func encodeCursor(n filter.Node, lastUser string) string {
	b := make([]byte, 0, 1+cursorHash+len(lastUser))
	b = append(b, cursorFormat)
	b = append(b, filterHash(n)...)
	b = append(b, lastUser...)
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeCursor(n filter.Node, cursor string) (string, error) {
	b, err := base64.RawURLEncoding.DecodeString(cursor)
	if err != nil || len(b) < 2+cursorHash || b[0] != cursorFormat || !bytes.Equal(b[1:1+cursorHash], filterHash(n)) {
		return "", segments.ErrBadCursor
	}
	return string(b[1+cursorHash:]), nil
}
