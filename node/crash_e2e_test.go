package node

import (
	"fmt"
	"net/http"
	"syscall"
	"testing"
	"time"
)

// TestE2ECrash runs the real amarula-node binary, kills it with SIGKILL
// while a phone sends 500 messages, restarts it on the same data and checks
// that every message is stored exactly once and announced exactly once.
func TestE2ECrash(t *testing.T) {
	const (
		total     = 500
		killAfter = 100 // stored messages before the kill
		profile   = "crashy"
	)
	forEachStore(t, func(t *testing.T, b backendEnv) {
		s := startSim(t)
		env := binaryEnv(s, b, "crash")
		p := startNodeBinary(t, env)
		c := newAPIClient(t, p.url)
		c.createProfile(profile, nil)
		device, _ := c.pair(s, profile)

		// The phone sends from its own goroutine (a bounded loop) in bursts
		// of 50 as fast as wasim takes them, 100 ms apart: the node dies
		// while the phone is still sending and with a backlog of delivered
		// but unacknowledged messages.
		type sent struct {
			ids []string
			err error
		}
		progress := make(chan int, total)
		done := make(chan sent, 1)
		go func() {
			var out sent
			defer func() { done <- out }()
			to := s.own.JID()
			for i := range total {
				id, err := s.peer.SendText(to, fmt.Sprintf("crash test %03d", i))
				if err != nil {
					out.err = fmt.Errorf("send %d: %w", i, err)
					return
				}
				out.ids = append(out.ids, id)
				progress <- i + 1
				if (i+1)%50 == 0 {
					time.Sleep(100 * time.Millisecond)
				}
			}
		}()

		// Kill -9 once the node has stored some of them and more are on
		// their way (queued in wasim until the node acknowledges them).
		storedAtKill, queuedAtKill := 0, 0
		waitFor(t, fmt.Sprintf("%d messages stored and a backlog before the kill", killAfter), 60*time.Second, func() error {
			var page struct {
				Messages []struct{} `json:"messages"`
			}
			c.json(http.MethodGet, "/v1/profiles/"+profile+"/messages?limit=500", nil, http.StatusOK, &page)
			storedAtKill, queuedAtKill = len(page.Messages), s.device(t, device).Queued
			if storedAtKill < killAfter || queuedAtKill == 0 {
				return fmt.Errorf("%d stored, %d queued", storedAtKill, queuedAtKill)
			}
			return nil
		})
		p.kill()
		killedAt := time.Now()
		sentAtKill := len(progress)
		if storedAtKill >= total {
			t.Fatalf("the node stored all %d messages before it could be killed", total)
		}
		res := <-done
		if res.err != nil {
			t.Fatal(res.err)
		}

		p = startNodeBinary(t, env)
		c = newAPIClient(t, p.url)
		c.waitState(profile, "connected", 30*time.Second)
		var msgs int
		waitFor(t, fmt.Sprintf("all %d messages stored after the restart", total), 90*time.Second, func() error {
			if msgs = len(c.messages(profile)); msgs < total {
				return fmt.Errorf("%d stored", msgs)
			}
			return nil
		})
		recovered := time.Since(killedAt)

		// Small odd pages: most messages share a second, so page
		// boundaries fall inside runs of equal timestamps.
		stored := map[string]int{}
		for _, m := range c.messagePages(profile, 37) {
			stored[m.ID]++
		}
		evs := c.events(profile, "0")
		announced := map[string]int{}
		for _, e := range evs {
			if e.Type == "message.received" {
				announced[e.messageID()]++
			}
		}
		lost, dupStored, dupEvents := 0, 0, 0
		for _, id := range res.ids {
			switch stored[id] {
			case 0:
				lost++
			case 1:
			default:
				dupStored++
			}
			if announced[id] != 1 {
				dupEvents++
			}
		}
		t.Logf("killed after %d of %d sent, %d stored, %d queued unacknowledged in wasim; after restart %d stored, %d message.received events, %d lost, %d stored twice, %d ids not announced exactly once; all stored %s after the kill",
			sentAtKill, total, storedAtKill, queuedAtKill, len(stored), countEvents(evs, "message.received", ""), lost, dupStored, dupEvents, recovered.Round(time.Millisecond))
		if lost != 0 || dupStored != 0 || dupEvents != 0 || len(stored) != total || countEvents(evs, "message.received", "") != total {
			t.Fatalf("not exactly once: %d lost, %d stored twice, %d not announced once, %d stored ids, %d events for %d messages",
				lost, dupStored, dupEvents, len(stored), countEvents(evs, "message.received", ""), total)
		}
	})
}

// TestE2EShutdown sends SIGTERM to the real binary with a connected
// profile: it exits 0 within 10 s, and the profile reconnects after a
// restart without pairing.
func TestE2EShutdown(t *testing.T) {
	const profile = "graceful"
	forEachStore(t, func(t *testing.T, b backendEnv) {
		s := startSim(t)
		env := binaryEnv(s, b, "term")
		p := startNodeBinary(t, env)
		c := newAPIClient(t, p.url)
		c.createProfile(profile, nil)
		c.pair(s, profile)

		cursor := c.lastCursor(profile)
		start := time.Now()
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		st, ok := p.waitExit(10 * time.Second)
		took := time.Since(start)
		if !ok {
			t.Fatalf("amarula-node still running 10s after SIGTERM")
		}
		if st.ExitCode() != 0 {
			t.Fatalf("amarula-node exited with %v after SIGTERM", st)
		}
		t.Logf("SIGTERM with a connected profile: exit 0 after %s", took.Round(time.Millisecond))

		p = startNodeBinary(t, env)
		c = newAPIClient(t, p.url)
		c.waitState(profile, "connected", 30*time.Second)
		for _, e := range c.events(profile, cursor) {
			if e.Type == "session.qr" {
				t.Fatal("pairing again after a graceful stop")
			}
		}
	})
}
