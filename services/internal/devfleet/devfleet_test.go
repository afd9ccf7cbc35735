package devfleet

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func runAsync(ctx context.Context, cs ...Component) <-chan error {
	done := make(chan error, 1)
	go func() { done <- Run(ctx, nil, cs) }()
	return done
}

func wait(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
		return nil
	}
}

func blockUntilDone(name string) Component {
	return Func{N: name, F: func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }}
}

func TestRunStopsCleanlyOnCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := runAsync(ctx, blockUntilDone("a"), blockUntilDone("b"),
		Func{N: "c", F: func(ctx context.Context) error { <-ctx.Done(); return nil }})
	cancel()
	if err := wait(t, done); err != nil {
		t.Fatalf("Run = %v, want nil on shutdown", err)
	}
}

func TestRunWithoutComponentsWaitsForCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := runAsync(ctx)
	select {
	case err := <-done:
		t.Fatalf("Run returned %v before cancel", err)
	default:
	}
	cancel()
	if err := wait(t, done); err != nil {
		t.Fatal(err)
	}
}

func TestRunStopsEveryoneWhenOneFails(t *testing.T) {
	boom := errors.New("boom")
	stopped := make(chan struct{})
	done := runAsync(context.Background(),
		Func{N: "survivor", F: func(ctx context.Context) error { <-ctx.Done(); close(stopped); return nil }},
		Func{N: "broken", F: func(context.Context) error { return boom }},
	)
	err := wait(t, done)
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "broken") {
		t.Fatalf("Run = %v, want boom naming the component", err)
	}
	select {
	case <-stopped:
	default:
		t.Fatal("the other component was not stopped before Run returned")
	}
}

func TestRunTreatsEarlyExitAsFailure(t *testing.T) {
	done := runAsync(context.Background(), blockUntilDone("steady"),
		Func{N: "quitter", F: func(context.Context) error { return nil }})
	err := wait(t, done)
	if err == nil || !strings.Contains(err.Error(), "quitter") {
		t.Fatalf("Run = %v, want an error naming the component that left", err)
	}
}

func TestBuildTagsLoggerAndStopsAtFirstError(t *testing.T) {
	var names []string
	ok := func(name string) Builder {
		return Builder{Name: name, Build: func(d Deps) (Component, error) {
			if d.Log == nil {
				t.Errorf("%s got no logger", name)
			}
			names = append(names, name)
			return blockUntilDone(name), nil
		}}
	}
	cs, err := Build(Deps{}, []Builder{ok("a"), ok("b")})
	if err != nil || len(cs) != 2 || cs[0].Name() != "a" || cs[1].Name() != "b" {
		t.Fatalf("Build = %v, %v", cs, err)
	}
	bad := Builder{Name: "bad", Build: func(Deps) (Component, error) { return nil, errors.New("no config") }}
	names = nil
	if _, err := Build(Deps{}, []Builder{ok("a"), bad, ok("c")}); err == nil || !strings.Contains(err.Error(), "bad") {
		t.Fatalf("Build = %v, want an error naming the builder", err)
	}
	if len(names) != 1 {
		t.Fatalf("built %v after a failure; want to stop at it", names)
	}
}
