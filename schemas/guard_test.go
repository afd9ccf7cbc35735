package schemas

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// update records the current schemas in published/ where that is allowed:
// a new event type, or a compatible change. It never records a breaking one.
var update = flag.Bool("update", false, "record new event types and compatible schema changes in published/")

// publishedDir holds the record: one self-contained schema per event type
// (and the envelope), as other teams were given it.
const publishedDir = "published"

// versioned matches the name of a later version of an event type:
// scm.annotation.requested.v2 is version 2 of scm.annotation.requested.
var versioned = regexp.MustCompile(`\.v([2-9]|[1-9][0-9]+)$`)

// TestPublishedSchemas is the contract guard. Every schema in events/ must
// match its record in published/, or differ from it only compatibly: a
// document the record accepts must still pass. A field removed or renamed,
// a type narrowed, a new required field, an enum value removed, a new or
// changed pattern or rule: each breaks producers on older code and the
// messages already in the streams, so the guard refuses it, with -update
// too. Such a change ships as a new version of the event type, i.e. a new
// type and subject (<type>.v2, with its own schema and record), published
// beside the old one until its consumers have moved; see events/GUIDE.md.
//
// A compatible change (an optional field, an enum value, a looser bound)
// fails until it is recorded with
//
//	go test inthub.dev/schemas -run TestPublishedSchemas -update
//
// so that the record stays what was published and a later removal of the
// new field is caught.
func TestPublishedSchemas(t *testing.T) {
	names := Names()
	records := os.DirFS(publishedDir)
	found := guard(files, names, records)
	if len(found) == 0 {
		if recs, _ := filepath.Glob(filepath.Join(publishedDir, "*.json")); len(recs) == 0 {
			t.Fatalf("no records in %s/: the guard has nothing to compare against", publishedDir)
		}
	}
	for _, f := range found {
		if *update && f.recordable() {
			write(t, filepath.Join(publishedDir, f.name+".json"), f.cur)
			continue
		}
		t.Error(f.message)
	}
}

// finding is one way the schemas differ from the record.
type finding struct {
	name    string
	kind    findingKind
	changes []change
	cur     any // the current self-contained schema, to record
	message string
}

type findingKind int

const (
	unpublished findingKind = iota // no record yet: a new type or version
	unrecorded                     // compatible change not recorded yet
	broken                         // breaking change
	withdrawn                      // a record whose schema is gone
	unreadable                     // a schema or record that does not load
)

func (f finding) recordable() bool { return f.kind == unpublished || f.kind == unrecorded }

// guard compares the schemas names in fsys (laid out as this package
// embeds them) with the records in records (<name>.json).
func guard(fsys fs.FS, names []string, records fs.FS) []finding {
	var out []finding
	for _, name := range names {
		f := finding{name: name}
		cur, err := published(fsys, name)
		if err != nil {
			f.kind, f.message = unreadable, name+": "+err.Error()
			out = append(out, f)
			continue
		}
		f.cur = cur
		recFile := name + ".json"
		b, err := fs.ReadFile(records, recFile)
		if errors.Is(err, fs.ErrNotExist) {
			hint := "a new event type"
			if m := versioned.FindStringIndex(name); m != nil {
				hint = "version " + strings.TrimPrefix(name[m[0]:], ".v") + " of " + name[:m[0]]
			}
			f.kind = unpublished
			f.message = fmt.Sprintf("%s has no published record (%s/%s): %s; record it with "+
				"go test inthub.dev/schemas -run TestPublishedSchemas -update", name, publishedDir, recFile, hint)
			out = append(out, f)
			continue
		}
		var rec any
		if err == nil {
			rec, err = decode(b)
		}
		if err != nil {
			f.kind, f.message = unreadable, fmt.Sprintf("%s/%s: %v", publishedDir, recFile, err)
			out = append(out, f)
			continue
		}
		f.changes = compare(rec, cur)
		if brk := breaking(f.changes); len(brk) > 0 {
			f.kind = broken
			f.message = fmt.Sprintf("%s changed incompatibly with its published schema (%s/%s):\n  %s\n"+
				"Make the change compatible, or publish it as a new version of the type (%s.v2: a new schema and subject, "+
				"published beside this one until every consumer has moved). -update never records a breaking change.",
				name, publishedDir, recFile, lines(brk), name)
			out = append(out, f)
			continue
		}
		if !bytes.Equal(b, render(cur)) {
			f.kind = unrecorded
			f.message = fmt.Sprintf("%s changed compatibly but is not recorded:\n  %s\n"+
				"Record it: go test inthub.dev/schemas -run TestPublishedSchemas -update. "+
				"Readers first: consumers refuse fields and values their schema does not list, so release inthub.dev/events "+
				"to them before producers send what is new.", name, lines(f.changes))
			out = append(out, f)
		}
	}

	// A type that was published is still in the streams, and its
	// consumers still wait for it.
	recs, _ := fs.Glob(records, "*.json")
	for _, r := range recs {
		name := strings.TrimSuffix(r, ".json")
		if !slices.Contains(names, name) {
			out = append(out, finding{name: name, kind: withdrawn, message: fmt.Sprintf(
				"%s was published (%s/%s) but its schema is gone: consumers still receive it from the streams. "+
					"Keep the schema; retire the type only once nobody publishes or consumes it, by deleting its record in the same change.",
				name, publishedDir, r)})
		}
	}
	return out
}

func lines(cs []change) string {
	var s []string
	for _, c := range cs {
		s = append(s, c.String())
	}
	return strings.Join(s, "\n  ")
}

// render is the record's text: indented, keys sorted.
func render(v any) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		// v was decoded from JSON: it always encodes.
		panic(err)
	}
	return buf.Bytes()
}

func write(t *testing.T, file string, v any) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, render(v), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("recorded %s", file)
}
