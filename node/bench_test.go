package node

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/amarula/amarula/webhook"
)

// BenchmarkGateway measures messages received per second by one node end to
// end: a wasim phone sends texts to the linked profile, the node decrypts,
// stores and announces each, and the webhook deliverer posts every
// message.received to a local receiver. The clock stops when the receiver
// has the last one. One op is a batch of gatewayBatch messages, so that
// `-benchtime 1x` (scripts/bench.sh) still measures a stream, not one
// message's latency. wasim (and its phones' encryption) runs in the same
// process, so the figure is a lower bound for the node alone.
func BenchmarkGateway(b *testing.B) {
	for _, k := range storeKinds {
		var env *benchEnv
		b.Run(k.name, func(sb *testing.B) {
			if env == nil {
				env = newBenchEnv(parentTB{TB: sb, parent: b}, k)
			}
			env.run(sb)
		})
	}
}

// parentTB lets a sub-benchmark, which runs once per b.N, build state that
// lives as long as the parent: cleanups and temp dirs belong to parent.
type parentTB struct {
	testing.TB
	parent testing.TB
}

func (p parentTB) Cleanup(f func()) { p.parent.Cleanup(f) }
func (p parentTB) TempDir() string  { return p.parent.TempDir() }

// gatewayBatch is the number of messages of one benchmark op.
const gatewayBatch = 200

type benchEnv struct {
	sim  *sim
	hook *countingHook
}

func newBenchEnv(t testing.TB, k storeKind) *benchEnv {
	s := startSim(t)
	hook := &countingHook{changed: make(chan struct{}, 1)}
	srv := httptest.NewServer(hook)
	t.Cleanup(srv.Close)
	n := startNode(t, nodeConfig(s, newBackend(t, k), "bench"))
	const profile = "bench"
	n.api.createProfile(profile, map[string]any{"url": srv.URL, "secret": "bench-secret", "events": []string{"message.received"}})
	n.api.pair(s, profile)
	return &benchEnv{sim: s, hook: hook}
}

// run sends b.N batches and waits until the webhook got them all.
func (e *benchEnv) run(b *testing.B) {
	total := b.N * gatewayBatch
	base := e.hook.count()
	to := e.sim.own.JID()
	errc := make(chan error, 1)
	b.ResetTimer()
	start := time.Now()
	go func() {
		for i := range total {
			if _, err := e.sim.peer.SendText(to, fmt.Sprintf("bench %d", i)); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	if err := <-errc; err != nil {
		b.Fatal(err)
	}
	deadline := time.NewTimer(2 * time.Minute)
	defer deadline.Stop()
	for e.hook.count() < base+total {
		select {
		case <-e.hook.changed:
		case <-deadline.C:
			b.Fatalf("webhook got %d of %d messages within 2 min", e.hook.count()-base, total)
		}
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(total)/elapsed.Seconds(), "msgs/s")
}

// countingHook accepts every delivery and counts distinct message.received
// events (a re-sent delivery counts once).
type countingHook struct {
	mu      sync.Mutex
	seen    map[string]bool
	changed chan struct{}
}

func (h *countingHook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get(webhook.HeaderEvent) == "message.received" {
		h.mu.Lock()
		if h.seen == nil {
			h.seen = map[string]bool{}
		}
		h.seen[r.Header.Get(webhook.HeaderDelivery)] = true
		h.mu.Unlock()
		select {
		case h.changed <- struct{}{}:
		default:
		}
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *countingHook) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.seen)
}
