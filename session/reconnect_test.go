package session_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/amarula/amarula/lease"
	"github.com/amarula/amarula/msgstore"
	"github.com/amarula/amarula/session"
)

// proxy is a loopback TCP relay in front of the simulator that a test can
// cut (drop every live connection) and take down (refuse new ones).
type proxy struct {
	ln       net.Listener
	target   string
	down     atomic.Bool
	accepted atomic.Int64
	wg       sync.WaitGroup

	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func newProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(func() { _ = ln.Close(); p.cut(); p.wg.Wait() })
	return p
}

func (p *proxy) url() string { return "ws://" + p.ln.Addr().String() + "/ws/chat" }

func (p *proxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.accepted.Add(1)
		if p.down.Load() {
			_ = c.Close()
			continue
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		p.track(c, up)
		p.wg.Add(2)
		go p.pipe(c, up)
		go p.pipe(up, c)
	}
}

func (p *proxy) track(cs ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		p.conns[c] = struct{}{}
	}
}

func (p *proxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	_, _ = io.Copy(dst, src)
	_ = dst.Close()
	_ = src.Close()
}

// cut drops every live connection, as a network failure would.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		_ = c.Close()
		delete(p.conns, c)
	}
}

// TestReconnectAfterNetworkDrop: the network under a connected session
// fails and stays down for a while: the session reports disconnected,
// retries with a growing backoff (no tight loop), reconnects when the
// network is back, and what the peer sent meanwhile arrives exactly once.
func TestReconnectAfterNetworkDrop(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		p := newProxy(t, e.Srv.Addr())
		cfg := e.config(1)
		cfg.WhatsAppURL = p.url()
		s := e.start(cfg)
		e.LinkQR(t, s.QR)
		waitState(t, s, session.StateConnected, 30*time.Second)

		p.down.Store(true)
		before := p.accepted.Load()
		p.cut()
		waitState(t, s, session.StateDisconnected, 10*time.Second)
		var sent []string
		for i := 0; i < 3; i++ {
			id, err := e.peer.SendText(e.own.JID(), fmt.Sprintf("while the network is down %d", i))
			if err != nil {
				t.Fatal(err)
			}
			sent = append(sent, id)
		}
		const downFor = 3 * time.Second
		time.Sleep(downFor)
		attempts := p.accepted.Load() - before
		// Backoff 100 ms doubling to 1 s (±20 %): about 5–6 attempts in 3 s.
		if attempts < 2 || attempts > 10 {
			t.Fatalf("%d connection attempts in %s while down, want a bounded backoff (2..10)", attempts, downFor)
		}
		t.Logf("%d reconnect attempts in %s with the network down", attempts, downFor)
		p.down.Store(false)
		waitState(t, s, session.StateConnected, 10*time.Second)
		for _, id := range sent {
			e.waitMessage(s, id, nil)
			if n := e.countEvents(msgstore.EventMessageReceived, id); n != 1 {
				t.Fatalf("%d message.received events for %s", n, id)
			}
		}
		if e.countEvents(msgstore.EventSessionDisconnected, "") == 0 {
			t.Fatal("no session.disconnected event")
		}
	})
}

// TestBurstAcrossRestart: a peer sends a burst of messages and the session
// is stopped while most of them are still being delivered (about a quarter
// stored), then replaced by a new one: every message ends up stored exactly
// once, with exactly one message.received.
func TestBurstAcrossRestart(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		const total = 120
		s1, _ := e.pairQR(1)
		ids := make(chan string, total)
		sendErr := make(chan error, 1)
		var sentCount atomic.Int64
		go func() {
			defer close(ids)
			for i := 0; i < total; i++ {
				id, err := e.peer.SendText(e.own.JID(), fmt.Sprintf("burst %03d", i))
				if err != nil {
					sendErr <- err
					return
				}
				ids <- id
				sentCount.Add(1)
			}
		}()
		// Stop the first session once part of the burst is stored.
		waitFor(t, "part of the burst", 30*time.Second, func() error {
			if n := e.countEvents(msgstore.EventMessageReceived, ""); n < total/4 {
				return fmt.Errorf("%d stored", n)
			}
			return nil
		})
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		atStop := sentCount.Load()
		if err := s1.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		t.Logf("first session stopped after %d of %d sends, %d stored", atStop, total, e.countEvents(msgstore.EventMessageReceived, ""))
		s2 := e.start(e.config(1))
		waitState(t, s2, session.StateConnected, 30*time.Second)
		var all []string
		for id := range ids {
			all = append(all, id)
		}
		select {
		case err := <-sendErr:
			t.Fatal(err)
		default:
		}
		waitFor(t, "the whole burst", 60*time.Second, func() error {
			if n := e.countEvents(msgstore.EventMessageReceived, ""); n < total {
				return fmt.Errorf("%d/%d stored", n, total)
			}
			return nil
		})
		time.Sleep(500 * time.Millisecond) // a late duplicate would show now
		seen := map[string]int{}
		for _, ev := range e.events() {
			if ev.Type != msgstore.EventMessageReceived {
				continue
			}
			var d struct{ ID string }
			if err := json.Unmarshal(ev.Data, &d); err != nil {
				t.Fatal(err)
			}
			seen[d.ID]++
		}
		lost, dup := 0, 0
		for _, id := range all {
			switch seen[id] {
			case 0:
				lost++
			case 1:
			default:
				dup++
			}
			if _, err := s2.Messages().Get(context.Background(), profile, id); err != nil {
				t.Errorf("message %s not stored: %v", id, err)
			}
		}
		t.Logf("burst of %d across a restart: %d lost, %d duplicated", total, lost, dup)
		if lost != 0 || dup != 0 || len(seen) != total {
			t.Fatalf("%d lost, %d duplicated, %d distinct events", lost, dup, len(seen))
		}
	})
}

// blockedLimiter never grants a connection (a node-wide limiter saturated
// by a big failover).
type blockedLimiter struct{}

func (blockedLimiter) Wait(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }

// TestLimiterWaitHonoursGrantAndStop: a session queued on the connect
// limiter stops at once when its grant ends (and never dials), and Stop
// does not wait for the limiter either.
func TestLimiterWaitHonoursGrantAndStop(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		leases := lease.NewLocal(e.st, "n1")
		t.Cleanup(func() { _ = leases.Close() })
		g, err := leases.Acquire(context.Background(), profile)
		if err != nil {
			t.Fatal(err)
		}
		cfg := e.config(0)
		cfg.Grant, cfg.ConnectLimiter = g, blockedLimiter{}
		s := e.start(cfg)
		time.Sleep(200 * time.Millisecond) // let it queue on the limiter
		if err := leases.Release(context.Background(), g); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the session to end with its grant", 5*time.Second, func() error {
			select {
			case <-s.Done():
				return nil
			default:
				return errNotYet
			}
		})
		if !errors.Is(s.Err(), session.ErrLeaseLost) {
			t.Fatalf("ended with %v", s.Err())
		}
		if n := e.Srv.Stats().ConnectionsOpened; n != 0 {
			t.Fatalf("dialled %d times without a grant", n)
		}

		cfg2 := e.config(5)
		cfg2.ConnectLimiter = blockedLimiter{}
		s2 := e.start(cfg2)
		time.Sleep(200 * time.Millisecond)
		begin := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s2.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(begin); d > time.Second {
			t.Fatalf("Stop waited %s for the limiter", d)
		}
	})
}
