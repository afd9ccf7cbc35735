package store

import (
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// cursor is a position in a (time, id) ordering: the last row of a page.
// It is opaque to clients (base64url), and carries the time to the
// microsecond, PostgreSQL's precision, so the comparison is exact.
type cursor struct {
	t  time.Time
	id string
}

const cursorVersion = "c1"

func encodeCursor(t time.Time, id string) string {
	raw := cursorVersion + "|" + strconv.FormatInt(t.UnixMicro(), 10) + "|" + id
	return base64.RawURLEncoding.EncodeToString([]byte(raw))
}

// decodeCursor parses a cursor whose id is a UUID, or a decimal when
// numericID (health history rows have bigint ids).
func decodeCursor(s string, numericID bool) (cursor, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return cursor{}, fmt.Errorf("%w: not base64url", ErrBadCursor)
	}
	parts := strings.Split(string(b), "|")
	if len(parts) != 3 || parts[0] != cursorVersion || parts[2] == "" {
		return cursor{}, fmt.Errorf("%w: malformed", ErrBadCursor)
	}
	us, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil {
		return cursor{}, fmt.Errorf("%w: malformed time", ErrBadCursor)
	}
	id := parts[2]
	if numericID {
		if _, err := strconv.ParseInt(id, 10, 64); err != nil {
			return cursor{}, fmt.Errorf("%w: malformed id", ErrBadCursor)
		}
	} else {
		cid, ok := parseID(id)
		if !ok {
			return cursor{}, fmt.Errorf("%w: malformed id", ErrBadCursor)
		}
		id = cid
	}
	return cursor{t: time.UnixMicro(us).UTC(), id: id}, nil
}
