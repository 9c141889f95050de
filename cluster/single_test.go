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

// solo is a single node over the embedded store: local lease and catalog,
// a stand-in runner and a running reconciler (stopped at cleanup).
type solo struct {
	st     *bolt.Store
	cat    *catalog.Local
	runner *fakeRunner
	world  *world
	rec    *Reconciler
	begin  time.Time
}

func startSolo(t *testing.T, cfg Config, profiles int) (*solo, []string) {
	t.Helper()
	st, err := bolt.Open(t.TempDir(), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	s := &solo{st: st, cat: catalog.NewLocal(st), world: newWorld()}
	lm := lease.NewLocal(st, cfg.Node)
	t.Cleanup(func() { lm.Close() })
	ms := startMembership(t, cfg.Node)
	s.runner = newFakeRunner(cfg.Node, s.world)
	t.Cleanup(s.runner.close)
	ids := createProfiles(t, s.cat, profiles)
	s.rec = NewReconciler(cfg, ms, lm, s.cat, s.runner)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	s.begin = time.Now()
	go func() { defer close(done); _ = s.rec.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return s, ids
}

func (s *solo) waitRunning(t *testing.T, n int) {
	t.Helper()
	if err := testenv.WaitFor(10*time.Second, func() error {
		if got := len(s.runner.Running()); got != n {
			return fmt.Errorf("running %d, want %d", got, n)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// TestSingleNodeModeWithLocalLeaseAndCatalog: the same reconciler drives a
// single node over the embedded store (local lease, local catalog): it owns
// every profile, follows catalog changes, and Drain stops everything.
func TestSingleNodeModeWithLocalLeaseAndCatalog(t *testing.T) {
	s, ids := startSolo(t, testConfig("solo"), 10)
	ctx := context.Background()
	s.waitRunning(t, 10)
	for _, id := range ids {
		f, _ := s.st.Fence(ctx, id)
		if tok := s.runner.Running()[id]; tok == 0 || f != tok {
			t.Fatalf("%s: token %d, fence %d", id, tok, f)
		}
	}
	if err := s.cat.Delete(ctx, ids[0]); err != nil {
		t.Fatal(err)
	}
	s.waitRunning(t, 9)
	dctx, dcancel := context.WithTimeout(ctx, 5*time.Second)
	defer dcancel()
	if err := s.rec.Drain(dctx); err != nil {
		t.Fatal(err)
	}
	if n := len(s.runner.Running()); n != 0 {
		t.Fatalf("%d running after drain", n)
	}
	if len(s.world.Violations()) > 0 {
		t.Fatal(s.world.Violations())
	}
}

// TestConnectRateLimit: session starts never outrun the token bucket
// (burst + rate × elapsed), so a mass takeover is spread out.
func TestConnectRateLimit(t *testing.T) {
	cfg := testConfig("solo")
	cfg.ConnectRate, cfg.ConnectBurst = 20, 5
	s, ids := startSolo(t, cfg, 30)
	s.waitRunning(t, len(ids))
	s.runner.mu.Lock()
	starts := append([]time.Time(nil), s.runner.starts...)
	s.runner.mu.Unlock()
	for i, at := range starts {
		allowed := float64(cfg.ConnectBurst) + cfg.ConnectRate*at.Sub(s.begin).Seconds()
		if float64(i+1) > allowed+0.5 {
			t.Fatalf("start #%d at %s: bucket allows %.1f", i+1, at.Sub(s.begin), allowed)
		}
	}
	took := starts[len(starts)-1].Sub(s.begin)
	t.Logf("30 profiles at 20/s (burst 5): all started after %s", took.Round(time.Millisecond))
	if min := time.Duration(float64(len(ids)-cfg.ConnectBurst) / cfg.ConnectRate * float64(time.Second)); took < min*9/10 {
		t.Fatalf("took %s, the bucket needs at least %s", took, min)
	}
}
