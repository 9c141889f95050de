// Command amarula-demo is what `make demo` runs: etcd, Redis, versitygw
// (when installed), wasim and three amarula-node processes on loopback
// (internal/testcluster), with data under ./demo_data (wiped at each
// start). It links a few profiles to simulated phones, exchanges a couple
// of messages, prints where to look, and runs until Ctrl-C, then stops the
// nodes gracefully and everything else.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/amarula/amarula/internal/testcluster"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "amarula-demo:", err)
		os.Exit(1)
	}
}

func run() error {
	dir := flag.String("dir", "demo_data", "data and logs of every process (wiped at start)")
	nodes := flag.Int("nodes", 3, "number of nodes")
	names := flag.String("profiles", "alice,bob,carol", "profiles to create and link")
	flag.Parse()

	abs, err := filepath.Abs(*dir)
	if err != nil {
		return err
	}
	if err := os.RemoveAll(abs); err != nil {
		return err
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return err
	}
	rt := &testcluster.Runtime{W: os.Stdout}
	defer rt.Close()
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, os.Interrupt, syscall.SIGTERM)

	fmt.Printf("Starting etcd, Redis, versitygw (if installed), wasim and %d nodes; data and logs under %s …\n", *nodes, abs)
	c, err := testcluster.Start(rt, testcluster.Options{
		Nodes: *nodes, Dir: abs, KeepDir: true, S3: true, LeaseTTL: 10 * time.Second,
		AdminKey: "demo-admin-key-change-me",
	})
	if err != nil {
		return err
	}
	defer stopNodes(c)
	peer, err := c.EnsurePeer()
	if err != nil {
		return err
	}
	var linked []testcluster.Linked
	for _, id := range strings.Split(*names, ",") {
		id = strings.TrimSpace(id)
		if id == "" {
			continue
		}
		l, err := c.LinkProfile(id, c.NextPhone())
		if err != nil {
			return fmt.Errorf("link %s: %w", id, err)
		}
		linked = append(linked, l)
		fmt.Printf("  linked profile %-8s to wasim phone %s (device %s)\n", id, l.Phone, l.DeviceJID)
	}
	if err := c.WaitConnected(linked, time.Minute); err != nil {
		return err
	}
	tr := c.StartTraffic(linked, 2*len(linked), 50*time.Millisecond, time.Minute)
	sent, _, _ := tr.Wait()
	d, err := c.CheckStored(sent, 30*time.Second)
	if err != nil {
		return err
	}
	fmt.Printf("  peer phone %s sent %d messages: %s\n", testcluster.PeerPhone, len(sent), d)
	n, dec, _, err := c.SendFromProfiles(linked, "demo", 30*time.Second)
	if err != nil {
		return err
	}
	fmt.Printf("  each profile replied through the API: %d sent, %d decrypted by the peer phone\n", n, dec)
	printGuide(c, linked, peer)

	<-stop
	fmt.Println("\nStopping: nodes drain (SIGTERM), then everything else …")
	return nil
}

// stopNodes sends SIGTERM to every node and waits for its graceful exit;
// the runtime's cleanups kill whatever is left.
func stopNodes(c *testcluster.Cluster) {
	for _, n := range c.Running() {
		if _, err := n.Stop(20 * time.Second); err != nil {
			fmt.Println("  ", err)
		}
	}
}

func printGuide(c *testcluster.Cluster, ls []testcluster.Linked, peer string) {
	n1 := c.Nodes()[0]
	key := c.Opts.AdminKey
	var b strings.Builder
	fmt.Fprintf(&b, "\n=== Amarula demo is running (Ctrl-C stops everything) ===\n\n")
	fmt.Fprintf(&b, "Nodes (any node answers any request; commands are forwarded to the owner):\n")
	for _, n := range c.Nodes() {
		fmt.Fprintf(&b, "  %-3s API %-24s log %s\n", n.Name, n.URL, n.LogPath)
	}
	fmt.Fprintf(&b, "\nAdmin key:      %s\n", key)
	fmt.Fprintf(&b, "Dashboard:      %s/   (paste the admin key)\n", n1.URL)
	fmt.Fprintf(&b, "wasim admin:    %s/admin/devices   (phones, devices, overlap_ms_total; docs/wasim.md)\n", c.Wasim.Admin.Base)
	fmt.Fprintf(&b, "etcd:           %s   Redis: redis://%s/0", c.EtcdURL(), c.Redis.Addr)
	if c.S3 != nil {
		fmt.Fprintf(&b, "   S3 (versitygw): http://%s", c.S3.Addr)
	}
	fmt.Fprintf(&b, "\nData and logs:  %s\n", c.Dir)
	fmt.Fprintf(&b, "\nProfiles: ")
	for _, l := range ls {
		fmt.Fprintf(&b, "%s (phone %s)  ", l.Profile, l.Phone)
	}
	fmt.Fprintf(&b, "\nPeer phone:     %s (%s)\n", testcluster.PeerPhone, peer)
	p := ls[0]
	fmt.Fprintf(&b, `
Try:
  export AK=%[1]s
  curl -s -H "Authorization: Bearer $AK" %[2]s/v1/cluster
  curl -s -H "Authorization: Bearer $AK" %[2]s/v1/profiles
  curl -s -H "Authorization: Bearer $AK" %[2]s/v1/profiles/%[3]s/messages
  curl -s -H "Authorization: Bearer $AK" -X POST %[2]s/v1/profiles/%[3]s/messages \
       -H 'Content-Type: application/json' -d '{"to":"%[4]s","text":"hello from the API"}' -i
  # the peer phone writes to %[3]s:
  curl -s -X POST %[5]s/admin/phones/%[6]s/messages -d '{"to":"%[7]s","text":"hi %[3]s"}'
  curl -s %[5]s/admin/phones/%[6]s/messages          # what the peer phone received
  # a new profile: create it, open the dashboard's QR view, or link it with a wasim phone:
  curl -s -H "Authorization: Bearer $AK" -X POST %[2]s/v1/profiles -d '{"id":"dave"}'
  curl -s -X POST %[5]s/admin/phones -d '{"phone":"15550009999","name":"Dave"}'
  QR=$(curl -s -H "Authorization: Bearer $AK" %[2]s/v1/profiles/dave/qr | sed 's/.*"code":"\([^"]*\)".*/\1/')
  curl -s -X POST %[5]s/admin/phones/15550009999/link -d "{\"qr\":\"$QR\"}"
  # move a profile, or kill a node and watch another take over:
  curl -s -H "Authorization: Bearer $AK" -X POST %[2]s/v1/profiles/%[3]s/move -d '{}'
  kill -9 %[8]d   # %[9]s
`, key, n1.URL, p.Profile, testcluster.PeerPhone+"@s.whatsapp.net", c.Wasim.Admin.Base, testcluster.PeerPhone, p.AccountJID, n1.Pid(), n1.Name)
	fmt.Print(b.String())
}
