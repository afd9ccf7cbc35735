package api

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"

	"github.com/danielgtaylor/huma/v2"
)

// maxBodyBytes bounds a request body; a config is a few KiB.
const maxBodyBytes = 256 << 10

// operation describes one secured operation. Every error status it can
// answer is listed so that the document has it; huma adds 422 (for an
// operation with parameters or a body) and 500.
func operation(id, method, path, summary, scope string, errs ...int) huma.Operation {
	if method == http.MethodPost || method == http.MethodPut {
		// huma answers these itself for a body over MaxBodyBytes and for a
		// Content-Type other than JSON.
		errs = append(errs, http.StatusRequestEntityTooLarge, http.StatusUnsupportedMediaType)
	}
	return huma.Operation{
		OperationID:  id,
		Method:       method,
		Path:         Prefix + path,
		Summary:      summary,
		Security:     []map[string][]string{{securityScheme: {scope}}},
		Errors:       append([]int{http.StatusUnauthorized, http.StatusForbidden}, errs...),
		MaxBodyBytes: maxBodyBytes,
	}
}

// etag is the strong entity tag of a version.
func etag(version int64) string {
	return `"` + strconv.FormatInt(version, 10) + `"`
}

// neverMatches is an If-Match version no row has: the store then answers
// ErrVersionMismatch (or ErrNotFound for a missing row), as RFC 9110 wants
// for a tag that is not the current one.
const neverMatches = -1

// parseIfMatch returns the version an If-Match header requires, 0 for none
// ("" or "*": an unconditional write of an existing row).
func parseIfMatch(h string) (int64, error) {
	h = strings.TrimSpace(h)
	switch {
	case h == "" || h == "*":
		return 0, nil
	case strings.Contains(h, ","):
		return 0, problem(http.StatusBadRequest, "malformed If-Match", locIfMatch,
			"give one entity tag, as the ETag header of a GET returned it")
	case strings.HasPrefix(h, `W/"`) && strings.HasSuffix(h, `"`):
		// If-Match uses the strong comparison: a weak tag never matches.
		return neverMatches, nil
	case len(h) >= 2 && strings.HasPrefix(h, `"`) && strings.HasSuffix(h, `"`):
		v, err := strconv.ParseInt(h[1:len(h)-1], 10, 64)
		if err != nil || v < 1 {
			return neverMatches, nil
		}
		return v, nil
	}
	return 0, problem(http.StatusBadRequest, "malformed If-Match", locIfMatch,
		`expected a quoted entity tag such as "3", as the ETag header of a GET returned it`)
}

// requestHash identifies a POST for its Idempotency-Key: the operation and
// the body in a canonical form (object keys sorted, no whitespace), so
// that two spellings of one request are the same request.
func requestHash(opID string, body any) (string, error) {
	raw, err := json.Marshal(body)
	if err != nil {
		return "", err
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber() // 1.0 and 1 stay as sent; no float rounding
	var v any
	if err := dec.Decode(&v); err != nil {
		return "", err
	}
	b, err := json.Marshal(v) // maps marshal with sorted keys
	if err != nil {
		return "", err
	}
	h := sha256.New()
	h.Write([]byte(opID))
	h.Write([]byte{0})
	h.Write(b)
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Page is the query of a paginated listing.
type Page struct {
	Limit  int    `query:"limit" minimum:"1" maximum:"500" default:"50" doc:"Page size."`
	Cursor string `query:"cursor" maxLength:"512" doc:"The nextCursor of the previous page; absent for the first page."`
}
