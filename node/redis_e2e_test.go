package node

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestE2ERedisCrash kills redis-server with SIGKILL while a phone sends 300
// messages to a connected profile and starts it again on the same port and
// AOF directory: the session stops taking messages while storage is gone
// (they stay queued, unacknowledged, in WhatsApp), reconnects when Redis is
// back, and every message is stored, announced and delivered to the webhook
// exactly once. Meanwhile the API answers 503 unavailable, not 500.
func TestE2ERedisCrash(t *testing.T) {
	const (
		total   = 300
		killAt  = 60
		profile = "alice"
	)
	s := startSim(t)
	b := newBackend(t, storeKind{name: "redis", redis: true})
	h := newHookReceiver(t, "redis-crash", 0)
	n := startNode(t, nodeConfig(s, b, "n1"))
	c := n.api
	c.createProfile(profile, map[string]any{"url": h.srv.URL, "secret": h.secret, "events": []string{"message.received"}})
	device, _ := c.pair(s, profile)

	phone := startBurst(s, total, "redis crash")
	stored, queued := waitStoredWithBacklog(t, c, s, profile, device, killAt)
	b.redis.Kill()
	killed := time.Now()
	sent := phone.sent()
	waitFor(t, "the session to let go of WhatsApp while Redis is down", 15*time.Second, func() error {
		if d := s.device(t, device); d.Connected {
			return errors.New("still connected")
		}
		return nil
	})
	down := s.device(t, device)
	if st, raw, _ := c.do(http.MethodGet, "/v1/profiles/"+profile, nil, nil); st != http.StatusServiceUnavailable || !strings.Contains(string(raw), `"unavailable"`) {
		t.Fatalf("GET profile while Redis is down: %d %s, want 503 unavailable", st, raw)
	}
	b.redis.Restart(t)
	ids := phone.wait(t)
	c.waitState(profile, "connected", 30*time.Second)
	summary := checkExactlyOnce(t, c, h, profile, ids)
	t.Logf("redis-server killed after %d sent, %d stored, %d queued; while down wasim queued %d for the disconnected device; after the restart: %s; %s after the kill",
		sent, stored, queued, down.Queued, summary, time.Since(killed).Round(time.Millisecond))
}
