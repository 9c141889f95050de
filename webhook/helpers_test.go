package webhook_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/amarula/amarula/internal/testenv"
	"github.com/amarula/amarula/storage"
	"github.com/amarula/amarula/storage/bolt"
	"github.com/amarula/amarula/storage/redis"
	"github.com/amarula/amarula/webhook"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const secret = "whsec_test_secret"

// testStore is what the deliverer needs of a real storage adapter, plus the
// writes the tests make.
type testStore interface {
	webhook.Log
	webhook.KV
	Append(ctx context.Context, profile string, token storage.Token, typ string, data []byte) (string, error)
	RaiseFence(ctx context.Context, profile string, token storage.Token) error
	Fence(ctx context.Context, profile string) (storage.Token, error)
}

// newStore opens a real bbolt store in a temporary directory.
func newStore(t testing.TB) testStore {
	t.Helper()
	st, err := bolt.Open(t.TempDir(), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// newRedisStore starts a real redis-server and connects the Redis adapter.
func newRedisStore(t testing.TB) testStore {
	t.Helper()
	srv := testenv.StartRedis(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := redis.New(ctx, srv.URL(), redis.Options{TailBlock: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// delivery is one request the receiver answered with 2xx.
type delivery struct {
	ID, Type string
	Env      webhook.Envelope
}

// receiver is a webhook endpoint that verifies every request and fails on
// demand.
type receiver struct {
	t       *testing.T
	srv     *httptest.Server
	profile string // expected in every envelope

	mu        sync.Mutex
	failFirst int             // fail this many requests first
	failIDs   map[string]bool // fail every request for these event ids
	hits      int
	perID     map[string]int
	delivered []delivery
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{t: t, profile: "alice", failIDs: map[string]bool{}, perID: map[string]int{}}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, err := webhook.VerifyRequest(req, secret, 1<<20, time.Minute, time.Now())
	if err != nil {
		r.t.Errorf("receiver: %v", err)
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	var env webhook.Envelope
	if err := json.Unmarshal(body, &env); err != nil {
		r.t.Errorf("receiver: body %s: %v", body, err)
	}
	id, typ := req.Header.Get(webhook.HeaderDelivery), req.Header.Get(webhook.HeaderEvent)
	if env.ID != id || env.Type != typ || env.Profile != r.profile || req.Header.Get("Content-Type") != "application/json" {
		r.t.Errorf("receiver: headers %s/%s do not match body %s", id, typ, body)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.hits++
	r.perID[id]++
	if r.hits <= r.failFirst || r.failIDs[id] {
		http.Error(w, "try later", http.StatusInternalServerError)
		return
	}
	r.delivered = append(r.delivered, delivery{ID: id, Type: typ, Env: env})
	w.WriteHeader(http.StatusNoContent)
}

func (r *receiver) deliveredIDs() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var ids []string
	for _, d := range r.delivered {
		ids = append(ids, d.ID)
	}
	return ids
}

// firstArrivals dedups deliveries by id, as a receiver would with
// X-Amarula-Delivery.
func firstArrivals(ids []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, id := range ids {
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// fastBackoff keeps retry tests short.
func fastBackoff() webhook.Backoff {
	return webhook.Backoff{Initial: 5 * time.Millisecond, Max: 20 * time.Millisecond, Budget: time.Hour}
}

func config(st testStore, url string, token storage.Token) webhook.Config {
	return webhook.Config{
		Profile: "alice",
		Token:   token,
		Log:     st,
		KV:      st,
		Target:  webhook.StaticTarget(webhook.Target{URL: url, Secret: secret, Events: []string{"message.*"}}),
		Backoff: fastBackoff(),
		Logger:  slog.New(slog.DiscardHandler),
	}
}

// running is a deliverer started by a test.
type running struct {
	cancel context.CancelFunc
	errc   chan error
	once   sync.Once
	err    error
}

func start(t *testing.T, cfg webhook.Config) *running {
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, errc: make(chan error, 1)}
	go func() { r.errc <- webhook.Run(ctx, cfg) }()
	t.Cleanup(func() { r.stop() })
	return r
}

// stop cancels the deliverer and returns what Run returned.
func (r *running) stop() error {
	r.once.Do(func() {
		r.cancel()
		r.err = <-r.errc
	})
	return r.err
}

func appendN(t *testing.T, st testStore, typ string, from, n int) []string {
	t.Helper()
	return appendTo(t, st, "alice", typ, from, n)
}

func appendTo(t *testing.T, st testStore, profile, typ string, from, n int) []string {
	t.Helper()
	var cs []string
	for i := from; i < from+n; i++ {
		c, err := st.Append(context.Background(), profile, 1, typ, []byte(fmt.Sprintf(`{"id":"m%d"}`, i)))
		if err != nil {
			t.Fatal(err)
		}
		cs = append(cs, c)
	}
	return cs
}

func join(s []string) string { return strings.Join(s, ",") }

// atomicString is a string shared with a running deliverer.
type atomicString struct {
	mu sync.Mutex
	s  string
}

func (a *atomicString) set(s string) { a.mu.Lock(); a.s = s; a.mu.Unlock() }
func (a *atomicString) get() string  { a.mu.Lock(); defer a.mu.Unlock(); return a.s }
