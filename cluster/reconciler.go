package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/amarula/amarula/catalog"
	"github.com/amarula/amarula/lease"
)

// Runner runs profiles' sessions on this node. The registry/session layer
// implements it.
type Runner interface {
	// Start begins the session of g.Profile with g.Token on every storage
	// write. It must return promptly (the session connects in the
	// background), and the session must stop by itself, without
	// reconnecting, as soon as g.Done() closes. ctx is the reconciler's
	// (it ends when Run returns); tie the session to g, not to ctx.
	Start(ctx context.Context, g *lease.Grant) error
	// Stop stops the profile's session and flushes its state; when it
	// returns the session no longer writes. Stopping a profile that is not
	// running is not an error.
	Stop(ctx context.Context, profile string) error
}

// Optional capabilities of the lease manager (lease.Etcd has them all).
type (
	// revoker revokes a dead node's lease.
	revoker interface {
		RevokeNode(ctx context.Context, node string) error
	}
	// renewalChecker tells whether a node still renews its etcd lease:
	// etcd's view of liveness, which outranks this node's gossip view.
	renewalChecker interface {
		NodeRenewing(ctx context.Context, node string) (bool, error)
	}
	// ownerLister lists every owner key (profile → node).
	ownerLister interface {
		Owners(ctx context.Context) (map[string]string, error)
	}
	// ownerNotifier pokes on every owner key change.
	ownerNotifier interface {
		OwnersChanged() <-chan struct{}
	}
	// leaseIdentity exposes the node lease for metadata.
	leaseIdentity interface {
		LeaseID() int64
	}
)

// Owned is a profile this node owns.
type Owned struct {
	Profile string
	Token   uint64
	Since   time.Time
}

type ownedProfile struct {
	grant      *lease.Grant
	since      time.Time
	handingOff bool
}

// Reconciler makes this node own exactly the profiles it ranks first for,
// within rate limits, and hands the others off gracefully. It also revokes
// dead members' leases when it is the failover leader. All of its state
// is owned by the Run goroutine; Drain and the queries talk to it safely.
type Reconciler struct {
	cfg    Config
	log    *slog.Logger
	mt     *Metrics
	ms     *Membership
	leases lease.Manager
	cat    catalog.Catalog
	run    Runner

	connect *rate.Limiter
	moves   *rate.Limiter

	wake     chan struct{}
	drainReq chan drainReq
	started  chan struct{}
	exited   chan struct{}
	once     sync.Once

	mu       sync.Mutex
	owned    map[string]*ownedProfile
	draining bool

	// Loop-only state.
	desired     map[string]catalog.Profile
	desiredAt   time.Time
	misplaced   map[string]time.Time
	unowned     map[string]time.Time
	owners      map[string]string
	ownersAt    time.Time
	ownersDirty bool
	lastOwner   map[string]string
	revoked     map[string]time.Time // dead member → the death (Since) already revoked
	revokeTry   map[string]time.Time
	notRevoking map[string]time.Time // dead-looking members seen renewing (logged once per death)
	quorumSince time.Time            // since when this node has seen a quorum without a break (zero: none now)
	recheckDead bool                 // a dead-looking member still counted as renewing at the last pass
	born        time.Time
	joined      bool
	watchers    sync.WaitGroup
}

type drainReq struct {
	ctx   context.Context
	reply chan error
}

// opTimeout bounds each etcd/storage call of the reconciler.
const opTimeout = 5 * time.Second

// fullResync: the desired set is re-read from the catalog at least this often.
const fullResync = 30 * time.Second

// NewReconciler wires the reconciler. cfg is the same Config the
// Membership was built with.
func NewReconciler(cfg Config, ms *Membership, leases lease.Manager, cat catalog.Catalog, run Runner) *Reconciler {
	cfg = cfg.withDefaults()
	return &Reconciler{
		cfg: cfg, log: cfg.Logger.With("node", cfg.Node), mt: cfg.Metrics,
		ms: ms, leases: leases, cat: cat, run: run,
		connect:   rate.NewLimiter(rate.Limit(cfg.ConnectRate), cfg.ConnectBurst),
		moves:     rate.NewLimiter(rate.Limit(cfg.MoveRate), cfg.MoveBurst),
		wake:      make(chan struct{}, 1),
		drainReq:  make(chan drainReq),
		started:   make(chan struct{}),
		exited:    make(chan struct{}),
		owned:     make(map[string]*ownedProfile),
		desired:   make(map[string]catalog.Profile),
		misplaced: make(map[string]time.Time), unowned: make(map[string]time.Time),
		lastOwner: make(map[string]string), revoked: make(map[string]time.Time),
		revokeTry: make(map[string]time.Time), notRevoking: make(map[string]time.Time), ownersDirty: true, born: time.Now(),
	}
}

func (r *Reconciler) poke() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Owned returns the profiles this node owns, sorted.
func (r *Reconciler) Owned() []Owned {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Owned, 0, len(r.owned))
	for p, o := range r.owned {
		out = append(out, Owned{Profile: p, Token: o.grant.Token, Since: o.since})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Profile < out[j].Profile })
	return out
}

// Draining reports whether Drain has started.
func (r *Reconciler) Draining() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.draining
}

// Run reconciles until ctx is done. It does not stop sessions when it
// returns: hand them off with Drain first, or let lease.Manager.Close end
// their grants. Run may be called once.
func (r *Reconciler) Run(ctx context.Context) error {
	first := false
	r.once.Do(func() { first = true })
	if !first {
		return errors.New("cluster: Reconciler.Run called twice")
	}
	close(r.started)
	defer close(r.exited)
	defer r.watchers.Wait()

	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	changes := r.cat.Watch(wctx)
	var ownersChanged <-chan struct{}
	if n, ok := r.leases.(ownerNotifier); ok {
		ownersChanged = n.OwnersChanged()
	}
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		leaseDone := r.leases.Done()
		if closed(leaseDone) {
			leaseDone = nil // lost; the next incarnation is picked up on a pass
		}
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		case <-r.wake:
		case <-r.ms.Changes():
		case <-leaseDone:
			r.log.Warn("cluster: node lease lost; sessions stop, lease re-granted in the background")
		case <-ownersChanged:
			r.ownersDirty = true
		case c, ok := <-changes:
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				changes = r.cat.Watch(wctx)
				continue
			}
			r.applyChange(c)
			r.applyPending(changes)
		case req := <-r.drainReq:
			req.reply <- r.drain(req.ctx)
		}
		next := r.pass(ctx)
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(next)
	}
}

// applyPending applies the changes already queued (bounded), so a burst of
// catalog writes costs one pass, not one pass each.
func (r *Reconciler) applyPending(changes <-chan catalog.Change) {
	for i := 0; i < 4096; i++ {
		select {
		case c, ok := <-changes:
			if !ok {
				return
			}
			r.applyChange(c)
		default:
			return
		}
	}
}

func (r *Reconciler) applyChange(c catalog.Change) {
	switch c.Type {
	case catalog.Put:
		r.desired[c.ID] = *c.Profile
	case catalog.Delete:
		delete(r.desired, c.ID)
	case catalog.Reset:
		r.desiredAt = time.Time{} // re-list on this pass
	}
}

// pass is one reconciliation. It returns when the next one is due.
func (r *Reconciler) pass(ctx context.Context) time.Duration {
	now := time.Now()
	if now.Sub(r.desiredAt) > fullResync {
		lctx, cancel := context.WithTimeout(ctx, opTimeout)
		list, err := r.cat.List(lctx)
		cancel()
		if err != nil {
			r.log.Warn("cluster: read catalog", "err", err)
		} else {
			r.desired = make(map[string]catalog.Profile, len(list))
			for _, p := range list {
				r.desired[p.ID] = p
			}
			r.desiredAt = now
		}
	}
	r.reapLost(ctx)
	members := r.ms.Members()
	r.updateMetrics(members)
	if hasQuorum(members) {
		if r.quorumSince.IsZero() {
			r.quorumSince = now
		}
	} else {
		r.quorumSince = time.Time{}
	}
	r.revokeDead(ctx, members)

	r.mu.Lock()
	draining := r.draining
	r.mu.Unlock()
	leaseOK := !closed(r.leases.Done())
	r.ms.SetMeta(func(m *Meta) {
		m.LeaseOK = leaseOK
		if li, ok := r.leases.(leaseIdentity); ok {
			m.LeaseID = li.LeaseID()
		}
		m.Load = r.ownedCount()
	})
	if draining {
		return r.cfg.ReconcileInterval
	}

	// Our own eligibility comes from local truth, not from gossip about us.
	eligible := make([]string, 0, len(members))
	for _, m := range members {
		if m.Name == r.cfg.Node {
			if leaseOK {
				eligible = append(eligible, m.Name)
			}
		} else if m.Eligible() {
			eligible = append(eligible, m.Name)
		}
	}
	quorum := hasQuorum(members)
	if !r.joined {
		// Seeds configured: wait to see a peer (or JoinGrace) before acquiring.
		r.joined = len(r.cfg.Join) == 0 || len(members) > 1 || now.Sub(r.born) >= r.cfg.JoinGrace
	}
	r.refreshOwners(ctx, now)

	pending, acquiring := false, true
	for id, p := range r.desired {
		o := r.ownedEntry(id)
		if p.Stopped {
			if o != nil {
				r.handoff(ctx, id, o, "stopped")
			}
			continue
		}
		rank := PlaceProfile(p, eligible)
		if o != nil {
			if len(rank) == 0 || rank[0] == r.cfg.Node {
				delete(r.misplaced, id)
				continue
			}
			if p.Pin != "" && rank[0] == p.Pin {
				// An operator's move: no settle period, only the move rate.
				if r.moves.Allow() {
					r.log.Info("cluster: moving profile as pinned", "profile", id, "to", p.Pin)
					r.handoff(ctx, id, o, "move")
				}
				continue
			}
			since, ok := r.misplaced[id]
			if !ok {
				r.misplaced[id] = now
				continue
			}
			if now.Sub(since) >= r.cfg.SettlePeriod && r.moves.Allow() {
				r.log.Info("cluster: rebalancing profile", "profile", id, "to", rank[0], "misplaced_for", now.Sub(since).Round(time.Millisecond))
				r.handoff(ctx, id, o, "rebalance")
			}
			continue
		}
		if !acquiring || !leaseOK || !r.joined || !r.shouldTry(id, rank, now) {
			continue
		}
		if !quorum && !r.unownedFor(id, now, r.cfg.MinorityGrace) {
			continue
		}
		if r.connect.Tokens() < 1 {
			pending = true
			continue
		}
		acquiring = r.acquire(ctx, id, members)
	}
	// Owned profiles that left the catalog.
	for _, id := range r.ownedIDs() {
		if _, ok := r.desired[id]; !ok {
			if o := r.ownedEntry(id); o != nil {
				r.handoff(ctx, id, o, "deleted")
			}
		}
	}
	for id := range r.misplaced {
		if r.ownedEntry(id) == nil {
			delete(r.misplaced, id)
		}
	}
	if !r.joined {
		return min(r.cfg.ReconcileInterval, 100*time.Millisecond)
	}
	if r.recheckDead {
		// A member looks dead but its lease still counted as renewed: look
		// again soon, so a crash is revoked as soon as etcd shows the missed
		// renewal instead of a whole ReconcileInterval later.
		return min(r.cfg.ReconcileInterval, 200*time.Millisecond)
	}
	if pending {
		// Come back when the bucket has a token again, with jitter so that
		// nodes recovering together do not connect in lock-step.
		step := time.Duration(float64(time.Second) / r.cfg.ConnectRate)
		return step + rand.N(step+1)
	}
	return r.cfg.ReconcileInterval
}

// shouldTry: the top-ranked node tries; the k-th ranked tries once the
// profile has been unowned for k × UnownedGrace (the top one may be unable
// to). Without an owner listing only the top-ranked tries.
func (r *Reconciler) shouldTry(id string, rank []string, now time.Time) bool {
	pos := -1
	for i, n := range rank {
		if n == r.cfg.Node {
			pos = i
			break
		}
	}
	if pos < 0 {
		return false
	}
	if r.owners == nil {
		return pos == 0
	}
	if owner := r.owners[id]; owner == r.cfg.Node {
		// Our key without a grant (Acquire adopts or renews it) — or a
		// stale listing right after our own hand-off: only the top-ranked
		// node retries, and after a hand-off we are not it.
		return pos == 0
	} else if owner != "" {
		return false // held by someone else
	}
	if pos == 0 {
		return true
	}
	return r.unownedFor(id, now, time.Duration(pos)*r.cfg.UnownedGrace)
}

// unownedFor reports whether the owner listing has shown id unowned for
// at least d (false without a listing).
func (r *Reconciler) unownedFor(id string, now time.Time, d time.Duration) bool {
	since, ok := r.unowned[id]
	return r.owners != nil && ok && now.Sub(since) >= d
}

// refreshOwners re-reads the owner keys when they changed or got stale.
func (r *Reconciler) refreshOwners(ctx context.Context, now time.Time) {
	ol, ok := r.leases.(ownerLister)
	if !ok || (!r.ownersDirty && now.Sub(r.ownersAt) < 2*time.Second) {
		return
	}
	octx, cancel := context.WithTimeout(ctx, opTimeout)
	owners, err := ol.Owners(octx)
	cancel()
	if err != nil {
		r.log.Warn("cluster: list owners", "err", err)
		r.owners = nil
		return
	}
	r.owners, r.ownersAt, r.ownersDirty = owners, now, false
	for id := range r.desired {
		if o := owners[id]; o != "" {
			r.lastOwner[id] = o
			delete(r.unowned, id)
		} else if _, ok := r.unowned[id]; !ok {
			r.unowned[id] = now
		}
	}
	for id := range r.unowned {
		if _, ok := r.desired[id]; !ok {
			delete(r.unowned, id)
		}
	}
}

// acquire takes a profile and starts its session. It reports false when
// acquiring should pause for this pass (etcd or storage in trouble).
func (r *Reconciler) acquire(ctx context.Context, id string, members []Member) bool {
	actx, cancel := context.WithTimeout(ctx, opTimeout)
	g, err := r.leases.Acquire(actx, id)
	cancel()
	switch {
	case errors.Is(err, lease.ErrHeld):
		r.ownersDirty = true
		return true
	case err != nil:
		r.mt.AcquireFailures.Inc()
		r.log.Warn("cluster: acquire", "profile", id, "err", err)
		return false
	}
	r.connect.Allow() // spend the token checked before acquiring
	r.mt.Acquisitions.Inc()
	if prev := r.lastOwner[id]; prev != "" && prev != r.cfg.Node {
		for _, m := range members {
			if m.Name == prev && m.State == StateDead {
				r.mt.Failover.Observe(time.Since(m.Since).Seconds())
				r.log.Info("cluster: took over profile of dead node", "profile", id, "dead", prev,
					"since_dead", time.Since(m.Since).Round(time.Millisecond))
			}
		}
	}
	if err := r.run.Start(ctx, g); err != nil {
		r.log.Warn("cluster: start session", "profile", id, "err", err)
		rctx, cancel := context.WithTimeout(ctx, opTimeout)
		if rerr := r.leases.Release(rctx, g); rerr != nil {
			r.log.Warn("cluster: release after failed start", "profile", id, "err", rerr)
		}
		cancel()
		return true
	}
	r.mu.Lock()
	r.owned[id] = &ownedProfile{grant: g, since: time.Now()}
	r.mu.Unlock()
	if r.owners != nil {
		r.owners[id] = r.cfg.Node
	}
	r.watchers.Add(1)
	go func() {
		defer r.watchers.Done()
		select {
		case <-g.Done():
			r.poke()
		case <-ctx.Done():
		}
	}()
	r.log.Debug("cluster: acquired", "profile", id, "token", g.Token)
	return true
}

// handoff stops the session, then deletes the owner key (guarded by its
// revision) so the next owner can acquire. Safe to call from several
// goroutines for different profiles.
func (r *Reconciler) handoff(ctx context.Context, id string, o *ownedProfile, reason string) error {
	r.mu.Lock()
	if r.owned[id] != o || o.handingOff {
		r.mu.Unlock()
		return nil
	}
	o.handingOff = true
	r.mu.Unlock()

	sctx, cancel := context.WithTimeout(ctx, r.cfg.StopTimeout)
	serr := r.run.Stop(sctx, id)
	cancel()
	if serr != nil {
		// Releasing anyway is safe: the next owner's token fences us.
		r.log.Warn("cluster: stop session for hand-off", "profile", id, "err", serr)
	}
	rctx, cancel := context.WithTimeout(ctx, opTimeout)
	rerr := r.leases.Release(rctx, o.grant)
	cancel()
	if errors.Is(rerr, lease.ErrNotOwner) {
		rerr = nil // lost it meanwhile: nothing to hand off
	}
	r.mu.Lock()
	if r.owned[id] == o {
		delete(r.owned, id)
	}
	r.mu.Unlock()
	r.mt.Handoffs.WithLabelValues(reason).Inc()
	r.log.Info("cluster: handed off", "profile", id, "reason", reason)
	if rerr != nil {
		return fmt.Errorf("hand off %s: %w", id, rerr)
	}
	return nil
}

// reapLost forgets grants that ended without a hand-off and makes sure
// their sessions are stopped.
func (r *Reconciler) reapLost(ctx context.Context) {
	r.mu.Lock()
	var lost []string
	for id, o := range r.owned {
		if !o.handingOff && closed(o.grant.Done()) {
			lost = append(lost, id)
			delete(r.owned, id)
		}
	}
	r.mu.Unlock()
	if len(lost) == 0 {
		return
	}
	r.mt.Losses.Add(float64(len(lost)))
	r.log.Warn("cluster: lost profiles", "count", len(lost))
	r.parallel(lost, func(id string) {
		sctx, cancel := context.WithTimeout(ctx, r.cfg.StopTimeout)
		defer cancel()
		if err := r.run.Stop(sctx, id); err != nil {
			r.log.Warn("cluster: stop lost session", "profile", id, "err", err)
		}
	})
}

// revokeDead: the lowest-named alive member revokes the leases of members
// memberlist declared dead, so their profiles free up at once. If it has
// not happened after RevokeFallback, every member tries. Only a side that
// sees a quorum does it (a node cut off from its peers must not revoke the
// majority). A dead member seen owning profiles again is revoked again.
func (r *Reconciler) revokeDead(ctx context.Context, members []Member) {
	rv, ok := r.leases.(revoker)
	if !ok {
		return
	}
	lowest := ""
	dead := map[string]Member{}
	for _, m := range members {
		switch m.State {
		case StateAlive, StateDraining:
			if lowest == "" || m.Name < lowest {
				lowest = m.Name
			}
		case StateDead:
			dead[m.Name] = m
		}
	}
	for name := range r.revoked {
		if _, ok := dead[name]; !ok {
			delete(r.revoked, name)
			delete(r.revokeTry, name)
		}
	}
	for name := range r.notRevoking {
		if _, ok := dead[name]; !ok {
			delete(r.notRevoking, name)
		}
	}
	r.recheckDead = false
	if len(dead) == 0 || !hasQuorum(members) {
		return
	}
	holding := map[string]bool{}
	for _, owner := range r.owners {
		holding[owner] = true
	}
	now := time.Now()
	for name, m := range dead {
		done := r.revoked[name].Equal(m.Since)
		if done && !holding[name] {
			continue
		}
		if lowest != r.cfg.Node && now.Sub(m.Since) < r.cfg.RevokeFallback {
			continue
		}
		if now.Sub(r.revokeTry[name]) < r.cfg.RevokeFallback && (done || r.revokeTry[name].After(m.Since)) {
			continue // tried recently
		}
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		if rc, ok := r.leases.(renewalChecker); ok {
			renewing, err := rc.NodeRenewing(rctx, name)
			if err != nil {
				cancel()
				r.recheckDead = true
				continue
			}
			// A member that still renews its etcd lease is alive and only cut
			// off from (some of) us. Gossip views of a partition are
			// asymmetric for a moment: a node on the minority side may still
			// count one peer alive when another looks dead. So such a member
			// is revoked only by a node that has seen a quorum without a
			// break since before the death, for RevokeFallback: the minority
			// side loses its quorum within that time and never revokes.
			stable := !r.quorumSince.IsZero() && !r.quorumSince.After(m.Since) && now.Sub(m.Since) >= r.cfg.RevokeFallback
			if renewing && !stable {
				cancel()
				r.recheckDead = true
				if r.notRevoking[name] != m.Since {
					r.notRevoking[name] = m.Since
					r.log.Warn("cluster: member looks dead but still renews its etcd lease; revoking only if our quorum holds", "member", name, "wait", r.cfg.RevokeFallback)
				}
				continue // checked again on the next pass
			}
		}
		r.revokeTry[name] = now
		err := rv.RevokeNode(rctx, name)
		cancel()
		if err != nil {
			r.log.Warn("cluster: revoke dead node", "dead", name, "err", err)
			continue
		}
		r.revoked[name] = m.Since
		r.ownersDirty = true
		r.mt.Revocations.Inc()
		r.log.Info("cluster: revoked lease of dead node", "dead", name, "since_dead", now.Sub(m.Since).Round(time.Millisecond))
	}
}

// hasQuorum: this node sees more than half of the members it knows
// (alive, suspect, draining, dead) as not dead. With one or two known
// members any live view counts (a two-node cluster cannot tell a peer's
// death from a partition; run three or more).
func hasQuorum(members []Member) bool {
	live := 0
	for _, m := range members {
		if m.State != StateDead {
			live++
		}
	}
	if len(members) <= 2 {
		return live >= 1
	}
	return 2*live > len(members)
}

// ErrNoTarget is returned by Move when no other eligible node exists.
var ErrNoTarget = errors.New("cluster: no eligible node to move the profile to")

// Move pins profile to node to (or, if to is "", to the best-ranked
// eligible node other than its current owner) in the catalog. Every
// reconciler sees the pin: the owner hands the profile off at once
// (subject to the move rate) and the target acquires it; the pin keeps it
// there while the target is eligible. It returns the target. Any node may
// call it. Clearing the pin (catalog Update with Pin "") returns the
// profile to normal placement, with the usual settle period.
func (r *Reconciler) Move(ctx context.Context, profile, to string) (string, error) {
	members := r.ms.Members()
	eligible := Eligible(members)
	if to == "" {
		owner, _, err := r.leases.Owner(ctx, profile)
		if err != nil {
			return "", fmt.Errorf("move %s: %w", profile, err)
		}
		p, err := r.cat.Get(ctx, profile)
		if err != nil {
			return "", fmt.Errorf("move %s: %w", profile, err)
		}
		p.Pin = ""
		for _, n := range PlaceProfile(p, eligible) {
			if n != owner {
				to = n
				break
			}
		}
		if to == "" {
			return "", fmt.Errorf("move %s: %w", profile, ErrNoTarget)
		}
	} else if !slices.Contains(eligible, to) {
		return "", fmt.Errorf("move %s to %s: %w", profile, to, ErrNoTarget)
	}
	if err := r.cat.Update(ctx, profile, func(p *catalog.Profile) error { p.Pin = to; return nil }); err != nil {
		return "", fmt.Errorf("move %s: %w", profile, err)
	}
	return to, nil
}

// Drain hands every owned profile off (in parallel, bounded by
// DrainParallelism), after telling the cluster this node is draining so
// nobody places profiles here, then leaves memberlist. The reconciler
// acquires nothing afterwards. Call lease.Manager.Close and
// Membership.Shutdown after it.
func (r *Reconciler) Drain(ctx context.Context) error {
	var err error
	select {
	case <-r.started:
		req := drainReq{ctx: ctx, reply: make(chan error, 1)}
		select {
		case r.drainReq <- req:
			select {
			case err = <-req.reply:
			case <-ctx.Done():
				return fmt.Errorf("cluster: drain: %w", ctx.Err())
			}
		case <-r.exited:
			err = r.drain(ctx)
		case <-ctx.Done():
			return fmt.Errorf("cluster: drain: %w", ctx.Err())
		}
	default:
		err = r.drain(ctx) // Run never started: nobody else touches the state
	}
	if lerr := r.ms.Leave(2 * time.Second); lerr != nil {
		err = errors.Join(err, lerr)
	}
	return err
}

func (r *Reconciler) drain(ctx context.Context) error {
	start := time.Now()
	r.mu.Lock()
	r.draining = true
	r.mu.Unlock()
	r.ms.SetMeta(func(m *Meta) { m.Draining = true })
	if err := r.ms.PublishMeta(2 * time.Second); err != nil {
		r.log.Warn("cluster: announce draining", "err", err)
	}
	ids := r.ownedIDs()
	var mu sync.Mutex
	var errs []error
	r.parallel(ids, func(id string) {
		if o := r.ownedEntry(id); o != nil {
			if err := r.handoff(ctx, id, o, "drain"); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}
	})
	r.ms.SetMeta(func(m *Meta) { m.Load = r.ownedCount() })
	r.log.Info("cluster: drained", "profiles", len(ids), "took", time.Since(start).Round(time.Millisecond), "errors", len(errs))
	return errors.Join(errs...)
}

// parallel runs fn for every id with at most DrainParallelism at once.
func (r *Reconciler) parallel(ids []string, fn func(id string)) {
	sem := make(chan struct{}, r.cfg.DrainParallelism)
	var wg sync.WaitGroup
	for _, id := range ids {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			fn(id)
		}()
	}
	wg.Wait()
}

func (r *Reconciler) ownedEntry(id string) *ownedProfile {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.owned[id]
}

func (r *Reconciler) ownedIDs() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	ids := make([]string, 0, len(r.owned))
	for id := range r.owned {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

func (r *Reconciler) ownedCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.owned)
}

func (r *Reconciler) updateMetrics(members []Member) {
	counts := map[State]int{StateAlive: 0, StateSuspect: 0, StateDead: 0, StateDraining: 0}
	for _, m := range members {
		counts[m.State]++
	}
	for s, n := range counts {
		r.mt.Members.WithLabelValues(string(s)).Set(float64(n))
	}
	r.mt.ProfilesOwned.Set(float64(r.ownedCount()))
}

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
