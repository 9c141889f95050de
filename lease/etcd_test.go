package lease

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/amarula/amarula/internal/testenv"
)

const testCluster = "t"

func newClient(t *testing.T, endpoints []string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// fastConfig: TTL 3s, self-fence after 2s without renewal.
func fastConfig(node string, f Fencer) EtcdConfig {
	return EtcdConfig{Cluster: testCluster, Node: node, TTL: 3 * time.Second, SafetyMargin: time.Second,
		RenewInterval: 500 * time.Millisecond, RetryInterval: 100 * time.Millisecond, Fencer: f,
		Meta: map[string]string{"api": "http://" + node}}
}

// newManager starts a manager on its own client; Close runs before the
// client closes.
func newManager(t *testing.T, endpoints []string, cfg EtcdConfig) *Etcd {
	t.Helper()
	cli := newClient(t, endpoints)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	m, err := NewEtcd(ctx, cli, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestEtcdAcquireHeldReleaseTokens(t *testing.T) {
	e := testenv.StartEtcd(t)
	ctx := ctxT(t)
	f := newMemFencer()
	n1 := newManager(t, e.Endpoints(), fastConfig("n1", f))
	n2 := newManager(t, e.Endpoints(), fastConfig("n2", f))

	g1, err := n1.Acquire(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if g1.Node != "n1" || g1.Token == 0 || f.get("alice") != g1.Token {
		t.Fatalf("grant %+v, fence %d", g1, f.get("alice"))
	}
	_, err = n2.Acquire(ctx, "alice")
	var held *HeldError
	if !errors.As(err, &held) || !errors.Is(err, ErrHeld) || held.Owner != "n1" || held.Token != g1.Token {
		t.Fatalf("n2 acquire: %v, want HeldError{n1,%d}", err, g1.Token)
	}
	if _, err := n1.Acquire(ctx, "alice"); !errors.Is(err, ErrHeld) {
		t.Fatalf("re-acquire by owner: %v", err)
	}
	if node, tok, err := n2.Owner(ctx, "alice"); err != nil || node != "n1" || tok != g1.Token {
		t.Fatalf("owner = %s/%d/%v", node, tok, err)
	}

	// Hand-offs between the two nodes: tokens strictly increase and each
	// is the fence when Acquire returns.
	last, holder, g := g1.Token, n1, g1
	for i := 0; i < 10; i++ {
		if err := holder.Release(ctx, g); err != nil {
			t.Fatalf("release %d: %v", i, err)
		}
		assertClosed(t, g.Done(), time.Second, "released grant")
		next := n2
		if holder == n2 {
			next = n1
		}
		ng, err := next.Acquire(ctx, "alice")
		if err != nil {
			t.Fatalf("acquire %d: %v", i, err)
		}
		if ng.Token <= last {
			t.Fatalf("token %d not above previous %d", ng.Token, last)
		}
		if f.get("alice") != ng.Token {
			t.Fatalf("fence %d, token %d", f.get("alice"), ng.Token)
		}
		// The old owner's stale grant cannot delete the new owner's key.
		if err := holder.Release(ctx, g); !errors.Is(err, ErrNotOwner) {
			t.Fatalf("stale release: %v", err)
		}
		if node, tok, _ := n1.Owner(ctx, "alice"); node != next.cfg.Node || tok != ng.Token {
			t.Fatalf("owner after stale release %s/%d", node, tok)
		}
		last, holder, g = ng.Token, next, ng
	}

	if node, _, err := n1.Owner(ctx, "nobody"); err != nil || node != "" {
		t.Fatalf("owner of unowned: %q %v", node, err)
	}
	nodes, err := n1.Nodes(ctx)
	if err != nil || len(nodes) != 2 {
		t.Fatalf("nodes %v %v", nodes, err)
	}
	for _, r := range nodes {
		if r.Meta["api"] != "http://"+r.Node || r.LeaseID == 0 {
			t.Fatalf("node record %+v", r)
		}
	}
}

// orderFencer checks, inside RaiseFence, that the owner key already exists
// with the token (the fence is raised after winning, before returning).
type orderFencer struct {
	*memFencer
	cli      *clientv3.Client
	sawOwner atomic.Bool
}

func (f *orderFencer) RaiseFence(ctx context.Context, profile string, token uint64) error {
	r, err := f.cli.Get(ctx, OwnerKey(testCluster, profile))
	if err == nil && len(r.Kvs) == 1 && uint64(r.Kvs[0].CreateRevision) == token {
		f.sawOwner.Store(true)
	}
	return f.memFencer.RaiseFence(ctx, profile, token)
}

func TestEtcdFenceRaisedBeforeAcquireReturns(t *testing.T) {
	e := testenv.StartEtcd(t)
	ctx := ctxT(t)
	raw := newClient(t, e.Endpoints())
	f := &orderFencer{memFencer: newMemFencer(), cli: raw}
	n1 := newManager(t, e.Endpoints(), fastConfig("n1", f))

	g, err := n1.Acquire(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	if !f.sawOwner.Load() || f.get("bob") != g.Token {
		t.Fatalf("fence %d (token %d), owner key seen during raise: %v", f.get("bob"), g.Token, f.sawOwner.Load())
	}

	// A fence already above the new token (e.g. etcd data was wiped and
	// revisions restarted) refuses the acquisition and leaves no owner key.
	f.memFencer.fences["carol"] = 1 << 40
	if _, err := n1.Acquire(ctx, "carol"); !errors.Is(err, errFenced) {
		t.Fatalf("acquire under a higher fence: %v", err)
	}
	if node, _, _ := n1.Owner(ctx, "carol"); node != "" {
		t.Fatalf("owner key left behind by failed acquire: %s", node)
	}
	// Storage down: same.
	f.memFencer.mu.Lock()
	f.memFencer.fail = errors.New("storage unreachable")
	f.memFencer.mu.Unlock()
	if _, err := n1.Acquire(ctx, "dave"); err == nil {
		t.Fatal("acquire with storage down succeeded")
	}
	if node, _, _ := n1.Owner(ctx, "dave"); node != "" {
		t.Fatalf("owner key left behind: %s", node)
	}
}

func TestEtcdRevokeNodeClosesGrantsAndRegrants(t *testing.T) {
	e := testenv.StartEtcd(t)
	ctx := ctxT(t)
	f := newMemFencer()
	n1 := newManager(t, e.Endpoints(), fastConfig("n1", f))
	n2 := newManager(t, e.Endpoints(), fastConfig("n2", f))

	var grants []*Grant
	for _, p := range []string{"a", "b", "c"} {
		g, err := n1.Acquire(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		grants = append(grants, g)
	}
	oldLease := n1.LeaseID()
	done := n1.Done()

	start := time.Now()
	if err := n2.RevokeNode(ctx, "n1"); err != nil {
		t.Fatal(err)
	}
	// Owner keys vanish at once, n2 can take over right away.
	g2, err := n2.Acquire(ctx, "a")
	if err != nil {
		t.Fatalf("takeover after revoke: %v", err)
	}
	if g2.Token <= grants[0].Token {
		t.Fatalf("takeover token %d <= %d", g2.Token, grants[0].Token)
	}
	assertClosed(t, done, 3*time.Second, "n1 Done after revoke")
	for _, g := range grants {
		assertClosed(t, g.Done(), time.Second, "grant "+g.Profile)
		if !errors.Is(g.Err(), ErrLost) && !errors.Is(g.Err(), ErrNotOwner) {
			t.Fatalf("grant %s err %v", g.Profile, g.Err())
		}
	}
	t.Logf("revoke → n1 Done closed after %s", time.Since(start).Round(time.Millisecond))

	// n1 re-grants a lease on its own and can own profiles again.
	if err := testenv.WaitFor(5*time.Second, func() error {
		if !n1.Alive() || n1.LeaseID() == oldLease {
			return errors.New("not re-granted")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	assertOpen(t, n1.Done(), "new incarnation Done")
	if _, err := n1.Acquire(ctx, "b"); err != nil {
		t.Fatalf("acquire after re-grant: %v", err)
	}
	if err := n2.RevokeNode(ctx, "n2"); err == nil {
		t.Fatal("revoking self must fail")
	}
	if err := n2.RevokeNode(ctx, "ghost"); err != nil {
		t.Fatalf("revoking an unknown node: %v", err)
	}
}

func TestEtcdOwnerKeyDeletedClosesGrant(t *testing.T) {
	e := testenv.StartEtcd(t)
	ctx := ctxT(t)
	raw := newClient(t, e.Endpoints())
	n1 := newManager(t, e.Endpoints(), fastConfig("n1", newMemFencer()))
	g, err := n1.Acquire(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	other, err := n1.Acquire(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Delete(ctx, OwnerKey(testCluster, "alice")); err != nil {
		t.Fatal(err)
	}
	assertClosed(t, g.Done(), 2*time.Second, "grant whose key was deleted")
	if !errors.Is(g.Err(), ErrNotOwner) {
		t.Fatalf("err %v", g.Err())
	}
	assertOpen(t, other.Done(), "unrelated grant")
	assertOpen(t, n1.Done(), "node Done")
	if err := n1.Release(ctx, g); !errors.Is(err, ErrNotOwner) {
		t.Fatalf("release of lost grant: %v", err)
	}
}

// owning is one etcd, one manager n1 and its grant of "alice".
type owning struct {
	e   *testenv.Etcd
	ctx context.Context
	f   *memFencer
	cfg EtcdConfig
	n1  *Etcd
	g   *Grant
}

func ownAlice(t *testing.T, tweak func(*EtcdConfig)) owning {
	t.Helper()
	o := owning{e: testenv.StartEtcd(t), ctx: ctxT(t), f: newMemFencer()}
	o.cfg = fastConfig("n1", o.f)
	if tweak != nil {
		tweak(&o.cfg)
	}
	o.n1 = newManager(t, o.e.Endpoints(), o.cfg)
	g, err := o.n1.Acquire(o.ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	o.g = g
	return o
}

// TestEtcdSelfFencingOnFrozenEtcd freezes etcd (SIGSTOP) so keep-alives
// hang: the node must close Done and its grants before its lease could
// expire on the server, i.e. before last successful renewal + TTL.
func TestEtcdSelfFencingOnFrozenEtcd(t *testing.T) {
	o := ownAlice(t, nil)
	e, ctx, cfg, n1, g := o.e, o.ctx, o.cfg, o.n1, o.g
	done := n1.Done()
	oldLease := n1.LeaseID()

	stopped := time.Now()
	if err := e.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			_ = e.Signal(syscall.SIGCONT)
		}
	}
	t.Cleanup(resume)

	// The last renewal reached the server at or after it was sent, so the
	// server-side expiry is no earlier than lastRenewSent + TTL; and it was
	// sent before SIGSTOP.
	select {
	case <-done:
	case <-time.After(cfg.TTL + 2*time.Second):
		t.Fatal("node did not self-fence")
	}
	fencedAt := time.Now()
	assertClosed(t, g.Done(), 100*time.Millisecond, "grant at self-fence")
	lastRenew := time.Unix(0, n1.lastRenewSent.Load())
	serverExpiryLB := lastRenew.Add(cfg.TTL)
	t.Logf("self-fence: %s after SIGSTOP, %s after the last renewal, %s before the earliest server-side expiry (TTL %s, margin %s)",
		fencedAt.Sub(stopped).Round(time.Millisecond), fencedAt.Sub(lastRenew).Round(time.Millisecond),
		serverExpiryLB.Sub(fencedAt).Round(time.Millisecond), cfg.TTL, cfg.SafetyMargin)
	if !fencedAt.Before(serverExpiryLB) {
		t.Fatalf("self-fenced at %s, not before the server-side expiry %s", fencedAt, serverExpiryLB)
	}
	if fencedAt.Sub(lastRenew) < cfg.TTL-cfg.SafetyMargin-50*time.Millisecond {
		t.Fatalf("self-fenced too early: %s after the last renewal", fencedAt.Sub(lastRenew))
	}
	if !errors.Is(g.Err(), ErrLost) {
		t.Fatalf("grant err %v", g.Err())
	}
	if _, err := n1.Acquire(ctx, "bob"); !errors.Is(err, ErrLost) {
		t.Fatalf("acquire while fenced: %v", err)
	}

	// Thaw: the node re-grants, revokes its old lease (so the stale owner
	// key disappears) and can own profiles again.
	resume()
	if err := testenv.WaitFor(10*time.Second, func() error {
		if !n1.Alive() || n1.LeaseID() == oldLease {
			return errors.New("not re-granted")
		}
		if node, _, err := n1.Owner(ctx, "alice"); err != nil || node != "" {
			return errors.New("stale owner key still there")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	g2, err := n1.Acquire(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if g2.Token <= g.Token {
		t.Fatalf("token %d after recovery not above %d", g2.Token, g.Token)
	}
}

// TestEtcdKillRestartRecovers kills etcd: the node self-fences, then
// recovers on its own when etcd comes back on the same data dir.
func TestEtcdKillRestartRecovers(t *testing.T) {
	o := ownAlice(t, nil)
	e, ctx, f, cfg, n1, g := o.e, o.ctx, o.f, o.cfg, o.n1, o.g
	killed := time.Now()
	e.Kill()
	assertClosed(t, g.Done(), cfg.TTL+2*time.Second, "grant after etcd death")
	t.Logf("etcd killed → self-fenced after %s", time.Since(killed).Round(time.Millisecond))
	e.Restart(t)
	e.WaitHealthy(t)
	restarted := time.Now()
	var g2 *Grant
	if err := testenv.WaitFor(15*time.Second, func() error {
		var err error
		g2, err = n1.Acquire(ctx, "alice")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("etcd restarted → profile re-acquired after %s", time.Since(restarted).Round(time.Millisecond))
	if g2.Token <= g.Token || f.get("alice") != g2.Token {
		t.Fatalf("token %d (previous %d), fence %d", g2.Token, g.Token, f.get("alice"))
	}
	assertOpen(t, n1.Done(), "Done after recovery")
}

// TestEtcdShortOutageNoLoss: an etcd restart shorter than TTL − margin
// costs nothing: the keep-alive resumes and grants stay open.
func TestEtcdShortOutageNoLoss(t *testing.T) {
	o := ownAlice(t, func(c *EtcdConfig) { c.TTL, c.SafetyMargin = 6*time.Second, time.Second })
	e, n1, g := o.e, o.n1, o.g
	lease := n1.LeaseID()
	e.Restart(t)
	e.WaitHealthy(t)
	// Wait for a renewal after the restart.
	before := n1.lastRenewSent.Load()
	if err := testenv.WaitFor(5*time.Second, func() error {
		if n1.lastRenewSent.Load() == before {
			return errors.New("no renewal yet")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	assertOpen(t, g.Done(), "grant across a short etcd restart")
	if n1.LeaseID() != lease {
		t.Fatal("lease changed across a short outage")
	}
}

func TestEtcdCloseRevokesLease(t *testing.T) {
	e := testenv.StartEtcd(t)
	ctx := ctxT(t)
	n1 := newManager(t, e.Endpoints(), fastConfig("n1", newMemFencer()))
	n2 := newManager(t, e.Endpoints(), fastConfig("n2", newMemFencer()))
	g, err := n1.Acquire(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if err := n1.Close(); err != nil {
		t.Fatal(err)
	}
	assertClosed(t, g.Done(), time.Second, "grant after Close")
	if node, _, _ := n2.Owner(ctx, "alice"); node != "" {
		t.Fatalf("owner key survives Close: %s", node)
	}
	if _, err := n1.Acquire(ctx, "alice"); !errors.Is(err, ErrClosed) {
		t.Fatalf("acquire after close: %v", err)
	}
	if _, err := NewEtcd(ctx, n2.cli, EtcdConfig{Node: "x", Fencer: newMemFencer(), TTL: time.Second}); err == nil {
		t.Fatal("TTL below 2s accepted")
	}
}

// TestEtcdRestartedNodeRevokesItsPreviousLease: a node restarted under the
// same name frees the profiles its previous run still held at once.
func TestEtcdRestartedNodeRevokesItsPreviousLease(t *testing.T) {
	e := testenv.StartEtcd(t)
	ctx := ctxT(t)
	f := newMemFencer()
	old := newManager(t, e.Endpoints(), fastConfig("n1", f))
	g, err := old.Acquire(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	// The previous run dies (kill -9): its keep-alive and watch stop without
	// revoking anything. Left running, it would re-grant and revoke the new
	// run's lease in turn — two live managers under one name, which a real
	// restart never has.
	old.cancel()
	old.wg.Wait()
	again := newManager(t, e.Endpoints(), fastConfig("n1", f))
	if node, _, _ := again.Owner(ctx, "alice"); node != "" {
		t.Fatalf("previous run's owner key survived the restart: %s", node)
	}
	g2, err := again.Acquire(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if g2.Token <= g.Token {
		t.Fatalf("token %d <= %d", g2.Token, g.Token)
	}
}

// TestEtcdReleaseDuringOutageIsRetried: a hand-off whose delete cannot
// reach etcd ends the grant at once and deletes the owner key once etcd is
// back (otherwise it would live as long as the node's lease).
func TestEtcdReleaseDuringOutageIsRetried(t *testing.T) {
	o := ownAlice(t, func(c *EtcdConfig) { c.TTL, c.SafetyMargin = 8*time.Second, time.Second })
	o.e.Kill()
	rctx, cancel := context.WithTimeout(o.ctx, 500*time.Millisecond)
	defer cancel()
	if err := o.n1.Release(rctx, o.g); err == nil {
		t.Fatal("release with etcd down reported success")
	}
	assertClosed(t, o.g.Done(), 100*time.Millisecond, "released grant")
	o.e.Restart(t)
	o.e.WaitHealthy(t)
	if err := testenv.WaitFor(5*time.Second, func() error {
		node, _, err := o.n1.Owner(o.ctx, "alice")
		if err != nil || node != "" {
			return fmt.Errorf("owner %q, %v", node, err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	assertOpen(t, o.n1.Done(), "node lease across the outage")
}

// TestEtcdStartDetachedComesAliveWithEtcd: with StartDetached, a node that
// starts while etcd is down gets a manager without a lease, and the lease
// arrives by itself when etcd does. Without it, NewEtcd fails.
func TestEtcdStartDetachedComesAliveWithEtcd(t *testing.T) {
	e := testenv.StartEtcd(t)
	ctx := ctxT(t)
	e.Kill()
	cli := newClient(t, e.Endpoints())
	cfg := fastConfig("n1", newMemFencer())
	short, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	if _, err := NewEtcd(short, cli, cfg); err == nil {
		t.Fatal("NewEtcd with etcd down succeeded without StartDetached")
	}
	cfg.StartDetached = true
	short2, cancel2 := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel2()
	m, err := NewEtcd(short2, cli, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	if m.Alive() || m.LeaseID() != 0 {
		t.Fatal("alive without etcd")
	}
	assertClosed(t, m.Done(), 100*time.Millisecond, "Done of a detached manager")
	if _, err := m.Acquire(ctx, "alice"); !errors.Is(err, ErrLost) {
		t.Fatalf("acquire while detached: %v", err)
	}
	e.Restart(t)
	e.WaitHealthy(t)
	if err := testenv.WaitFor(10*time.Second, func() error {
		if !m.Alive() {
			return errors.New("no lease yet")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	assertOpen(t, m.Done(), "Done once alive")
	g, err := m.Acquire(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	// The owner watch works too: an external delete closes the grant.
	if _, err := cli.Delete(ctx, OwnerKey(testCluster, "alice")); err != nil {
		t.Fatal(err)
	}
	assertClosed(t, g.Done(), 2*time.Second, "grant after its key was deleted")
}

// TestEtcdAdoptsOwnKeyWithoutGrant: an owner key of ours under our current
// lease but without a grant (an Acquire whose answer was lost after it
// committed) is adopted instead of blocking the profile for as long as our
// lease lives; the fence is raised to its token.
func TestEtcdAdoptsOwnKeyWithoutGrant(t *testing.T) {
	e := testenv.StartEtcd(t)
	ctx := ctxT(t)
	f := newMemFencer()
	raw := newClient(t, e.Endpoints())
	n1 := newManager(t, e.Endpoints(), fastConfig("n1", f))
	n2 := newManager(t, e.Endpoints(), fastConfig("n2", f))
	put, err := raw.Put(ctx, OwnerKey(testCluster, "alice"), "n1", clientv3.WithLease(clientv3.LeaseID(n1.LeaseID())))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n2.Acquire(ctx, "alice"); !errors.Is(err, ErrHeld) {
		t.Fatalf("another node must still see it held: %v", err)
	}
	g, err := n1.Acquire(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if g.Token != uint64(put.Header.Revision) || f.get("alice") != g.Token {
		t.Fatalf("adopted token %d, key revision %d, fence %d", g.Token, put.Header.Revision, f.get("alice"))
	}
	if err := n1.Release(ctx, g); err != nil {
		t.Fatal(err)
	}
	if node, _, _ := n1.Owner(ctx, "alice"); node != "" {
		t.Fatalf("adopted key not released: %s", node)
	}
	// A key of ours under an older lease is not adopted.
	old, err := raw.Grant(ctx, 30)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Put(ctx, OwnerKey(testCluster, "bob"), "n1", clientv3.WithLease(old.ID)); err != nil {
		t.Fatal(err)
	}
	if _, err := n1.Acquire(ctx, "bob"); !errors.Is(err, ErrHeld) {
		t.Fatalf("key under a foreign lease adopted: %v", err)
	}
}

// TestEtcdNodeRenewing: a node whose keep-alive runs reads as renewing; a
// node key under a lease nobody renews reads as not renewing once a renewal
// is overdue by more than a second; no node key is not renewing.
func TestEtcdNodeRenewing(t *testing.T) {
	e := testenv.StartEtcd(t)
	ctx := ctxT(t)
	f := newMemFencer()
	cfg := fastConfig("n1", f)
	n1 := newManager(t, e.Endpoints(), cfg)
	n2 := newManager(t, e.Endpoints(), fastConfig("n2", f))
	cli := newClient(t, e.Endpoints())

	// A silent "n3": its node key lives under a lease of the same TTL that
	// is never kept alive (a crashed or frozen node).
	ttl := int64(cfg.TTL / time.Second)
	lr, err := cli.Grant(ctx, ttl)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, NodeKey(cfg.Cluster, "n3"), `{"node":"n3"}`, clientv3.WithLease(lr.ID)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Duration(ttl) * time.Second)
	sawStale := false
	for i := 0; i < 200 && time.Now().Before(deadline); i++ {
		ok, err := n2.NodeRenewing(ctx, "n1")
		if err != nil || !ok {
			t.Fatalf("n1 keeps its lease alive but NodeRenewing = %v, %v", ok, err)
		}
		renewing, err := n2.NodeRenewing(ctx, "n3")
		if err != nil {
			t.Fatal(err)
		}
		if !renewing {
			sawStale = true
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !sawStale {
		t.Fatalf("a never-renewed lease still read as renewing until it expired (TTL %ds)", ttl)
	}
	if ok, err := n1.NodeRenewing(ctx, "nobody"); err != nil || ok {
		t.Fatalf("unknown node: %v, %v", ok, err)
	}
}
