package testcluster

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"math/big"
	"os/exec"
	"strings"
	"sync"
)

// Network is a bridge with one /24 created for one cluster, plus a network
// namespace per node attached to it with a veth pair (docs/testing.md).
// Names carry a random suffix so parallel runs never collide; everything is
// deleted at cleanup. Only addresses of this /24 are ever targeted.
type Network struct {
	Bridge   string
	Prefix   string // "10.X.Y."
	ServerIP string // Redis, wasim (and versitygw) bind here
	EtcdIP   string // etcd alone, so it can be cut alone

	env Env
	id  string

	mu  sync.Mutex
	nss []*Namespace
}

// Namespace is one node's network namespace.
type Namespace struct {
	Name string
	IP   string
	veth string
	net  *Network

	mu     sync.Mutex
	blocks map[string]bool
}

func run(args ...string) error {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// NetnsSupported reports whether this process may create network
// namespaces (root, `ip` present); the error says why not.
func NetnsSupported() error {
	if _, err := exec.LookPath("ip"); err != nil {
		return fmt.Errorf("the ip command is missing: %w", err)
	}
	var b [3]byte
	_, _ = rand.Read(b[:])
	name := "amprobe" + hex.EncodeToString(b[:])
	if err := run("ip", "netns", "add", name); err != nil {
		return fmt.Errorf("ip netns add is not permitted here: %w", err)
	}
	return run("ip", "netns", "del", name)
}

// pickSubnet picks a random 10.X.Y.0/24 that no route of the host uses.
func pickSubnet() (string, error) {
	out, err := exec.Command("ip", "-4", "route", "show", "table", "all").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("ip route: %v: %s", err, out)
	}
	routes := string(out)
	for i := 0; i < 50; i++ {
		x, _ := rand.Int(rand.Reader, big.NewInt(150))
		y, _ := rand.Int(rand.Reader, big.NewInt(250))
		prefix := fmt.Sprintf("10.%d.%d.", 100+x.Int64(), 1+y.Int64())
		if !strings.Contains(routes, prefix) {
			return prefix, nil
		}
	}
	return "", fmt.Errorf("no free 10.x.y.0/24 found")
}

// NewNetwork creates the bridge with the server and etcd addresses.
// capacity bounds the number of namespaces (nodes).
func NewNetwork(env Env, capacity int) (*Network, error) {
	if err := NetnsSupported(); err != nil {
		return nil, err
	}
	prefix, err := pickSubnet()
	if err != nil {
		return nil, err
	}
	var b [3]byte
	_, _ = rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	n := &Network{Bridge: "amb" + id, Prefix: prefix, ServerIP: prefix + "1", EtcdIP: prefix + "2", env: env, id: id}
	env.Cleanup(n.teardown)
	for _, args := range [][]string{
		{"ip", "link", "add", n.Bridge, "type", "bridge"},
		{"ip", "link", "set", n.Bridge, "up"},
		{"ip", "addr", "add", n.ServerIP + "/24", "dev", n.Bridge},
		{"ip", "addr", "add", n.EtcdIP + "/24", "dev", n.Bridge},
	} {
		if err := run(args...); err != nil {
			return nil, err
		}
	}
	env.Logf("netns: bridge %s with %s0/24 (servers %s, etcd %s)", n.Bridge, prefix, n.ServerIP, n.EtcdIP)
	return n, nil
}

// AddNamespace creates the next node namespace (IP prefix+"1k").
func (n *Network) AddNamespace() (*Namespace, error) {
	n.mu.Lock()
	k := len(n.nss) + 1
	ns := &Namespace{Name: fmt.Sprintf("am%s-n%d", n.id, k), IP: fmt.Sprintf("%s%d", n.Prefix, 10+k),
		veth: fmt.Sprintf("av%s%d", n.id, k), net: n, blocks: map[string]bool{}}
	n.nss = append(n.nss, ns)
	n.mu.Unlock()
	if k > 200 {
		return nil, fmt.Errorf("too many namespaces")
	}
	for _, args := range [][]string{
		{"ip", "netns", "add", ns.Name},
		{"ip", "link", "add", ns.veth, "type", "veth", "peer", "name", "eth0", "netns", ns.Name},
		{"ip", "link", "set", ns.veth, "master", n.Bridge, "up"},
		{"ip", "netns", "exec", ns.Name, "ip", "addr", "add", ns.IP + "/24", "dev", "eth0"},
		{"ip", "netns", "exec", ns.Name, "ip", "link", "set", "eth0", "up"},
		{"ip", "netns", "exec", ns.Name, "ip", "link", "set", "lo", "up"},
	} {
		if err := run(args...); err != nil {
			return nil, err
		}
	}
	return ns, nil
}

// teardown deletes every namespace and the bridge (after the processes in
// them were killed: cleanups run newest first).
func (n *Network) teardown() {
	n.mu.Lock()
	nss := n.nss
	n.mu.Unlock()
	for _, ns := range nss {
		_ = run("ip", "link", "del", ns.veth)
		_ = run("ip", "netns", "del", ns.Name)
	}
	_ = run("ip", "link", "del", n.Bridge)
}

// Block makes ip unreachable from this namespace (blackhole route).
func (ns *Namespace) Block(ip string) error {
	if !strings.HasPrefix(ip, ns.net.Prefix) {
		return fmt.Errorf("refusing to block %s: not an address of the test bridge", ip)
	}
	ns.mu.Lock()
	defer ns.mu.Unlock()
	if ns.blocks[ip] {
		return nil
	}
	if err := run("ip", "netns", "exec", ns.Name, "ip", "route", "add", "blackhole", ip+"/32"); err != nil {
		return err
	}
	ns.blocks[ip] = true
	return nil
}

// Unblock removes the blackhole route to ip.
func (ns *Namespace) Unblock(ip string) error {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	if !ns.blocks[ip] {
		return nil
	}
	delete(ns.blocks, ip)
	return run("ip", "netns", "exec", ns.Name, "ip", "route", "del", "blackhole", ip+"/32")
}

// CutFromEtcd makes node unable to reach etcd (peers and Redis stay
// reachable).
func (c *Cluster) CutFromEtcd(node *Node) error {
	if node.NS == nil {
		return fmt.Errorf("%s runs on loopback: partitions need Options.Netns", node.Name)
	}
	c.setAvoid(node.Name, true)
	return node.NS.Block(c.Net.EtcdIP)
}

// CutFromPeers cuts node from every other node, both directions (etcd,
// Redis and wasim stay reachable).
func (c *Cluster) CutFromPeers(node *Node) error {
	if node.NS == nil {
		return fmt.Errorf("%s runs on loopback: partitions need Options.Netns", node.Name)
	}
	c.setAvoid(node.Name, true)
	for _, o := range c.Nodes() {
		if o == node || o.NS == nil {
			continue
		}
		if err := node.NS.Block(o.IPAddr()); err != nil {
			return err
		}
		if err := o.NS.Block(node.IPAddr()); err != nil {
			return err
		}
	}
	return nil
}

// Heal removes every blackhole route of every namespace.
func (c *Cluster) Heal() error {
	var errs []string
	for _, n := range c.Nodes() {
		c.setAvoid(n.Name, false)
		if n.NS == nil {
			continue
		}
		n.NS.mu.Lock()
		ips := make([]string, 0, len(n.NS.blocks))
		for ip := range n.NS.blocks {
			ips = append(ips, ip)
		}
		n.NS.mu.Unlock()
		for _, ip := range ips {
			if err := n.NS.Unblock(ip); err != nil {
				errs = append(errs, err.Error())
			}
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("heal: %s", strings.Join(errs, "; "))
	}
	return nil
}

// IPAddr is the address the node listens on.
func (n *Node) IPAddr() string { return n.Host }
