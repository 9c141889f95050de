// Package lease decides which node owns which profile, and proves it with a
// fencing token.
//
// Owning a profile means holding a Grant. A Grant carries a token that is
// strictly greater than the token of every earlier owner of the same
// profile; before Acquire returns, the token has been raised as the
// profile's fence in storage, so any write of an earlier owner is refused
// (storage.ErrFenced). A Grant's Done channel closes the moment its owner
// can no longer be sure it still owns the profile — lease lost, lease
// revoked, owner key deleted, or the self-fencing deadline passed — and the
// session holding it must stop at once, without reconnecting.
//
// Two implementations: Etcd (cluster mode; one etcd lease per node, owner
// keys attached to it, token = the owner key's create revision) and Local
// (single-node mode; tokens come from the storage fence itself).
//
// This package owns ownership and nothing else: it never starts or stops a
// session, never decides placement, and imports nothing of ours.
package lease

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// Sentinel errors. Check them with errors.Is.
var (
	// ErrHeld is returned by Acquire when another owner holds the profile
	// (or this node already holds it). The error is a *HeldError naming the
	// owner.
	ErrHeld = errors.New("lease: profile owned by another node")
	// ErrLost is returned when the node has no valid lease (lost, revoked,
	// self-fenced, or not yet re-granted), so it may not acquire anything.
	ErrLost = errors.New("lease: node lease lost")
	// ErrNotOwner is returned by Release when the owner key no longer
	// belongs to the grant (deleted or taken over in between).
	ErrNotOwner = errors.New("lease: not the owner")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("lease: manager closed")
)

// HeldError is the error Acquire returns when the profile is owned. It
// matches ErrHeld with errors.Is.
type HeldError struct {
	Profile string
	Owner   string // node name of the current owner
	Token   uint64 // the current owner's token (0 if unknown)
}

func (e *HeldError) Error() string {
	return fmt.Sprintf("lease: profile %s owned by node %s (token %d)", e.Profile, e.Owner, e.Token)
}

// Is makes errors.Is(err, ErrHeld) true.
func (e *HeldError) Is(target error) bool { return target == ErrHeld }

// Fencer raises and reads a profile's storage fence. storage.Store
// satisfies it; it is declared here so that lease imports nothing of ours.
type Fencer interface {
	// RaiseFence sets the profile's fence to token; it fails if the fence
	// is already higher. Raising to the current value is a no-op.
	RaiseFence(ctx context.Context, profile string, token uint64) error
	// Fence returns the profile's current fence (0 if never raised).
	Fence(ctx context.Context, profile string) (uint64, error)
}

// Manager hands out and tracks ownership of profiles for one node.
type Manager interface {
	// Acquire takes ownership of profile. On success the storage fence has
	// already been raised to the grant's token. It fails with a *HeldError
	// (errors.Is ErrHeld) when someone holds the profile, and with ErrLost
	// when the node has no valid lease.
	Acquire(ctx context.Context, profile string) (*Grant, error)
	// Release gives ownership up (hand-off): the owner key is deleted only
	// if it is still the grant's. The grant's Done closes either way. It
	// returns ErrNotOwner if the key was no longer the grant's.
	Release(ctx context.Context, g *Grant) error
	// Owner reports the current owner of profile and its token; node is ""
	// (and err nil) when nobody owns it.
	Owner(ctx context.Context, profile string) (node string, token uint64, err error)
	// Done is closed when the node's current lease is lost or self-fenced.
	// Every grant of that lease is closed at the same time.
	Done() <-chan struct{}
	// Close releases nothing gracefully: it stops the keep-alive, revokes
	// the node lease where there is one (so owner keys vanish at once),
	// closes every grant and Done.
	Close() error
}

// Grant is the ownership of one profile by one node. Token is the fencing
// token every storage write of the owning session must carry.
type Grant struct {
	Profile string
	Token   uint64
	Node    string

	modRev  int64 // etcd: mod revision of the owner key (hand-off guard)
	leaseID int64 // etcd: the node lease the owner key is attached to

	once sync.Once
	done chan struct{}
	mu   sync.Mutex
	err  error
}

func newGrant(profile string, token uint64, node string) *Grant {
	return &Grant{Profile: profile, Token: token, Node: node, done: make(chan struct{})}
}

// Done is closed when this ownership ends: released, the node lease is lost
// or revoked, the owner key was deleted or taken by someone else, or the
// self-fencing deadline passed. The session must stop when it closes.
func (g *Grant) Done() <-chan struct{} { return g.done }

// Err reports why the grant ended (nil while it is held). It wraps ErrLost,
// ErrNotOwner or ErrReleased.
func (g *Grant) Err() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.err
}

// ErrReleased is the Err of a grant ended by Release or Close.
var ErrReleased = errors.New("lease: released")

// end closes the grant with a reason; only the first reason is kept.
func (g *Grant) end(reason error) bool {
	closed := false
	g.once.Do(func() {
		g.mu.Lock()
		g.err = reason
		g.mu.Unlock()
		close(g.done)
		closed = true
	})
	return closed
}

// alive reports whether the grant has not ended.
func (g *Grant) alive() bool {
	select {
	case <-g.done:
		return false
	default:
		return true
	}
}
