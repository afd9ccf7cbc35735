package gitlab

import (
	"context"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
)

// mrDiff is a merge request's diff as far as placing discussions needs
// it: for each file, the lines the diff shows.
type mrDiff struct {
	refs  diffRefs
	files map[string]*diffFile // by new path (a deleted file by its path)
}

type diffFile struct {
	oldPath, newPath string
	// lines maps a new line number the diff shows to its old line
	// number: 0 for an added line, which GitLab addresses by new_line
	// alone; an unchanged line needs both.
	lines map[int]int
}

func (d *mrDiff) file(path string) *diffFile { return d.files[path] }

// line finds the first line of start..end that the diff shows.
func (f *diffFile) line(start, end int) (oldLine, newLine int, ok bool) {
	end = min(max(end, start), start+maxRangeScan)
	for l := start; l <= end; l++ {
		if o, shown := f.lines[l]; shown {
			return o, l, true
		}
	}
	return 0, 0, false
}

// glDiff is one file of a merge request's diff as GitLab returns it.
type glDiff struct {
	OldPath     string `json:"old_path"`
	NewPath     string `json:"new_path"`
	NewFile     bool   `json:"new_file"`
	RenamedFile bool   `json:"renamed_file"`
	DeletedFile bool   `json:"deleted_file"`
	Diff        string `json:"diff"`
}

// diff reads the merge request's diff at refs: GET .../diffs (GitLab
// 15.7 and later), else the older .../changes. Parsed diffs are cached
// by their refs, which a push changes.
func (a *annotator) diff(ctx context.Context, refs diffRefs) (*mrDiff, error) {
	key := diffKey{mr: a.mrKey(), refs: refs}
	if d, ok := a.c.ann.diffs.Get(key); ok {
		return d, nil
	}
	var files []glDiff
	err := listAll(ctx, a, a.mrCall("read the diff", "diffs"), maxDiffPages, func(d glDiff) { files = append(files, d) })
	if statusOf(err) == http.StatusNotFound {
		var ch struct {
			Changes []glDiff `json:"changes"`
		}
		if _, err = a.read(ctx, a.mrCall("read the changes", "changes"), &ch); err != nil {
			return nil, err
		}
		files, err = ch.Changes, nil
	}
	if err != nil {
		return nil, err
	}
	d := &mrDiff{refs: refs, files: map[string]*diffFile{}}
	for _, f := range files {
		lines, perr := parseHunks(f.Diff)
		if perr != nil {
			// A diff we cannot read still names its file: the file
			// remains a place for a discussion.
			a.c.logger.DebugContext(ctx, "gitlab: unreadable diff", "path", f.NewPath, "error", perr)
			lines = map[int]int{}
		}
		d.files[f.NewPath] = &diffFile{oldPath: f.OldPath, newPath: f.NewPath, lines: lines}
	}
	a.c.ann.diffs.Set(key, d)
	return d, nil
}

var hunkHeaderRE = regexp.MustCompile(`^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@`)

// parseHunks maps the new line numbers a unified diff shows (GitLab's
// per-file diff, without the ---/+++ header) to their old line numbers,
// 0 for added lines. Removed lines have no new number and are left out.
// The hunk headers' counts decide where a hunk ends, so that an empty
// context line (which some tools strip to "") is still counted.
func parseHunks(diff string) (map[int]int, error) {
	lines := map[int]int{}
	if diff == "" {
		return lines, nil // too large, collapsed or binary
	}
	var oldNo, newNo, oldLeft, newLeft int
	for i, l := range strings.Split(strings.TrimSuffix(diff, "\n"), "\n") {
		if strings.HasPrefix(l, `\`) { // "\ No newline at end of file"
			continue
		}
		if oldLeft <= 0 && newLeft <= 0 {
			h := hunkHeaderRE.FindStringSubmatch(l)
			if h == nil {
				return nil, fmt.Errorf("line %d: expected a hunk header", i+1)
			}
			oldNo, _ = strconv.Atoi(h[1])
			newNo, _ = strconv.Atoi(h[3])
			oldLeft, newLeft = hunkCount(h[2]), hunkCount(h[4])
			continue
		}
		switch {
		case strings.HasPrefix(l, "+"):
			lines[newNo] = 0
			newNo++
			newLeft--
		case strings.HasPrefix(l, "-"):
			oldNo++
			oldLeft--
		default:
			lines[newNo] = oldNo
			oldNo++
			newNo++
			oldLeft--
			newLeft--
		}
	}
	if oldLeft > 0 || newLeft > 0 {
		return nil, fmt.Errorf("the last hunk is %d/%d lines short", oldLeft, newLeft)
	}
	return lines, nil
}

func hunkCount(s string) int {
	if s == "" {
		return 1
	}
	n, _ := strconv.Atoi(s)
	return n
}
