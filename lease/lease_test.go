package lease

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// memFencer is an in-test Fencer with storage's semantics: a lower token is
// refused, the same token is a no-op.
type memFencer struct {
	mu     sync.Mutex
	fences map[string]uint64
	fail   error // when set, RaiseFence fails with it
	raises int
}

var errFenced = errors.New("memfencer: fenced")

func newMemFencer() *memFencer { return &memFencer{fences: map[string]uint64{}} }

func (f *memFencer) RaiseFence(_ context.Context, profile string, token uint64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return f.fail
	}
	if token < f.fences[profile] {
		return fmt.Errorf("%w: fence %d > %d", errFenced, f.fences[profile], token)
	}
	f.fences[profile] = token
	f.raises++
	return nil
}

func (f *memFencer) Fence(_ context.Context, profile string) (uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.fences[profile], nil
}

func (f *memFencer) get(profile string) uint64 {
	v, _ := f.Fence(context.Background(), profile)
	return v
}

func TestLocalTokensAndExclusion(t *testing.T) {
	ctx := context.Background()
	f := newMemFencer()
	f.fences["alice"] = 41 // fence left by an earlier run

	l := NewLocal(f, "solo")
	g, err := l.Acquire(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if g.Token != 42 || f.get("alice") != 42 {
		t.Fatalf("token %d fence %d, want 42/42", g.Token, f.get("alice"))
	}
	_, err = l.Acquire(ctx, "alice")
	var held *HeldError
	if !errors.Is(err, ErrHeld) || !errors.As(err, &held) || held.Owner != "solo" || held.Token != 42 {
		t.Fatalf("second acquire: %v, want HeldError{solo,42}", err)
	}
	if n, tok, _ := l.Owner(ctx, "alice"); n != "solo" || tok != 42 {
		t.Fatalf("owner %s/%d", n, tok)
	}
	if err := l.Release(ctx, g); err != nil {
		t.Fatal(err)
	}
	assertClosed(t, g.Done(), time.Second, "released grant")
	if !errors.Is(g.Err(), ErrReleased) {
		t.Fatalf("grant err %v", g.Err())
	}
	if err := l.Release(ctx, g); !errors.Is(err, ErrNotOwner) {
		t.Fatalf("double release: %v", err)
	}
	if n, _, _ := l.Owner(ctx, "alice"); n != "" {
		t.Fatalf("owner after release %q", n)
	}

	// A restart is a new Local over the same store: tokens keep growing.
	g2, err := l.Acquire(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	assertClosed(t, g2.Done(), time.Second, "grant after Close")
	assertClosed(t, l.Done(), time.Second, "Done after Close")
	if _, err := l.Acquire(ctx, "bob"); !errors.Is(err, ErrClosed) {
		t.Fatalf("acquire after close: %v", err)
	}
	l2 := NewLocal(f, "solo")
	defer l2.Close()
	g3, err := l2.Acquire(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if g3.Token != 44 || g3.Token <= g2.Token {
		t.Fatalf("token after restart %d, previous %d", g3.Token, g2.Token)
	}

	// A failing fencer means no grant.
	f.fail = errors.New("disk on fire")
	if _, err := l2.Acquire(ctx, "carol"); err == nil {
		t.Fatal("acquire with failing fencer succeeded")
	}
	f.fail = nil
	if _, err := l2.Acquire(ctx, "carol"); err != nil {
		t.Fatalf("acquire after fencer recovered: %v", err)
	}
}

func TestLocalConcurrentAcquireOneWinner(t *testing.T) {
	f := newMemFencer()
	l := NewLocal(f, "solo")
	defer l.Close()
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := 0
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := l.Acquire(context.Background(), "p"); err == nil {
				mu.Lock()
				wins++
				mu.Unlock()
			} else if !errors.Is(err, ErrHeld) {
				t.Errorf("unexpected error %v", err)
			}
		}()
	}
	wg.Wait()
	if wins != 1 {
		t.Fatalf("%d winners, want 1", wins)
	}
}

func assertClosed(t *testing.T, ch <-chan struct{}, within time.Duration, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(within):
		t.Fatalf("%s: not closed within %s", what, within)
	}
}

func assertOpen(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
		t.Fatalf("%s: closed, want open", what)
	default:
	}
}
