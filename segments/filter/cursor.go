package filter

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"

	"github.com/cohortsync/cohortsync/segments"
)

// A cursor is base64url (unpadded) of: a format byte (1), the first 8 bytes
// of SHA-256 over the resolved filter's canonical form (Node.String), and
// the last user id of the page handed out. The hash ties a cursor to its
// filter, so a cursor of another filter is refused rather than silently
// skipping members; the user id, not a position, keeps paging stable under
// concurrent writes: the next page starts after it. Both engines use it, so
// a cursor of one is valid on the other.
const (
	cursorFormat = 1
	cursorHash   = 8
)

func filterHash(n Node) []byte {
	sum := sha256.Sum256([]byte(n.String()))
	return sum[:cursorHash]
}

// EncodeCursor returns the cursor that continues after lastUser.
func EncodeCursor(n Node, lastUser string) string {
	b := make([]byte, 0, 1+cursorHash+len(lastUser))
	b = append(b, cursorFormat)
	b = append(b, filterHash(n)...)
	b = append(b, lastUser...)
	return base64.RawURLEncoding.EncodeToString(b)
}

// DecodeCursor returns the user id a cursor continues after, or
// segments.ErrBadCursor.
func DecodeCursor(n Node, cursor string) (string, error) {
	b, err := base64.RawURLEncoding.DecodeString(cursor)
	if err != nil || len(b) < 2+cursorHash || b[0] != cursorFormat || !bytes.Equal(b[1:1+cursorHash], filterHash(n)) {
		return "", segments.ErrBadCursor
	}
	return string(b[1+cursorHash:]), nil
}
