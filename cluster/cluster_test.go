package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/amarula/amarula/catalog"
	"github.com/amarula/amarula/internal/testenv"
)

func startMembership(t *testing.T, name string, join ...string) *Membership {
	t.Helper()
	cfg := testConfig(name)
	cfg.Join = join
	m, err := NewMembership(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Shutdown() })
	return m
}

func states(m *Membership) map[string]State {
	out := map[string]State{}
	for _, mem := range m.Members() {
		out[mem.Name] = mem.State
	}
	return out
}

// TestMembershipJoinMetaAndDeadDetection: three nodes join over loopback,
// see each other's metadata, and a node that stops without leaving is
// declared dead within the tuned budget; a node that leaves is "left", not
// dead.
func TestMembershipJoinMetaAndDeadDetection(t *testing.T) {
	n1 := startMembership(t, "n1")
	n2 := startMembership(t, "n2", n1.Addr())
	n3 := startMembership(t, "n3", n1.Addr())
	all := []*Membership{n1, n2, n3}
	if err := testenv.WaitFor(5*time.Second, func() error {
		for _, m := range all {
			if s := states(m); len(s) != 3 || s["n1"] != StateAlive || s["n2"] != StateAlive || s["n3"] != StateAlive {
				return fmt.Errorf("%s sees %v", m.Name(), s)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	n2.SetMeta(func(m *Meta) { m.LeaseID, m.LeaseOK, m.Load = 42, true, 7 })
	if err := testenv.WaitFor(5*time.Second, func() error {
		for _, mem := range n1.Members() {
			if mem.Name == "n2" && mem.Meta.LeaseID == 42 && mem.Meta.Load == 7 && mem.Meta.API == "http://n2.test" && mem.Eligible() {
				return nil
			}
		}
		return errors.New("n1 has not seen n2's metadata")
	}); err != nil {
		t.Fatal(err)
	}

	// Crash n3 (no leave).
	crashed := time.Now()
	if err := n3.Shutdown(); err != nil {
		t.Fatal(err)
	}
	var detect []time.Duration
	for _, m := range []*Membership{n1, n2} {
		if err := testenv.WaitFor(10*time.Second, func() error {
			if states(m)["n3"] != StateDead {
				return fmt.Errorf("%s sees n3 as %s", m.Name(), states(m)["n3"])
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		detect = append(detect, time.Since(crashed))
	}
	t.Logf("crash → dead verdict: n1 %s, n2 %s (ProbeInterval 500ms, ProbeTimeout 200ms, SuspicionMult 2)",
		detect[0].Round(time.Millisecond), detect[1].Round(time.Millisecond))
	if detect[1] > 5*time.Second {
		t.Fatalf("dead detection took %s, budget 5s", detect[1])
	}

	// n2 leaves gracefully: left, not dead.
	if err := n2.Leave(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := testenv.WaitFor(5*time.Second, func() error {
		if s, ok := states(n1)["n2"]; ok {
			return fmt.Errorf("n1 still lists n2 as %s", s)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(Eligible(n1.Members()), []string{}) && !slices.Equal(Eligible(n1.Members()), []string{"n1"}) {
		t.Fatalf("eligible after leave %v", Eligible(n1.Members()))
	}
}

// TestMembershipJoinViaDNSName: a seed given as a DNS name is resolved to
// all its addresses and every one is tried (a headless service).
func TestMembershipJoinViaDNSName(t *testing.T) {
	n1 := startMembership(t, "n1")
	_, port, _ := net.SplitHostPort(n1.Addr())
	cfg := testConfig("n2")
	var asked []string
	cfg.Resolver = func(_ context.Context, host string) ([]string, error) {
		asked = append(asked, host)
		if host != "amarula-headless.test" {
			return nil, fmt.Errorf("no such host %s", host)
		}
		// 127.0.0.2 has nobody listening: one of two seeds answers.
		return []string{"127.0.0.2", "127.0.0.1"}, nil
	}
	cfg.Join = []string{"amarula-headless.test:" + port}
	n2, err := NewMembership(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer n2.Shutdown()
	addrs, _ := n2.resolve(context.Background(), cfg.Join)
	if !slices.Equal(addrs, []string{"127.0.0.2:" + port, "127.0.0.1:" + port}) {
		t.Fatalf("resolved %v", addrs)
	}
	if err := testenv.WaitFor(5*time.Second, func() error {
		if len(states(n1)) != 2 {
			return fmt.Errorf("n1 sees %v", states(n1))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if asked[0] != "amarula-headless.test" {
		t.Fatalf("resolver asked %v", asked)
	}
}

// TestMembershipJoinRetriesUntilSeedAppears: a node started before its seed
// keeps trying in the background.
func TestMembershipJoinRetriesUntilSeedAppears(t *testing.T) {
	port := testenv.FreePort(t)
	cfg := testConfig("early")
	cfg.Join = []string{fmt.Sprintf("127.0.0.1:%d", port)}
	cfg.JoinRetry = 200 * time.Millisecond
	early, err := NewMembership(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer early.Shutdown()
	seedCfg := testConfig("seed")
	seedCfg.BindPort = port
	seed, err := NewMembership(seedCfg)
	if err != nil {
		t.Skipf("port %d taken meanwhile: %v", port, err)
	}
	defer seed.Shutdown()
	if err := testenv.WaitFor(5*time.Second, func() error {
		if len(states(seed)) != 2 {
			return fmt.Errorf("seed sees %v", states(seed))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func createProfiles(t *testing.T, cat catalog.Catalog, n int) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("p%03d", i)
		if err := cat.Create(ctx, catalog.Profile{ID: ids[i]}); err != nil {
			t.Fatal(err)
		}
	}
	return ids
}

func assertNoViolations(t *testing.T, h *harness) {
	t.Helper()
	if v := h.world.Violations(); len(v) > 0 {
		t.Fatalf("%d double-ownership violations, first: %v", len(v), v[:min(5, len(v))])
	}
}

// TestClusterFailoverRebalanceDrain is the ownership story end to end on a
// real etcd and three (then four) in-process nodes with stand-in runners:
//
//  1. the profiles spread over the nodes by placement;
//  2. crash of n1 (no leave): detected dead, the lowest-named survivor (n2)
//     revokes n1's lease, survivors own everything well before n1's 10s
//     TTL could have expired;
//  3. n4 joins: profiles move to it gradually (settle period, move rate);
//  4. n2 drains: everything it had is handed off, it owns nothing.
//
// A checker goroutine and the runners themselves watch, throughout, that
// no profile ever runs on two nodes under live grants and that tokens only
// grow.
func TestClusterFailoverRebalanceDrain(t *testing.T) {
	h := newHarness(t)
	profiles := createProfiles(t, h.catalog, 40)
	stopCheck := h.checker(2 * time.Minute)
	defer stopCheck()

	h.start("n1")
	h.start("n2", "n1")
	h.start("n3", "n1")
	three := []string{"n1", "n2", "n3"}
	start := time.Now()
	if err := testenv.WaitFor(15*time.Second, func() error { return h.settled(profiles, three, true) }); err != nil {
		t.Fatal(err)
	}
	t.Logf("initial placement of %d profiles on 3 nodes: %s", len(profiles), time.Since(start).Round(time.Millisecond))
	assertNoViolations(t, h)
	onN1 := len(h.nodes["n1"].runner.Running())
	if onN1 == 0 {
		t.Fatal("n1 owns nothing; the crash would prove nothing")
	}

	// 2. Crash n1.
	crashed := time.Now()
	h.crash("n1")
	survivors := []string{"n2", "n3"}
	if err := testenv.WaitFor(h.ttl, func() error { return h.settled(profiles, survivors, true) }); err != nil {
		t.Fatalf("survivors did not take over within the lease TTL: %v", err)
	}
	failover := time.Since(crashed)
	t.Logf("crash of n1 (%d profiles) → all owned by survivors after %s (lease TTL %s)", onN1, failover.Round(time.Millisecond), h.ttl)
	if got := counterValue(h.nodes["n2"].cfg.Metrics.Revocations); got < 1 {
		t.Fatalf("n2 (lowest-named survivor) revoked %v leases, want ≥ 1", got)
	}
	if got := counterValue(h.nodes["n3"].cfg.Metrics.Revocations); got != 0 {
		t.Logf("n3 also revoked (fallback): %v", got)
	}
	if c := histCount(h.nodes["n2"].cfg.Metrics.Failover) + histCount(h.nodes["n3"].cfg.Metrics.Failover); c == 0 {
		t.Fatal("no failover duration observed")
	}
	assertNoViolations(t, h)

	// 3. n4 joins: gradual rebalance.
	h.world.mu.Lock()
	stopsBefore := len(h.world.stops)
	h.world.mu.Unlock()
	joined := time.Now()
	h.start("n4", "n2")
	four := []string{"n2", "n3", "n4"}
	if err := testenv.WaitFor(30*time.Second, func() error { return h.settled(profiles, four, true) }); err != nil {
		t.Fatal(err)
	}
	h.world.mu.Lock()
	moves := slices.Clone(h.world.stops[stopsBefore:])
	h.world.mu.Unlock()
	onN4 := len(h.nodes["n4"].runner.Running())
	t.Logf("n4 joined → rebalanced %d profiles onto it in %s with %d hand-offs", onN4, time.Since(joined).Round(time.Millisecond), len(moves))
	if onN4 == 0 || len(moves) != onN4 {
		t.Fatalf("n4 owns %d, %d hand-offs: every move must be a hand-off to the newcomer", onN4, len(moves))
	}
	if first := moves[0].at.Sub(joined); first < h.nodes["n2"].cfg.SettlePeriod {
		t.Fatalf("first move %s after the join, before the %s settle period", first, h.nodes["n2"].cfg.SettlePeriod)
	}
	// Move rate: per node at most burst + rate × elapsed.
	perNode := map[string][]time.Time{}
	for _, m := range moves {
		perNode[m.node] = append(perNode[m.node], m.at)
	}
	for node, ts := range perNode {
		span := ts[len(ts)-1].Sub(ts[0]).Seconds()
		cfg := h.nodes[node].cfg
		if limit := float64(cfg.MoveBurst) + cfg.MoveRate*span + 1; float64(len(ts)) > limit {
			t.Fatalf("%s moved %d profiles in %.2fs, rate limit allows %.0f", node, len(ts), span, limit)
		}
	}
	assertNoViolations(t, h)

	// 4. Drain n2.
	revBefore := counterValue(h.nodes["n3"].cfg.Metrics.Revocations) + counterValue(h.nodes["n4"].cfg.Metrics.Revocations)
	n2 := h.nodes["n2"]
	had := len(n2.runner.Running())
	drainStart := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n2.rec.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	drained := time.Since(drainStart)
	if len(n2.runner.Running()) != 0 || len(n2.rec.Owned()) != 0 {
		t.Fatalf("n2 still runs %v after Drain", n2.runner.Running())
	}
	rest := []string{"n3", "n4"}
	if err := testenv.WaitFor(10*time.Second, func() error { return h.settled(profiles, rest, true) }); err != nil {
		t.Fatal(err)
	}
	t.Logf("drain of n2: %d profiles handed off in %s, all re-owned after %s", had, drained.Round(time.Millisecond), time.Since(drainStart).Round(time.Millisecond))
	if got := counterValue(h.nodes["n3"].cfg.Metrics.Revocations) + counterValue(h.nodes["n4"].cfg.Metrics.Revocations); got != revBefore {
		t.Fatalf("the drained node was treated as dead: revocations %v → %v", revBefore, got)
	}
	stopCheck()
	assertNoViolations(t, h)
}

// TestClusterCatalogChangesAndStop: profiles created after start are
// picked up through the catalog watch, an operator stop hands the profile
// off and nobody takes it, deletion stops it too.
func TestClusterCatalogChangesAndStop(t *testing.T) {
	h := newHarness(t)
	stopCheck := h.checker(time.Minute)
	defer stopCheck()
	h.start("n1")
	h.start("n2", "n1")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	profiles := createProfiles(t, h.catalog, 6)
	both := []string{"n1", "n2"}
	if err := testenv.WaitFor(10*time.Second, func() error { return h.settled(profiles, both, true) }); err != nil {
		t.Fatal(err)
	}
	if err := h.catalog.Update(ctx, "p000", func(p *catalog.Profile) error { p.Stopped = true; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := h.catalog.Delete(ctx, "p001"); err != nil {
		t.Fatal(err)
	}
	if err := testenv.WaitFor(5*time.Second, func() error {
		owners, _ := h.owners()
		for _, p := range []string{"p000", "p001"} {
			if owners[p] != "" {
				return fmt.Errorf("%s still owned by %s", p, owners[p])
			}
			for _, n := range h.nodes {
				if _, ok := n.runner.Running()[p]; ok {
					return fmt.Errorf("%s still running on %s", p, n.name)
				}
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := testenv.WaitFor(5*time.Second, func() error { return h.settled(profiles[2:], both, true) }); err != nil {
		t.Fatal(err)
	}
	// Resume the stopped one.
	if err := h.catalog.Update(ctx, "p000", func(p *catalog.Profile) error { p.Stopped = false; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := testenv.WaitFor(5*time.Second, func() error { return h.settled([]string{"p000"}, both, true) }); err != nil {
		t.Fatal(err)
	}
	stopCheck()
	assertNoViolations(t, h)
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	_ = c.Write(&m)
	return m.GetCounter().GetValue()
}

func histCount(hg prometheus.Histogram) uint64 {
	var m dto.Metric
	_ = hg.Write(&m)
	return m.GetHistogram().GetSampleCount()
}

// TestClusterFalseDeathCostsOnlyAHandOff: a live node whose lease is
// revoked (a wrong dead verdict) stops its sessions at once, re-grants a
// lease and gets its profiles back; never two runners at once.
func TestClusterFalseDeathCostsOnlyAHandOff(t *testing.T) {
	h := newHarness(t)
	profiles := createProfiles(t, h.catalog, 24)
	stopCheck := h.checker(time.Minute)
	defer stopCheck()
	h.start("n1")
	h.start("n2", "n1")
	h.start("n3", "n1")
	all := []string{"n1", "n2", "n3"}
	if err := testenv.WaitFor(20*time.Second, func() error { return h.settled(profiles, all, true) }); err != nil {
		t.Fatal(err)
	}
	had := h.nodes["n2"].runner.Running()
	if len(had) == 0 {
		t.Fatal("n2 owns nothing")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	revoked := time.Now()
	if err := h.nodes["n1"].lm.RevokeNode(ctx, "n2"); err != nil {
		t.Fatal(err)
	}
	// n2's sessions end at once (their grants close).
	if err := testenv.WaitFor(3*time.Second, func() error {
		for p := range h.nodes["n2"].runner.Running() {
			if _, ok := had[p]; ok && h.nodes["n2"].runner.Running()[p] == had[p] {
				return fmt.Errorf("%s still runs on n2 under the revoked grant", p)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("revocation of live n2 → its %d sessions stopped after %s", len(had), time.Since(revoked).Round(time.Millisecond))
	if err := testenv.WaitFor(20*time.Second, func() error { return h.settled(profiles, all, true) }); err != nil {
		t.Fatal(err)
	}
	t.Logf("…and the cluster is back to placement after %s", time.Since(revoked).Round(time.Millisecond))
	if counterValue(h.nodes["n2"].cfg.Metrics.Losses) == 0 {
		t.Fatal("n2 counted no lease losses")
	}
	stopCheck()
	assertNoViolations(t, h)
}

// TestClusterMovePinsProfile: Move hands the profile to the chosen node at
// once (no settle period), it stays there past the settle period, and
// clearing the pin returns it to normal placement.
func TestClusterMovePinsProfile(t *testing.T) {
	h := newHarness(t)
	profiles := createProfiles(t, h.catalog, 8)
	stopCheck := h.checker(time.Minute)
	defer stopCheck()
	h.start("n1")
	h.start("n2", "n1")
	both := []string{"n1", "n2"}
	if err := testenv.WaitFor(15*time.Second, func() error { return h.settled(profiles, both, true) }); err != nil {
		t.Fatal(err)
	}
	owners, _ := h.owners()
	var p string
	for _, id := range profiles {
		if owners[id] == "n1" {
			p = id
			break
		}
	}
	if p == "" {
		t.Fatal("n1 owns nothing")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := h.nodes["n2"].rec.Move(ctx, p, "n9"); !errors.Is(err, ErrNoTarget) {
		t.Fatalf("move to an unknown node: %v", err)
	}
	moved := time.Now()
	to, err := h.nodes["n2"].rec.Move(ctx, p, "")
	if err != nil || to != "n2" {
		t.Fatalf("move = %q, %v", to, err)
	}
	ownedBy := func(node string) func() error {
		return func() error {
			o, _ := h.owners()
			if o[p] != node {
				return fmt.Errorf("%s owned by %q", p, o[p])
			}
			if _, ok := h.nodes[node].runner.Running()[p]; !ok {
				return fmt.Errorf("%s not running on %s", p, node)
			}
			return nil
		}
	}
	if err := testenv.WaitFor(5*time.Second, ownedBy("n2")); err != nil {
		t.Fatal(err)
	}
	t.Logf("move of %s n1 → n2 took %s", p, time.Since(moved).Round(time.Millisecond))
	// It stays for longer than the settle period (an invariant over a
	// window, polled, bounded).
	settle := h.nodes["n1"].cfg.SettlePeriod
	for end := time.Now().Add(2*settle + time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if err := ownedBy("n2")(); err != nil {
			t.Fatalf("pinned profile moved back: %v", err)
		}
	}
	if err := h.catalog.Update(ctx, p, func(pr *catalog.Profile) error { pr.Pin = ""; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := testenv.WaitFor(10*time.Second, ownedBy("n1")); err != nil {
		t.Fatal(err)
	}
	stopCheck()
	assertNoViolations(t, h)
}

// TestClusterEtcdFreezeStopsEverythingThenRecovers: with etcd frozen
// (SIGSTOP) no node can renew: every node self-fences and every session
// stops before any lease could expire; nobody acquires meanwhile. After
// SIGCONT the nodes re-grant and the cluster returns to placement, never
// with two runners at once.
func TestClusterEtcdFreezeStopsEverythingThenRecovers(t *testing.T) {
	h := newHarness(t)
	h.ttl = 3 * time.Second
	profiles := createProfiles(t, h.catalog, 12)
	stopCheck := h.checker(time.Minute)
	defer stopCheck()
	h.start("n1")
	h.start("n2", "n1")
	both := []string{"n1", "n2"}
	if err := testenv.WaitFor(15*time.Second, func() error { return h.settled(profiles, both, true) }); err != nil {
		t.Fatal(err)
	}
	frozen := time.Now()
	if err := h.etcd.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	thawed := false
	thaw := func() {
		if !thawed {
			thawed = true
			_ = h.etcd.Signal(syscall.SIGCONT)
		}
	}
	t.Cleanup(thaw)
	if err := testenv.WaitFor(h.ttl+time.Second, func() error {
		for _, n := range h.nodes {
			if r := n.runner.Running(); len(r) > 0 {
				return fmt.Errorf("%s still runs %d sessions", n.name, len(r))
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	stoppedAfter := time.Since(frozen)
	t.Logf("etcd frozen → every session stopped after %s (TTL %s)", stoppedAfter.Round(time.Millisecond), h.ttl)
	if stoppedAfter >= h.ttl {
		t.Fatalf("sessions outlived the lease TTL: %s", stoppedAfter)
	}
	thaw()
	thawedAt := time.Now()
	if err := testenv.WaitFor(20*time.Second, func() error { return h.settled(profiles, both, true) }); err != nil {
		t.Fatal(err)
	}
	t.Logf("etcd thawed → back to placement after %s", time.Since(thawedAt).Round(time.Millisecond))
	stopCheck()
	assertNoViolations(t, h)
}

// TestClusterMassFailureWithoutQuorum: two of three nodes crash. Once the
// survivor sees both dead it has no quorum (it could be a cut-off
// minority), so it revokes nothing more; the dead leases expire after their
// TTL and, once the profiles have been unowned for MinorityGrace, the
// survivor takes them all. (While it still saw one of them alive it had
// quorum, and revoking the one seen dead was legitimate.)
func TestClusterMassFailureWithoutQuorum(t *testing.T) {
	h := newHarness(t)
	h.ttl = 3 * time.Second
	profiles := createProfiles(t, h.catalog, 12)
	stopCheck := h.checker(time.Minute)
	defer stopCheck()
	h.start("n1")
	h.start("n2", "n1")
	n3 := h.start("n3", "n1")
	if err := testenv.WaitFor(20*time.Second, func() error { return h.settled(profiles, []string{"n1", "n2", "n3"}, true) }); err != nil {
		t.Fatal(err)
	}
	crashed := time.Now()
	h.crash("n1")
	h.crash("n2")
	if err := testenv.WaitFor(10*time.Second, func() error {
		if s := states(n3.ms); s["n1"] != StateDead || s["n2"] != StateDead {
			return fmt.Errorf("n3 sees %v", s)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	revoked := counterValue(n3.cfg.Metrics.Revocations)
	if err := testenv.WaitFor(20*time.Second, func() error { return h.settled(profiles, []string{"n3"}, false) }); err != nil {
		t.Fatal(err)
	}
	t.Logf("2 of 3 crashed → the survivor owns all %d after %s (TTL %s, minority grace %s, %v revocations while it still had quorum)",
		len(profiles), time.Since(crashed).Round(time.Millisecond), h.ttl, n3.cfg.MinorityGrace, revoked)
	if got := counterValue(n3.cfg.Metrics.Revocations); got != revoked {
		t.Fatalf("the survivor revoked leases without quorum: %v → %v", revoked, got)
	}
	stopCheck()
	assertNoViolations(t, h)
}
