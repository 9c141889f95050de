package node

import (
	"fmt"
	"net/http"
	"syscall"
	"testing"
	"time"
)

// burst is a phone sending total texts to the gateway from its own
// goroutine (a bounded loop), in bursts of 50 as fast as wasim takes them,
// 100 ms apart, so that a node stopped meanwhile dies while the phone is
// still sending and with a backlog of delivered but unacknowledged messages.
type burst struct {
	total    int
	progress chan int
	done     chan struct{}
	ids      []string
	err      error
}

func startBurst(s *sim, total int, label string) *burst {
	b := &burst{total: total, progress: make(chan int, total), done: make(chan struct{})}
	go func() {
		defer close(b.done)
		to := s.own.JID()
		for i := range total {
			id, err := s.peer.SendText(to, fmt.Sprintf("%s %03d", label, i))
			if err != nil {
				b.err = fmt.Errorf("send %d: %w", i, err)
				return
			}
			b.ids = append(b.ids, id)
			b.progress <- i + 1
			if (i+1)%50 == 0 {
				time.Sleep(100 * time.Millisecond)
			}
		}
	}()
	return b
}

// sent is how many messages the phone has sent so far.
func (b *burst) sent() int { return len(b.progress) }

// wait waits for the phone to finish and returns the ids it sent.
func (b *burst) wait(t testing.TB) []string {
	t.Helper()
	select {
	case <-b.done:
	case <-time.After(2 * time.Minute):
		t.Fatal("the phone did not finish sending within 2 min")
	}
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.ids
}

// waitStoredWithBacklog waits until at least min messages are stored and
// wasim holds unacknowledged stanzas for the device; it returns both counts.
func waitStoredWithBacklog(t testing.TB, c *apiClient, s *sim, profile, device string, min int) (stored, queued int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d messages stored and a backlog", min), 60*time.Second, func() error {
		var page struct {
			Messages []struct{} `json:"messages"`
		}
		c.json(http.MethodGet, "/v1/profiles/"+profile+"/messages?limit=500", nil, http.StatusOK, &page)
		stored, queued = len(page.Messages), s.device(t, device).Queued
		if stored < min || queued == 0 {
			return fmt.Errorf("%d stored, %d queued", stored, queued)
		}
		return nil
	})
	return stored, queued
}

// checkExactlyOnce waits until every id is stored, then checks each is
// stored once (listed through small odd pages, so boundaries fall inside
// runs of equal timestamps), announced by exactly one message.received, and
// delivered to the webhook h (at least once, in log order).
func checkExactlyOnce(t *testing.T, c *apiClient, h *hookReceiver, profile string, ids []string) string {
	t.Helper()
	waitFor(t, fmt.Sprintf("all %d messages stored", len(ids)), 90*time.Second, func() error {
		if n := len(c.messages(profile)); n < len(ids) {
			return fmt.Errorf("%d stored", n)
		}
		return nil
	})
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
	lost, twice, notOnce := 0, 0, 0
	for _, id := range ids {
		switch stored[id] {
		case 0:
			lost++
		case 1:
		default:
			twice++
		}
		if announced[id] != 1 {
			notOnce++
		}
	}
	received := countEvents(evs, "message.received", "")
	if lost != 0 || twice != 0 || notOnce != 0 || len(stored) != len(ids) || received != len(ids) {
		t.Fatalf("not exactly once: %d lost, %d stored twice, %d not announced once, %d stored ids, %d message.received for %d messages",
			lost, twice, notOnce, len(stored), received, len(ids))
	}
	isReceived := func(e event) bool { return e.Type == "message.received" }
	log := h.waitAll(c, profile, 60*time.Second, isReceived)
	repeats := h.checkOrder(log)
	return fmt.Sprintf("%d stored once each, %d message.received, 0 lost, 0 duplicated; webhook got all %d in order (%d re-sent)",
		len(stored), received, len(log), repeats)
}

// TestE2ECrash runs the real amarula-node binary, kills it with SIGKILL
// while a phone sends 500 messages, restarts it on the same data and checks
// that every message is stored exactly once, announced exactly once, and
// delivered to the webhook.
func TestE2ECrash(t *testing.T) {
	const (
		total     = 500
		killAfter = 100 // stored messages before the kill
		profile   = "crashy"
	)
	forEachStore(t, func(t *testing.T, b backendEnv) {
		s := startSim(t)
		h := newHookReceiver(t, "crash-secret", 0)
		env := binaryEnv(s, b, "crash")
		p := startNodeBinary(t, env)
		c := newAPIClient(t, p.url)
		c.createProfile(profile, map[string]any{"url": h.srv.URL, "secret": h.secret, "events": []string{"message.received"}})
		device, _ := c.pair(s, profile)

		phone := startBurst(s, total, "crash test")
		storedAtKill, queuedAtKill := waitStoredWithBacklog(t, c, s, profile, device, killAfter)
		p.kill()
		killedAt := time.Now()
		sentAtKill := phone.sent()
		if storedAtKill >= total {
			t.Fatalf("the node stored all %d messages before it could be killed", total)
		}
		ids := phone.wait(t)

		p = startNodeBinary(t, env)
		c = newAPIClient(t, p.url)
		c.waitState(profile, "connected", 30*time.Second)
		summary := checkExactlyOnce(t, c, h, profile, ids)
		t.Logf("kill -9 after %d of %d sent, %d stored, %d queued unacknowledged in wasim; after restart: %s; %s after the kill",
			sentAtKill, total, storedAtKill, queuedAtKill, summary, time.Since(killedAt).Round(time.Millisecond))
	})
}

// TestE2EShutdown sends SIGTERM to the real binary while a connected
// profile receives a stream of 300 messages: it exits 0 within 10 s, the
// restart needs no pairing, and every message is stored exactly once.
func TestE2EShutdown(t *testing.T) {
	const (
		total   = 300
		termAt  = 50
		profile = "graceful"
	)
	forEachStore(t, func(t *testing.T, b backendEnv) {
		s := startSim(t)
		h := newHookReceiver(t, "term-secret", 0)
		env := binaryEnv(s, b, "term")
		p := startNodeBinary(t, env)
		c := newAPIClient(t, p.url)
		c.createProfile(profile, map[string]any{"url": h.srv.URL, "secret": h.secret, "events": []string{"message.received"}})
		device, _ := c.pair(s, profile)
		cursor := c.lastCursor(profile)

		phone := startBurst(s, total, "sigterm test")
		stored, queued := waitStoredWithBacklog(t, c, s, profile, device, termAt)
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
		t.Logf("SIGTERM with a connected profile receiving messages (%d stored, %d queued): exit 0 after %s", stored, queued, took.Round(time.Millisecond))
		ids := phone.wait(t)

		p = startNodeBinary(t, env)
		c = newAPIClient(t, p.url)
		c.waitState(profile, "connected", 30*time.Second)
		for _, e := range c.events(profile, cursor) {
			if e.Type == "session.qr" || e.Type == "session.paired" {
				t.Fatalf("pairing again after a graceful stop: %s", e.Type)
			}
		}
		t.Logf("after restart: %s", checkExactlyOnce(t, c, h, profile, ids))
	})
}
