package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/amarula/amarula/api"
	"github.com/coder/websocket"
)

// dialEvents opens the events WebSocket of profile.
func (e *env) dialEvents(ctx context.Context, profile, after, key string) (*websocket.Conn, *http.Response, error) {
	url := "ws" + strings.TrimPrefix(e.srv.URL, "http") + "/v1/profiles/" + profile + "/events/ws"
	if after != "" {
		url += "?after=" + after
	}
	h := http.Header{}
	if key != "" {
		h.Set("Authorization", "Bearer "+key)
	}
	return websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: h})
}

// wsClient reads a stream in its own goroutine so that waiting for
// silence does not close the connection (coder/websocket closes it when a
// Read's context ends).
type wsClient struct {
	c    *websocket.Conn
	evs  chan eventJSON
	done chan error
}

func newWSClient(t *testing.T, c *websocket.Conn) *wsClient {
	w := &wsClient{c: c, evs: make(chan eventJSON, 100), done: make(chan error, 1)}
	go func() {
		for {
			typ, b, err := c.Read(context.Background())
			if err != nil {
				w.done <- err
				close(w.evs)
				return
			}
			var ev eventJSON
			if typ != websocket.MessageText || json.Unmarshal(b, &ev) != nil {
				ev.ID = "bad frame: " + string(b)
			}
			w.evs <- ev
		}
	}()
	t.Cleanup(func() {
		c.CloseNow()
		for range w.evs {
		}
	})
	return w
}

// read returns the next n events, failing the test after a deadline.
func (w *wsClient) read(t *testing.T, n int) []eventJSON {
	t.Helper()
	var out []eventJSON
	timeout := time.After(5 * time.Second)
	for len(out) < n {
		select {
		case ev, ok := <-w.evs:
			if !ok {
				t.Fatalf("stream ended after %d of %d events: %v", len(out), n, <-w.done)
			}
			out = append(out, ev)
		case <-timeout:
			t.Fatalf("got %d of %d events", len(out), n)
		}
	}
	return out
}

// silent checks that nothing arrives for a short while.
func (w *wsClient) silent(t *testing.T) {
	t.Helper()
	select {
	case ev, ok := <-w.evs:
		if ok {
			t.Fatalf("unexpected event %+v", ev)
		}
	case <-time.After(300 * time.Millisecond):
	}
}

// closeStatus waits for the stream to end and returns its close status.
func (w *wsClient) closeStatus(t *testing.T) websocket.StatusCode {
	t.Helper()
	for {
		select {
		case _, ok := <-w.evs:
			if !ok {
				return websocket.CloseStatus(<-w.done)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("stream did not end")
		}
	}
}

func ids(evs []eventJSON) string {
	var s []string
	for _, e := range evs {
		s = append(s, e.ID)
	}
	return strings.Join(s, ",")
}

// TestWebSocketReplayAndLive proves the stream replays from the cursor,
// then delivers events appended while connected, and that reconnecting with
// the last cursor received misses nothing and repeats nothing.
func TestWebSocketReplayAndLive(t *testing.T) {
	e := newEnv(t)
	e.createProfile("alice")
	key := e.createKey("alice")
	ctx := context.Background()
	first := appendEvents(t, e.store, "alice", 1, 3)

	c, _, err := e.dialEvents(ctx, "alice", "0", key)
	if err != nil {
		t.Fatal(err)
	}
	w := newWSClient(t, c)
	got := w.read(t, 3)
	if ids(got) != strings.Join(first, ",") || got[0].Profile != "alice" || got[0].Type != "message.received" {
		t.Fatalf("replay: %+v", got)
	}
	if _, err := time.Parse(time.RFC3339, got[0].Time); err != nil || string(got[0].Data) != `{"id":"m1","text":"hello 1"}` {
		t.Fatalf("event shape: %+v", got[0])
	}
	live := appendEvents(t, e.store, "alice", 4, 2)
	got = w.read(t, 2)
	if ids(got) != strings.Join(live, ",") {
		t.Fatalf("live: %s, want %v", ids(got), live)
	}
	last := got[len(got)-1].ID
	_ = c.Close(websocket.StatusNormalClosure, "")

	// Events appended while disconnected arrive after reconnecting with
	// the last cursor, exactly once.
	missed := appendEvents(t, e.store, "alice", 6, 3)
	c, _, err = e.dialEvents(ctx, "alice", last, key)
	if err != nil {
		t.Fatal(err)
	}
	w = newWSClient(t, c)
	got = w.read(t, 3)
	if ids(got) != strings.Join(missed, ",") {
		t.Fatalf("after reconnect: %s, want %v", ids(got), missed)
	}
	more := appendEvents(t, e.store, "alice", 9, 1)
	if got = w.read(t, 1); got[0].ID != more[0] {
		t.Fatalf("live after reconnect: %+v", got)
	}
	w.silent(t)
}

// TestWebSocketAfterNow proves after=now streams only later events, and
// that an idle stream survives several keep-alive pings.
func TestWebSocketAfterNow(t *testing.T) {
	e := newEnv(t)
	e.createProfile("alice")
	appendEvents(t, e.store, "alice", 1, 4)
	c, _, err := e.dialEvents(context.Background(), "alice", "now", adminKey)
	if err != nil {
		t.Fatal(err)
	}
	w := newWSClient(t, c)
	w.silent(t) // 300 ms: a ping every 200 ms
	w.silent(t)
	next := appendEvents(t, e.store, "alice", 5, 1)
	if got := w.read(t, 1); got[0].ID != next[0] {
		t.Fatalf("after=now got %+v, want %v", got, next)
	}
}

// TestWebSocketAuth proves the upgrade is refused with the JSON error
// answers of the other endpoints.
func TestWebSocketAuth(t *testing.T) {
	e := newEnv(t)
	e.createProfile("alice")
	e.createProfile("bob")
	bobKey := e.createKey("bob")
	for _, tc := range []struct {
		name, profile, key string
		status             int
	}{
		{"no key", "alice", "", 401},
		{"other profile's key", "alice", bobKey, 403},
		{"unknown profile", "zed", adminKey, 404},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, res, err := e.dialEvents(context.Background(), tc.profile, "0", tc.key)
			if err == nil || res == nil || res.StatusCode != tc.status {
				t.Fatalf("dial: %v %v, want %d", res, err, tc.status)
			}
		})
	}
}

// TestWebSocketShutdown proves Server.Close ends open streams with 1001
// going-away, waits for their goroutines (goleak checks none is left), and
// refuses new streams.
func TestWebSocketShutdown(t *testing.T) {
	e := newEnv(t)
	e.createProfile("alice")
	clients := make([]*wsClient, 3)
	for i := range clients {
		c, _, err := e.dialEvents(context.Background(), "alice", "now", adminKey)
		if err != nil {
			t.Fatal(err)
		}
		clients[i] = newWSClient(t, c)
	}
	done := make(chan error, 1)
	go func() { done <- e.api.Close() }()
	for _, w := range clients {
		if status := w.closeStatus(t); status != websocket.StatusGoingAway {
			t.Fatalf("close status %v, want going away", status)
		}
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return")
	}
	r := e.do("GET", "/v1/profiles/alice/events/ws", adminKey, "")
	if r.status != http.StatusServiceUnavailable || errorCode(t, r) != "shutting_down" {
		t.Fatalf("after Close: %s", r)
	}
}

// TestWebSocketDeadPeer proves a peer that stops answering pings is
// dropped by the server (its handler returns) without Server.Close.
func TestWebSocketDeadPeer(t *testing.T) {
	e := newEnv(t, func(c *api.Config) { c.PingInterval = 100 * time.Millisecond; c.WriteTimeout = 300 * time.Millisecond })
	e.createProfile("alice")
	c, _, err := e.dialEvents(context.Background(), "alice", "now", adminKey)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	// The client never reads, so it never answers a ping. The handler's
	// return is visible in the request counter.
	const ended = `amarula_http_requests_total{code="101",route="GET /v1/profiles/{id}/events/ws"} 1`
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(string(e.do("GET", "/metrics", "", "").body), ended) {
		if time.Now().After(deadline) {
			t.Fatal("stream of a silent peer was not dropped")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
