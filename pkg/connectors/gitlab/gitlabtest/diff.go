package gitlabtest

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// fileLines are the lines of one file that a diff shows, by kind.
type fileLines struct {
	added   map[int]bool // new line numbers of added lines
	removed map[int]bool // old line numbers of removed lines
	context map[int]int  // new line number → old line number of unchanged lines
}

// allows reports whether a text position names a line the diff shows, by
// GitLab's rule: an added line by new_line alone, a removed line by
// old_line alone, an unchanged line by both.
func (f *fileLines) allows(oldLine, newLine int) bool {
	switch {
	case oldLine > 0 && newLine > 0:
		o, ok := f.context[newLine]
		return ok && o == oldLine
	case newLine > 0:
		return f.added[newLine]
	case oldLine > 0:
		return f.removed[oldLine]
	}
	return false
}

var hunkRE = regexp.MustCompile(`^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@`)

// parseDiff reads the hunks of one file's diff as GitLab returns it (no
// ---/+++ header). An empty diff (too large, collapsed, binary) shows no
// line.
func parseDiff(diff string) (*fileLines, error) {
	fl := &fileLines{added: map[int]bool{}, removed: map[int]bool{}, context: map[int]int{}}
	lines := strings.Split(strings.TrimSuffix(diff, "\n"), "\n")
	if diff == "" {
		return fl, nil
	}
	var oldNo, newNo, oldLeft, newLeft int
	inHunk := false
	for i, l := range lines {
		if h := hunkRE.FindStringSubmatch(l); h != nil {
			if inHunk && (oldLeft > 0 || newLeft > 0) {
				return nil, fmt.Errorf("line %d: hunk ends %d/%d lines early", i+1, oldLeft, newLeft)
			}
			oldNo, _ = strconv.Atoi(h[1])
			newNo, _ = strconv.Atoi(h[3])
			oldLeft, newLeft = count(h[2]), count(h[4])
			inHunk = true
			continue
		}
		if !inHunk {
			return nil, fmt.Errorf("line %d: %q before the first hunk", i+1, l)
		}
		if strings.HasPrefix(l, `\`) { // "\ No newline at end of file"
			continue
		}
		switch {
		case strings.HasPrefix(l, "+"):
			fl.added[newNo] = true
			newNo++
			newLeft--
		case strings.HasPrefix(l, "-"):
			fl.removed[oldNo] = true
			oldNo++
			oldLeft--
		default:
			fl.context[newNo] = oldNo
			oldNo++
			newNo++
			oldLeft--
			newLeft--
		}
		if oldLeft < 0 || newLeft < 0 {
			return nil, fmt.Errorf("line %d: more lines than the hunk header says", i+1)
		}
	}
	return fl, nil
}

func count(s string) int {
	if s == "" {
		return 1
	}
	n, _ := strconv.Atoi(s)
	return n
}
