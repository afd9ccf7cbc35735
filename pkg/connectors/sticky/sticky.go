// Package sticky keeps one inthub comment per key on a pull request, as
// the Bitbucket and GitLab annotators do: a hidden marker in the
// comment's text names its key (and the request that wrote it), an index
// maps the markers found on a pull request to their comments, a request
// edits the comment its marker finds instead of posting a second one,
// and striped locks keep two requests on one pull request from both
// missing a marker and both posting. How a marker is written (what the
// provider's Markdown hides) and how comments are listed, posted and
// edited stay with each connector.
package sticky

import (
	"context"
	"crypto/sha256"
	"fmt"
	"hash/fnv"
	"regexp"
	"unicode/utf8"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/fault"
)

// Ref is one of inthub's comments.
type Ref struct {
	ID int64
	// Version is Bitbucket Data Center's optimistic-locking version.
	Version int
	// Body is the sha256 of the text, to tell an edit from a no-op.
	Body [32]byte
}

// Reads reports whether the comment's text is body.
func (r Ref) Reads(body string) bool { return r.Body == sha256.Sum256([]byte(body)) }

// Index maps the markers of inthub's comments on one pull request to the
// comment carrying each: the newest when several do, so comments are
// added oldest first. It is complete as of the listing that built it plus
// the writes since. The caller serialises its use (Locks).
type Index struct {
	re       *regexp.Regexp
	byMarker map[string]Ref
}

// NewIndex is an empty index of the markers re finds.
func NewIndex(re *regexp.Regexp) *Index {
	return &Index{re: re, byMarker: map[string]Ref{}}
}

// Add records the markers in body as the comment id's (version is Data
// Center's, 0 elsewhere).
func (x *Index) Add(id int64, version int, body string) {
	ref := Ref{ID: id, Version: version, Body: sha256.Sum256([]byte(body))}
	for _, m := range x.re.FindAllString(body, -1) {
		x.byMarker[m] = ref
	}
}

// Lookup is the comment carrying marker.
func (x *Index) Lookup(marker string) (Ref, bool) {
	ref, ok := x.byMarker[marker]
	return ref, ok
}

// Drop forgets the comment id (deleted by hand, or not ours to edit).
func (x *Index) Drop(id int64) {
	for m, ref := range x.byMarker {
		if ref.ID == id {
			delete(x.byMarker, m)
		}
	}
}

// Plan is what a comment request writes and looks for, marker writing a
// key's marker. The header is the request's marker, and its key's when it
// has one, or only the key's for a sticky comment (updateExisting), which
// is looked up by it. Any other request is looked up by its own marker
// when it is a retry (an earlier attempt may have posted it), else not at
// all (lookup "": post).
func Plan(marker func(key string) string, req connectors.AnnotationRequest) (header, lookup string) {
	cm := req.Comment
	own := marker("request:" + req.ID)
	header = own
	switch {
	case cm.UpdateExisting:
		header = marker(cm.Key)
		lookup = header
	case cm.Key != "":
		header += "\n" + marker(cm.Key)
	}
	if !cm.UpdateExisting && req.Attempt > 1 {
		lookup = own
	}
	return header, lookup
}

// Compose puts the header (the markers) first and cuts text so that the
// whole fits max characters; cut says whether it had to.
func Compose(header, text string, max int) (body string, cut bool) {
	const sep = "\n\n"
	text, cut = connectors.Cut(text, max-utf8.RuneCountInString(header+sep))
	return header + sep + text, cut
}

// Create posts a comment and returns its id; Edit edits one, gone when it
// no longer exists (or is not the credential's to edit) and must be
// posted again.
type (
	Create func(ctx context.Context, body string) (int64, error)
	Edit   func(ctx context.Context, ref Ref, body string) (gone bool, err error)
)

// Upsert makes the comment marked with marker read body: unchanged when
// it does, edited when it differs, posted when there is none (or the one
// there was is gone).
func Upsert(ctx context.Context, idx *Index, marker, body string, create Create, edit Edit) (int64, error) {
	if ref, ok := idx.Lookup(marker); ok {
		if ref.Reads(body) {
			return ref.ID, nil
		}
		gone, err := edit(ctx, ref, body)
		if err != nil || !gone {
			return ref.ID, err
		}
	}
	return create(ctx, body)
}

// Put writes a comment request's body after Plan: posted when there is
// nothing to look up; else the comment lookup finds is kept for a request
// that is not sticky (an earlier attempt posted it) and upserted for a
// sticky one. index is read only when there is something to look up.
func Put(ctx context.Context, lookup string, sticky bool, body string, index func(context.Context) (*Index, error), create Create, edit Edit) (int64, error) {
	if lookup == "" {
		return create(ctx, body)
	}
	idx, err := index(ctx)
	if err != nil {
		return 0, err
	}
	if ref, ok := idx.Lookup(lookup); ok && !sticky {
		return ref.ID, nil
	}
	return Upsert(ctx, idx, lookup, body, create, edit)
}

const stripes = 64

// Locks serialise the calls for one key (a pull request, a commit). Keys
// share 64 locks, which only costs some waiting.
type Locks struct {
	name    string
	stripes [stripes]chan struct{}
}

// NewLocks are the locks of one connector; name prefixes the error of a
// wait the caller gave up.
func NewLocks(name string) *Locks {
	l := &Locks{name: name}
	for i := range l.stripes {
		l.stripes[i] = make(chan struct{}, 1)
	}
	return l
}

// Lock waits for key's lock and returns its release.
func (l *Locks) Lock(ctx context.Context, key string) (func(), error) {
	h := fnv.New32a()
	_, _ = h.Write([]byte(key))
	s := l.stripes[h.Sum32()%stripes]
	select {
	case s <- struct{}{}:
		return func() { <-s }, nil
	case <-ctx.Done():
		return nil, fault.Transient(fmt.Errorf("%s: waiting for another annotation of %s: %w", l.name, key, context.Cause(ctx)))
	}
}
