package lease

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// EtcdConfig configures the etcd Manager. Zero values take the defaults
// documented on each field (see DefaultEtcdConfig).
type EtcdConfig struct {
	// Cluster is the key prefix segment: keys live under /amarula/<Cluster>/.
	// Default "default".
	Cluster string
	// Node is this node's unique name. Required.
	Node string
	// TTL of the node's etcd lease (AMARULA_LEASE_TTL). Default 10s.
	// etcd counts in whole seconds; the TTL is rounded up.
	TTL time.Duration
	// SafetyMargin: the node self-fences when it has not renewed its lease
	// for TTL − SafetyMargin, i.e. SafetyMargin before the server could
	// expire it. It must cover the time sessions need to stop after Done
	// closes. Default TTL/4.
	SafetyMargin time.Duration
	// RenewInterval between successful keep-alives. Default TTL/5. After a
	// failed keep-alive the manager retries every RetryInterval.
	RenewInterval time.Duration
	// RetryInterval between keep-alive attempts after a failure, and the
	// initial back-off for re-granting a lost lease. Default 250ms.
	RetryInterval time.Duration
	// Fencer raises the storage fence on Acquire. Required.
	Fencer Fencer
	// Logger; default discards.
	Logger *slog.Logger
	// Meta is published in the node key (e.g. "api": the node's API URL).
	Meta map[string]string
	// StartDetached: if etcd cannot be reached before NewEtcd's ctx is
	// done, return a manager without a lease anyway (Alive false, Acquire
	// fails with ErrLost, Done closed) that keeps trying in the background
	// and comes alive when etcd answers — a node that starts while etcd is
	// down starts not-ready instead of failing. Default false: NewEtcd
	// fails.
	StartDetached bool
}

// DefaultEtcdConfig returns the defaults for cluster and node.
func DefaultEtcdConfig(cluster, node string) EtcdConfig {
	ttl := 10 * time.Second
	return EtcdConfig{
		Cluster:       cluster,
		Node:          node,
		TTL:           ttl,
		SafetyMargin:  ttl / 4,
		RenewInterval: ttl / 5,
		RetryInterval: 250 * time.Millisecond,
	}
}

func (c *EtcdConfig) setDefaults() {
	if c.Cluster == "" {
		c.Cluster = "default"
	}
	if c.TTL <= 0 {
		c.TTL = 10 * time.Second
	}
	if c.SafetyMargin <= 0 {
		c.SafetyMargin = c.TTL / 4
	}
	if c.RenewInterval <= 0 {
		c.RenewInterval = c.TTL / 5
	}
	if c.RetryInterval <= 0 {
		c.RetryInterval = 250 * time.Millisecond
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

func (c *EtcdConfig) validate() error {
	switch {
	case c.Node == "":
		return errors.New("lease: Node is required")
	case strings.Contains(c.Node, "/") || strings.Contains(c.Cluster, "/"):
		return errors.New("lease: Node and Cluster must not contain '/'")
	case c.Fencer == nil:
		return errors.New("lease: Fencer is required")
	case c.TTL < 2*time.Second:
		return fmt.Errorf("lease: TTL %s below etcd's minimum of 2s", c.TTL)
	case c.SafetyMargin+c.RenewInterval >= c.TTL:
		return fmt.Errorf("lease: SafetyMargin %s + RenewInterval %s must be below TTL %s", c.SafetyMargin, c.RenewInterval, c.TTL)
	}
	return nil
}

// Key layout. Everything of a cluster lives under /amarula/<cluster>/.

// NodeKey is the key a node registers under its lease.
func NodeKey(cluster, node string) string { return "/amarula/" + cluster + "/nodes/" + node }

// NodesPrefix is the prefix of every node key of the cluster.
func NodesPrefix(cluster string) string { return "/amarula/" + cluster + "/nodes/" }

// OwnerKey is the key whose existence means "profile is owned"; its value
// is the owner's node name and its create revision the fencing token.
func OwnerKey(cluster, profile string) string { return OwnersPrefix(cluster) + profile }

// OwnersPrefix is the prefix of every owner key of the cluster.
func OwnersPrefix(cluster string) string { return "/amarula/" + cluster + "/owners/" }

// NodeRecord is the JSON value of a node key.
type NodeRecord struct {
	Node    string            `json:"node"`
	LeaseID int64             `json:"lease_id"`
	Started time.Time         `json:"started"`
	Meta    map[string]string `json:"meta,omitempty"`
}

// incarnation is one etcd lease of this node. A node has a series of them:
// a lost lease is replaced by a freshly granted one.
type incarnation struct {
	id   clientv3.LeaseID
	ttl  time.Duration // as granted by the server
	done chan struct{}
	once sync.Once
	// fenceAt is the self-fencing deadline: TTL − margin after the send
	// time of the last successful renewal. Owned by the keep-alive loop
	// after creation.
	fenceAt time.Time
}

func (i *incarnation) lost() bool {
	select {
	case <-i.done:
		return true
	default:
		return false
	}
}

// Etcd is the cluster Manager: one etcd lease per node, kept alive by a
// goroutine the Manager owns, owner keys attached to it.
//
// Lease loss: when the lease is revoked, found expired, or cannot be renewed
// for TTL − SafetyMargin, Done and every grant close (before the server can
// expire the lease). The keep-alive goroutine then grants a new lease on its
// own, with back-off, re-registers the node key and best-effort revokes the
// old lease (so stale owner keys of a self-fenced lease vanish at once);
// Done then returns the new incarnation's channel. Callers watching Done
// must call it again after it closes. Acquire fails with ErrLost between
// the loss and the re-grant.
type Etcd struct {
	cli    *clientv3.Client
	cfg    EtcdConfig
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	start  time.Time
	// lastRenewSent is the send time (unix ns) of the last successful
	// grant or renewal: the server cannot expire the lease before it + TTL.
	lastRenewSent atomic.Int64

	mu      sync.Mutex
	inc     *incarnation
	grants  map[string]*Grant
	orphans map[string]int64 // owner keys to delete (profile → mod revision)
	closed  bool
	// kick asks the keep-alive loop to renew now: an owner key vanished,
	// which is what a revoked lease looks like from the watch.
	kick chan struct{}
	// changed is poked on every owner key event (see OwnersChanged).
	changed chan struct{}
}

var _ Manager = (*Etcd)(nil)

// NewEtcd grants the node's lease, registers the node key and starts the
// keep-alive and owner-watch goroutines. It fails if etcd cannot be reached
// before ctx is done.
func NewEtcd(ctx context.Context, cli *clientv3.Client, cfg EtcdConfig) (*Etcd, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	m := &Etcd{cli: cli, cfg: cfg, log: cfg.Logger.With("node", cfg.Node), start: time.Now(),
		grants: make(map[string]*Grant), orphans: make(map[string]int64), kick: make(chan struct{}, 1), changed: make(chan struct{}, 1)}
	inc, rev, err := m.begin(ctx)
	if err != nil {
		if !cfg.StartDetached {
			return nil, fmt.Errorf("lease: start node %s: %w", cfg.Node, err)
		}
		m.log.Warn("etcd unreachable at start: running without a lease until it answers", "err", err)
		inc = &incarnation{done: make(chan struct{})}
		inc.once.Do(func() { close(inc.done) })
	} else {
		m.log.Info("lease granted", "lease", int64(inc.id), "ttl", inc.ttl)
	}
	m.inc = inc
	m.ctx, m.cancel = context.WithCancel(context.Background())
	m.wg.Add(2)
	go func() { defer m.wg.Done(); m.keepAliveLoop() }()
	go func() { defer m.wg.Done(); m.watchOwners(rev + 1) }()
	return m, nil
}

// begin revokes what a previous run of this node left behind, then grants.
// A previous process with this name (crashed, restarted fast) may still
// hold owner keys under its lease: nobody could take those profiles until
// its TTL ran out. Node names are unique, so it is ours to revoke. The
// same holds for this process's own lost lease when it re-grants.
func (m *Etcd) begin(ctx context.Context) (*incarnation, int64, error) {
	if n, err := m.revokeLeasesOf(ctx, m.cfg.Node, 0); err != nil {
		return nil, 0, fmt.Errorf("revoke previous leases: %w", err)
	} else if n > 0 {
		m.log.Info("revoked a previous lease of this node", "leases", n)
	}
	return m.grant(ctx)
}

// grant creates a lease and registers the node key under it. It returns
// the etcd revision of the registration.
func (m *Etcd) grant(ctx context.Context) (*incarnation, int64, error) {
	secs := int64(math.Ceil(m.cfg.TTL.Seconds()))
	sent := time.Now()
	resp, err := m.cli.Grant(ctx, secs)
	if err != nil {
		return nil, 0, fmt.Errorf("grant lease: %w", err)
	}
	m.lastRenewSent.Store(sent.UnixNano())
	ttl := time.Duration(resp.TTL) * time.Second
	inc := &incarnation{id: resp.ID, ttl: ttl, done: make(chan struct{}), fenceAt: sent.Add(ttl - m.cfg.SafetyMargin)}
	rec, _ := json.Marshal(NodeRecord{Node: m.cfg.Node, LeaseID: int64(resp.ID), Started: m.start, Meta: m.cfg.Meta})
	put, err := m.cli.Put(ctx, NodeKey(m.cfg.Cluster, m.cfg.Node), string(rec), clientv3.WithLease(resp.ID))
	if err != nil {
		rctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, _ = m.cli.Revoke(rctx, resp.ID)
		cancel()
		return nil, 0, fmt.Errorf("register node key: %w", err)
	}
	return inc, put.Header.Revision, nil
}

// LeaseID returns the current etcd lease id (0 after Close).
func (m *Etcd) LeaseID() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.inc == nil {
		return 0
	}
	return int64(m.inc.id)
}

// Alive reports whether the node currently holds a valid lease.
func (m *Etcd) Alive() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return !m.closed && m.inc != nil && !m.inc.lost()
}

// Done implements Manager. It returns the current incarnation's channel;
// after it closes, a later call returns the next incarnation's channel once
// the lease has been re-granted.
func (m *Etcd) Done() <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.inc.done
}

// keepAliveLoop renews the lease, self-fences, and re-grants after loss.
func (m *Etcd) keepAliveLoop() {
	backoff := m.cfg.RetryInterval
	for {
		m.mu.Lock()
		inc := m.inc
		m.mu.Unlock()
		if !inc.lost() {
			m.keepAlive(inc)
		}
		if m.ctx.Err() != nil {
			return
		}
		// Lost: grant a new lease, with capped exponential back-off.
		for {
			gctx, cancel := context.WithTimeout(m.ctx, m.cfg.TTL)
			next, _, err := m.begin(gctx)
			cancel()
			if err == nil {
				m.mu.Lock()
				if m.closed {
					m.mu.Unlock()
					m.revoke(next.id)
					return
				}
				m.inc = next
				m.mu.Unlock()
				m.log.Info("lease re-granted", "lease", int64(next.id), "previous", int64(inc.id))
				backoff = m.cfg.RetryInterval
				break
			}
			m.log.Warn("re-grant lease failed", "err", err, "retry_in", backoff)
			if !sleepCtx(m.ctx, backoff) {
				return
			}
			backoff = min(backoff*2, m.cfg.TTL/2)
		}
	}
}

// keepAlive renews inc until it is lost or the manager stops.
func (m *Etcd) keepAlive(inc *incarnation) {
	wait := m.cfg.RenewInterval
	for {
		untilFence := time.Until(inc.fenceAt)
		if !m.pause(min(wait, max(untilFence, 0))) {
			return
		}
		if !time.Now().Before(inc.fenceAt) {
			m.lose(inc, fmt.Errorf("%w: not renewed for %s (self-fenced %s before expiry)", ErrLost, inc.ttl-m.cfg.SafetyMargin, m.cfg.SafetyMargin))
			return
		}
		cctx, cancel := context.WithDeadline(m.ctx, inc.fenceAt)
		sent := time.Now()
		resp, err := m.cli.KeepAliveOnce(cctx, inc.id)
		cancel()
		switch {
		case err == nil:
			inc.fenceAt = sent.Add(time.Duration(resp.TTL)*time.Second - m.cfg.SafetyMargin)
			m.lastRenewSent.Store(sent.UnixNano())
			wait = m.cfg.RenewInterval
			m.cleanOrphans()
		case errors.Is(err, rpctypes.ErrLeaseNotFound):
			m.lose(inc, fmt.Errorf("%w: lease %x revoked or expired", ErrLost, int64(inc.id)))
			return
		case m.ctx.Err() != nil:
			return
		default:
			m.log.Warn("lease keep-alive failed", "err", err, "self_fence_in", time.Until(inc.fenceAt).Round(time.Millisecond))
			wait = m.cfg.RetryInterval
		}
	}
}

// pause waits d, or less if kicked; it reports false when the manager stops.
func (m *Etcd) pause(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-m.ctx.Done():
		return false
	case <-m.kick:
		return true
	case <-t.C:
		return true
	}
}

// lose ends inc and every grant attached to it.
func (m *Etcd) lose(inc *incarnation, reason error) {
	m.mu.Lock()
	var ended []*Grant
	for p, g := range m.grants {
		if g.leaseID == int64(inc.id) {
			ended = append(ended, g)
			delete(m.grants, p)
		}
	}
	inc.once.Do(func() { close(inc.done) })
	m.mu.Unlock()
	for _, g := range ended {
		g.end(reason)
	}
	m.log.Warn("lease lost: stopping all sessions", "lease", int64(inc.id), "grants", len(ended), "reason", reason)
}

func (m *Etcd) revoke(id clientv3.LeaseID) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := m.cli.Revoke(ctx, id); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		m.log.Warn("revoke old lease", "lease", int64(id), "err", err)
	}
}

// Acquire implements Manager. The owner key is created only if absent
// (create_revision == 0), attached to the node lease; its create revision
// is the token, raised as the storage fence before Acquire returns.
func (m *Etcd) Acquire(ctx context.Context, profile string) (*Grant, error) {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, fmt.Errorf("acquire %s: %w", profile, ErrClosed)
	}
	inc := m.inc
	if inc.lost() {
		m.mu.Unlock()
		return nil, fmt.Errorf("acquire %s: %w", profile, ErrLost)
	}
	if g, ok := m.grants[profile]; ok {
		m.mu.Unlock()
		return nil, fmt.Errorf("acquire %s: %w", profile, &HeldError{Profile: profile, Owner: m.cfg.Node, Token: g.Token})
	}
	m.mu.Unlock()

	key := OwnerKey(m.cfg.Cluster, profile)
	var rev, modRev int64
	for attempt := 0; ; attempt++ {
		resp, err := m.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
			Then(clientv3.OpPut(key, m.cfg.Node, clientv3.WithLease(inc.id))).
			Else(clientv3.OpGet(key)).
			Commit()
		if err != nil {
			return nil, fmt.Errorf("acquire %s: owner txn: %w", profile, err)
		}
		if resp.Succeeded {
			rev, modRev = resp.Header.Revision, resp.Header.Revision
			break
		}
		held := &HeldError{Profile: profile}
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) > 0 {
			held.Owner, held.Token = string(kvs[0].Value), uint64(kvs[0].CreateRevision)
		}
		if len(kvs) == 0 || held.Owner != m.cfg.Node || clientv3.LeaseID(kvs[0].Lease) != inc.id {
			return nil, fmt.Errorf("acquire %s: %w", profile, held)
		}
		// A key of ours, under our current lease, without a grant. Either a
		// Release (or failed Acquire) could not delete it — then its token
		// was used: delete it now and create a fresh one — or an earlier
		// Acquire committed but its answer was lost — then no session ever
		// used the token: adopt the key rather than leave the profile stuck
		// for as long as our lease lives.
		m.mu.Lock()
		orphanRev, orphan := m.orphans[profile]
		m.mu.Unlock()
		if orphan {
			ok, derr := m.deleteIfRev(ctx, profile, orphanRev)
			if derr != nil || !ok || attempt > 0 {
				return nil, fmt.Errorf("acquire %s: own stale owner key not yet deleted: %w", profile, held)
			}
			m.mu.Lock()
			delete(m.orphans, profile)
			m.mu.Unlock()
			continue
		}
		rev, modRev = kvs[0].CreateRevision, kvs[0].ModRevision
		m.log.Info("adopting own owner key without a grant", "profile", profile, "token", rev)
		break
	}
	g := newGrant(profile, uint64(rev), m.cfg.Node)
	g.modRev, g.leaseID = modRev, int64(inc.id)

	m.mu.Lock()
	if _, dup := m.grants[profile]; dup {
		// A concurrent Acquire of ours adopted or won the same key.
		m.mu.Unlock()
		return nil, fmt.Errorf("acquire %s: %w", profile, &HeldError{Profile: profile, Owner: m.cfg.Node, Token: g.Token})
	}
	if m.closed || inc.lost() || m.inc != inc {
		m.mu.Unlock()
		m.deleteOwnerKey(profile, modRev)
		return nil, fmt.Errorf("acquire %s: %w", profile, ErrLost)
	}
	m.grants[profile] = g
	m.mu.Unlock()

	fail := func(err error) (*Grant, error) {
		m.forget(g)
		g.end(err)
		m.deleteOwnerKey(profile, modRev)
		return nil, fmt.Errorf("acquire %s: %w", profile, err)
	}
	if err := m.cfg.Fencer.RaiseFence(ctx, profile, g.Token); err != nil {
		return fail(fmt.Errorf("raise fence to %d: %w", g.Token, err))
	}
	// The grant was registered after the txn: a deletion in between would
	// have been missed by the owner watch. Check the key once more.
	get, err := m.cli.Get(ctx, key)
	if err != nil {
		return fail(fmt.Errorf("verify owner key: %w", err))
	}
	if len(get.Kvs) == 0 || get.Kvs[0].CreateRevision != rev || get.Kvs[0].ModRevision != modRev {
		return fail(fmt.Errorf("%w: owner key changed during acquire", ErrNotOwner))
	}
	if !g.alive() {
		return nil, fmt.Errorf("acquire %s: %w", profile, g.Err())
	}
	return g, nil
}

// forget removes g from the grant table if it is still there.
func (m *Etcd) forget(g *Grant) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if cur, ok := m.grants[g.Profile]; ok && cur == g {
		delete(m.grants, g.Profile)
		return true
	}
	return false
}

// deleteOwnerKey deletes profile's owner key if its mod revision is still
// modRev. If etcd cannot be reached, the key is remembered and deleted by
// the keep-alive loop later (it would otherwise live as long as the lease).
func (m *Etcd) deleteOwnerKey(profile string, modRev int64) error {
	ctx, cancel := context.WithTimeout(m.ctx, m.cfg.TTL/2)
	defer cancel()
	ok, err := m.deleteIfRev(ctx, profile, modRev)
	if err != nil {
		m.mu.Lock()
		m.orphans[profile] = modRev
		m.mu.Unlock()
		return err
	}
	if !ok {
		return ErrNotOwner
	}
	return nil
}

func (m *Etcd) deleteIfRev(ctx context.Context, profile string, modRev int64) (bool, error) {
	key := OwnerKey(m.cfg.Cluster, profile)
	resp, err := m.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", modRev)).
		Then(clientv3.OpDelete(key)).
		Commit()
	if err != nil {
		return false, err
	}
	return resp.Succeeded, nil
}

func (m *Etcd) cleanOrphans() {
	m.mu.Lock()
	if len(m.orphans) == 0 {
		m.mu.Unlock()
		return
	}
	orphans := m.orphans
	m.orphans = make(map[string]int64)
	m.mu.Unlock()
	for p, rev := range orphans {
		ctx, cancel := context.WithTimeout(m.ctx, m.cfg.RenewInterval)
		_, err := m.deleteIfRev(ctx, p, rev)
		cancel()
		if err != nil {
			m.mu.Lock()
			m.orphans[p] = rev
			m.mu.Unlock()
		}
	}
}

// Release implements Manager: the owner key is deleted only if its mod
// revision is still the grant's (a hand-off never deletes a successor's
// key). If etcd is unreachable the deletion is retried in the background.
func (m *Etcd) Release(ctx context.Context, g *Grant) error {
	m.forget(g)
	g.end(ErrReleased)
	ok, err := m.deleteIfRev(ctx, g.Profile, g.modRev)
	if err != nil {
		m.mu.Lock()
		m.orphans[g.Profile] = g.modRev
		m.mu.Unlock()
		return fmt.Errorf("release %s: %w", g.Profile, err)
	}
	if !ok {
		return fmt.Errorf("release %s: %w", g.Profile, ErrNotOwner)
	}
	return nil
}

// Owner implements Manager.
func (m *Etcd) Owner(ctx context.Context, profile string) (string, uint64, error) {
	resp, err := m.cli.Get(ctx, OwnerKey(m.cfg.Cluster, profile))
	if err != nil {
		return "", 0, fmt.Errorf("owner of %s: %w", profile, err)
	}
	if len(resp.Kvs) == 0 {
		return "", 0, nil
	}
	return string(resp.Kvs[0].Value), uint64(resp.Kvs[0].CreateRevision), nil
}

// Owners returns every owned profile and its owner node.
func (m *Etcd) Owners(ctx context.Context) (map[string]string, error) {
	prefix := OwnersPrefix(m.cfg.Cluster)
	resp, err := m.cli.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("list owners: %w", err)
	}
	out := make(map[string]string, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		out[strings.TrimPrefix(string(kv.Key), prefix)] = string(kv.Value)
	}
	return out, nil
}

// Nodes returns the registered nodes (those whose lease is alive).
func (m *Etcd) Nodes(ctx context.Context) ([]NodeRecord, error) {
	resp, err := m.cli.Get(ctx, NodesPrefix(m.cfg.Cluster), clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	out := make([]NodeRecord, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var r NodeRecord
		if json.Unmarshal(kv.Value, &r) == nil {
			out = append(out, r)
		}
	}
	return out, nil
}

// RevokeNode revokes the etcd lease of another node, read from its node key
// (and, should that be gone, from its owner keys), so that its owner keys
// vanish at once instead of after the TTL. The failover leader calls it for
// a member memberlist declared dead. A node that was in fact alive sees its
// keep-alive fail, stops its sessions and re-grants.
func (m *Etcd) RevokeNode(ctx context.Context, node string) error {
	if node == m.cfg.Node {
		return fmt.Errorf("revoke node %s: refusing to revoke self", node)
	}
	n, err := m.revokeLeasesOf(ctx, node, 0)
	if err != nil {
		return fmt.Errorf("revoke node %s: %w", node, err)
	}
	if n > 0 {
		m.log.Info("revoked lease of dead node", "dead", node, "leases", n)
	}
	return nil
}

// revokeLeasesOf revokes every lease (except keep) under which node's node
// key or owner keys live, and returns how many it revoked.
func (m *Etcd) revokeLeasesOf(ctx context.Context, node string, keep clientv3.LeaseID) (int, error) {
	leases := map[clientv3.LeaseID]bool{}
	nk, err := m.cli.Get(ctx, NodeKey(m.cfg.Cluster, node))
	if err != nil {
		return 0, fmt.Errorf("read node key: %w", err)
	}
	for _, kv := range nk.Kvs {
		leases[clientv3.LeaseID(kv.Lease)] = true
	}
	owners, err := m.cli.Get(ctx, OwnersPrefix(m.cfg.Cluster), clientv3.WithPrefix())
	if err != nil {
		return 0, fmt.Errorf("read owner keys: %w", err)
	}
	for _, kv := range owners.Kvs {
		if string(kv.Value) == node {
			leases[clientv3.LeaseID(kv.Lease)] = true
		}
	}
	delete(leases, 0)
	delete(leases, keep)
	n := 0
	for id := range leases {
		if _, err := m.cli.Revoke(ctx, id); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
			return n, fmt.Errorf("lease %x: %w", int64(id), err)
		}
		n++
	}
	return n, nil
}

// watchOwners closes a grant when its owner key is deleted or changes hands
// behind our back. It survives compaction and reconnects by re-checking
// every grant against a fresh read.
func (m *Etcd) watchOwners(rev int64) {
	prefix := OwnersPrefix(m.cfg.Cluster)
	for m.ctx.Err() == nil {
		if rev <= 1 { // not pinned yet (started detached, or resync failed)
			r, err := m.resync()
			if err != nil {
				if !sleepCtx(m.ctx, m.cfg.RetryInterval) {
					return
				}
				continue
			}
			rev = r + 1
		}
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(m.ctx))
		wch := m.cli.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(rev))
		for wr := range wch {
			if wr.Canceled || wr.Err() != nil {
				break // compacted, or lost the leader: resync below
			}
			for _, ev := range wr.Events {
				m.onOwnerEvent(strings.TrimPrefix(string(ev.Kv.Key), prefix), ev)
			}
			if len(wr.Events) > 0 {
				select {
				case m.changed <- struct{}{}:
				default:
				}
			}
			rev = max(rev, wr.Header.Revision+1)
		}
		cancel()
		if m.ctx.Err() != nil {
			return
		}
		if r, err := m.resync(); err == nil {
			rev = r + 1
		} else {
			rev = 0
			if !sleepCtx(m.ctx, m.cfg.RetryInterval) {
				return
			}
		}
	}
}

// OwnersChanged is poked (coalesced, never blocking) whenever any owner key
// of the cluster is created or deleted, so the reconciler can react to a
// hand-off or a revocation at once instead of at its next tick.
func (m *Etcd) OwnersChanged() <-chan struct{} { return m.changed }

func (m *Etcd) onOwnerEvent(profile string, ev *clientv3.Event) {
	m.mu.Lock()
	g, ok := m.grants[profile]
	if !ok || ev.Kv.ModRevision <= g.modRev {
		m.mu.Unlock()
		return
	}
	lost := ev.Type == mvccpb.DELETE || string(ev.Kv.Value) != m.cfg.Node || ev.Kv.CreateRevision != g.modRev
	if lost {
		delete(m.grants, profile)
	}
	m.mu.Unlock()
	if lost {
		g.end(fmt.Errorf("%w: owner key of %s deleted or replaced at revision %d", ErrNotOwner, profile, ev.Kv.ModRevision))
		m.log.Warn("ownership lost: owner key changed", "profile", profile, "revision", ev.Kv.ModRevision)
		select { // was it our whole lease? check now rather than at the next renewal
		case m.kick <- struct{}{}:
		default:
		}
	}
}

// resync checks every grant against the current owner keys after a watch
// interruption and returns the revision it read at.
func (m *Etcd) resync() (int64, error) {
	ctx, cancel := context.WithTimeout(m.ctx, m.cfg.TTL/2)
	defer cancel()
	prefix := OwnersPrefix(m.cfg.Cluster)
	resp, err := m.cli.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return 0, err
	}
	cur := make(map[string]*mvccpb.KeyValue, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		cur[strings.TrimPrefix(string(kv.Key), prefix)] = kv
	}
	m.mu.Lock()
	var ended []*Grant
	for p, g := range m.grants {
		// Grants newer than the read are checked by the next watch.
		if g.modRev > resp.Header.Revision {
			continue
		}
		kv := cur[p]
		if kv == nil || kv.CreateRevision != g.modRev || string(kv.Value) != m.cfg.Node {
			ended = append(ended, g)
			delete(m.grants, p)
		}
	}
	m.mu.Unlock()
	for _, g := range ended {
		g.end(fmt.Errorf("%w: owner key of %s gone after watch resync", ErrNotOwner, g.Profile))
	}
	return resp.Header.Revision, nil
}

// Close stops the keep-alive and the watch, ends every grant and revokes the
// node lease so owner keys vanish at once. Hand profiles off with Release
// first for a graceful stop.
func (m *Etcd) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	m.mu.Unlock()
	m.cancel()
	m.wg.Wait()

	m.mu.Lock()
	inc := m.inc
	grants := m.grants
	m.grants = make(map[string]*Grant)
	inc.once.Do(func() { close(inc.done) })
	m.mu.Unlock()
	for _, g := range grants {
		g.end(ErrReleased)
	}
	if inc.id == 0 {
		return nil // started detached and never got a lease
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := m.cli.Revoke(ctx, inc.id); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return fmt.Errorf("lease: close: revoke lease: %w", err)
	}
	return nil
}

// sleepCtx waits d or until ctx is done; it reports whether d elapsed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// NodeRenewing reports whether node is still renewing its etcd lease: the
// remaining TTL of the lease under its node key is above what a node that
// renews every TTL/5 (this package's default, and what every node of a
// cluster runs) can show, minus one second of slack for a late renewal.
//
// The failover leader asks it before RevokeNode: memberlist's "dead" only
// says that this node cannot reach the member; a member cut off from its
// peers but not from etcd keeps renewing, and revoking it would let a node
// in a minority partition (whose own view of who is alive is unreliable)
// take profiles away from a healthy majority. A crashed or frozen member
// stops renewing, and is revocable about TTL/5 + 1 s after its last renewal.
// A node with no node key (or an expired lease) is not renewing.
func (m *Etcd) NodeRenewing(ctx context.Context, node string) (bool, error) {
	nk, err := m.cli.Get(ctx, NodeKey(m.cfg.Cluster, node))
	if err != nil {
		return false, fmt.Errorf("read node key of %s: %w", node, err)
	}
	if len(nk.Kvs) == 0 || nk.Kvs[0].Lease == 0 {
		return false, nil
	}
	ttl, err := m.cli.TimeToLive(ctx, clientv3.LeaseID(nk.Kvs[0].Lease))
	if err != nil {
		return false, fmt.Errorf("lease of %s: %w", node, err)
	}
	if ttl.TTL <= 0 || ttl.GrantedTTL <= 0 {
		return false, nil
	}
	// A renewing node shows remaining ≥ granted − granted/5 (rounded up to
	// whole seconds by etcd); a node late by more than a second shows less.
	floor := ttl.GrantedTTL - (ttl.GrantedTTL+4)/5 - 1
	return ttl.TTL >= floor, nil
}
