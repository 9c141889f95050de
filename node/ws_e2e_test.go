package node

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// wsEvents reads a profile's event WebSocket into a list until closed.
type wsEvents struct {
	mu     sync.Mutex
	evs    []event
	err    error
	cancel context.CancelFunc
	done   chan struct{}
}

func openEventsWS(t testing.TB, base, profile, after string) *wsEvents {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	u := "ws" + strings.TrimPrefix(base, "http") + "/v1/profiles/" + profile + "/events/ws?after=" + after
	dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
	conn, resp, err := websocket.Dial(dctx, u, &websocket.DialOptions{
		HTTPHeader: http.Header{"Authorization": {"Bearer " + e2eAdminKey}},
	})
	dcancel()
	if err != nil {
		cancel()
		t.Fatalf("dial %s: %v (%v)", u, err, resp)
	}
	w := &wsEvents{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		defer conn.CloseNow()
		for {
			_, b, err := conn.Read(ctx)
			w.mu.Lock()
			if err != nil {
				w.err = err
				w.mu.Unlock()
				return
			}
			var e event
			if err := json.Unmarshal(b, &e); err != nil {
				w.err = fmt.Errorf("event is not JSON: %v: %s", err, b)
				w.mu.Unlock()
				return
			}
			w.evs = append(w.evs, e)
			w.mu.Unlock()
		}
	}()
	t.Cleanup(w.close)
	return w
}

func (w *wsEvents) close() {
	w.cancel()
	<-w.done
}

func (w *wsEvents) events() []event {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]event(nil), w.evs...)
}

// waitClosed waits until the server ended the stream.
func (w *wsEvents) waitClosed(t testing.TB, timeout time.Duration) error {
	t.Helper()
	select {
	case <-w.done:
		return w.err
	case <-time.After(timeout):
		t.Fatalf("event WebSocket still open %s after the node stopped", timeout)
		return nil
	}
}

// waitWSMatchesLog waits until the streams, one after the other, carry
// exactly the profile's event log, in order, each event once.
func waitWSMatchesLog(t testing.TB, c *apiClient, profile string, streams ...*wsEvents) {
	t.Helper()
	waitFor(t, "the WebSocket to carry the whole log", 20*time.Second, func() error {
		var got []event
		for _, w := range streams {
			got = append(got, w.events()...)
		}
		log := c.events(profile, "0")
		if len(got) < len(log) {
			return fmt.Errorf("%d of %d events streamed", len(got), len(log))
		}
		if len(got) > len(log) {
			t.Fatalf("%d events streamed, the log has %d: duplicates", len(got), len(log))
		}
		for i := range log {
			if got[i].ID != log[i].ID || got[i].Type != log[i].Type {
				t.Fatalf("streamed event %d is %s %s, the log has %s %s", i, got[i].ID, got[i].Type, log[i].ID, log[i].Type)
			}
		}
		return nil
	})
}

// TestE2EEventsWebSocket follows a profile's events over the WebSocket from
// its creation, through pairing and messages, across a node restart: the
// client reconnects with its last cursor and misses nothing.
func TestE2EEventsWebSocket(t *testing.T) {
	const profile = "streamer"
	forEachStore(t, func(t *testing.T, b backendEnv) {
		s := startSim(t)
		cfg := nodeConfig(s, b, "n1")
		n := startNode(t, cfg)
		c := n.api
		c.createProfile(profile, nil)
		ws1 := openEventsWS(t, n.URL(), profile, "0")
		c.pair(s, profile)
		for i := range 3 {
			c.waitMessage(profile, s.send(t, peerNumber, map[string]any{"to": s.ownJID(), "text": fmt.Sprintf("live %d", i)}), nil)
		}
		waitWSMatchesLog(t, c, profile, ws1)

		if err := n.stop(); err != nil {
			t.Fatal(err)
		}
		err := ws1.waitClosed(t, 5*time.Second)
		if websocket.CloseStatus(err) != websocket.StatusGoingAway {
			t.Fatalf("stream ended with %v, want close 1001 going away", err)
		}
		first := ws1.events()
		last := first[len(first)-1].ID
		for i := range 2 {
			s.send(t, peerNumber, map[string]any{"to": s.ownJID(), "text": fmt.Sprintf("while down %d", i)})
		}
		n = startNode(t, cfg)
		c = n.api
		ws2 := openEventsWS(t, n.URL(), profile, last)
		c.waitState(profile, "connected", 30*time.Second)
		waitFor(t, "the messages sent while down", 20*time.Second, func() error {
			if got := countEvents(c.events(profile, "0"), "message.received", ""); got != 5 {
				return fmt.Errorf("%d message.received", got)
			}
			return nil
		})
		waitWSMatchesLog(t, c, profile, ws1, ws2)
		t.Logf("%d events before the restart and %d after, streamed once each in log order", len(first), len(ws2.events()))
	})
}
