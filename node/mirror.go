package node

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/amarula/amarula/catalog"
	"github.com/amarula/amarula/registry"
	"github.com/amarula/amarula/session"
	"github.com/amarula/amarula/storage"
)

// Namespace and key of the session-state snapshot the owner keeps in
// shared storage, so that any node can list every profile's state.
const (
	nsSessionInfo  = "session_info"
	keySessionInfo = "current"
)

// stateMirror copies the state of local sessions into shared storage
// (fenced with the session's token) whenever it changes. Session callbacks
// only mark a profile dirty; one goroutine, owned by run, does the writes.
type stateMirror struct {
	reg   *registry.Registry
	store storage.KV
	log   *slog.Logger

	mu    sync.Mutex
	dirty map[string]struct{}
	wake  chan struct{}
}

func newStateMirror(store storage.KV, log *slog.Logger) *stateMirror {
	return &stateMirror{store: store, log: log, dirty: map[string]struct{}{}, wake: make(chan struct{}, 1)}
}

// changed is session.Config.OnStateChange: it must not block.
func (sm *stateMirror) changed(profile string, _ session.State) {
	sm.mu.Lock()
	sm.dirty[profile] = struct{}{}
	sm.mu.Unlock()
	select {
	case sm.wake <- struct{}{}:
	default:
	}
}

// run writes snapshots until ctx is done.
func (sm *stateMirror) run(ctx context.Context) {
	tick := time.NewTicker(30 * time.Second) // refresh: connected_since etc.
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-sm.wake:
		case <-tick.C:
			for _, in := range sm.reg.List() {
				sm.changed(in.Profile, in.State)
			}
		}
		sm.mu.Lock()
		batch := sm.dirty
		sm.dirty = map[string]struct{}{}
		sm.mu.Unlock()
		for p := range batch {
			sm.write(ctx, p)
		}
	}
}

func (sm *stateMirror) write(ctx context.Context, profile string) {
	s, ok := sm.reg.Lookup(profile)
	if !ok {
		return
	}
	b, err := json.Marshal(s.Info())
	if err != nil {
		return
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	err = sm.store.Put(wctx, profile, s.Token(), nsSessionInfo, keySessionInfo, b)
	if err != nil && !errors.Is(err, storage.ErrFenced) && ctx.Err() == nil {
		sm.log.Warn("session state snapshot not stored", "profile", profile, "err", err)
	}
}

// clusterSessions is the API's Sessions: local sessions answer from the
// registry; a profile running on another node answers from the snapshot
// its owner keeps in shared storage (commands are forwarded to the owner
// by the router before they get here).
type clusterSessions struct {
	*registry.Registry
	store   storage.KV
	owners  ownerLookup
	self    string // this node's name
	catalog catalog.Catalog
}

// Stop is the operator's stop: it is recorded in the catalogue (so it
// survives restarts and the reconciler releases the ownership instead of
// starting the profile again) and the local session, if any, stops now.
func (cs *clusterSessions) Stop(ctx context.Context, profile string) error {
	if err := cs.catalog.Update(ctx, profile, func(p *catalog.Profile) error { p.Stopped = true; return nil }); err != nil {
		return err
	}
	err := cs.Registry.Stop(ctx, profile)
	if errors.Is(err, registry.ErrNotFound) {
		return nil
	}
	return err
}

// Connect resumes a profile: a session resting here (conflict, logged out)
// connects again at once; a stopped profile is cleared in the catalogue and
// the reconciler of its placed node acquires and starts it.
func (cs *clusterSessions) Connect(ctx context.Context, profile string) error {
	stopped := false
	if err := cs.catalog.Update(ctx, profile, func(p *catalog.Profile) error {
		stopped = p.Stopped
		p.Stopped = false
		return nil
	}); err != nil {
		return err
	}
	if _, ok := cs.Registry.Lookup(profile); ok && !stopped {
		return cs.Registry.Connect(ctx, profile)
	}
	return nil
}

// Info returns the live state of a local session, else the owner's
// snapshot, else the registry's answer ("no session here", or "stopped
// here"). The registry keeps reporting "stopped" for a profile it stopped
// — also after a hand-off (rebalance, move, drain of a peer's profile) —
// so a local "stopped" without a running session yields to the snapshot
// of the node that owns the profile now.
func (cs *clusterSessions) Info(ctx context.Context, profile string) (session.Info, error) {
	in, err := cs.Registry.Info(ctx, profile)
	if cs.owners == nil {
		return in, err
	}
	if err == nil {
		if _, running := cs.Registry.Lookup(profile); running {
			return in, nil
		}
	} else if !errors.Is(err, registry.ErrNotFound) {
		return in, err
	}
	owner, _, oerr := cs.owners.Owner(ctx, profile)
	if oerr != nil || owner == "" || owner == cs.self {
		return in, err
	}
	b, gerr := cs.store.Get(ctx, profile, nsSessionInfo, keySessionInfo)
	if gerr != nil {
		return in, err
	}
	var snap session.Info
	if json.Unmarshal(b, &snap) != nil || snap.Profile != profile {
		return in, err
	}
	return snap, nil
}
