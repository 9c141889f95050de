// Package cluster runs the node's view of the cluster: memberlist
// membership with node metadata, rendezvous placement of profiles over the
// live members, and the Reconciler that turns "this node ranks first for
// P" into an owned lease and a running session — and back into a graceful
// hand-off when it no longer does.
//
// Safety (one live session per profile) does not come from here: it comes
// from package lease (etcd lease, fencing token, self-fencing). This package
// only decides who should try, and it may be wrong for a while (two nodes
// with different views both try; etcd lets one win). It must never start a
// session without a Grant, and never hand a Grant to two sessions.
//
// Wiring (cluster mode), in order:
//
//	lm, _ := lease.NewEtcd(ctx, etcdClient, lease.EtcdConfig{...})  // grants the node lease
//	ms, _ := cluster.NewMembership(cfg)                             // starts gossip, joins
//	rec := cluster.NewReconciler(cfg, ms, lm, catalog.NewEtcd(etcdClient, cluster), runner)
//	go rec.Run(ctx)
//	// SIGTERM:
//	rec.Drain(ctx)   // hand everything off, leave memberlist
//	cancel(); lm.Close(); ms.Shutdown()
//
// Single-node mode is the same with lease.NewLocal and catalog.NewLocal
// over the embedded store and no Join.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"
)

// Config is every tunable of membership and reconciliation, with defaults
// from DefaultConfig. Env/flags (node package) map onto it.
type Config struct {
	// Node is this node's unique name (memberlist name = lease node name).
	Node string

	// BindAddr/BindPort: where memberlist listens (AMARULA_GOSSIP_BIND).
	// Default 0.0.0.0:7946; port 0 picks a free one (tests).
	BindAddr string
	BindPort int
	// AdvertiseAddr/AdvertisePort: what peers should dial
	// (AMARULA_GOSSIP_ADVERTISE); empty means memberlist's choice.
	AdvertiseAddr string
	AdvertisePort int
	// GossipKey, if set, encrypts and authenticates gossip (AES, 16, 24 or
	// 32 bytes); every member needs the same key. Without it the gossip
	// port must be private. (Safety never rests on gossip: a forged member
	// can disturb placement, not ownership.)
	GossipKey []byte
	// Join lists seed members (AMARULA_JOIN): "host:port", "host" (the
	// gossip port is assumed), or a DNS name resolving to several
	// addresses (a Kubernetes headless service); every address is tried.
	Join []string
	// JoinRetry is the interval between join attempts while no seed could
	// be reached. Default 2s.
	JoinRetry time.Duration
	// Resolver resolves Join host names; default net.DefaultResolver.
	Resolver func(ctx context.Context, host string) ([]string, error)

	// ProbeInterval, ProbeTimeout, SuspicionMult: memberlist failure
	// detection. Defaults 500ms / 200ms / 2 — tuned for the sub-5s failover
	// goal: a crashed peer is declared dead after 1.5–2.5s on a LAN, against
	// 5.5–7.5s with memberlist's DefaultLANConfig (1s / 500ms / 4).
	ProbeInterval time.Duration
	ProbeTimeout  time.Duration
	SuspicionMult int
	// GossipInterval of memberlist. Default 100ms.
	GossipInterval time.Duration

	// APIAddr is published in node metadata: how peers reach this node's API.
	APIAddr string
	// Version is published in node metadata.
	Version string

	// ReconcileInterval: a full reconcile pass runs at least this often
	// (and on every membership, catalog or ownership change). Default 1s.
	ReconcileInterval time.Duration
	// ConnectRate/ConnectBurst: token bucket for session starts on this
	// node (AMARULA_CONNECT_RATE). Default 20/s, burst = rate.
	ConnectRate  float64
	ConnectBurst int
	// SettlePeriod: a profile owned here while another live node ranks
	// first is moved only after it has been misplaced for this long
	// (hysteresis against membership flaps). Default 10s.
	SettlePeriod time.Duration
	// MoveRate/MoveBurst: rebalancing hand-offs per second from this node.
	// Default 5/s, burst 10. Drain and deleted/stopped profiles ignore it.
	// (A rejoining node of a 3-node cluster with 1,000 profiles gets its
	// ~333 back in about 35s after SettlePeriod: 2 peers × 5/s.)
	MoveRate  float64
	MoveBurst int
	// JoinGrace: a node configured with seeds acquires nothing until it has
	// joined a peer or this long has passed since it started, so a node
	// that comes up a moment before the others does not grab every profile
	// only to hand most of them back. Default 3s.
	JoinGrace time.Duration
	// UnownedGrace: a profile nobody owns is tried by the node ranked k-th
	// (k ≥ 1) after it has been unowned for k × UnownedGrace, in case the
	// top-ranked node cannot acquire. Default 3s.
	UnownedGrace time.Duration
	// RevokeFallback: if the lowest-named survivor has not revoked a dead
	// node's lease after this long, every survivor with quorum tries.
	// Default 3s.
	RevokeFallback time.Duration
	// MinorityGrace: a node that does not see a quorum of the members it
	// knows (it may be the cut-off minority) acquires only profiles that
	// have been unowned for this long — the majority, if it exists, takes
	// freed profiles well before. So a partitioned minority does not churn,
	// and survivors of a mass failure still take over. Default 30s.
	MinorityGrace time.Duration
	// StopTimeout bounds Runner.Stop during a hand-off. Default 5s.
	StopTimeout time.Duration
	// DrainParallelism bounds concurrent hand-offs in Drain. Default 64.
	DrainParallelism int
	// DeadForget: a dead member that never came back stops counting for
	// quorum after this long. Default 5m.
	DeadForget time.Duration

	Logger  *slog.Logger
	Metrics *Metrics // nil: unregistered metrics
}

// DefaultConfig returns the defaults for node.
func DefaultConfig(node string) Config {
	return Config{
		Node:              node,
		BindAddr:          "0.0.0.0",
		BindPort:          7946,
		JoinRetry:         2 * time.Second,
		ProbeInterval:     500 * time.Millisecond,
		ProbeTimeout:      200 * time.Millisecond,
		SuspicionMult:     2,
		GossipInterval:    100 * time.Millisecond,
		ReconcileInterval: time.Second,
		ConnectRate:       20,
		ConnectBurst:      20,
		SettlePeriod:      10 * time.Second,
		MoveRate:          5,
		MoveBurst:         10,
		JoinGrace:         3 * time.Second,
		UnownedGrace:      3 * time.Second,
		RevokeFallback:    3 * time.Second,
		MinorityGrace:     30 * time.Second,
		StopTimeout:       5 * time.Second,
		DrainParallelism:  64,
		DeadForget:        5 * time.Minute,
	}
}

// withDefaults fills zero fields from DefaultConfig (BindPort 0 stays 0:
// it means "pick a free port").
func (c Config) withDefaults() Config {
	d := DefaultConfig(c.Node)
	setDur := func(v *time.Duration, def time.Duration) {
		if *v <= 0 {
			*v = def
		}
	}
	if c.BindAddr == "" {
		c.BindAddr = d.BindAddr
	}
	setDur(&c.JoinRetry, d.JoinRetry)
	setDur(&c.ProbeInterval, d.ProbeInterval)
	setDur(&c.ProbeTimeout, d.ProbeTimeout)
	setDur(&c.GossipInterval, d.GossipInterval)
	setDur(&c.ReconcileInterval, d.ReconcileInterval)
	setDur(&c.SettlePeriod, d.SettlePeriod)
	setDur(&c.UnownedGrace, d.UnownedGrace)
	setDur(&c.JoinGrace, d.JoinGrace)
	setDur(&c.RevokeFallback, d.RevokeFallback)
	setDur(&c.StopTimeout, d.StopTimeout)
	setDur(&c.MinorityGrace, d.MinorityGrace)
	setDur(&c.DeadForget, d.DeadForget)
	if c.SuspicionMult <= 0 {
		c.SuspicionMult = d.SuspicionMult
	}
	if c.ConnectRate <= 0 {
		c.ConnectRate = d.ConnectRate
	}
	if c.ConnectBurst <= 0 {
		c.ConnectBurst = max(1, int(c.ConnectRate))
	}
	if c.MoveRate <= 0 {
		c.MoveRate = d.MoveRate
	}
	if c.MoveBurst <= 0 {
		c.MoveBurst = d.MoveBurst
	}
	if c.DrainParallelism <= 0 {
		c.DrainParallelism = d.DrainParallelism
	}
	if c.Resolver == nil {
		c.Resolver = net.DefaultResolver.LookupHost
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Metrics == nil {
		c.Metrics = NewMetrics(nil)
	}
	return c
}

func (c Config) validate() error {
	switch {
	case c.Node == "":
		return errors.New("cluster: Node is required")
	case c.ProbeTimeout >= c.ProbeInterval:
		return fmt.Errorf("cluster: ProbeTimeout %s must be below ProbeInterval %s", c.ProbeTimeout, c.ProbeInterval)
	case len(c.GossipKey) != 0 && len(c.GossipKey) != 16 && len(c.GossipKey) != 24 && len(c.GossipKey) != 32:
		return fmt.Errorf("cluster: GossipKey must be 16, 24 or 32 bytes, got %d", len(c.GossipKey))
	case c.BindPort < 0 || c.BindPort > 65535:
		return fmt.Errorf("cluster: bad BindPort %d", c.BindPort)
	}
	return nil
}
