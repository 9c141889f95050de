package registry_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/amarula/amarula/lease"
	"github.com/amarula/amarula/msgstore"
	"github.com/amarula/amarula/registry"
	"github.com/amarula/amarula/session"
	"github.com/amarula/amarula/session/sessiontest"
	"github.com/amarula/amarula/storage"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, sessiontest.GoleakOptions()...)
}

// world is a simulator, a store, a local lease manager and a registry,
// closed at cleanup (registry first).
type world struct {
	t      *testing.T
	sim    *sessiontest.Sim
	st     storage.Store
	leases *lease.Local
	reg    *registry.Registry
}

func newWorld(t *testing.T, st storage.Store) *world {
	t.Helper()
	sim := sessiontest.NewSim(t)
	leases := lease.NewLocal(st, "n1")
	t.Cleanup(func() { _ = leases.Close() })
	reg, err := registry.New(registry.Config{
		Node:    "n1",
		Store:   st,
		Leases:  leases,
		Session: sim.Config(t, st, "", 0),
		Logger:  sessiontest.Logger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := reg.Close(ctx); err != nil {
			t.Errorf("registry close: %v", err)
		}
	})
	return &world{t: t, sim: sim, st: st, leases: leases, reg: reg}
}

func (w *world) state(profile string) func() session.State {
	return func() session.State { return w.reg.State(profile) }
}

func (w *world) acquire(profile string) *lease.Grant {
	w.t.Helper()
	g, err := w.leases.Acquire(context.Background(), profile)
	if err != nil {
		w.t.Fatal(err)
	}
	return g
}

// TestOnePerProfile: Start runs one session per profile; a second Start
// is refused; Lookup, Whereis and List see it; Stop frees the slot and the
// profile reports stopped; a stopped profile can be started again.
func TestOnePerProfile(t *testing.T) {
	sessiontest.ForEachBackend(t, func(t *testing.T, st storage.Store) {
		w := newWorld(t, st)
		ctx := context.Background()
		g := w.acquire("alice")
		if err := w.reg.Start(ctx, g); err != nil {
			t.Fatal(err)
		}
		if err := w.reg.Start(ctx, g); !errors.Is(err, registry.ErrRunning) {
			t.Fatalf("second Start: %v", err)
		}
		s, ok := w.reg.Lookup("alice")
		if !ok || s.Token() != g.Token {
			t.Fatalf("Lookup: %v token %d", ok, s.Token())
		}
		if node, err := w.reg.Whereis(ctx, "alice"); err != nil || node != "n1" {
			t.Fatalf("Whereis: %q %v", node, err)
		}
		if node, err := w.reg.Whereis(ctx, "bob"); err != nil || node != "" {
			t.Fatalf("Whereis(bob): %q %v", node, err)
		}
		sessiontest.WaitState(t, w.state("alice"), session.StatePairing, 20*time.Second)
		if l := w.reg.List(); len(l) != 1 || l[0].Profile != "alice" {
			t.Fatalf("List: %+v", l)
		}
		if _, err := w.reg.Info(ctx, "bob"); !errors.Is(err, registry.ErrNotFound) {
			t.Fatalf("Info(bob): %v", err)
		}
		if err := w.reg.Stop(ctx, "alice"); err != nil {
			t.Fatal(err)
		}
		if _, ok := w.reg.Lookup("alice"); ok {
			t.Fatal("slot kept after Stop")
		}
		if in, err := w.reg.Info(ctx, "alice"); err != nil || in.State != session.StateStopped {
			t.Fatalf("Info after Stop: %+v %v", in, err)
		}
		if err := w.reg.Stop(ctx, "alice"); err != nil {
			t.Fatalf("Stop of a stopped profile: %v", err)
		}
		if err := w.leases.Release(ctx, g); err != nil {
			t.Fatal(err)
		}
		// Resume after stop: Connect acquires a new grant and starts again.
		if err := w.reg.Connect(ctx, "alice"); err != nil {
			t.Fatal(err)
		}
		s2, ok := w.reg.Lookup("alice")
		if !ok || s2.Token() <= g.Token {
			t.Fatalf("after Connect: running %v, token %d (old %d)", ok, s2.Token(), g.Token)
		}
	})
}

// TestGrantEndStopsSession: when the grant ends (lease released or lost),
// the session stops by itself without reconnecting and its slot is freed.
func TestGrantEndStopsSession(t *testing.T) {
	sessiontest.ForEachBackend(t, func(t *testing.T, st storage.Store) {
		w := newWorld(t, st)
		ctx := context.Background()
		g := w.acquire("alice")
		if err := w.reg.Start(ctx, g); err != nil {
			t.Fatal(err)
		}
		dev := w.sim.LinkQR(t, func() (session.QR, error) { return w.reg.QR(ctx, "alice") })
		sessiontest.WaitState(t, w.state("alice"), session.StateConnected, 30*time.Second)
		s, _ := w.reg.Lookup("alice")
		if err := w.leases.Release(ctx, g); err != nil {
			t.Fatal(err)
		}
		sessiontest.WaitFor(t, "the slot to be freed", 10*time.Second, func() error {
			if _, ok := w.reg.Lookup("alice"); ok {
				return fmt.Errorf("still running, state %s", w.reg.State("alice"))
			}
			return nil
		})
		if !errors.Is(s.Err(), session.ErrLeaseLost) {
			t.Fatalf("session ended with %v", s.Err())
		}
		conns := w.sim.Device(t, dev).ConnectionsTotal
		time.Sleep(1500 * time.Millisecond)
		if d := w.sim.Device(t, dev); d.Connected || d.ConnectionsTotal != conns {
			t.Fatalf("session kept or re-opened its connection: %+v (was %d)", d, conns)
		}
	})
}

// TestThroughRegistry: the API-facing operations end to end against the
// simulator: connect (acquire) → QR → linked → send → receive → disconnect
// keeps the slot and reconnects → delete logs out and wipes everything.
func TestThroughRegistry(t *testing.T) {
	sessiontest.ForEachBackend(t, func(t *testing.T, st storage.Store) {
		w := newWorld(t, st)
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		if err := w.reg.Connect(ctx, "alice"); err != nil {
			t.Fatal(err)
		}
		dev := w.sim.LinkQR(t, func() (session.QR, error) { return w.reg.QR(ctx, "alice") })
		sessiontest.WaitState(t, w.state("alice"), session.StateConnected, 30*time.Second)
		if _, err := w.reg.QR(ctx, "alice"); !errors.Is(err, session.ErrAlreadyPaired) {
			t.Fatalf("QR when paired: %v", err)
		}
		if _, err := w.reg.QR(ctx, "bob"); !errors.Is(err, registry.ErrNotFound) {
			t.Fatalf("QR of an unknown profile: %v", err)
		}
		res, err := w.reg.Send(ctx, "alice", session.SendRequest{To: w.sim.Peer.JID().String(), Text: "via registry"})
		if err != nil {
			t.Fatal(err)
		}
		sessiontest.WaitFor(t, "the peer to get it", 20*time.Second, func() error {
			for _, m := range w.sim.Peer.Messages(0) {
				if m.ID == res.ID {
					return nil
				}
			}
			return errors.New("not yet")
		})
		in, err := w.sim.Peer.SendText(w.sim.Own.JID(), "answer")
		if err != nil {
			t.Fatal(err)
		}
		sessiontest.WaitFor(t, "the answer to be stored", 20*time.Second, func() error {
			_, err := w.reg.Messages().Get(ctx, "alice", in)
			return err
		})
		page, err := w.reg.Messages().List(ctx, "alice", msgstore.Query{Chat: w.sim.Peer.JID().String()})
		if err != nil || len(page.Messages) != 2 || page.Messages[0].ID != in {
			t.Fatalf("chat list: %+v %v", page.Messages, err)
		}

		if hosts, err := w.reg.MediaHosts(ctx); err != nil || len(hosts) == 0 {
			t.Fatalf("MediaHosts: %v %v", hosts, err)
		}
		if _, err := w.reg.RequestReupload(ctx, "bob", in, msgstore.Media{}); !errors.Is(err, registry.ErrNotFound) {
			t.Fatalf("RequestReupload for a profile not running here: %v", err)
		}

		before := w.sim.Device(t, dev).ConnectionsTotal
		if err := w.reg.Disconnect(ctx, "alice"); err != nil {
			t.Fatal(err)
		}
		if _, ok := w.reg.Lookup("alice"); !ok {
			t.Fatal("Disconnect freed the slot")
		}
		sessiontest.WaitFor(t, "the reconnect", 20*time.Second, func() error {
			if d := w.sim.Device(t, dev); d.ConnectionsTotal <= before || w.reg.State("alice") != session.StateConnected {
				return fmt.Errorf("connections %d, state %s", d.ConnectionsTotal, w.reg.State("alice"))
			}
			return nil
		})

		// Stop then Connect at once: the registry's own grant is given up
		// by Stop itself, so the profile can be acquired again right away.
		if err := w.reg.Stop(ctx, "alice"); err != nil {
			t.Fatal(err)
		}
		if err := w.reg.Connect(ctx, "alice"); err != nil {
			t.Fatalf("Connect right after Stop: %v", err)
		}
		sessiontest.WaitState(t, w.state("alice"), session.StateConnected, 30*time.Second)

		if err := w.reg.Delete(ctx, "alice"); err != nil {
			t.Fatal(err)
		}
		if _, ok := w.reg.Lookup("alice"); ok {
			t.Fatal("session still running after Delete")
		}
		if _, err := st.Get(ctx, "alice", storage.NSCreds, storage.CredsKey); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("creds after Delete: %v", err)
		}
		if _, err := w.reg.Messages().Get(ctx, "alice", in); !errors.Is(err, msgstore.ErrNotFound) {
			t.Fatalf("messages after Delete: %v", err)
		}
		if evs := sessiontest.Events(t, st, "alice"); len(evs) != 0 {
			t.Fatalf("%d events after Delete", len(evs))
		}
		sessiontest.WaitFor(t, "the device to be unlinked", 10*time.Second, func() error {
			if d := w.sim.Device(t, dev); !d.Removed {
				return fmt.Errorf("device %+v", d)
			}
			return nil
		})
	})
}

// TestCloseStopsAll: Close stops every session (in parallel) and leaves no
// goroutine behind (goleak in TestMain); Start afterwards is refused.
func TestCloseStopsAll(t *testing.T) {
	sessiontest.ForEachBackend(t, func(t *testing.T, st storage.Store) {
		w := newWorld(t, st)
		ctx := context.Background()
		var sessions []*session.Session
		for _, p := range []string{"p1", "p2", "p3"} {
			if err := w.reg.Start(ctx, w.acquire(p)); err != nil {
				t.Fatal(err)
			}
			s, _ := w.reg.Lookup(p)
			sessions = append(sessions, s)
		}
		for _, p := range []string{"p1", "p2", "p3"} {
			sessiontest.WaitState(t, w.state(p), session.StatePairing, 20*time.Second)
		}
		cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		if err := w.reg.Close(cctx); err != nil {
			t.Fatal(err)
		}
		for _, s := range sessions {
			select {
			case <-s.Done():
			default:
				t.Fatalf("%s still running after Close", s.Profile())
			}
		}
		if l := w.reg.List(); len(l) != 0 {
			t.Fatalf("List after Close: %+v", l)
		}
		if err := w.reg.Start(ctx, w.acquire("p4")); !errors.Is(err, registry.ErrClosed) {
			t.Fatalf("Start after Close: %v", err)
		}
	})
}

// TestConnectRate: the node-wide connect limiter spaces the sessions'
// connection attempts (5 sessions at 2/s with a burst of 2 need ≥ 1.5 s).
func TestConnectRate(t *testing.T) {
	st := sessiontest.Backends[0].Open(t)
	sim := sessiontest.NewSim(t)
	leases := lease.NewLocal(st, "n1")
	t.Cleanup(func() { _ = leases.Close() })
	reg, err := registry.New(registry.Config{Node: "n1", Store: st, Leases: leases,
		Session: sim.Config(t, st, "", 0), Logger: sessiontest.Logger(t), ConnectRate: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = reg.Close(ctx)
	})
	ctx := context.Background()
	profiles := []string{"r1", "r2", "r3", "r4", "r5"}
	start := time.Now()
	for _, p := range profiles {
		if err := reg.Connect(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range profiles {
		sessiontest.WaitFor(t, p+" showing a QR", 20*time.Second, func() error {
			_, err := reg.QR(ctx, p)
			return err
		})
	}
	elapsed := time.Since(start)
	t.Logf("5 pairing connections at 2/s took %s", elapsed.Round(time.Millisecond))
	if elapsed < 1400*time.Millisecond {
		t.Fatalf("5 connections in %s: the connect rate is not applied", elapsed)
	}
}
