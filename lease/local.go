package lease

import (
	"context"
	"fmt"
	"sync"
)

// Local is the single-node Manager. Exclusion between processes comes from
// the data directory's flock (taken by the embedded store); exclusion inside
// the process comes from Local itself. Tokens are the profile's current
// storage fence + 1, raised through the Fencer, so they strictly increase
// across restarts without any state of their own.
type Local struct {
	fencer Fencer
	node   string

	mu      sync.Mutex
	grants  map[string]*Grant // nil value: an Acquire is in progress
	closed  bool
	done    chan struct{}
	closing sync.Once
}

var _ Manager = (*Local)(nil)

// NewLocal returns a single-node Manager for node over fencer.
func NewLocal(fencer Fencer, node string) *Local {
	return &Local{fencer: fencer, node: node, grants: make(map[string]*Grant), done: make(chan struct{})}
}

// Acquire implements Manager.
func (l *Local) Acquire(ctx context.Context, profile string) (*Grant, error) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, fmt.Errorf("acquire %s: %w", profile, ErrClosed)
	}
	if g, ok := l.grants[profile]; ok {
		l.mu.Unlock()
		held := &HeldError{Profile: profile, Owner: l.node}
		if g != nil {
			held.Token = g.Token
		}
		return nil, fmt.Errorf("acquire %s: %w", profile, held)
	}
	l.grants[profile] = nil // reserve while we talk to storage
	l.mu.Unlock()

	g, err := l.raise(ctx, profile)

	l.mu.Lock()
	defer l.mu.Unlock()
	if err == nil && l.closed {
		err = ErrClosed
	}
	if err != nil {
		delete(l.grants, profile)
		return nil, fmt.Errorf("acquire %s: %w", profile, err)
	}
	l.grants[profile] = g
	return g, nil
}

func (l *Local) raise(ctx context.Context, profile string) (*Grant, error) {
	cur, err := l.fencer.Fence(ctx, profile)
	if err != nil {
		return nil, fmt.Errorf("read fence: %w", err)
	}
	token := cur + 1
	if err := l.fencer.RaiseFence(ctx, profile, token); err != nil {
		return nil, fmt.Errorf("raise fence to %d: %w", token, err)
	}
	return newGrant(profile, token, l.node), nil
}

// Release implements Manager.
func (l *Local) Release(_ context.Context, g *Grant) error {
	l.mu.Lock()
	cur, ok := l.grants[g.Profile]
	if ok && cur == g {
		delete(l.grants, g.Profile)
	}
	l.mu.Unlock()
	g.end(ErrReleased)
	if !ok || cur != g {
		return fmt.Errorf("release %s: %w", g.Profile, ErrNotOwner)
	}
	return nil
}

// Owner implements Manager.
func (l *Local) Owner(_ context.Context, profile string) (string, uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if g := l.grants[profile]; g != nil {
		return l.node, g.Token, nil
	}
	return "", 0, nil
}

// Done implements Manager; it closes only on Close.
func (l *Local) Done() <-chan struct{} { return l.done }

// Close ends every grant and Done.
func (l *Local) Close() error {
	l.closing.Do(func() {
		l.mu.Lock()
		l.closed = true
		grants := l.grants
		l.grants = make(map[string]*Grant)
		l.mu.Unlock()
		for _, g := range grants {
			if g != nil {
				g.end(ErrReleased)
			}
		}
		close(l.done)
	})
	return nil
}
