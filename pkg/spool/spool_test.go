package spool

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// The crash tests re-exec this test binary; these variables tell the child
// which role to play and where the spool file is.
const (
	envChildRole = "INTHUB_SPOOL_CHILD_ROLE"
	envChildPath = "INTHUB_SPOOL_CHILD_PATH"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func openT(t testing.TB, path string, opts ...Option) *Spool {
	t.Helper()
	s, err := Open(path, opts...)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func tempPath(t testing.TB) string {
	return filepath.Join(t.TempDir(), "spool.db")
}

// rec builds a record whose content is derived from id, so any record read
// back can be checked against what must have been written.
func rec(id int) Record {
	return Record{
		Subject: "inthub.events.test." + strconv.Itoa(id%7),
		Header: map[string][]string{
			"Nats-Msg-Id": {"evt-" + strconv.Itoa(id)},
			"X-Id":        {strconv.Itoa(id)},
		},
		Data: payload(id),
	}
}

// payload varies in size up to ~9 KiB so some records need bbolt overflow
// pages and page splits happen at varied points.
func payload(id int) []byte {
	n := (id * 131) % 2048
	if id%97 == 0 {
		n = 9000
	}
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(id*31 + i*7)
	}
	return b
}

func idOf(t testing.TB, r Record) int {
	t.Helper()
	if len(r.Header["X-Id"]) != 1 {
		t.Fatalf("record without X-Id header: %+v", r.Header)
	}
	id, err := strconv.Atoi(r.Header["X-Id"][0])
	if err != nil {
		t.Fatalf("bad X-Id: %v", err)
	}
	return id
}

// checkRec fails unless r is exactly what rec(id) wrote.
func checkRec(t testing.TB, r Record, id int) {
	t.Helper()
	want := rec(id)
	if r.Subject != want.Subject || !reflect.DeepEqual(r.Header, want.Header) || !bytes.Equal(r.Data, want.Data) {
		t.Fatalf("record %d differs from what was appended: subject %q header %v len(data) %d",
			id, r.Subject, r.Header, len(r.Data))
	}
	if r.SpooledAt.IsZero() || r.SpooledAt.Location() != time.UTC {
		t.Fatalf("record %d: SpooledAt %v, want non-zero UTC", id, r.SpooledAt)
	}
}

func appendRange(t testing.TB, s *Spool, from, to, batch int) {
	t.Helper()
	for i := from; i < to; i += batch {
		var rs []Record
		for j := i; j < min(i+batch, to); j++ {
			rs = append(rs, rec(j))
		}
		if err := s.Append(context.Background(), rs...); err != nil {
			t.Fatalf("Append %d..: %v", i, err)
		}
	}
}

func TestAppendListDrainOrder(t *testing.T) {
	const total = 1000
	for _, batch := range []int{1, 7, 64, total} {
		t.Run(fmt.Sprintf("batch=%d", batch), func(t *testing.T) {
			ctx := context.Background()
			s := openT(t, tempPath(t))
			appendRange(t, s, 0, total, batch)
			if got := s.Len(); got != total {
				t.Fatalf("Len = %d, want %d", got, total)
			}

			all, err := s.List(ctx, 0, 0)
			if err != nil {
				t.Fatal(err)
			}
			if len(all) != total {
				t.Fatalf("List returned %d entries, want %d", len(all), total)
			}
			for i, e := range all {
				if i > 0 && e.Seq <= all[i-1].Seq {
					t.Fatalf("Seq not strictly increasing at %d: %d after %d", i, e.Seq, all[i-1].Seq)
				}
				checkRec(t, e.Record, i)
			}

			// Paging with after/limit must walk the same sequence.
			var paged []Entry
			for after := uint64(0); ; {
				page, err := s.List(ctx, after, 33)
				if err != nil {
					t.Fatal(err)
				}
				if len(page) == 0 {
					break
				}
				if len(page) > 33 {
					t.Fatalf("List limit 33 returned %d", len(page))
				}
				paged = append(paged, page...)
				after = page[len(page)-1].Seq
			}
			if !reflect.DeepEqual(paged, all) {
				t.Fatal("paged List differs from full List")
			}

			var got []Entry
			n, err := s.Drain(ctx, func(_ context.Context, e Entry) error {
				got = append(got, e)
				return nil
			})
			if err != nil || n != total {
				t.Fatalf("Drain = %d, %v; want %d, nil", n, err, total)
			}
			if !reflect.DeepEqual(got, all) {
				t.Fatal("Drain delivered a different sequence than List")
			}
			if s.Len() != 0 {
				t.Fatalf("Len after Drain = %d", s.Len())
			}
			if rest, _ := s.List(ctx, 0, 0); len(rest) != 0 {
				t.Fatalf("List after Drain returned %d entries", len(rest))
			}

			// Seq is never reused, even once the spool is empty.
			appendRange(t, s, total, total+1, 1)
			next, _ := s.List(ctx, 0, 0)
			if len(next) != 1 || next[0].Seq <= all[total-1].Seq {
				t.Fatalf("Seq after drain = %v, want > %d", next, all[total-1].Seq)
			}
		})
	}
}

func TestDrainStopsAtFirstError(t *testing.T) {
	const total = 300
	boom := errors.New("bus said no")
	// Fail points chosen around drainBatch so the partly-delivered batch's
	// removal is exercised at its edges.
	for _, failAt := range []int{0, 1, drainBatch - 1, drainBatch, drainBatch + 1, total - 1} {
		t.Run(fmt.Sprintf("failAt=%d", failAt), func(t *testing.T) {
			ctx := context.Background()
			s := openT(t, tempPath(t))
			appendRange(t, s, 0, total, 50)

			calls := 0
			n, err := s.Drain(ctx, func(_ context.Context, e Entry) error {
				calls++
				if idOf(t, e.Record) == failAt {
					return boom
				}
				return nil
			})
			if !errors.Is(err, boom) {
				t.Fatalf("Drain error = %v, want %v", err, boom)
			}
			if n != failAt || calls != failAt+1 {
				t.Fatalf("Drain = %d after %d calls, want %d after %d", n, calls, failAt, failAt+1)
			}
			if s.Len() != total-failAt {
				t.Fatalf("Len = %d, want %d", s.Len(), total-failAt)
			}
			first, err := s.List(ctx, 0, 1)
			if err != nil || len(first) != 1 || idOf(t, first[0].Record) != failAt {
				t.Fatalf("first in line = %v, %v; want record %d", first, err, failAt)
			}

			next := failAt
			n, err = s.Drain(ctx, func(_ context.Context, e Entry) error {
				checkRec(t, e.Record, next)
				next++
				return nil
			})
			if err != nil || n != total-failAt || next != total {
				t.Fatalf("second Drain = %d, %v, reached %d; want %d, nil, %d", n, err, next, total-failAt, total)
			}
		})
	}
}

func TestDrainHonoursContext(t *testing.T) {
	s := openT(t, tempPath(t))
	appendRange(t, s, 0, 100, 100)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n, err := s.Drain(ctx, func(_ context.Context, e Entry) error {
		if idOf(t, e.Record) == 9 {
			cancel()
		}
		return nil
	})
	if !errors.Is(err, context.Canceled) || n != 10 {
		t.Fatalf("Drain = %d, %v; want 10, context.Canceled", n, err)
	}
	if s.Len() != 90 {
		t.Fatalf("Len = %d, want 90", s.Len())
	}
}

func TestReopenKeepsRecords(t *testing.T) {
	ctx := context.Background()
	path := tempPath(t)
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	appendRange(t, s, 0, 250, 10)
	before, err := s.List(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openT(t, path)
	if s.Len() != 250 {
		t.Fatalf("Len after reopen = %d, want 250", s.Len())
	}
	after, err := s.List(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(before, after) {
		t.Fatal("records differ after reopen")
	}
	appendRange(t, s, 250, 251, 1)
	last, _ := s.List(ctx, before[len(before)-1].Seq, 0)
	if len(last) != 1 || last[0].Seq != before[len(before)-1].Seq+1 {
		t.Fatalf("Seq after reopen: %v, want %d", last, before[len(before)-1].Seq+1)
	}
}

// TestCrashDuringAppend SIGKILLs a child process that appends as fast as it
// can and reports each Seq on stdout after Append returned; every reported
// record must survive, in order and intact.
func TestCrashDuringAppend(t *testing.T) {
	if testing.Short() {
		t.Skip("re-execs the test binary")
	}
	for _, killAfter := range []int{1, 97, 400} {
		t.Run(fmt.Sprintf("killAfter=%d", killAfter), func(t *testing.T) {
			path := tempPath(t)
			acked := runChildAndKill(t, "append", path, killAfter)
			maxAcked := acked[len(acked)-1]

			s := openT(t, path)
			es, err := s.List(context.Background(), 0, 0)
			if err != nil {
				t.Fatalf("List after crash: %v", err)
			}
			// The child numbers records 1, 2, 3... and a fresh bucket hands
			// out the same Seq, so position, Seq and content must all agree.
			for i, e := range es {
				if e.Seq != uint64(i+1) {
					t.Fatalf("entry %d has Seq %d: records lost or reordered", i, e.Seq)
				}
				checkRec(t, e.Record, int(e.Seq))
			}
			if uint64(len(es)) < maxAcked {
				t.Fatalf("child acknowledged up to Seq %d, only %d survived", maxAcked, len(es))
			}
			// At most the one batch in flight when the kill landed may be
			// there without an ack.
			if uint64(len(es)) > maxAcked+childMaxBatch {
				t.Fatalf("%d records on disk, child acknowledged %d", len(es), maxAcked)
			}
			if s.Len() != len(es) {
				t.Fatalf("Len = %d, List = %d", s.Len(), len(es))
			}
			// The file must still take writes after the crash.
			appendRange(t, s, len(es)+1, len(es)+2, 1)
		})
	}
}

// TestCrashDuringDrain SIGKILLs a child mid-Drain; every record the child
// had not yet delivered must still be there, and what is left must be a
// contiguous tail (a re-delivered head is fine, a hole is not).
func TestCrashDuringDrain(t *testing.T) {
	if testing.Short() {
		t.Skip("re-execs the test binary")
	}
	const total = 2000
	path := tempPath(t)
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	appendRange(t, s, 1, total+1, 256)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	delivered := runChildAndKill(t, "drain", path, 700)
	maxDelivered := delivered[len(delivered)-1]

	s = openT(t, path)
	es, err := s.List(context.Background(), 0, 0)
	if err != nil {
		t.Fatalf("List after crash: %v", err)
	}
	if len(es) == 0 || es[len(es)-1].Seq != total {
		t.Fatalf("tail lost: %d entries left", len(es))
	}
	first := es[0].Seq
	if first > maxDelivered+1 {
		t.Fatalf("records %d..%d were never delivered but are gone", maxDelivered+1, first-1)
	}
	for i, e := range es {
		if e.Seq != first+uint64(i) {
			t.Fatalf("hole after crash: entry %d has Seq %d, want %d", i, e.Seq, first+uint64(i))
		}
		checkRec(t, e.Record, int(e.Seq))
	}
}

const childMaxBatch = 5

// runChildAndKill starts this binary as a child in the given role, reads the
// Seqs it reports, SIGKILLs it once it has reported killAfter of them, and
// returns everything it reported before dying.
func runChildAndKill(t *testing.T, role, path string, killAfter int) []uint64 {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestChildProcess$", "-test.count=1", "-test.timeout=2m")
	cmd.Env = append(os.Environ(), envChildRole+"="+role, envChildPath+"="+path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var seqs []uint64
	killed := false
	sc := bufio.NewScanner(out)
	// Lines that arrive after the signal still count: the child wrote them
	// after its Append returned, before it died.
	for sc.Scan() {
		f, ok := strings.CutPrefix(sc.Text(), "seq ")
		if !ok {
			continue
		}
		seq, err := strconv.ParseUint(f, 10, 64)
		if err != nil {
			t.Errorf("child printed %q", sc.Text())
			continue
		}
		seqs = append(seqs, seq)
		if !killed && len(seqs) >= killAfter {
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatalf("kill child: %v", err)
			}
			killed = true
		}
	}
	_, _ = io.Copy(io.Discard, out)
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child did not die by SIGKILL (err %v); stderr:\n%s", err, stderr.String())
	}
	if len(seqs) < killAfter {
		t.Fatalf("child reported %d seqs, wanted at least %d; stderr:\n%s", len(seqs), killAfter, stderr.String())
	}
	for i := 1; i < len(seqs); i++ {
		if seqs[i] <= seqs[i-1] {
			t.Fatalf("child reported Seq %d after %d", seqs[i], seqs[i-1])
		}
	}
	return seqs
}

// TestChildProcess is not a test on its own: it is the body of the child
// process that the crash tests start and kill.
func TestChildProcess(t *testing.T) {
	role, path := os.Getenv(envChildRole), os.Getenv(envChildPath)
	if role == "" {
		t.Skip("only runs as the child of a crash test")
	}
	ctx := context.Background()
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	switch role {
	case "append":
		// Runs until killed; the bound only stops a runaway child if the
		// parent died.
		for seq := 1; seq < 1_000_000; {
			n := 1 + seq%childMaxBatch
			rs := make([]Record, n)
			for i := range rs {
				rs[i] = rec(seq + i)
			}
			if err := s.Append(ctx, rs...); err != nil {
				t.Fatal(err)
			}
			for i := range n {
				fmt.Printf("seq %d\n", seq+i)
			}
			seq += n
		}
	case "drain":
		_, err := s.Drain(ctx, func(_ context.Context, e Entry) error {
			fmt.Printf("seq %d\n", e.Seq)
			// Slow enough that the parent's kill lands mid-drain.
			time.Sleep(200 * time.Microsecond)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		// Drained everything before the kill: wait to be killed so the
		// parent's exit-status check still holds.
		time.Sleep(time.Minute)
	default:
		t.Fatalf("unknown role %q", role)
	}
}

// TestConcurrentAppendDuringDrain runs writers against repeated Drains that
// also fail now and then; each record must be accepted exactly once, in
// Seq order and in each writer's own order.
func TestConcurrentAppendDuringDrain(t *testing.T) {
	const writers, perWriter = 4, 250
	ctx := context.Background()
	s := openT(t, tempPath(t))

	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			for i := 0; i < perWriter; {
				n := min(1+(i+w)%4, perWriter-i)
				rs := make([]Record, n)
				for j := range rs {
					rs[j] = Record{
						Subject: "t",
						Header:  map[string][]string{"W": {strconv.Itoa(w)}, "I": {strconv.Itoa(i + j)}},
					}
				}
				if err := s.Append(ctx, rs...); err != nil {
					errs <- err
					return
				}
				i += n
			}
		})
	}
	writersDone := make(chan struct{})
	go func() { wg.Wait(); close(writersDone) }()

	seen := make(map[[2]int]int)
	lastIdx := make([]int, writers)
	for i := range lastIdx {
		lastIdx[i] = -1
	}
	var lastSeq uint64
	calls, accepted := 0, 0
	var failedSeq uint64
	errFlaky := errors.New("flaky bus")
	fn := func(_ context.Context, e Entry) error {
		calls++
		if failedSeq != 0 {
			// The record that failed must come back first.
			if e.Seq != failedSeq {
				return fmt.Errorf("after failure on Seq %d got Seq %d first", failedSeq, e.Seq)
			}
			failedSeq = 0
		} else if calls%97 == 0 {
			failedSeq = e.Seq
			return errFlaky
		}
		if e.Seq <= lastSeq {
			return fmt.Errorf("Seq %d delivered after %d", e.Seq, lastSeq)
		}
		lastSeq = e.Seq
		w, _ := strconv.Atoi(e.Header["W"][0])
		i, _ := strconv.Atoi(e.Header["I"][0])
		if i <= lastIdx[w] {
			return fmt.Errorf("writer %d: record %d after %d", w, i, lastIdx[w])
		}
		lastIdx[w] = i
		seen[[2]int{w, i}]++
		accepted++
		return nil
	}
	drained := 0
	drain := func() {
		n, err := s.Drain(ctx, fn)
		drained += n
		if err != nil && !errors.Is(err, errFlaky) {
			t.Fatalf("Drain: %v", err)
		}
	}
	for running := true; running; {
		select {
		case <-writersDone:
			running = false
		default:
			drain()
		}
	}
	for s.Len() > 0 {
		drain()
	}
	close(errs)
	for err := range errs {
		t.Fatalf("Append: %v", err)
	}
	if drained != writers*perWriter || accepted != drained {
		t.Fatalf("Drain counted %d, fn accepted %d, want %d", drained, accepted, writers*perWriter)
	}
	for w := range writers {
		for i := range perWriter {
			if c := seen[[2]int{w, i}]; c != 1 {
				t.Fatalf("record w%d/%d accepted %d times", w, i, c)
			}
		}
	}
}

func TestConcurrentDrainsDoNotOverlap(t *testing.T) {
	ctx := context.Background()
	s := openT(t, tempPath(t))
	appendRange(t, s, 0, 500, 100)
	var mu sync.Mutex
	seen := make(map[uint64]int)
	var wg sync.WaitGroup
	total := make(chan int, 3)
	for range 3 {
		wg.Go(func() {
			n, err := s.Drain(ctx, func(_ context.Context, e Entry) error {
				mu.Lock()
				defer mu.Unlock()
				seen[e.Seq]++
				return nil
			})
			if err != nil {
				t.Errorf("Drain: %v", err)
			}
			total <- n
		})
	}
	wg.Wait()
	close(total)
	sum := 0
	for n := range total {
		sum += n
	}
	if sum != 500 || len(seen) != 500 {
		t.Fatalf("drained %d, distinct %d, want 500", sum, len(seen))
	}
	for seq, c := range seen {
		if c != 1 {
			t.Fatalf("Seq %d delivered %d times", seq, c)
		}
	}
}

func TestErrFull(t *testing.T) {
	tests := []struct {
		name    string
		max     int
		held    int // appended one by one before the probe
		batch   int
		wantErr bool
	}{
		{"under", 3, 1, 1, false},
		{"exactly at limit", 3, 2, 1, false},
		{"one over", 3, 3, 1, true},
		{"batch crosses limit", 3, 2, 2, true},
		{"batch larger than limit", 3, 0, 4, true},
		{"unbounded", 0, 1000, 64, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			s := openT(t, tempPath(t), WithMaxRecords(tt.max), WithNoSync())
			appendRange(t, s, 0, tt.held, 100)
			var rs []Record
			for i := range tt.batch {
				rs = append(rs, rec(tt.held+i))
			}
			err := s.Append(ctx, rs...)
			if gotErr := errors.Is(err, ErrFull); gotErr != tt.wantErr {
				t.Fatalf("Append err = %v, want ErrFull: %v", err, tt.wantErr)
			}
			want := tt.held
			if !tt.wantErr {
				want += tt.batch
			}
			if s.Len() != want {
				t.Fatalf("Len = %d, want %d (a rejected batch must store nothing)", s.Len(), want)
			}
			if es, _ := s.List(ctx, 0, 0); len(es) != want {
				t.Fatalf("List has %d, want %d", len(es), want)
			}
			if tt.wantErr && tt.batch <= tt.max {
				// Draining makes room again.
				if _, err := s.Drain(ctx, func(context.Context, Entry) error { return nil }); err != nil {
					t.Fatal(err)
				}
				if err := s.Append(ctx, rs...); err != nil {
					t.Fatalf("Append after Drain: %v", err)
				}
			}
		})
	}
}

func TestOpenLockedFailsFast(t *testing.T) {
	path := tempPath(t)
	first, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		s   *Spool
		err error
	}
	done := make(chan result, 1)
	start := time.Now()
	go func() {
		s, err := Open(path)
		done <- result{s, err}
	}()
	var res result
	select {
	case res = <-done:
	case <-time.After(5 * time.Second):
		// Releasing the lock lets the blocked Open finish, so the test
		// fails instead of hanging until the package timeout.
		_ = first.Close()
		if res = <-done; res.s != nil {
			_ = res.s.Close()
		}
		t.Fatal("second Open of a held file did not fail within 5s")
	}
	if res.err == nil {
		_ = res.s.Close()
		_ = first.Close()
		t.Fatal("second Open of a held file succeeded")
	}
	if !errors.Is(res.err, ErrLocked) || !strings.Contains(res.err.Error(), path) {
		t.Fatalf("second Open error = %v, want ErrLocked naming %s", res.err, path)
	}
	t.Logf("second Open failed after %v: %v", time.Since(start), res.err)
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	// Once released, the file opens again.
	openT(t, path)
}

func TestOpenCreatesPrivateDirAndFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a", "b", "spool.db")
	openT(t, path)
	for _, c := range []struct {
		path string
		mode os.FileMode
	}{{filepath.Dir(path), 0o700}, {filepath.Dir(filepath.Dir(path)), 0o700}, {path, 0o600}} {
		fi, err := os.Stat(c.path)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != c.mode {
			t.Errorf("%s mode = %v, want %v", c.path, got, c.mode)
		}
	}
}

func TestAfterClose(t *testing.T) {
	ctx := context.Background()
	s, err := Open(tempPath(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := s.Append(ctx, rec(1)); !errors.Is(err, ErrClosed) {
		t.Errorf("Append after Close = %v", err)
	}
	if _, err := s.List(ctx, 0, 0); !errors.Is(err, ErrClosed) {
		t.Errorf("List after Close = %v", err)
	}
	if _, err := s.Drain(ctx, func(context.Context, Entry) error { return nil }); !errors.Is(err, ErrClosed) {
		t.Errorf("Drain after Close = %v", err)
	}
}

func TestAppendValidatesAndKeepsCallerData(t *testing.T) {
	ctx := context.Background()
	s := openT(t, tempPath(t))
	if err := s.Append(ctx, rec(1), Record{Data: []byte("x")}); err == nil {
		t.Fatal("Append accepted a record without a subject")
	}
	if s.Len() != 0 {
		t.Fatalf("a rejected batch left %d records", s.Len())
	}
	rs := []Record{rec(1)}
	if err := s.Append(ctx, rs...); err != nil {
		t.Fatal(err)
	}
	if !rs[0].SpooledAt.IsZero() {
		t.Fatal("Append wrote SpooledAt into the caller's slice")
	}
	fixed := time.Date(2024, 2, 29, 23, 59, 59, 123456789, time.FixedZone("X", 3600))
	r := rec(2)
	r.SpooledAt = fixed
	if err := s.Append(ctx, r); err != nil {
		t.Fatal(err)
	}
	es, _ := s.List(ctx, 0, 0)
	if len(es) != 2 || !es[1].SpooledAt.Equal(fixed) || es[1].SpooledAt.Location() != time.UTC {
		t.Fatalf("SpooledAt round trip: %v", es)
	}
	if since := time.Since(es[0].SpooledAt); since < 0 || since > time.Minute {
		t.Fatalf("SpooledAt set by Append = %v", es[0].SpooledAt)
	}
}

func TestCodecRoundTrip(t *testing.T) {
	at := time.Date(1969, 7, 20, 20, 17, 40, 1, time.UTC) // negative Unix time
	tests := []struct {
		name string
		r    Record
	}{
		{"minimal", Record{Subject: "s", SpooledAt: at}},
		{"headers", Record{Subject: "inthub.x", SpooledAt: at, Header: map[string][]string{
			"Nats-Msg-Id": {"e1"}, "Multi": {"a", "", "c"}, "Empty": {},
		}}},
		{"binary data", Record{Subject: "ü.ñ", SpooledAt: at, Data: []byte{0, 1, 0xff, 0}}},
		{"large data", Record{Subject: "s", SpooledAt: at, Data: bytes.Repeat([]byte("x"), 1<<20)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := encodeRecord(&tt.r)
			got, err := decodeRecord(b)
			if err != nil {
				t.Fatal(err)
			}
			// An empty value list decodes as an empty, non-nil slice.
			if !reflect.DeepEqual(got, tt.r) {
				t.Fatalf("round trip:\n got %+v\nwant %+v", got, tt.r)
			}
			if !bytes.Equal(encodeRecord(&got), b) {
				t.Fatal("encoding is not deterministic")
			}
		})
	}
}

func TestCodecRejectsCorruption(t *testing.T) {
	good := encodeRecord(&Record{Subject: "inthub.x", Header: map[string][]string{"Nats-Msg-Id": {"e1"}},
		Data: []byte("payload"), SpooledAt: time.Unix(1, 2)})
	// CRC-32C catches every burst of up to 32 bits, so each single damaged
	// byte must be reported.
	for i := range good {
		bad := bytes.Clone(good)
		bad[i] ^= 0xff
		if _, err := decodeRecord(bad); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("flipped byte %d: err = %v, want ErrCorrupt", i, err)
		}
	}
	for n := range len(good) {
		if _, err := decodeRecord(good[:n]); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("truncated to %d: err = %v, want ErrCorrupt", n, err)
		}
	}
	// A valid checksum over an unknown version is still refused.
	v2 := bytes.Clone(good[:len(good)-crcLen])
	v2[0] = 2
	v2 = append(v2, 0, 0, 0, 0)
	putCRC(v2)
	if _, err := decodeRecord(v2); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "version") {
		t.Fatalf("version 2: err = %v", err)
	}
}

func putCRC(b []byte) {
	binary.BigEndian.PutUint32(b[len(b)-crcLen:], checksum(b[:len(b)-crcLen]))
}

func benchRecord() Record {
	return Record{
		Subject: "inthub.events.bench",
		Header:  map[string][]string{"Nats-Msg-Id": {"0197a3c2-6f7e-7c1a-9b4d-1f2e3d4c5b6a"}},
		Data:    bytes.Repeat([]byte("a"), 1024),
	}
}

// BenchmarkAppend is the spool's worst case: one 1 KiB record per fsync'd
// transaction.
func BenchmarkAppend(b *testing.B) {
	s := openT(b, tempPath(b))
	r := benchRecord()
	ctx := context.Background()
	b.SetBytes(int64(len(r.Data)))
	b.ReportAllocs()
	for b.Loop() {
		if err := s.Append(ctx, r); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAppendBatch64 is one op = 64 records of 1 KiB in one transaction.
func BenchmarkAppendBatch64(b *testing.B) {
	s := openT(b, tempPath(b))
	rs := make([]Record, 64)
	for i := range rs {
		rs[i] = benchRecord()
	}
	ctx := context.Background()
	b.SetBytes(64 * 1024)
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		if err := s.Append(ctx, rs...); err != nil {
			b.Fatal(err)
		}
		n += len(rs)
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkDrain is one op = one 1 KiB record delivered and removed, with
// fsync on, removals batched by drainBatch.
func BenchmarkDrain(b *testing.B) {
	s := openT(b, tempPath(b))
	ctx := context.Background()
	rs := make([]Record, 1024)
	for i := range rs {
		rs[i] = benchRecord()
	}
	for left := b.N; left > 0; left -= len(rs) {
		if err := s.Append(ctx, rs[:min(left, len(rs))]...); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(1024)
	b.ReportAllocs()
	b.ResetTimer()
	n, err := s.Drain(ctx, func(context.Context, Entry) error { return nil })
	if err != nil || n != b.N {
		b.Fatalf("Drain = %d, %v; want %d", n, err, b.N)
	}
}
