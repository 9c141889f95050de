package node

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/amarula/amarula/webhook"
)

// hookReceiver is a webhook endpoint that refuses the first failFirst
// deliveries (503) and records every request it sees.
type hookReceiver struct {
	t         testing.TB
	secret    string
	failFirst int
	srv       *httptest.Server

	mu       sync.Mutex
	requests []hookRequest
}

type hookRequest struct {
	delivery string // X-Amarula-Delivery
	event    event
	accepted bool
	badSig   error
}

func newHookReceiver(t testing.TB, secret string, failFirst int) *hookReceiver {
	h := &hookReceiver{t: t, secret: secret, failFirst: failFirst}
	h.srv = httptest.NewServer(http.HandlerFunc(h.serve))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *hookReceiver) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	req := hookRequest{delivery: r.Header.Get(webhook.HeaderDelivery)}
	req.badSig = webhook.Verify(h.secret, r.Header.Get(webhook.HeaderTimestamp), body, r.Header.Get(webhook.HeaderSignature))
	if err := json.Unmarshal(body, &req.event); err != nil && req.badSig == nil {
		req.badSig = fmt.Errorf("body is not an event: %v", err)
	}
	if req.badSig == nil && (req.event.ID != req.delivery || req.event.Type != r.Header.Get(webhook.HeaderEvent)) {
		req.badSig = fmt.Errorf("headers (%s, %s) do not match the body (%s, %s)",
			req.delivery, r.Header.Get(webhook.HeaderEvent), req.event.ID, req.event.Type)
	}
	h.mu.Lock()
	req.accepted = len(h.requests) >= h.failFirst && req.badSig == nil
	h.requests = append(h.requests, req)
	h.mu.Unlock()
	if !req.accepted {
		http.Error(w, "not now", http.StatusServiceUnavailable)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *hookReceiver) snapshot() []hookRequest {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]hookRequest(nil), h.requests...)
}

// acceptedIDs is the set of accepted delivery ids.
func (h *hookReceiver) acceptedIDs() map[string]int {
	out := map[string]int{}
	for _, r := range h.snapshot() {
		if r.accepted {
			out[r.delivery]++
		}
	}
	return out
}

// waitAll waits until every event of the log (that keep selects, when
// given) has been accepted, and returns those events.
func (h *hookReceiver) waitAll(c *apiClient, profile string, timeout time.Duration, keep func(event) bool) []event {
	h.t.Helper()
	var log []event
	waitFor(h.t, "every event delivered to the webhook", timeout, func() error {
		log = log[:0]
		for _, e := range c.events(profile, "0") {
			if keep == nil || keep(e) {
				log = append(log, e)
			}
		}
		got := h.acceptedIDs()
		for _, e := range log {
			if got[e.ID] == 0 {
				return fmt.Errorf("%d events in the log, %d accepted; %s (%s) not yet", len(log), len(got), e.ID, e.Type)
			}
		}
		return nil
	})
	return log
}

// checkOrder checks every request against the log: signed, and in log
// order, where a request either repeats the event before it (a retry, or a
// re-send of the in-flight event after a restart) or is the next event.
// It returns how many requests were repeats.
func (h *hookReceiver) checkOrder(log []event) (repeats int) {
	h.t.Helper()
	pos := map[string]int{}
	for i, e := range log {
		pos[e.ID] = i
	}
	prev := -1
	for i, r := range h.snapshot() {
		if r.badSig != nil {
			h.t.Fatalf("request %d (%s): %v", i, r.delivery, r.badSig)
		}
		p, ok := pos[r.delivery]
		if !ok {
			h.t.Fatalf("request %d delivers %s, which is not in the log", i, r.delivery)
		}
		switch p {
		case prev:
			repeats++
		case prev + 1:
		default:
			h.t.Fatalf("request %d delivers log entry %d (%s) after entry %d: out of order", i, p, r.event.Type, prev)
		}
		if r.accepted || p == prev+1 {
			prev = p
		}
	}
	return repeats
}

// TestE2EWebhook: a receiver refuses the first deliveries; every event of
// the profile still arrives, in log order, correctly signed, across a node
// restart.
func TestE2EWebhook(t *testing.T) {
	const (
		failFirst = 3 // retried after ~1 s, 2 s, 4 s
		messages  = 5
		secret    = "webhook-secret-e2e"
		profile   = "hooked"
	)
	forEachStore(t, func(t *testing.T, b backendEnv) {
		s := startSim(t)
		h := newHookReceiver(t, secret, failFirst)
		cfg := nodeConfig(s, b, "n1")
		n := startNode(t, cfg)
		c := n.api
		p := c.createProfile(profile, map[string]any{"url": h.srv.URL, "secret": secret})
		if p.Webhook == nil || p.Webhook.URL != h.srv.URL || !p.Webhook.SecretSet {
			t.Fatalf("webhook config not kept: %+v", p.Webhook)
		}
		c.pair(s, profile)
		var ids []string
		for i := range messages {
			ids = append(ids, s.send(t, peerNumber, map[string]any{"to": s.ownJID(), "text": fmt.Sprintf("webhook %d", i)}))
		}
		for _, id := range ids {
			c.waitMessage(profile, id, nil)
		}
		start := time.Now()
		log := h.waitAll(c, profile, 30*time.Second, nil)
		repeats := h.checkOrder(log)
		if repeats < failFirst {
			t.Fatalf("%d repeated deliveries, want at least the %d refused ones", repeats, failFirst)
		}
		t.Logf("%d events delivered in order after %d refusals (%d repeats), %s after the last message was stored",
			len(log), failFirst, repeats, time.Since(start).Round(time.Millisecond))

		// Restart: the persisted cursor resumes delivery, nothing is skipped.
		if err := n.stop(); err != nil {
			t.Fatal(err)
		}
		away := s.send(t, peerNumber, map[string]any{"to": s.ownJID(), "text": "while the node was down"})
		n = startNode(t, cfg)
		c = n.api
		c.waitMessage(profile, away, nil)
		log = h.waitAll(c, profile, 30*time.Second, nil)
		repeats2 := h.checkOrder(log)
		got := h.acceptedIDs()
		for _, e := range log {
			if e.Type == "message.received" && got[e.ID] == 0 {
				t.Fatalf("message.received %s never delivered", e.ID)
			}
		}
		if n := countEvents(log, "message.received", ""); n != messages+1 {
			t.Fatalf("%d message.received events, want %d", n, messages+1)
		}
		t.Logf("after restart: %d events delivered in order, %d re-sent after the restart", len(log), repeats2-repeats)
	})
}
