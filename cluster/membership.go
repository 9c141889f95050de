package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"sort"
	"strconv"
	"strings"
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
	// updateMu serialises memberlist.UpdateNode: two concurrent calls
	// (the publisher and Leave) race inside memberlist.
	updateMu sync.Mutex

	mu       sync.Mutex
	meta     Meta
	nodes    map[string]Member    // from memberlist events; dead ones keep Since
	leaving  map[string]time.Time // members that told us they are leaving
	selfAddr string
}

// NewMembership starts memberlist and joins the seeds in cfg.Join. If no
// seed answers, joining is retried in the background every JoinRetry until
// one does or Shutdown.
func NewMembership(cfg Config) (*Membership, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	m := &Membership{cfg: cfg, changes: make(chan struct{}, 1), publish: make(chan struct{}, 1), nodes: make(map[string]Member), leaving: make(map[string]time.Time),
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
	if len(cfg.GossipKey) > 0 {
		mc.SecretKey = cfg.GossipKey
	}
	mc.Delegate = (*delegate)(m)
	mc.Events = (*events)(m)
	mc.Logger = log.New(slogWriter{cfg.Logger}, "", 0)
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
	self := m.Addr()
	_, selfPort, _ := net.SplitHostPort(self)
	for _, s := range seeds {
		host, port, err := net.SplitHostPort(s)
		if err != nil {
			host, port = s, selfPort
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
func (m *Membership) Addr() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.selfAddr
}

// Members returns every known member — alive, draining, and dead ones this
// node saw die (until they return or DeadForget passes) — sorted by name.
//
// The view is built from memberlist's event callbacks (which run under its
// lock), not from memberlist.Members(): the nodes that returns are mutated
// in place without a lock (the race detector flags every read). The price
// is that suspicion is not visible: memberlist raises no event for it, so
// a suspect member is reported alive until it is declared dead.
func (m *Membership) Members() []Member {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Member, 0, len(m.nodes))
	for name, mem := range m.nodes {
		if name == m.cfg.Node {
			mem.Meta = m.meta // our freshest view of ourselves
		}
		if mem.State == StateDead && time.Since(mem.Since) > m.cfg.DeadForget {
			delete(m.nodes, name)
			continue
		}
		if mem.State == StateAlive && mem.Meta.Draining {
			mem.State = StateDraining
		}
		out = append(out, mem)
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
	m.updateMu.Lock()
	defer m.updateMu.Unlock()
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

// leavingMsg prefixes the user message a node sends each peer before it
// leaves.
const leavingMsg = "amarula-leaving:"

// Leave announces a graceful departure and waits up to timeout for it to
// propagate. Peers must see it as left, not dead (a dead member gets its
// lease revoked and counts against quorum), but memberlist does not tell
// its event delegate which it was. So the node first marks itself draining
// in its metadata and tells every peer directly over TCP that it is
// leaving; a peer that has heard either records the departure as a leave.
func (m *Membership) Leave(timeout time.Duration) error {
	m.SetMeta(func(meta *Meta) { meta.Draining = true })
	if err := m.PublishMeta(timeout); err != nil {
		m.cfg.Logger.Warn("cluster: announce leave", "err", err)
	}
	m.tellPeersLeaving(timeout)
	if err := m.ml.Leave(timeout); err != nil {
		return fmt.Errorf("cluster: leave: %w", err)
	}
	return nil
}

func (m *Membership) tellPeersLeaving(timeout time.Duration) {
	var peers []*memberlist.Node
	m.mu.Lock()
	for name, mem := range m.nodes {
		if name == m.cfg.Node || mem.State != StateAlive {
			continue
		}
		host, port, err := net.SplitHostPort(mem.Addr)
		p, perr := strconv.Atoi(port)
		if err != nil || perr != nil {
			continue
		}
		peers = append(peers, &memberlist.Node{Name: name, Addr: net.ParseIP(host), Port: uint16(p)})
	}
	m.mu.Unlock()
	msg := []byte(leavingMsg + m.cfg.Node)
	done := make(chan struct{}, len(peers))
	for _, n := range peers {
		go func() {
			if err := m.ml.SendReliable(n, msg); err != nil {
				m.cfg.Logger.Debug("cluster: tell peer we leave", "peer", n.Name, "err", err)
			}
			done <- struct{}{}
		}()
	}
	deadline := time.After(timeout)
	for range peers {
		select {
		case <-done:
		case <-deadline:
			return // stragglers finish on their own (memberlist's TCP timeout)
		}
	}
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

// NotifyMsg receives the leaving notice of a peer (see Leave).
func (d *delegate) NotifyMsg(b []byte) {
	if name, ok := strings.CutPrefix(string(b), leavingMsg); ok {
		m := (*Membership)(d)
		m.mu.Lock()
		m.leaving[name] = time.Now()
		m.mu.Unlock()
	}
}

func (d *delegate) GetBroadcasts(int, int) [][]byte        { return nil }
func (d *delegate) LocalState(bool) []byte                 { return nil }
func (d *delegate) MergeRemoteState(buf []byte, join bool) {}

// events implements memberlist.EventDelegate. memberlist calls it with its
// node lock held: it copies what it needs, never calls back into
// memberlist and never blocks.
type events Membership

func (e *events) record(n *memberlist.Node, state State) {
	m := (*Membership)(e)
	mem := Member{Name: n.Name, Addr: n.Address(), State: state, Meta: parseMeta(n.Meta)}
	if state == StateDead {
		mem.Since = time.Now()
	}
	m.mu.Lock()
	if n.Name == m.cfg.Node {
		m.selfAddr = mem.Addr
	}
	if state == StateLeft {
		delete(m.nodes, n.Name)
	} else {
		m.nodes[n.Name] = mem
	}
	m.mu.Unlock()
	if state == StateDead {
		m.cfg.Logger.Warn("cluster: member dead", "member", n.Name)
	}
	m.poke()
}

func (e *events) NotifyJoin(n *memberlist.Node) {
	m := (*Membership)(e)
	m.mu.Lock()
	delete(m.leaving, n.Name)
	m.mu.Unlock()
	e.record(n, StateAlive)
}
func (e *events) NotifyUpdate(n *memberlist.Node) { e.record(n, StateAlive) }

// NotifyLeave cannot tell a graceful leave from a death: memberlist keeps
// that in a field it does not pass on (Node.State is never updated). A
// member that announced draining before going (Leave does) has left;
// anything else is dead. Mistaking a leaver for dead costs a revocation of
// a lease it is giving up anyway.
func (e *events) NotifyLeave(n *memberlist.Node) {
	meta := parseMeta(n.Meta)
	m := (*Membership)(e)
	m.mu.Lock()
	said, told := m.leaving[n.Name]
	delete(m.leaving, n.Name)
	m.mu.Unlock()
	if meta.Draining || (told && time.Since(said) < time.Minute) {
		e.record(n, StateLeft)
	} else {
		e.record(n, StateDead)
	}
}

// parseMeta decodes a peer's gossiped metadata. Anything that does not
// decode whole yields the zero Meta (not eligible): a half-decoded value
// must not make a member look healthy.
func parseMeta(b []byte) Meta {
	var m Meta
	if err := json.Unmarshal(b, &m); err != nil {
		return Meta{}
	}
	return m
}

// slogWriter forwards memberlist's log lines to slog at debug level
// (warnings and errors at warn): they are about peers' health, which the
// cluster reports through Members and metrics anyway.
type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	if strings.Contains(line, "[ERR]") || strings.Contains(line, "[WARN]") {
		w.l.Warn("memberlist", "msg", line)
	} else {
		w.l.Debug("memberlist", "msg", line)
	}
	return len(p), nil
}
