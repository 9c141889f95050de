package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/amarula/amarula/catalog"
	"github.com/amarula/amarula/internal/testenv"
	"github.com/amarula/amarula/lease"
)

// world is what the stand-in runners of every node share: it sees every
// session start and stop in the whole test cluster, so it can tell at the
// instant of a Start whether another node still runs the profile under a
// live grant.
type world struct {
	mu         sync.Mutex
	holders    map[string]map[string]*lease.Grant // profile → node → grant
	lastToken  map[string]uint64
	violations []string
	stops      []stopEvent
}

type stopEvent struct {
	node, profile string
	at            time.Time
}

func newWorld() *world {
	return &world{holders: map[string]map[string]*lease.Grant{}, lastToken: map[string]uint64{}}
}

func (w *world) violate(format string, args ...any) {
	w.violations = append(w.violations, fmt.Sprintf(format, args...))
}

// check looks for a profile held by two nodes under live grants.
func (w *world) check() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for p, hs := range w.holders {
		var live []string
		for n, g := range hs {
			if !closed(g.Done()) {
				live = append(live, n)
			}
		}
		if len(live) > 1 {
			sort.Strings(live)
			w.violate("%s running on %v at once", p, live)
		}
	}
}

func (w *world) Violations() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.violations)
}

// fakeRunner is a stand-in Runner that records starts and stops.
type fakeRunner struct {
	node string
	w    *world
	quit chan struct{}
	wg   sync.WaitGroup

	mu      sync.Mutex
	running map[string]*lease.Grant
	starts  []time.Time
}

func newFakeRunner(node string, w *world) *fakeRunner {
	return &fakeRunner{node: node, w: w, quit: make(chan struct{}), running: map[string]*lease.Grant{}}
}

func (r *fakeRunner) Start(_ context.Context, g *lease.Grant) error {
	r.w.mu.Lock()
	for n, og := range r.w.holders[g.Profile] {
		if n != r.node && !closed(og.Done()) {
			r.w.violate("%s started on %s (token %d) while %s holds a live grant (token %d)", g.Profile, r.node, g.Token, n, og.Token)
		}
	}
	if g.Token <= r.w.lastToken[g.Profile] {
		r.w.violate("%s token %d not above previous %d", g.Profile, g.Token, r.w.lastToken[g.Profile])
	}
	r.w.lastToken[g.Profile] = g.Token
	if r.w.holders[g.Profile] == nil {
		r.w.holders[g.Profile] = map[string]*lease.Grant{}
	}
	r.w.holders[g.Profile][r.node] = g
	r.w.mu.Unlock()

	r.mu.Lock()
	r.running[g.Profile] = g
	r.starts = append(r.starts, time.Now())
	r.mu.Unlock()
	// The session stops by itself when its grant ends.
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		select {
		case <-g.Done():
			r.remove(g.Profile, g)
		case <-r.quit:
		}
	}()
	return nil
}

func (r *fakeRunner) Stop(_ context.Context, profile string) error {
	r.mu.Lock()
	g := r.running[profile]
	r.mu.Unlock()
	if g != nil {
		r.remove(profile, g)
		r.w.mu.Lock()
		r.w.stops = append(r.w.stops, stopEvent{r.node, profile, time.Now()})
		r.w.mu.Unlock()
	}
	return nil
}

func (r *fakeRunner) remove(profile string, g *lease.Grant) {
	r.mu.Lock()
	if r.running[profile] == g {
		delete(r.running, profile)
	}
	r.mu.Unlock()
	r.w.mu.Lock()
	if r.w.holders[profile][r.node] == g {
		delete(r.w.holders[profile], r.node)
	}
	r.w.mu.Unlock()
}

// crash forgets every session at once: the process died.
func (r *fakeRunner) crash() {
	r.mu.Lock()
	profiles := r.running
	r.running = map[string]*lease.Grant{}
	r.mu.Unlock()
	r.w.mu.Lock()
	for p := range profiles {
		delete(r.w.holders[p], r.node)
	}
	r.w.mu.Unlock()
}

func (r *fakeRunner) Running() map[string]uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]uint64{}
	for p, g := range r.running {
		out[p] = g.Token
	}
	return out
}

func (r *fakeRunner) close() {
	close(r.quit)
	r.wg.Wait()
}

// testNode is one in-process cluster node.
type testNode struct {
	name    string
	cfg     Config
	ms      *Membership
	cli     *clientv3.Client
	lm      *lease.Etcd
	rec     *Reconciler
	runner  *fakeRunner
	cancel  context.CancelFunc
	runDone chan struct{}
	crashed bool
}

type harness struct {
	t       *testing.T
	etcd    *testenv.Etcd
	world   *world
	nodes   map[string]*testNode
	catalog *catalog.Etcd
	raw     *clientv3.Client
	fencer  *memFencer
	ttl     time.Duration
}

const testCluster = "c"

func newHarness(t *testing.T) *harness {
	e := testenv.StartEtcd(t)
	h := &harness{t: t, etcd: e, world: newWorld(), nodes: map[string]*testNode{}, fencer: newMemFencer(), ttl: 10 * time.Second}
	h.raw = h.client()
	h.catalog = catalog.NewEtcd(h.raw, testCluster)
	return h
}

func (h *harness) client() *clientv3.Client {
	cli, err := clientv3.New(clientv3.Config{Endpoints: h.etcd.Endpoints(), DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { cli.Close() })
	return cli
}

func testConfig(name string) Config {
	cfg := DefaultConfig(name)
	cfg.BindAddr, cfg.BindPort = "127.0.0.1", 0
	cfg.ReconcileInterval = 250 * time.Millisecond
	cfg.ConnectRate, cfg.ConnectBurst = 200, 50
	cfg.SettlePeriod = time.Second
	cfg.MoveRate, cfg.MoveBurst = 4, 2
	cfg.RevokeFallback = 2 * time.Second
	cfg.MinorityGrace = 1500 * time.Millisecond
	cfg.APIAddr = "http://" + name + ".test"
	cfg.Metrics = NewMetrics(nil)
	return cfg
}

// start adds a node joining the given members.
func (h *harness) start(name string, join ...string) *testNode {
	h.t.Helper()
	cfg := testConfig(name)
	for _, j := range join {
		cfg.Join = append(cfg.Join, h.nodes[j].ms.Addr())
	}
	n := &testNode{name: name, cfg: cfg, runner: newFakeRunner(name, h.world), runDone: make(chan struct{})}
	n.cli = h.client()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	lm, err := lease.NewEtcd(ctx, n.cli, lease.EtcdConfig{Cluster: testCluster, Node: name, TTL: h.ttl, Fencer: h.fencer})
	if err != nil {
		h.t.Fatal(err)
	}
	n.lm = lm
	ms, err := NewMembership(cfg)
	if err != nil {
		h.t.Fatal(err)
	}
	n.ms = ms
	n.rec = NewReconciler(cfg, ms, lm, catalog.NewEtcd(n.cli, testCluster), n.runner)
	rctx, rcancel := context.WithCancel(context.Background())
	n.cancel = rcancel
	go func() { defer close(n.runDone); _ = n.rec.Run(rctx) }()
	h.nodes[name] = n
	// Cleanup order (LIFO): stop the reconciler, close the lease manager
	// (ends grants), stop runner goroutines, shut memberlist down.
	h.t.Cleanup(func() {
		if !n.crashed {
			_ = n.ms.Shutdown()
		}
		n.runner.close()
	})
	h.t.Cleanup(func() { n.lm.Close() })
	h.t.Cleanup(n.stopRun)
	return n
}

func (n *testNode) stopRun() {
	n.cancel()
	<-n.runDone
}

// crash kills a node without any goodbye: the reconciler stops, memberlist
// goes silent (no leave), the process's sessions vanish and its etcd
// connection drops (the lease lives on until revoked or expired).
func (h *harness) crash(name string) {
	n := h.nodes[name]
	n.crashed = true
	n.stopRun()
	_ = n.ms.Shutdown()
	n.runner.crash()
	n.cli.Close()
}

// owners reads every owner key: profile → node, token.
func (h *harness) owners() (map[string]string, map[string]uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	resp, err := h.raw.Get(ctx, lease.OwnersPrefix(testCluster), clientv3.WithPrefix())
	if err != nil {
		return nil, nil
	}
	nodes, toks := map[string]string{}, map[string]uint64{}
	for _, kv := range resp.Kvs {
		p := strings.TrimPrefix(string(kv.Key), lease.OwnersPrefix(testCluster))
		nodes[p], toks[p] = string(kv.Value), uint64(kv.CreateRevision)
	}
	return nodes, toks
}

// settled reports nil when every profile is owned by one of want (or by
// its placement among want when placed is set) and the owner key and the
// owner's runner agree on the token.
func (h *harness) settled(profiles []string, want []string, placed bool) error {
	owners, toks := h.owners()
	if owners == nil {
		return errors.New("etcd unreadable")
	}
	for _, p := range profiles {
		o := owners[p]
		if o == "" {
			return fmt.Errorf("%s unowned", p)
		}
		if !slices.Contains(want, o) {
			return fmt.Errorf("%s owned by %s, not one of %v", p, o, want)
		}
		if placed && Top(p, want) != o {
			return fmt.Errorf("%s owned by %s, placement says %s", p, o, Top(p, want))
		}
		if tok, ok := h.nodes[o].runner.Running()[p]; !ok || tok != toks[p] {
			return fmt.Errorf("%s: owner key %s/%d, runner has token %d (running %v)", p, o, toks[p], tok, ok)
		}
	}
	for name, n := range h.nodes {
		if n.crashed {
			continue
		}
		for p := range n.runner.Running() {
			if owners[p] != name {
				return fmt.Errorf("%s runs %s but the owner key says %q", name, p, owners[p])
			}
		}
	}
	return nil
}

// checker runs world.check every 20ms until stopped, at most for limit.
func (h *harness) checker(limit time.Duration) (stop func()) {
	quit := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		deadline := time.After(limit)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-quit:
				return
			case <-deadline:
				return
			case <-tick.C:
				h.world.check()
			}
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(quit); <-done }) }
}

// memFencer is an in-test lease.Fencer with storage's semantics.
type memFencer struct {
	mu     sync.Mutex
	fences map[string]uint64
}

func newMemFencer() *memFencer { return &memFencer{fences: map[string]uint64{}} }

func (f *memFencer) RaiseFence(_ context.Context, profile string, token uint64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if token < f.fences[profile] {
		return fmt.Errorf("fenced: %d < %d", token, f.fences[profile])
	}
	f.fences[profile] = token
	return nil
}

func (f *memFencer) Fence(_ context.Context, profile string) (uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.fences[profile], nil
}
