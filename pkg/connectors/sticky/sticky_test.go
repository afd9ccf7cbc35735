package sticky_test

import (
	"context"
	"errors"
	"regexp"
	"testing"
	"time"

	"go.uber.org/goleak"

	"inthub.dev/events"
	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/sticky"
	"inthub.dev/pkg/fault"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func marker(key string) string { return "<!-- k=" + key + " -->" }

var markerRE = regexp.MustCompile(`<!-- k=\S* -->`)

func TestPlan(t *testing.T) {
	tests := []struct {
		name           string
		key            string
		update         bool
		attempt        int
		header, lookup string
	}{
		{"first attempt posts", "", false, 1, marker("request:r1"), ""},
		{"a retry looks for its own", "", false, 2, marker("request:r1"), marker("request:r1")},
		{"a keyed comment carries the key too", "k", false, 1, marker("request:r1") + "\n" + marker("k"), ""},
		{"a sticky comment is its key's", "k", true, 1, marker("k"), marker("k")},
		{"a sticky retry is still its key's", "k", true, 3, marker("k"), marker("k")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := connectors.AnnotationRequest{ID: "r1", Attempt: tt.attempt}
			req.Comment = &events.Comment{Key: tt.key, UpdateExisting: tt.update}
			header, lookup := sticky.Plan(marker, req)
			if header != tt.header || lookup != tt.lookup {
				t.Errorf("Plan = %q, %q; want %q, %q", header, lookup, tt.header, tt.lookup)
			}
		})
	}
}

// fake is a pull request's comments.
type fake struct {
	bodies  map[int64]string
	next    int64
	creates int
	edits   int
	gone    bool // the next edit finds the comment deleted by hand
}

func (f *fake) create(_ context.Context, body string) (int64, error) {
	f.next++
	f.creates++
	f.bodies[f.next] = body
	return f.next, nil
}

func (f *fake) edit(_ context.Context, ref sticky.Ref, body string) (bool, error) {
	f.edits++
	if f.gone {
		delete(f.bodies, ref.ID)
		return true, nil
	}
	f.bodies[ref.ID] = body
	return false, nil
}

func (f *fake) index(context.Context) (*sticky.Index, error) {
	idx := sticky.NewIndex(markerRE)
	for id := int64(1); id <= f.next; id++ {
		if b, ok := f.bodies[id]; ok {
			idx.Add(id, 0, b)
		}
	}
	return idx, nil
}

func TestPut(t *testing.T) {
	ctx := context.Background()
	k := marker("k")
	tests := []struct {
		name            string
		have            []string // existing comments, oldest first
		gone            bool
		lookup          string
		sticky          bool
		body            string
		id              int64
		creates, edits  int
		wantBodyOfFirst string
	}{
		{name: "nothing to look up posts", have: []string{k + "\n\nold"}, lookup: "", body: k + "\n\nnew", id: 2, creates: 1},
		{name: "a sticky comment that reads so is left alone", have: []string{k + "\n\nsame"}, lookup: k, sticky: true, body: k + "\n\nsame", id: 1},
		{name: "a sticky comment is edited", have: []string{k + "\n\nold"}, lookup: k, sticky: true, body: k + "\n\nnew", id: 1, edits: 1, wantBodyOfFirst: k + "\n\nnew"},
		{name: "a sticky comment deleted by hand is posted again", have: []string{k + "\n\nold"}, gone: true, lookup: k, sticky: true, body: k + "\n\nnew", id: 2, edits: 1, creates: 1},
		{name: "the newest carrier wins", have: []string{k + "\n\na", k + "\n\nb"}, lookup: k, sticky: true, body: k + "\n\nb", id: 2},
		{name: "a retry keeps what an earlier attempt posted", have: []string{k + "\n\nold"}, lookup: k, body: k + "\n\nnew", id: 1},
		{name: "a retry that finds nothing posts", have: []string{"unmarked"}, lookup: k, body: k + "\n\nnew", id: 2, creates: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fake{bodies: map[int64]string{}}
			for _, b := range tt.have {
				_, _ = f.create(ctx, b)
			}
			f.creates, f.gone = 0, tt.gone
			id, err := sticky.Put(ctx, tt.lookup, tt.sticky, tt.body, f.index, f.create, f.edit)
			if err != nil || id != tt.id || f.creates != tt.creates || f.edits != tt.edits {
				t.Errorf("Put = %d, %v with %d creates, %d edits; want %d with %d, %d", id, err, f.creates, f.edits, tt.id, tt.creates, tt.edits)
			}
			if tt.wantBodyOfFirst != "" && f.bodies[1] != tt.wantBodyOfFirst {
				t.Errorf("comment 1 reads %q, want %q", f.bodies[1], tt.wantBodyOfFirst)
			}
		})
	}
}

func TestIndexDrop(t *testing.T) {
	idx := sticky.NewIndex(markerRE)
	idx.Add(7, 3, marker("a")+"\n"+marker("b")+"\n\ntext")
	if ref, ok := idx.Lookup(marker("b")); !ok || ref.ID != 7 || ref.Version != 3 || !ref.Reads(marker("a")+"\n"+marker("b")+"\n\ntext") {
		t.Fatalf("Lookup = %+v, %v", ref, ok)
	}
	idx.Drop(7)
	if _, ok := idx.Lookup(marker("a")); ok {
		t.Error("a dropped comment is still found")
	}
}

func TestCompose(t *testing.T) {
	body, cut := sticky.Compose(marker("k"), "hello", 100)
	if body != marker("k")+"\n\nhello" || cut {
		t.Errorf("Compose = %q, %v", body, cut)
	}
	long := make([]byte, 200)
	for i := range long {
		long[i] = 'x'
	}
	body, cut = sticky.Compose(marker("k"), string(long), 100)
	if !cut || len([]rune(body)) > 100 {
		t.Errorf("Compose of 200 characters into 100 = %d characters, cut %v", len([]rune(body)), cut)
	}
}

func TestLocks(t *testing.T) {
	l := sticky.NewLocks("test")
	unlock, err := l.Lock(context.Background(), "pr:1")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := l.Lock(ctx, "pr:1"); fault.ClassOf(err) != fault.ClassTransient || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("a second Lock of a held key = %v, want transient after the deadline", err)
	}
	unlock()
	unlock2, err := l.Lock(context.Background(), "pr:1")
	if err != nil {
		t.Fatalf("Lock after the release: %v", err)
	}
	unlock2()
}
