package gitlab

import (
	"fmt"
	"strings"

	"inthub.dev/pkg/connectors/httpapi"
	"inthub.dev/pkg/fault"
)

// maxPathLen bounds a full path. GitLab limits each segment to 255
// characters and nests groups at most 20 deep.
const (
	maxSegmentLen = 255
	maxDepth      = 21
)

// checkPath checks a project or group full path ("group/sub/project") by
// GitLab's rules for paths (not names: a name may hold spaces, a path may
// not): each segment is ASCII letters, digits, '_', '-' and '.', does not
// start with '-', does not end with '.', ".git" or ".atom", and the path has
// no leading, trailing or doubled slash. minSegments is 2 for a project (a
// project always lives in a namespace) and 1 for a group. A purely numeric
// project reference is GitLab's numeric id and is accepted as is.
//
// Checking here, before the request, matters beyond a clearer message: a
// segment of ".." or "." would otherwise be sent inside the encoded path
// element, and what an intermediate proxy makes of "group%2F.." is
// anybody's guess.
func checkPath(kind, p string, minSegments int) error {
	if p == "" {
		return fault.Permanentf("gitlab: %s path is empty", kind)
	}
	if minSegments >= 2 && isNumericID(p) {
		return nil
	}
	if strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/") {
		return fault.Permanentf("gitlab: %s path %q must not start or end with a slash", kind, p)
	}
	segs := strings.Split(p, "/")
	if len(segs) < minSegments {
		return fault.Permanentf("gitlab: %s path %q needs its namespace, as in group/project", kind, p)
	}
	if len(segs) > maxDepth {
		return fault.Permanentf("gitlab: %s path %q is nested deeper than GitLab allows", kind, p)
	}
	for _, s := range segs {
		if err := checkSegment(s); err != nil {
			return fault.Permanentf("gitlab: %s path %q: %s", kind, p, err)
		}
	}
	return nil
}

func checkSegment(s string) error {
	switch {
	case s == "":
		return fmt.Errorf("empty segment (doubled slash)")
	case len(s) > maxSegmentLen:
		return fmt.Errorf("segment longer than %d characters", maxSegmentLen)
	case s == "." || s == "..":
		return fmt.Errorf("segment %q is not a path name", s)
	case s[0] == '-':
		return fmt.Errorf("segment %q starts with '-'", s)
	case strings.HasSuffix(s, "."), strings.HasSuffix(s, ".git"), strings.HasSuffix(s, ".atom"):
		return fmt.Errorf("segment %q ends with '.', '.git' or '.atom'", s)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.') {
			return fmt.Errorf("segment %q holds %q: paths allow only letters, digits, '_', '-' and '.'", s, rune(c))
		}
	}
	return nil
}

func isNumericID(s string) bool {
	if s == "" || len(s) > 19 || s[0] == '0' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// apiURL joins the API root and path elements into a request URL, each
// element one escaped path segment: a project path as one element keeps
// its slashes encoded ("acme/api" → "acme%2Fapi"), as GitLab requires.
var apiURL = httpapi.URL
