package redis_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/amarula/amarula/internal/testenv"
	"github.com/amarula/amarula/storage"
	"github.com/amarula/amarula/storage/redis"
)

// TestTailHoldsNoConnection: many waiting Tails (one per webhook deliverer
// of a node) must not pin pool connections. With a pool of 4 and 40
// waiting Tails, writes still go through (a blocking XREAD per Tail would
// exhaust the pool and writes would fail with a pool timeout), an append
// through the same Store wakes its Tail, and an append by another Store
// (another node) is seen by polling.
func TestTailHoldsNoConnection(t *testing.T) {
	srv := testenv.StartRedis(t)
	url := srv.URL() + "?pool_size=4&pool_timeout=2s"
	ctx := context.Background()
	open := func(block time.Duration) *redis.Store {
		s, err := redis.New(ctx, url, redis.Options{Cluster: "tail", TailBlock: block})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	owner := open(300 * time.Millisecond)
	other := open(time.Second)

	const waiting = 40
	tctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		profile string
		evs     []storage.Event
		err     error
	}
	results := make(chan result, waiting)
	var wg sync.WaitGroup
	for i := range waiting {
		p := fmt.Sprintf("p%d", i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			evs, err := owner.Tail(tctx, p, "0", 10)
			results <- result{p, evs, err}
		}()
	}
	defer wg.Wait()
	time.Sleep(200 * time.Millisecond) // let the Tails start waiting (not an assertion)

	for i := range 20 {
		if err := owner.Put(ctx, "writer", 0, "session", fmt.Sprint(i), []byte("v")); err != nil {
			t.Fatalf("write %d while %d Tails wait on a pool of 4: %v", i, waiting, err)
		}
	}
	if _, err := owner.Append(ctx, "p7", 0, "message.received", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Append(ctx, "p8", 0, "message.received", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	deadline := time.After(20 * time.Second)
	for len(got) < 2 {
		select {
		case r := <-results:
			if r.err != nil || len(r.evs) != 1 || r.evs[0].Type != "message.received" {
				t.Fatalf("tail %s: %v %v", r.profile, r.evs, r.err)
			}
			got[r.profile] = true
		case <-deadline:
			t.Fatalf("tails woken: %v, want p7 (same store) and p8 (other store)", got)
		}
	}
	if !got["p7"] || !got["p8"] {
		t.Fatalf("woken: %v", got)
	}
	cancel()
	for range waiting - 2 {
		if r := <-results; r.err != context.Canceled {
			t.Fatalf("tail %s after cancel: %v %v", r.profile, r.evs, r.err)
		}
	}
}
