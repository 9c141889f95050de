package cluster

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/amarula/amarula/catalog"
	"github.com/amarula/amarula/internal/testenv"
	"github.com/amarula/amarula/lease"
	"github.com/amarula/amarula/storage/bolt"
)

// TestSingleNodeModeWithLocalLeaseAndCatalog: the same reconciler drives a
// single node over the embedded store (local lease, local catalog): it owns
// every profile, follows catalog changes, and Drain stops everything.
func TestSingleNodeModeWithLocalLeaseAndCatalog(t *testing.T) {
	st, err := bolt.Open(t.TempDir(), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	cat := catalog.NewLocal(st)
	lm := lease.NewLocal(st, "solo")
	defer lm.Close()
	ms := startMembership(t, "solo")
	w := newWorld()
	runner := newFakeRunner("solo", w)
	defer runner.close()
	cfg := testConfig("solo")
	cfg.Metrics = NewMetrics(nil)
	rec := NewReconciler(cfg, ms, lm, cat, runner)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = rec.Run(ctx) }()
	defer func() { cancel(); <-done }()

	ids := createProfiles(t, cat, 10)
	waitRunning := func(n int) {
		t.Helper()
		if err := testenv.WaitFor(5*time.Second, func() error {
			if got := len(runner.Running()); got != n {
				return fmt.Errorf("running %d, want %d", got, n)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	waitRunning(10)
	for _, id := range ids {
		f, _ := st.Fence(ctx, id)
		if tok := runner.Running()[id]; tok == 0 || f != tok {
			t.Fatalf("%s: token %d, fence %d", id, tok, f)
		}
	}
	if err := cat.Delete(ctx, ids[0]); err != nil {
		t.Fatal(err)
	}
	waitRunning(9)
	dctx, dcancel := context.WithTimeout(ctx, 5*time.Second)
	defer dcancel()
	if err := rec.Drain(dctx); err != nil {
		t.Fatal(err)
	}
	if n := len(runner.Running()); n != 0 {
		t.Fatalf("%d running after drain", n)
	}
	if len(w.Violations()) > 0 {
		t.Fatal(w.Violations())
	}
}

// TestConnectRateLimit: session starts never outrun the token bucket
// (burst + rate × elapsed), so a mass takeover is spread out.
func TestConnectRateLimit(t *testing.T) {
	st, err := bolt.Open(t.TempDir(), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	cat := catalog.NewLocal(st)
	lm := lease.NewLocal(st, "solo")
	defer lm.Close()
	ms := startMembership(t, "solo")
	runner := newFakeRunner("solo", newWorld())
	defer runner.close()
	cfg := testConfig("solo")
	cfg.ConnectRate, cfg.ConnectBurst = 20, 5
	ids := createProfiles(t, cat, 30)
	rec := NewReconciler(cfg, ms, lm, cat, runner)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	begin := time.Now()
	go func() { defer close(done); _ = rec.Run(ctx) }()
	defer func() { cancel(); <-done }()
	if err := testenv.WaitFor(10*time.Second, func() error {
		if got := len(runner.Running()); got != len(ids) {
			return fmt.Errorf("running %d", got)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	runner.mu.Lock()
	starts := append([]time.Time(nil), runner.starts...)
	runner.mu.Unlock()
	for i, at := range starts {
		allowed := float64(cfg.ConnectBurst) + cfg.ConnectRate*at.Sub(begin).Seconds()
		if float64(i+1) > allowed+0.5 {
			t.Fatalf("start #%d at %s: bucket allows %.1f", i+1, at.Sub(begin), allowed)
		}
	}
	took := starts[len(starts)-1].Sub(begin)
	t.Logf("30 profiles at 20/s (burst 5): all started after %s", took.Round(time.Millisecond))
	if min := time.Duration(float64(len(ids)-cfg.ConnectBurst) / cfg.ConnectRate * float64(time.Second)); took < min*9/10 {
		t.Fatalf("took %s, the bucket needs at least %s", took, min)
	}
}
