package testcluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/amarula/amarula/internal/testenv"
	redisstore "github.com/amarula/amarula/storage/redis"
)

// Options describe the cluster to start. Zero values pick the defaults.
type Options struct {
	Nodes    int           // node processes started by Start (default 3)
	LeaseTTL time.Duration // AMARULA_LEASE_TTL (default 10s)
	Cluster  string        // AMARULA_CLUSTER (default "chaos")
	Dir      string        // data and logs; default a fresh temp dir removed at cleanup
	KeepDir  bool          // keep Dir at cleanup (always kept when Dir is given)
	AdminKey string        // default random
	// NodeBin and WasimBin are the binaries (default: bin/amarula-node and
	// bin/wasim of the repo, or $AMARULA_BIN_DIR).
	NodeBin, WasimBin string
	// Netns runs every node in its own network namespace on a bridge
	// created for this cluster (root only); servers bind bridge addresses.
	Netns bool
	// S3 starts versitygw for media when the binary is present.
	S3 bool
	// NodeEnv is extra AMARULA_* settings for every node (e.g.
	// AMARULA_CONNECT_RATE); per-node overrides go to AddNode.
	NodeEnv  map[string]string
	LogLevel string // AMARULA_LOG_LEVEL (default info)
	// NoWaitReady: Start does not wait for the nodes' /readyz.
	NoWaitReady bool
}

// Cluster is a running set of processes.
type Cluster struct {
	Env   Env
	Opts  Options
	Dir   string
	Etcd  *Server
	Redis *Server
	S3    *Server // nil without versitygw
	Wasim *Wasim
	Net   *Network // nil on loopback

	mu     sync.Mutex
	nodes  []*Node
	seq    int
	phones int
	avoid  map[string]bool // frozen or cut-off nodes: API calls go elsewhere

	sendLat []time.Duration // SendFromProfiles, until SendLatencies
}

// Node is one amarula-node process.
type Node struct {
	*Proc
	Name       string
	Host       string // IP the node listens on
	APIPort    int
	GossipPort int
	URL        string // http://host:port
	API        *Client
	DataDir    string
	NS         *Namespace // nil on loopback
}

// resolveBins fills the binaries' paths.
func resolveBins(o *Options) error {
	find := func(name string) (string, error) {
		dirs := []string{os.Getenv("AMARULA_BIN_DIR")}
		if root := testenv.RepoRoot(); root != "" {
			dirs = append(dirs, filepath.Join(root, "bin"))
		}
		for _, d := range dirs {
			if d == "" {
				continue
			}
			p := filepath.Join(d, name)
			if st, err := os.Stat(p); err == nil && !st.IsDir() {
				return p, nil
			}
		}
		return "", fmt.Errorf("%s not built (run `make build`, or pass Options.NodeBin/WasimBin)", name)
	}
	var err error
	if o.NodeBin == "" {
		if o.NodeBin, err = find("amarula-node"); err != nil {
			return err
		}
	}
	if o.WasimBin == "" {
		if o.WasimBin, err = find("wasim"); err != nil {
			return err
		}
	}
	return nil
}

// Start starts etcd, Redis, (versitygw,) wasim and o.Nodes nodes and waits
// until every node is ready. Everything is stopped by env's cleanups.
func Start(env Env, o Options) (c *Cluster, err error) {
	if o.Nodes == 0 {
		o.Nodes = 3
	}
	if o.LeaseTTL == 0 {
		o.LeaseTTL = 10 * time.Second
	}
	if o.Cluster == "" {
		o.Cluster = "chaos"
	}
	if o.LogLevel == "" {
		o.LogLevel = "info"
	}
	if o.AdminKey == "" {
		var b [16]byte
		_, _ = rand.Read(b[:])
		o.AdminKey = "chaos-admin-" + hex.EncodeToString(b[:])
	}
	if err := resolveBins(&o); err != nil {
		return nil, err
	}
	dir := o.Dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "amarula-cluster-"); err != nil {
			return nil, err
		}
		if !o.KeepDir {
			env.Cleanup(func() { _ = os.RemoveAll(dir) })
		}
	}
	c = &Cluster{Env: env, Opts: o, Dir: dir}
	if f, ok := env.(failer); ok {
		env.Cleanup(func() {
			if f.Failed() {
				c.DumpLogs()
			}
		})
	}
	serverHost, etcdHost := "127.0.0.1", "127.0.0.1"
	if o.Netns {
		if c.Net, err = NewNetwork(env, o.Nodes+2); err != nil {
			return nil, err
		}
		serverHost, etcdHost = c.Net.ServerIP, c.Net.EtcdIP
	}
	if c.Etcd, err = StartEtcd(env, etcdHost, dir); err != nil {
		return nil, err
	}
	if c.Redis, err = StartRedis(env, serverHost, dir); err != nil {
		return nil, err
	}
	if o.S3 {
		if c.S3, err = StartVersity(env, serverHost, dir, "amarula", "amarula-secret"); err != nil {
			return nil, err
		}
	}
	if c.Wasim, err = StartWasim(env, o.WasimBin, serverHost, dir); err != nil {
		return nil, err
	}
	for i := 0; i < o.Nodes; i++ {
		if _, err := c.AddNode(nil, !o.NoWaitReady); err != nil {
			return nil, err
		}
	}
	env.Logf("cluster: etcd %s, redis %s, wasim %s, %d nodes (lease TTL %s, netns %v), dir %s",
		c.Etcd.Addr, c.Redis.Addr, c.Wasim.Addr, o.Nodes, o.LeaseTTL, o.Netns, dir)
	return c, nil
}

// Nodes returns every node ever added (running or not), in order.
func (c *Cluster) Nodes() []*Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*Node(nil), c.nodes...)
}

// Node returns the node called name (nil if none).
func (c *Cluster) Node(name string) *Node {
	for _, n := range c.Nodes() {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// Running returns the nodes whose process runs.
func (c *Cluster) Running() []*Node {
	var out []*Node
	for _, n := range c.Nodes() {
		if n.Running() {
			out = append(out, n)
		}
	}
	return out
}

// API returns a client of the first running node other than the excluded
// ones, preferring nodes that are not frozen or cut off (nil when none
// runs).
func (c *Cluster) API(exclude ...string) *Client {
	for _, n := range c.serving() {
		skip := false
		for _, e := range exclude {
			skip = skip || n.Name == e
		}
		if !skip {
			return n.API
		}
	}
	return nil
}

// EtcdURL is the client URL of etcd.
func (c *Cluster) EtcdURL() string { return "http://" + c.Etcd.Addr }

// AddNode starts one more node (named n<k>) that joins the others; extra
// overrides settings of this node. With wait it returns once /readyz is 200.
func (c *Cluster) AddNode(extra map[string]string, wait bool) (*Node, error) {
	c.mu.Lock()
	c.seq++
	k := c.seq
	var join []string
	for _, n := range c.nodes {
		join = append(join, net.JoinHostPort(n.Host, fmt.Sprint(n.GossipPort)))
	}
	c.mu.Unlock()
	n := &Node{Name: fmt.Sprintf("n%d", k), DataDir: filepath.Join(c.Dir, "nodes", fmt.Sprintf("n%d", k))}
	var err error
	if c.Net != nil {
		if n.NS, err = c.Net.AddNamespace(); err != nil {
			return nil, err
		}
		// A namespace has its own port space: fixed ports are free.
		n.Host, n.APIPort, n.GossipPort = n.NS.IP, 8080, 7946
	} else {
		n.Host = "127.0.0.1"
		if n.APIPort, err = freePort(n.Host); err != nil {
			return nil, err
		}
		if n.GossipPort, err = freePort(n.Host); err != nil {
			return nil, err
		}
	}
	n.URL = fmt.Sprintf("http://%s", net.JoinHostPort(n.Host, fmt.Sprint(n.APIPort)))
	n.API = NewClient(n.URL, c.Opts.AdminKey)
	settings := map[string]string{
		"AMARULA_NODE_NAME":         n.Name,
		"AMARULA_CLUSTER":           c.Opts.Cluster,
		"AMARULA_DATA_DIR":          n.DataDir,
		"AMARULA_LISTEN":            net.JoinHostPort(n.Host, fmt.Sprint(n.APIPort)),
		"AMARULA_ADVERTISE_URL":     n.URL,
		"AMARULA_GOSSIP_BIND":       net.JoinHostPort(n.Host, fmt.Sprint(n.GossipPort)),
		"AMARULA_GOSSIP_ADVERTISE":  net.JoinHostPort(n.Host, fmt.Sprint(n.GossipPort)),
		"AMARULA_JOIN":              strings.Join(join, ","),
		"AMARULA_ETCD_ENDPOINTS":    c.EtcdURL(),
		"AMARULA_REDIS_URL":         "redis://" + c.Redis.Addr + "/0",
		"AMARULA_ADMIN_KEY":         c.Opts.AdminKey,
		"AMARULA_LEASE_TTL":         c.Opts.LeaseTTL.String(),
		"AMARULA_WHATSAPP_URL":      c.Wasim.URL,
		"AMARULA_WHATSAPP_ROOT_KEY": c.Wasim.RootKey,
		"AMARULA_LOG_LEVEL":         c.Opts.LogLevel,
		"AMARULA_LOG_FORMAT":        "text",
	}
	if c.S3 != nil {
		settings["AMARULA_S3_ENDPOINT"] = "http://" + c.S3.Addr
		settings["AMARULA_S3_BUCKET"] = "amarula-media"
		settings["AMARULA_S3_ACCESS_KEY"] = "amarula"
		settings["AMARULA_S3_SECRET_KEY"] = "amarula-secret"
	}
	for k, v := range c.Opts.NodeEnv {
		settings[k] = v
	}
	for k, v := range extra {
		settings[k] = v
	}
	envList := []string{"PATH=/usr/bin:/bin:/usr/sbin:/sbin", "HOME=" + n.DataDir}
	keys := make([]string, 0, len(settings))
	for k := range settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		envList = append(envList, k+"="+settings[k])
	}
	n.Proc = &Proc{Name: n.Name, Bin: c.Opts.NodeBin, Env: envList, LogPath: filepath.Join(c.Dir, "logs", n.Name+".log")}
	if n.NS != nil {
		n.Proc.Netns = n.NS.Name
	}
	c.Env.Cleanup(n.close)
	if err := n.Start(); err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.nodes = append(c.nodes, n)
	c.mu.Unlock()
	if wait {
		if err := n.WaitReady(60 * time.Second); err != nil {
			return nil, err
		}
	}
	return n, nil
}

// WaitReady polls the node's /readyz until 200.
func (n *Node) WaitReady(timeout time.Duration) error {
	return Poll(timeout, 100*time.Millisecond, n.Name+" /readyz", func() error {
		if !n.Running() {
			return fmt.Errorf("%s exited: %v\n%s", n.Name, n.ExitState(), n.Tail())
		}
		return n.API.Ready()
	})
}

// Restart starts the node again (same name, ports, data dir) after it
// exited, and waits for /readyz.
func (n *Node) Restart(timeout time.Duration) error {
	if n.Running() {
		return fmt.Errorf("%s still running", n.Name)
	}
	if err := n.Start(); err != nil {
		return err
	}
	return n.WaitReady(timeout)
}

// Freeze sends SIGSTOP to a node (a zombie: GC pause, frozen VM).
func (c *Cluster) Freeze(n *Node) error {
	c.setAvoid(n.Name, true)
	return n.Signal(syscall.SIGSTOP)
}

// Thaw resumes a frozen node with SIGCONT.
func (c *Cluster) Thaw(n *Node) error {
	defer c.setAvoid(n.Name, false)
	return n.Signal(syscall.SIGCONT)
}

// DumpLogs prints the log tail of every process (on test failure).
func (c *Cluster) DumpLogs() {
	procs := []*Proc{}
	for _, s := range []*Server{c.Etcd, c.Redis, c.S3} {
		if s != nil {
			procs = append(procs, s.Proc)
		}
	}
	if c.Wasim != nil {
		procs = append(procs, c.Wasim.Proc)
	}
	for _, n := range c.Nodes() {
		procs = append(procs, n.Proc)
	}
	for _, p := range procs {
		tail := p.Tail()
		if len(tail) > 6000 {
			tail = tail[len(tail)-6000:]
		}
		c.Env.Logf("---- log tail of %s (full log: %s) ----\n%s", p.Name, p.LogPath, tail)
	}
}

// ErrNoNode is returned when no node runs.
var ErrNoNode = errors.New("no running node")

// setAvoid marks a node as frozen or cut off (or not any more): the
// harness sends its API calls to other nodes first.
func (c *Cluster) setAvoid(name string, on bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.avoid == nil {
		c.avoid = map[string]bool{}
	}
	if on {
		c.avoid[name] = true
	} else {
		delete(c.avoid, name)
	}
}

// serving returns the running nodes, the avoided ones last.
func (c *Cluster) serving() []*Node {
	var good, bad []*Node
	c.mu.Lock()
	avoid := maps.Clone(c.avoid)
	c.mu.Unlock()
	for _, n := range c.Running() {
		if avoid[n.Name] {
			bad = append(bad, n)
		} else {
			good = append(good, n)
		}
	}
	return append(good, bad...)
}

// anyAPI runs f against running nodes in turn (frozen or cut-off ones
// last) until one answers.
func (c *Cluster) anyAPI(f func(*Client) error) error {
	var last error = ErrNoNode
	for _, n := range c.serving() {
		if last = f(n.API); last == nil {
			return nil
		}
	}
	return last
}

// ctxTimeout is a bounded background context.
func ctxTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

// Store opens the cluster's Redis storage the way the nodes do (same key
// prefix), for checks that go below the API (fences, fenced writes). It
// is closed at cleanup.
func (c *Cluster) Store() (*redisstore.Store, error) {
	ctx, cancel := ctxTimeout(10 * time.Second)
	defer cancel()
	st, err := redisstore.New(ctx, "redis://"+c.Redis.Addr+"/0", redisstore.Options{Cluster: c.Opts.Cluster})
	if err != nil {
		return nil, err
	}
	c.Env.Cleanup(func() { _ = st.Close() })
	return st, nil
}
