package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/amarula/amarula/api"
	"github.com/amarula/amarula/catalog"
	"github.com/amarula/amarula/cluster"
	"github.com/amarula/amarula/dashboard"
	"github.com/amarula/amarula/lease"
	"github.com/amarula/amarula/media"
	"github.com/amarula/amarula/registry"
	"github.com/amarula/amarula/session"
	"github.com/amarula/amarula/storage"
	"github.com/amarula/amarula/storage/bolt"
	"github.com/amarula/amarula/storage/instrumented"
	"github.com/amarula/amarula/storage/redis"
	"github.com/amarula/amarula/storage/s3"
	"github.com/amarula/amarula/webhook"
)

// parts are the long-lived components of a node, built by Open in
// dependency order and closed by shutdown in reverse.
type parts struct {
	store      storage.Store
	objects    s3.Objects
	media      *media.Worker
	etcd       *clientv3.Client
	catalog    catalog.Catalog
	leases     lease.Manager
	membership *cluster.Membership
	registry   *registry.Registry
	mirror     *stateMirror
	router     *router
	webhooks   *webhook.Manager
	runner     *runner
	reconciler *cluster.Reconciler
	api        *api.Server
}

// openStorage opens the storage seam: Redis when configured, else the
// embedded bbolt store under the data dir (which also locks the dir).
func (m *Main) openStorage(ctx context.Context, onCorrupt func(profile, ns, key string)) (storage.Store, error) {
	if m.Config.RedisURL != "" {
		st, err := redis.New(ctx, m.Config.RedisURL, redis.Options{Cluster: m.Config.Cluster, OnCorrupt: onCorrupt})
		if err != nil {
			return nil, fmt.Errorf("redis storage: %w", err)
		}
		m.Logger.Info("storage: redis")
		return st, nil
	}
	st, err := bolt.Open(m.Config.DataDir, bolt.Options{OnCorrupt: onCorrupt})
	if err != nil {
		return nil, fmt.Errorf("embedded storage: %w", err)
	}
	m.Logger.Info("storage: embedded bbolt", "dir", m.Config.DataDir)
	return st, nil
}

// openObjects opens the media object store: S3 when configured, else files
// under <data dir>/media.
func (m *Main) openObjects(ctx context.Context) (s3.Objects, error) {
	c := m.Config.S3
	cfg := s3.Config{LocalDir: m.Config.DataDir + "/media"}
	if c.Endpoint != "" {
		cfg = s3.Config{Endpoint: c.Endpoint, Bucket: c.Bucket, Region: c.Region, AccessKey: c.AccessKey,
			SecretKey: c.SecretKey, PathStyle: true, CreateBucket: true}
	}
	o, err := s3.Open(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("media store: %w", err)
	}
	return o, nil
}

// gossipConfig derives memberlist settings. A single node gossips with
// nobody, so it binds an ephemeral loopback port instead of 7946.
func (m *Main) gossipConfig() (cluster.Config, error) {
	cc := cluster.DefaultConfig(m.Config.NodeName)
	cc.Logger = m.Logger
	cc.Version = Version
	cc.ConnectRate = m.Config.ConnectRate
	cc.APIAddr = m.advertiseURL()
	if m.Config.SingleNode() {
		cc.BindAddr, cc.BindPort = "127.0.0.1", 0
		return cc, nil
	}
	host, port, err := splitHostPort(m.Config.GossipBind)
	if err != nil {
		return cc, fmt.Errorf("AMARULA_GOSSIP_BIND: %w", err)
	}
	cc.BindAddr, cc.BindPort = host, port
	if m.Config.GossipAdvertise != "" {
		if cc.AdvertiseAddr, cc.AdvertisePort, err = splitHostPort(m.Config.GossipAdvertise); err != nil {
			return cc, fmt.Errorf("AMARULA_GOSSIP_ADVERTISE: %w", err)
		}
	}
	cc.Join = m.Config.Join
	return cc, nil
}

func splitHostPort(s string) (string, int, error) {
	h, p, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, err
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		return "", 0, fmt.Errorf("port %q: %w", p, err)
	}
	if h == "" {
		h = "0.0.0.0"
	}
	return h, n, nil
}

// advertiseURL is how peers reach this node's API.
func (m *Main) advertiseURL() string {
	if m.Config.AdvertiseURL != "" {
		return m.Config.AdvertiseURL
	}
	return m.URL()
}

// openParts builds every component. On error, what was built is closed.
func (m *Main) openParts(ctx context.Context) (err error) {
	p := &parts{}
	m.parts = p
	defer func() {
		if err != nil {
			_ = m.closeParts(context.Background())
		}
	}()
	sm := instrumented.NewMetrics(m.Registry)
	raw, err := m.openStorage(ctx, sm.CorruptRead)
	if err != nil {
		return err
	}
	p.store = instrumented.Wrap(raw, sm)
	if p.objects, err = m.openObjects(ctx); err != nil {
		return err
	}

	if m.Config.SingleNode() {
		p.catalog = catalog.NewLocal(p.store)
		p.leases = lease.NewLocal(p.store, m.Config.NodeName)
	} else {
		p.etcd, err = clientv3.New(clientv3.Config{
			Endpoints:   m.Config.EtcdEndpoints,
			DialTimeout: 5 * time.Second,
			Logger:      zapDiscard(),
		})
		if err != nil {
			return fmt.Errorf("etcd client: %w", err)
		}
		p.catalog = catalog.NewEtcd(p.etcd, m.Config.Cluster)
		lc := lease.DefaultEtcdConfig(m.Config.Cluster, m.Config.NodeName)
		lc.TTL, lc.SafetyMargin, lc.RenewInterval = m.Config.LeaseTTL, m.Config.LeaseTTL/4, m.Config.LeaseTTL/5
		lc.Fencer = p.store
		lc.Logger = m.Logger
		lc.Meta = map[string]string{"api": m.advertiseURL()}
		lc.StartDetached = true // etcd down at start: start not-ready, recover when it answers
		gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		p.leases, err = lease.NewEtcd(gctx, p.etcd, lc)
		cancel()
		if err != nil {
			return fmt.Errorf("etcd lease: %w", err)
		}
	}

	rootKey, err := m.rootKey()
	if err != nil {
		return err
	}
	p.mirror = newStateMirror(p.store, m.Logger)
	onNewMessage, afterStore := mediaHooks(func() *media.Worker { return p.media })
	p.registry, err = registry.New(registry.Config{
		Node:   m.Config.NodeName,
		Store:  p.store,
		Leases: p.leases,
		Logger: m.Logger,
		Session: session.Config{
			WhatsAppURL:   m.Config.WhatsAppURL,
			RootKey:       rootKey,
			Logger:        m.Logger,
			OnStateChange: p.mirror.changed,
			OnNewMessage:  onNewMessage,
			AfterStore:    afterStore,
			Media:         session.MediaSending{Objects: p.objects, MaxBytes: m.Config.MediaMaxBytes},
		},
	})
	if err != nil {
		return err
	}
	if err := m.openMedia(p); err != nil {
		return err
	}
	p.mirror.reg = p.registry
	m.Registry.MustRegister(sessionStates(p.registry))
	target := webhook.CatalogTarget(p.catalog)
	wm, err := webhook.NewMetrics(m.Registry)
	if err != nil {
		return err
	}
	p.webhooks = webhook.NewManager(webhook.ManagerConfig{
		Log: p.store, KV: p.store, Target: target, Logger: m.Logger, Metrics: wm,
	})
	p.runner = &runner{registry: p.registry, webhooks: p.webhooks, media: p.media}

	cc, err := m.gossipConfig()
	if err != nil {
		return err
	}
	cc.Metrics = cluster.NewMetrics(m.Registry)
	if p.membership, err = cluster.NewMembership(cc); err != nil {
		return fmt.Errorf("gossip: %w", err)
	}
	p.reconciler = cluster.NewReconciler(cc, p.membership, p.leases, p.catalog, p.runner)

	var ownersOf func(ctx context.Context) (map[string]string, error)
	var remote ownerLookup
	if ol, ok := p.leases.(interface {
		Owners(ctx context.Context) (map[string]string, error)
	}); ok && !m.Config.SingleNode() {
		ownersOf, remote = ol.Owners, p.leases
	}
	p.api, err = api.New(api.Config{
		AdminKey:  m.Config.AdminKey,
		Profiles:  p.catalog,
		Sessions:  &mediaSessions{objects: p.objects, clusterSessions: &clusterSessions{Registry: p.registry, store: p.store, owners: remote, self: m.Config.NodeName, catalog: p.catalog}},
		Owners:    p.registry,
		Messages:  p.registry.Messages(),
		Events:    p.store,
		KV:        p.store,
		Fences:    p.store,
		Webhooks:  &webhook.DeadLetters{KV: p.store, Token: p.store.Fence, Target: target, Logger: m.Logger},
		Readiness: api.ReadyFunc(m.readiness),
		Cluster: &clusterView{members: p.membership.Members, catalog: p.catalog, owners: ownersOf,
			self: m.Config.NodeName, selfLoad: func() int { return len(p.registry.List()) }},
		Move:       &moveHandler{move: p.reconciler.Move},
		Media:      &api.MediaHandler{Messages: p.registry.Messages(), Objects: p.objects, Logger: m.Logger},
		Dashboard:  dashboard.Handler(),
		Gatherer:   m.Registry,
		Registerer: m.Registry,
		Logger:     m.Logger,
		Errors: append([]api.ErrorMapping{
			{Err: registry.ErrNotFound, Status: http.StatusServiceUnavailable, Code: "no_session"},
			{Err: registry.ErrRunning, Status: http.StatusConflict, Code: "already_running"},
			{Err: registry.ErrClosed, Status: http.StatusServiceUnavailable, Code: "unavailable"},
			{Err: lease.ErrHeld, Status: http.StatusConflict, Code: "owned_elsewhere"},
			{Err: lease.ErrLost, Status: http.StatusServiceUnavailable, Code: "no_lease"},
		}, mediaErrors...),
	})
	if err != nil {
		return err
	}
	p.router = &router{self: m.Config.NodeName, next: p.api, owners: p.leases, members: p.membership.Members,
		single: m.Config.SingleNode(), client: http.DefaultTransport}
	return nil
}

// rootKey parses the simulator root key, if any.
func (m *Main) rootKey() ([32]byte, error) {
	if m.Config.WhatsAppRootKey == "" {
		return [32]byte{}, nil
	}
	k, err := session.ParseRootKey(m.Config.WhatsAppRootKey)
	if err != nil {
		return k, fmt.Errorf("AMARULA_WHATSAPP_ROOT_KEY: %w", err)
	}
	return k, nil
}

// readiness: storage reachable and, in cluster mode, a live etcd lease.
func (m *Main) readiness(ctx context.Context) error {
	p := m.parts
	if p == nil || p.store == nil {
		return errors.New("starting")
	}
	if err := p.store.Ping(ctx); err != nil {
		return fmt.Errorf("storage unreachable: %w", err)
	}
	select {
	case <-p.leases.Done():
		return errors.New("no ownership lease (etcd unreachable or lease lost)")
	default:
	}
	if p.reconciler != nil && p.reconciler.Draining() {
		return errors.New("draining")
	}
	return nil
}

// startParts runs the background loops; each is stopped by cancelling ctx
// and waited for in closeParts.
func (m *Main) startParts(ctx context.Context) {
	p := m.parts
	m.bg.Add(1)
	go func() {
		defer m.bg.Done()
		if _, err := p.membership.Join(ctx); err != nil && !m.Config.SingleNode() {
			m.Logger.Warn("gossip join: no seed reachable yet; retrying in the background", "err", err)
		}
	}()
	m.bg.Add(1)
	go func() {
		defer m.bg.Done()
		p.mirror.run(ctx)
	}()
	m.runMedia(ctx, p.media)
	m.bg.Add(1)
	go func() {
		defer m.bg.Done()
		if err := p.reconciler.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
			m.Logger.Error("reconciler stopped", "err", err)
		}
	}()
}

// drain hands every owned profile off before the node stops.
func (m *Main) drain(ctx context.Context) error {
	p := m.parts
	if p == nil || p.reconciler == nil {
		return nil
	}
	start := time.Now()
	owned := len(p.reconciler.Owned())
	err := p.reconciler.Drain(ctx)
	m.Logger.Info("drained", "profiles", owned, "took", time.Since(start).Round(time.Millisecond), "err", err)
	return err
}

// closeParts closes every component in reverse order of opening.
func (m *Main) closeParts(ctx context.Context) error {
	p := m.parts
	if p == nil {
		return nil
	}
	var errs []error
	add := func(what string, err error) {
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", what, err))
		}
	}
	if p.api != nil {
		add("api", p.api.Close())
	}
	if p.webhooks != nil {
		p.webhooks.Close()
	}
	if p.registry != nil {
		add("sessions", p.registry.Close(ctx))
	}
	if p.membership != nil {
		if !m.Config.SingleNode() {
			add("gossip leave", p.membership.Leave(2*time.Second))
		}
		add("gossip", p.membership.Shutdown())
	}
	if p.leases != nil {
		add("leases", p.leases.Close())
	}
	if p.runner != nil {
		p.runner.wait()
	}
	if p.etcd != nil {
		add("etcd", p.etcd.Close())
	}
	if p.objects != nil {
		add("media store", p.objects.Close())
	}
	if p.store != nil {
		add("storage", p.store.Close())
	}
	m.parts = nil
	return errors.Join(errs...)
}

// handler is the node's HTTP handler.
func (m *Main) handler() http.Handler { return m.parts.router }
