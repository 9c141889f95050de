package node

import (
	"context"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/amarula/amarula/lease"
	"github.com/amarula/amarula/media"
	"github.com/amarula/amarula/registry"
	"github.com/amarula/amarula/session"
	"github.com/amarula/amarula/webhook"
)

// runner is what the reconciler starts and stops per owned profile: the
// WhatsApp session (registry) plus the profile's webhook deliverer, both
// bound to the grant's fencing token. It implements cluster.Runner.
type runner struct {
	registry *registry.Registry
	webhooks *webhook.Manager
	media    *media.Worker // downloads of the profiles owned here

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
	if r.media != nil {
		_ = r.media.Attach(g.Profile, g.Token) // the profile id was validated by Start
	}
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
			if r.media != nil {
				r.media.Detach(g.Profile)
			}
		}
	}()
	return nil
}

// Stop stops the profile's deliverer and session; when it returns neither
// writes any more.
func (r *runner) Stop(ctx context.Context, profile string) error {
	r.webhooks.Stop(profile)
	if r.media != nil {
		r.media.Detach(profile)
	}
	return r.registry.Stop(ctx, profile)
}

// wait waits for the grant watchers; every grant is closed by then (the
// lease manager closes all grants on Close).
func (r *runner) wait() { r.wg.Wait() }

func zapDiscard() *zap.Logger { return zap.NewNop() }

// sessionStates is the amarula_sessions{state} gauge: the sessions of this
// node by state, read from the registry at scrape time.
func sessionStates(reg *registry.Registry) prometheus.Collector {
	return &stateCollector{reg: reg, desc: prometheus.NewDesc("amarula_sessions",
		"Sessions running on this node by state.", []string{"state"}, nil)}
}

type stateCollector struct {
	reg  *registry.Registry
	desc *prometheus.Desc
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	counts := map[session.State]int{}
	for _, s := range []session.State{session.StateUnpaired, session.StatePairing, session.StateConnecting, session.StateConnected,
		session.StateDisconnected, session.StateConflict, session.StateLoggedOut, session.StateStopped} {
		counts[s] = 0
	}
	for _, in := range c.reg.List() {
		counts[in.State]++
	}
	for s, n := range counts {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), string(s))
	}
}
