package node

import (
	"context"
	"sync"

	"go.uber.org/zap"

	"github.com/amarula/amarula/lease"
	"github.com/amarula/amarula/registry"
	"github.com/amarula/amarula/webhook"
)

// runner is what the reconciler starts and stops per owned profile: the
// WhatsApp session (registry) plus the profile's webhook deliverer, both
// bound to the grant's fencing token. It implements cluster.Runner.
type runner struct {
	registry *registry.Registry
	webhooks *webhook.Manager

	mu     sync.Mutex
	grants map[string]*lease.Grant
	wg     sync.WaitGroup
}

// Start runs the profile's session and webhook deliverer for g. Both end
// when g.Done() closes (the session by itself; the deliverer here).
func (r *runner) Start(ctx context.Context, g *lease.Grant) error {
	if err := r.registry.Start(ctx, g); err != nil {
		return err
	}
	r.webhooks.Start(g.Profile, g.Token)
	r.mu.Lock()
	if r.grants == nil {
		r.grants = map[string]*lease.Grant{}
	}
	r.grants[g.Profile] = g
	r.mu.Unlock()
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		<-g.Done()
		r.mu.Lock()
		current := r.grants[g.Profile] == g
		if current {
			delete(r.grants, g.Profile)
		}
		r.mu.Unlock()
		if current {
			r.webhooks.Stop(g.Profile)
		}
	}()
	return nil
}

// Stop stops the profile's deliverer and session; when it returns neither
// writes any more.
func (r *runner) Stop(ctx context.Context, profile string) error {
	r.webhooks.Stop(profile)
	return r.registry.Stop(ctx, profile)
}

// wait waits for the grant watchers; every grant is closed by then (the
// lease manager closes all grants on Close).
func (r *runner) wait() { r.wg.Wait() }

func zapDiscard() *zap.Logger { return zap.NewNop() }
