package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// State of a member as this node sees it.
type State string

const (
	StateAlive    State = "alive"
	StateSuspect  State = "suspect"
	StateDead     State = "dead"
	StateLeft     State = "left"
	StateDraining State = "draining" // alive, handing its profiles off
)

// Meta is the metadata a node gossips about itself (memberlist NodeMeta,
// at most 512 bytes of JSON).
type Meta struct {
	API      string `json:"api,omitempty"`
	LeaseID  int64  `json:"lease,omitempty"`
	LeaseOK  bool   `json:"ok"`
	Draining bool   `json:"drain,omitempty"`
	Load     int    `json:"load"` // profiles owned
	Version  string `json:"ver,omitempty"`
}

// Member is one node of the cluster.
type Member struct {
	Name  string
	Addr  string // gossip host:port
	State State
	Meta  Meta
	// Since is when this node saw the member die (dead members only).
	Since time.Time
}

// Eligible reports whether the member may own profiles.
func (m Member) Eligible() bool {
	return (m.State == StateAlive || m.State == StateSuspect) && !m.Meta.Draining && m.Meta.LeaseOK
}

// Membership is this node's memberlist instance plus what it has learned
// about dead members. Callbacks from memberlist never block: they record
// and poke Changes.
type Membership struct {
	cfg     Config
	ml      *memberlist.Memberlist
	changes chan struct{}
	publish chan struct{}
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup

	mu   sync.Mutex
	meta Meta
	dead map[string]Member // name → last view, with Since
}

// NewMembership starts memberlist and joins the seeds in cfg.Join. If no
// seed answers, joining is retried in the background every JoinRetry until
// one does or Shutdown.
func NewMembership(cfg Config) (*Membership, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	m := &Membership{cfg: cfg, changes: make(chan struct{}, 1), publish: make(chan struct{}, 1), dead: make(map[string]Member),
		meta: Meta{API: cfg.APIAddr, Version: cfg.Version}}
	mc := memberlist.DefaultLANConfig()
	mc.Name = cfg.Node
	mc.BindAddr, mc.BindPort = cfg.BindAddr, cfg.BindPort
	mc.AdvertisePort = cfg.BindPort
	if cfg.AdvertiseAddr != "" {
		mc.AdvertiseAddr = cfg.AdvertiseAddr
	}
	if cfg.AdvertisePort != 0 {
		mc.AdvertisePort = cfg.AdvertisePort
	}
	mc.ProbeInterval, mc.ProbeTimeout, mc.SuspicionMult = cfg.ProbeInterval, cfg.ProbeTimeout, cfg.SuspicionMult
	mc.GossipInterval = cfg.GossipInterval
	mc.Delegate = (*delegate)(m)
	mc.Events = (*events)(m)
	mc.Logger = log.New(io.Discard, "", 0)
	ml, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("cluster: start memberlist on %s:%d: %w", cfg.BindAddr, cfg.BindPort, err)
	}
	m.ml = ml
	m.ctx, m.cancel = context.WithCancel(context.Background())
	m.wg.Add(1)
	go func() { defer m.wg.Done(); m.publisher() }()
	if len(cfg.Join) > 0 {
		if n, err := m.Join(m.ctx); n == 0 {
			cfg.Logger.Warn("cluster: no seed answered yet; retrying in the background", "join", cfg.Join, "err", err)
			m.wg.Add(1)
			go func() { defer m.wg.Done(); m.retryJoin() }()
		}
	}
	return m, nil
}

func (m *Membership) retryJoin() {
	t := time.NewTicker(m.cfg.JoinRetry)
	defer t.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-t.C:
			if n, _ := m.Join(m.ctx); n > 0 || m.ml.NumMembers() > 1 {
				return
			}
		}
	}
}

// Join resolves cfg.Join (each DNS name to all its addresses) and joins
// them. It returns how many were contacted.
func (m *Membership) Join(ctx context.Context) (int, error) {
	addrs, err := m.resolve(ctx, m.cfg.Join)
	if len(addrs) == 0 {
		return 0, fmt.Errorf("cluster: join: no address resolved: %w", err)
	}
	n, jerr := m.ml.Join(addrs)
	if n == 0 {
		return 0, fmt.Errorf("cluster: join %v: %w", addrs, errors.Join(err, jerr))
	}
	return n, nil
}

// resolve turns seeds into host:port addresses, skipping our own.
func (m *Membership) resolve(ctx context.Context, seeds []string) ([]string, error) {
	var out []string
	var errs []error
	self := m.ml.LocalNode().Address()
	for _, s := range seeds {
		host, port, err := net.SplitHostPort(s)
		if err != nil {
			host, port = s, strconv.Itoa(int(m.ml.LocalNode().Port))
		}
		ips := []string{host}
		if net.ParseIP(host) == nil {
			rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			ips, err = m.cfg.Resolver(rctx, host)
			cancel()
			if err != nil {
				errs = append(errs, fmt.Errorf("resolve %s: %w", host, err))
				continue
			}
		}
		for _, ip := range ips {
			if a := net.JoinHostPort(ip, port); a != self {
				out = append(out, a)
			}
		}
	}
	return out, errors.Join(errs...)
}

// Changes is poked (never blocking, coalesced) whenever a member joins,
// leaves, dies or changes its metadata.
func (m *Membership) Changes() <-chan struct{} { return m.changes }

func (m *Membership) poke() {
	select {
	case m.changes <- struct{}{}:
	default:
	}
}

// Name returns this node's name.
func (m *Membership) Name() string { return m.cfg.Node }

// Addr returns this node's gossip address (host:port).
func (m *Membership) Addr() string { return m.ml.LocalNode().Address() }

// Members returns every known member — alive, suspect, draining, and dead
// ones this node saw die (until they return or DeadForget passes) — sorted
// by name.
func (m *Membership) Members() []Member {
	nodes := m.ml.Members()
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Member, 0, len(nodes)+len(m.dead))
	seen := make(map[string]bool, len(nodes))
	for _, n := range nodes {
		mem := Member{Name: n.Name, Addr: n.Address(), State: StateAlive}
		_ = json.Unmarshal(n.Meta, &mem.Meta)
		if n.Name == m.cfg.Node {
			mem.Meta = m.meta // our freshest view of ourselves
		}
		if n.State == memberlist.StateSuspect {
			mem.State = StateSuspect
		}
		if mem.State == StateAlive && mem.Meta.Draining {
			mem.State = StateDraining
		}
		seen[n.Name] = true
		out = append(out, mem)
	}
	for name, d := range m.dead {
		if seen[name] {
			continue // back, even if the join event is still in flight
		}
		if time.Since(d.Since) > m.cfg.DeadForget {
			delete(m.dead, name)
			continue
		}
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// SetMeta updates this node's metadata; a background publisher gossips it
// (coalescing bursts). Unchanged metadata is not re-sent. Use PublishMeta to
// wait until a change has gone out.
func (m *Membership) SetMeta(update func(*Meta)) {
	m.mu.Lock()
	old := m.meta
	update(&m.meta)
	changed := m.meta != old
	m.mu.Unlock()
	if changed {
		select {
		case m.publish <- struct{}{}:
		default:
		}
	}
}

// PublishMeta gossips the current metadata now and waits up to timeout for
// the broadcast to reach a peer (returns at once when alone).
func (m *Membership) PublishMeta(timeout time.Duration) error {
	if err := m.ml.UpdateNode(timeout); err != nil {
		return fmt.Errorf("cluster: gossip metadata: %w", err)
	}
	return nil
}

func (m *Membership) publisher() {
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-m.publish:
			if err := m.PublishMeta(2 * time.Second); err != nil {
				m.cfg.Logger.Debug("cluster: metadata broadcast", "err", err)
			}
		}
	}
}

// Meta returns this node's current metadata.
func (m *Membership) Meta() Meta {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.meta
}

// Leave announces a graceful departure and waits up to timeout for it to
// propagate. Peers see the node as left, not dead: nobody revokes its lease.
func (m *Membership) Leave(timeout time.Duration) error {
	if err := m.ml.Leave(timeout); err != nil {
		return fmt.Errorf("cluster: leave: %w", err)
	}
	return nil
}

// Shutdown stops memberlist without leaving (peers will declare this node
// dead) and the background join. Call Leave first for a graceful stop.
func (m *Membership) Shutdown() error {
	m.cancel()
	m.wg.Wait()
	if err := m.ml.Shutdown(); err != nil {
		return fmt.Errorf("cluster: shutdown memberlist: %w", err)
	}
	return nil
}

// delegate implements memberlist.Delegate: only NodeMeta carries data.
type delegate Membership

func (d *delegate) NodeMeta(limit int) []byte {
	m := (*Membership)(d)
	m.mu.Lock()
	b, _ := json.Marshal(m.meta)
	m.mu.Unlock()
	if len(b) > limit {
		// Drop the free-form fields rather than panic inside memberlist.
		m.mu.Lock()
		small := m.meta
		m.mu.Unlock()
		small.API, small.Version = "", ""
		b, _ = json.Marshal(small)
	}
	return b
}
func (d *delegate) NotifyMsg([]byte)                       {}
func (d *delegate) GetBroadcasts(int, int) [][]byte        { return nil }
func (d *delegate) LocalState(bool) []byte                 { return nil }
func (d *delegate) MergeRemoteState(buf []byte, join bool) {}

// events implements memberlist.EventDelegate. It must not block.
type events Membership

func (e *events) NotifyJoin(n *memberlist.Node) {
	m := (*Membership)(e)
	m.mu.Lock()
	delete(m.dead, n.Name)
	m.mu.Unlock()
	m.poke()
}

func (e *events) NotifyLeave(n *memberlist.Node) {
	m := (*Membership)(e)
	if n.State == memberlist.StateDead {
		mem := Member{Name: n.Name, Addr: n.Address(), State: StateDead, Since: time.Now()}
		_ = json.Unmarshal(n.Meta, &mem.Meta)
		m.mu.Lock()
		m.dead[n.Name] = mem
		m.mu.Unlock()
		m.cfg.Logger.Warn("cluster: member dead", "member", n.Name)
	}
	m.poke()
}

func (e *events) NotifyUpdate(*memberlist.Node) { (*Membership)(e).poke() }
