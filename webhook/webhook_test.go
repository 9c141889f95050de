package webhook_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/amarula/amarula/storage"
	"github.com/amarula/amarula/webhook"
)

// TestSignVerify proves Verify accepts exactly the signature Sign makes over
// timestamp + "." + body, and VerifyRequest also rejects stale timestamps.
func TestSignVerify(t *testing.T) {
	body := []byte(`{"id":"1","profile":"alice","type":"message.received","time":"2026-01-01T00:00:00Z","data":{}}`)
	sig := webhook.Sign(secret, "1700000000", body)
	if !strings.HasPrefix(sig, "sha256=") || len(sig) != len("sha256=")+64 {
		t.Fatalf("signature %q", sig)
	}
	tests := []struct {
		name, secret, ts string
		body             []byte
		sig              string
		ok               bool
	}{
		{"valid", secret, "1700000000", body, sig, true},
		{"tampered body", secret, "1700000000", append([]byte(nil), append(body, ' ')...), sig, false},
		{"wrong secret", "other", "1700000000", body, sig, false},
		{"other timestamp", secret, "1700000001", body, sig, false},
		{"no prefix", secret, "1700000000", body, strings.TrimPrefix(sig, "sha256="), false},
		{"not hex", secret, "1700000000", body, "sha256=zz", false},
		{"empty", secret, "1700000000", body, "", false},
		{"uppercase hex", secret, "1700000000", body, "sha256=" + strings.ToUpper(strings.TrimPrefix(sig, "sha256=")), true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := webhook.Verify(tc.secret, tc.ts, tc.body, tc.sig)
			if (err == nil) != tc.ok {
				t.Fatalf("Verify = %v, want ok=%v", err, tc.ok)
			}
			if err != nil && !errors.Is(err, webhook.ErrBadSignature) {
				t.Fatalf("error %v does not wrap ErrBadSignature", err)
			}
		})
	}
	t.Run("stale", func(t *testing.T) {
		req := httptest.NewRequest("POST", "/", strings.NewReader(string(body)))
		req.Header.Set(webhook.HeaderTimestamp, "1700000000")
		req.Header.Set(webhook.HeaderSignature, sig)
		if _, err := webhook.VerifyRequest(req, secret, 1<<20, 5*time.Minute, time.Unix(1700000000+600, 0)); !errors.Is(err, webhook.ErrStale) {
			t.Fatalf("got %v, want ErrStale", err)
		}
		req = httptest.NewRequest("POST", "/", strings.NewReader(string(body)))
		req.Header.Set(webhook.HeaderTimestamp, "1700000000")
		req.Header.Set(webhook.HeaderSignature, sig)
		if got, err := webhook.VerifyRequest(req, secret, 1<<20, 5*time.Minute, time.Unix(1700000000+60, 0)); err != nil || string(got) != string(body) {
			t.Fatalf("fresh request: %v", err)
		}
	})
}

// TestMatch proves the event pattern semantics.
func TestMatch(t *testing.T) {
	tests := []struct {
		patterns []string
		typ      string
		want     bool
	}{
		{nil, "message.received", true},
		{[]string{"*"}, "session.qr", true},
		{[]string{"message.*"}, "message.received", true},
		{[]string{"message.*"}, "media.stored", false},
		{[]string{"message.*"}, "message", false},
		{[]string{"message"}, "message.received", false},
		{[]string{"session.connected"}, "session.connected", true},
		{[]string{"session.connected"}, "session.conflict", false},
		{[]string{"*.stored"}, "media.stored", true},
		{[]string{"m*.*"}, "media.failed", true},
		{[]string{"session.*", "message.sent"}, "message.sent", true},
		{[]string{"*.*"}, "message.ack", true},
	}
	for _, tc := range tests {
		if got := webhook.Match(tc.patterns, tc.typ); got != tc.want {
			t.Errorf("Match(%q, %q) = %v, want %v", tc.patterns, tc.typ, got, tc.want)
		}
	}
	for _, bad := range []string{"", "MESSAGE.*", "message/*", "message.[", "a.b.c.d.e", "message..x", strings.Repeat("a", 40)} {
		if webhook.ValidatePattern(bad) == nil {
			t.Errorf("ValidatePattern(%q) accepted", bad)
		}
	}
}

// TestDeliverInOrderDespiteFailures: a receiver that fails the first
// deliveries still gets every event, signed, in log order, and the cursor
// ends at the last event.
func TestDeliverInOrderDespiteFailures(t *testing.T) {
	for _, tc := range []struct {
		name      string
		store     func(testing.TB) testStore
		failFirst int
	}{
		{"bolt/no failures", newStore, 0},
		{"bolt/fail 1", newStore, 1},
		{"bolt/fail 5", newStore, 5},
		{"redis/fail 5", newRedisStore, 5},
	} {
		failFirst := tc.failFirst
		t.Run(tc.name, func(t *testing.T) {
			st := tc.store(t)
			rcv := newReceiver(t)
			rcv.failFirst = failFirst
			want := appendN(t, st, "message.received", 1, 10)
			start(t, config(st, rcv.srv.URL, 1))
			want = append(want, appendN(t, st, "message.sent", 11, 10)...)
			waitFor(t, "20 deliveries", 10*time.Second, func() bool { return len(rcv.deliveredIDs()) >= len(want) })
			if got := rcv.deliveredIDs(); join(got) != join(want) {
				t.Fatalf("delivered %v\nwant      %v", got, want)
			}
			if rcv.hits != len(want)+failFirst {
				t.Errorf("%d requests, want %d", rcv.hits, len(want)+failFirst)
			}
			waitFor(t, "cursor at the end", 5*time.Second, func() bool {
				c, _ := st.Cursor(context.Background(), "alice", webhook.Consumer)
				return c == want[len(want)-1]
			})
			if rcv.delivered[10].Env.Type != "message.sent" || string(rcv.delivered[10].Env.Data) != `{"id":"m11"}` {
				t.Errorf("envelope: %+v", rcv.delivered[10].Env)
			}
		})
	}
}

// TestStrictOrderWhileRetrying: while one event keeps failing, no later
// event is sent.
func TestStrictOrderWhileRetrying(t *testing.T) {
	st := newStore(t)
	rcv := newReceiver(t)
	ids := appendN(t, st, "message.received", 1, 3)
	rcv.failIDs[ids[1]] = true
	start(t, config(st, rcv.srv.URL, 1))
	waitFor(t, "retries of the second event", 5*time.Second, func() bool {
		rcv.mu.Lock()
		defer rcv.mu.Unlock()
		return rcv.perID[ids[1]] >= 5
	})
	rcv.mu.Lock()
	if rcv.perID[ids[2]] != 0 {
		t.Fatalf("third event sent while the second was failing")
	}
	delete(rcv.failIDs, ids[1])
	rcv.mu.Unlock()
	waitFor(t, "all events", 5*time.Second, func() bool { return len(rcv.deliveredIDs()) == 3 })
	if got := rcv.deliveredIDs(); join(got) != join(ids) {
		t.Fatalf("delivered %v, want %v", got, ids)
	}
}

// TestRestartLosesNothing: stopping and restarting the deliverer several
// times while events keep coming and the receiver fails now and then loses
// no event; duplicates are only re-sends of already delivered events (which
// X-Amarula-Delivery dedups), and first arrivals are in log order.
func TestRestartLosesNothing(t *testing.T) {
	t.Run("bolt", func(t *testing.T) { testRestartLosesNothing(t, newStore(t)) })
	t.Run("redis", func(t *testing.T) { testRestartLosesNothing(t, newRedisStore(t)) })
}

func testRestartLosesNothing(t *testing.T, st testStore) {
	rcv := newReceiver(t)
	rcv.failFirst = 3
	var want []string
	for round := 0; round < 5; round++ {
		r := start(t, config(st, rcv.srv.URL, 1))
		want = append(want, appendN(t, st, "message.received", len(want)+1, 8)...)
		// Stop mid-way through the round.
		waitFor(t, "some progress", 5*time.Second, func() bool { return len(firstArrivals(rcv.deliveredIDs())) >= len(want)-4 })
		if err := r.stop(); err != nil {
			t.Fatalf("Run returned %v on cancel", err)
		}
	}
	start(t, config(st, rcv.srv.URL, 1))
	waitFor(t, "every event", 10*time.Second, func() bool { return len(firstArrivals(rcv.deliveredIDs())) == len(want) })
	got := rcv.deliveredIDs()
	if first := firstArrivals(got); join(first) != join(want) {
		t.Fatalf("first arrivals %v\nwant %v", first, want)
	}
	dups := len(got) - len(want)
	t.Logf("%d events, %d deliveries, %d duplicates over 5 restarts", len(want), len(got), dups)
	if dups > 5 {
		t.Errorf("%d duplicates for 5 restarts: the cursor is not acknowledged per delivery", dups)
	}
}

// TestDeadLetterAndRedeliver: an event that fails past the budget is
// parked with its failure, delivery moves on to the next events, and
// Redeliver sends it again once the receiver works, clearing the list.
func TestDeadLetterAndRedeliver(t *testing.T) {
	st := newStore(t)
	rcv := newReceiver(t)
	ids := appendN(t, st, "message.received", 1, 4)
	rcv.failIDs[ids[1]] = true
	cfg := config(st, rcv.srv.URL, 1)
	cfg.Backoff.Budget = 100 * time.Millisecond
	start(t, cfg)
	waitFor(t, "the other events", 5*time.Second, func() bool { return len(rcv.deliveredIDs()) == 3 })
	if got := rcv.deliveredIDs(); join(got) != join([]string{ids[0], ids[2], ids[3]}) {
		t.Fatalf("delivered %v", got)
	}
	target := webhook.Target{URL: rcv.srv.URL, Secret: secret}
	dl := &webhook.DeadLetters{
		KV:     st,
		Token:  st.Fence,
		Target: func(context.Context, string) (webhook.Target, error) { return target, nil },
	}
	dead, err := dl.Dead(context.Background(), "alice")
	if err != nil || len(dead) != 1 {
		t.Fatalf("dead list %+v, %v", dead, err)
	}
	d := dead[0]
	if d.ID != ids[1] || d.Profile != "alice" || d.LastStatus != 500 || d.Attempts < 2 || d.ParkedAt == "" || string(d.Data) != `{"id":"m2"}` {
		t.Fatalf("dead letter %+v", d)
	}
	if d.Attempts != rcv.perID[ids[1]] {
		t.Errorf("dead letter counts %d attempts, receiver saw %d", d.Attempts, rcv.perID[ids[1]])
	}

	// Still failing: stays parked.
	res, err := dl.Redeliver(context.Background(), "alice", nil)
	if err != nil || res.Redelivered != 0 || res.Failed != 1 || res.Remaining != 1 {
		t.Fatalf("failing redelivery: %+v %v", res, err)
	}
	rcv.mu.Lock()
	delete(rcv.failIDs, ids[1])
	rcv.mu.Unlock()
	// Selecting other ids leaves it alone.
	if res, err = dl.Redeliver(context.Background(), "alice", []string{"nope"}); err != nil || res.Redelivered != 0 || res.Remaining != 1 {
		t.Fatalf("selective redelivery: %+v %v", res, err)
	}
	res, err = dl.Redeliver(context.Background(), "alice", nil)
	if err != nil || res.Redelivered != 1 || res.Failed != 0 || res.Remaining != 0 {
		t.Fatalf("redelivery: %+v %v", res, err)
	}
	if got := rcv.deliveredIDs(); got[len(got)-1] != ids[1] {
		t.Fatalf("redelivered event not received: %v", got)
	}
	if dead, _ := dl.Dead(context.Background(), "alice"); len(dead) != 0 {
		t.Fatalf("dead list after redelivery: %+v", dead)
	}
	target.URL = ""
	if _, err := dl.Redeliver(context.Background(), "alice", nil); !errors.Is(err, webhook.ErrNoTarget) {
		t.Fatalf("redeliver without webhook: %v", err)
	}
}

// TestRetryBudgetSurvivesRestart: the failure count and first-failure time
// are persisted, so a restarted deliverer continues the budget instead of
// starting over, and the parked record counts attempts of both runs.
func TestRetryBudgetSurvivesRestart(t *testing.T) {
	st := newStore(t)
	rcv := newReceiver(t)
	ids := appendN(t, st, "message.received", 1, 1)
	rcv.failIDs[ids[0]] = true
	cfg := config(st, rcv.srv.URL, 1)
	cfg.Backoff = webhook.Backoff{Initial: 20 * time.Millisecond, Max: 20 * time.Millisecond, Budget: time.Second}
	r := start(t, cfg)
	waitFor(t, "some attempts", 5*time.Second, func() bool {
		rcv.mu.Lock()
		defer rcv.mu.Unlock()
		return rcv.perID[ids[0]] >= 3
	})
	_ = r.stop()
	rcv.mu.Lock()
	before := rcv.perID[ids[0]]
	rcv.mu.Unlock()
	time.Sleep(1100 * time.Millisecond) // the whole budget runs out while stopped
	restarted := time.Now()
	start(t, cfg)
	waitFor(t, "parking", 5*time.Second, func() bool {
		kvs, _ := st.Scan(context.Background(), "alice", webhook.NSDead, "")
		return len(kvs) == 1
	})
	// One more attempt, then parked; a budget that started over would
	// take a full second.
	if took := time.Since(restarted); took > 700*time.Millisecond {
		t.Errorf("parked %v after the restart: the budget started over", took)
	}
	dl := &webhook.DeadLetters{KV: st}
	dead, _ := dl.Dead(context.Background(), "alice")
	if len(dead) != 1 || dead[0].Attempts <= before || dead[0].Attempts != rcv.perID[ids[0]] {
		t.Fatalf("dead %+v: want attempts of both runs (%d before restart, %d total)", dead, before, rcv.perID[ids[0]])
	}
	waitFor(t, "retry state cleared after parking", 5*time.Second, func() bool {
		_, err := st.Get(context.Background(), "alice", webhook.NSState, "retry")
		return errors.Is(err, storage.ErrNotFound)
	})
}

// TestFilterAndNoTarget: events not selected by the patterns, and every
// event while no URL is configured, are acknowledged without a request.
func TestFilterAndNoTarget(t *testing.T) {
	st := newStore(t)
	rcv := newReceiver(t)
	appendN(t, st, "session.qr", 1, 3)
	msg := appendN(t, st, "message.received", 4, 1)
	last := appendN(t, st, "media.stored", 5, 2)
	start(t, config(st, rcv.srv.URL, 1))
	waitFor(t, "cursor at the end", 5*time.Second, func() bool {
		c, _ := st.Cursor(context.Background(), "alice", webhook.Consumer)
		return c == last[1]
	})
	if got := rcv.deliveredIDs(); join(got) != join(msg) {
		t.Fatalf("delivered %v, want only %v", got, msg)
	}

	st2 := newStore(t)
	ids := appendN(t, st2, "message.received", 1, 3)
	cfg := config(st2, "", 1)
	start(t, cfg)
	waitFor(t, "skipping without a URL", 5*time.Second, func() bool {
		c, _ := st2.Cursor(context.Background(), "alice", webhook.Consumer)
		return c == ids[2]
	})
}

// TestTargetChangeAppliesToRetries: fixing the URL while an event is being
// retried delivers it to the new URL.
func TestTargetChangeAppliesToRetries(t *testing.T) {
	st := newStore(t)
	rcv := newReceiver(t)
	broken := httptest.NewServer(http.NotFoundHandler())
	defer broken.Close()
	ids := appendN(t, st, "message.received", 1, 2)
	var url atomicString
	url.set(broken.URL)
	cfg := config(st, "", 1)
	cfg.Target = func(context.Context) (webhook.Target, error) {
		return webhook.Target{URL: url.get(), Secret: secret}, nil
	}
	start(t, cfg)
	time.Sleep(50 * time.Millisecond)
	url.set(rcv.srv.URL)
	waitFor(t, "delivery to the new URL", 5*time.Second, func() bool { return len(rcv.deliveredIDs()) == 2 })
	if got := rcv.deliveredIDs(); join(got) != join(ids) {
		t.Fatalf("delivered %v", got)
	}
}

// TestFencedStops: once a newer owner raised the fence, Run stops with
// ErrFenced instead of retrying.
func TestFencedStops(t *testing.T) {
	st := newStore(t)
	rcv := newReceiver(t)
	appendN(t, st, "message.received", 1, 1)
	if err := st.RaiseFence(context.Background(), "alice", 5); err != nil {
		t.Fatal(err)
	}
	r := start(t, config(st, rcv.srv.URL, 4))
	select {
	case err := <-r.errc:
		r.errc <- err
		if !errors.Is(err, storage.ErrFenced) {
			t.Fatalf("Run returned %v, want ErrFenced", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not stop when fenced")
	}
}

// TestRunValidatesConfig: a bad profile id or missing dependency is an
// immediate error.
func TestRunValidatesConfig(t *testing.T) {
	st := newStore(t)
	for _, cfg := range []webhook.Config{
		{Profile: "../x", Log: st, KV: st, Target: webhook.StaticTarget(webhook.Target{})},
		{Profile: "alice", KV: st, Target: webhook.StaticTarget(webhook.Target{})},
	} {
		if err := webhook.Run(context.Background(), cfg); err == nil {
			t.Errorf("Run(%+v) succeeded", cfg)
		}
	}
}

// TestBackoffDelay: doubling from Initial, capped at Max, jitter only
// shortens.
func TestBackoffDelay(t *testing.T) {
	b := webhook.Backoff{Initial: time.Second, Max: 10 * time.Minute}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second}
	for i, w := range want {
		if got := b.Delay(i + 1); got != w {
			t.Errorf("Delay(%d) = %v, want %v", i+1, got, w)
		}
	}
	if got := b.Delay(100); got != 10*time.Minute {
		t.Errorf("Delay(100) = %v", got)
	}
	b.Jitter = 0.2
	for i := 0; i < 100; i++ {
		if d := b.Delay(3); d > 4*time.Second || d < 3200*time.Millisecond {
			t.Fatalf("jittered delay %v", d)
		}
	}
	if d := webhook.DefaultBackoff(); d.Initial != time.Second || d.Max != 10*time.Minute || d.Budget != 24*time.Hour {
		t.Errorf("DefaultBackoff = %+v", d)
	}
}

// TestSlowReceiverAndRedirects: a receiver that hangs past the client
// timeout, and one that answers with a redirect, count as failures and are
// retried; the event arrives once the receiver answers 2xx in time.
func TestSlowReceiverAndRedirects(t *testing.T) {
	st := newStore(t)
	var calls atomic.Int32
	var delivered atomic.Int32
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch calls.Add(1) {
		case 1:
			select { // hang past the client timeout
			case <-release:
			case <-r.Context().Done():
			}
			return
		case 2:
			http.Redirect(w, r, "/elsewhere", http.StatusTemporaryRedirect)
			return
		}
		if r.URL.Path == "/elsewhere" {
			t.Errorf("redirect was followed")
		}
		delivered.Add(1)
	}))
	defer srv.Close()
	defer close(release)
	appendN(t, st, "message.received", 1, 1)
	cfg := config(st, srv.URL, 1)
	cfg.HTTPClient = webhook.DefaultHTTPClient()
	cfg.HTTPClient.Timeout = 100 * time.Millisecond
	start(t, cfg)
	waitFor(t, "delivery after timeout and redirect", 5*time.Second, func() bool { return delivered.Load() == 1 })
	if n := calls.Load(); n != 3 {
		t.Fatalf("%d requests, want 3 (timeout, redirect, success)", n)
	}
}

// TestRedeliverBounded: one Redeliver call sends at most MaxPerCall events,
// oldest first, and reports the rest as remaining.
func TestRedeliverBounded(t *testing.T) {
	st := newStore(t)
	rcv := newReceiver(t)
	ids := appendN(t, st, "message.received", 1, 3)
	for _, id := range ids {
		rcv.failIDs[id] = true
	}
	cfg := config(st, rcv.srv.URL, 1)
	cfg.Backoff.Budget = 20 * time.Millisecond
	start(t, cfg)
	dl := &webhook.DeadLetters{KV: st, Token: st.Fence, MaxPerCall: 2,
		Target: func(context.Context, string) (webhook.Target, error) {
			return webhook.Target{URL: rcv.srv.URL, Secret: secret}, nil
		}}
	waitFor(t, "three parked", 5*time.Second, func() bool {
		d, _ := dl.Dead(context.Background(), "alice")
		return len(d) == 3
	})
	rcv.mu.Lock()
	rcv.failIDs = map[string]bool{}
	rcv.mu.Unlock()
	res, err := dl.Redeliver(context.Background(), "alice", nil)
	if err != nil || res.Redelivered != 2 || res.Remaining != 1 {
		t.Fatalf("first call: %+v %v", res, err)
	}
	if got := rcv.deliveredIDs(); join(got) != join(ids[:2]) {
		t.Fatalf("redelivered %v, want the two oldest %v", got, ids[:2])
	}
	if res, err = dl.Redeliver(context.Background(), "alice", nil); err != nil || res.Redelivered != 1 || res.Remaining != 0 {
		t.Fatalf("second call: %+v %v", res, err)
	}
}
