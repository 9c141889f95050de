// Package chaos holds the end-to-end chaos tests of the cluster: real
// etcd, Redis, wasim and amarula-node processes (internal/testcluster),
// killed, frozen, partitioned, restarted and joined while phones keep
// sending. Each test has a short form (make test) and a long form selected
// with AMARULA_CHAOS=long (make chaos). Figures are printed with t.Logf as
// "FIGURES <scenario> key=value …" lines; docs/reliability.md records them.
package chaos

import (
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/amarula/amarula/internal/testcluster"
	"github.com/amarula/amarula/internal/testenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// long reports whether the long forms run (make chaos).
func long() bool { return os.Getenv("AMARULA_CHAOS") == "long" }

// form is the size of a scenario.
type form struct {
	profiles int
	messages int
	interval time.Duration // between two phone sends
	ttl      time.Duration
}

// pick returns the short or the long form.
func pick(short, lng form) form {
	if long() {
		return lng
	}
	return short
}

// start starts a cluster for the test (skipping or failing like testenv
// when a server binary is missing).
func start(t *testing.T, o testcluster.Options) *testcluster.Cluster {
	t.Helper()
	testenv.NeedBinary(t, "etcd")
	testenv.NeedBinary(t, "redis-server")
	// The binaries of this tree: $AMARULA_BIN_DIR under make, else freshly
	// built (never a stale bin/ from an earlier build).
	if o.NodeBin == "" {
		o.NodeBin = testenv.ProjectBinary(t, "amarula-node", "cmd/node")
	}
	if o.WasimBin == "" {
		o.WasimBin = testenv.ProjectBinary(t, "wasim", "cmd/wasim")
	}
	if os.Getenv("AMARULA_CHAOS_KEEP") != "" {
		dir, err := os.MkdirTemp("", "amarula-chaos-")
		must(t, err)
		o.Dir = dir
		t.Logf("keeping data and logs in %s", dir)
	}
	c, err := testcluster.Start(t, o)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.EnsurePeer(); err != nil {
		t.Fatal(err)
	}
	return c
}

// must fails the test on err.
func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// figures logs one line of results the docs and CI read.
func figures(t *testing.T, scenario string, kv ...any) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "FIGURES %s form=%s", scenario, map[bool]string{true: "long", false: "short"}[long()])
	for i := 0; i+1 < len(kv); i += 2 {
		v := kv[i+1]
		if d, ok := v.(time.Duration); ok {
			v = d.Round(time.Millisecond)
		}
		fmt.Fprintf(&b, " %v=%v", kv[i], v)
	}
	t.Log(b.String())
}

// checkDelivery fails the test when a message was lost or duplicated.
func checkDelivery(t *testing.T, d testcluster.Delivery) {
	t.Helper()
	if d.Lost != 0 || d.Duplicated != 0 || d.Stored != d.Sent {
		t.Errorf("delivery: %s; lost %v; duplicated %v", d, d.LostIDs, d.DuplicatedIDs)
	}
}

// checkDecrypt fails the test on a decryption failure that did not heal.
// A node-side failure is transient only when its message is among the
// sent ones (checkDelivery proves each of those stored exactly once, i.e.
// redelivered and decrypted); a phone-side one only when the phone
// decrypted the message in the end (re-sent on its retry receipt). It
// returns the failures that did not heal and the transient ones.
func checkDecrypt(t *testing.T, c *testcluster.Cluster, sent ...[]testcluster.Sent) (permanent, transient, phones int) {
	t.Helper()
	ids, pf := c.DecryptFailures()
	known := map[string]bool{}
	for _, ss := range sent {
		for _, s := range ss {
			known[s.ID] = true
		}
	}
	var bad []string
	for _, id := range ids {
		if known[id] {
			transient++
		} else {
			bad = append(bad, "node:"+id)
		}
	}
	for _, f := range pf {
		if c.Healed(f) {
			transient++
		} else {
			bad = append(bad, "phone "+f.Phone+":"+f.ID)
			phones++
		}
	}
	if len(bad) > 0 {
		t.Errorf("decrypt failures that did not heal: %v", bad)
	}
	return len(bad) - phones, transient, phones
}

// pinAll moves every profile to node and waits until etcd says node owns
// them all and they are connected.
func pinAll(t *testing.T, c *testcluster.Cluster, w *testcluster.OwnerWatch, ls []testcluster.Linked, node string) {
	t.Helper()
	for _, l := range ls {
		must(t, testcluster.Poll(20*time.Second, 200*time.Millisecond, "move "+l.Profile, func() error {
			return c.API().Move(l.Profile, node)
		}))
	}
	must(t, testcluster.Poll(60*time.Second, 100*time.Millisecond, "all profiles on "+node, func() error {
		if n := len(w.OwnedBy(node)); n != len(ls) {
			return fmt.Errorf("%s owns %d of %d", node, n, len(ls))
		}
		return nil
	}))
	must(t, c.WaitConnected(ls, 60*time.Second))
}

// sortedKeys lists a map's keys in order (for stable messages).
func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// sum adds a map's values.
func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// recovered is what every scenario checks once the fault is over.
type recovered struct {
	d             testcluster.Delivery // the traffic during the fault and a burst after it
	sent          []testcluster.Sent
	out, dec, dup int // replies from every profile: sent, decrypted by the phone, twice
}

// checkRecovered waits until the traffic sent during the fault is stored,
// sends a second burst from the phone and one reply from every profile,
// and checks all of it arrived exactly once (and decrypted).
func checkRecovered(t *testing.T, c *testcluster.Cluster, ls []testcluster.Linked, sent []testcluster.Sent, tag string) recovered {
	t.Helper()
	d, err := c.CheckStored(sent, 90*time.Second)
	must(t, err)
	tr := c.StartTraffic(ls, 2*len(ls), 20*time.Millisecond, time.Minute)
	sent2, _, _ := tr.Wait()
	d2, err := c.CheckStored(sent2, 60*time.Second)
	must(t, err)
	r := recovered{sent: append(append([]testcluster.Sent(nil), sent...), sent2...)}
	r.d = testcluster.Delivery{Sent: d.Sent + d2.Sent, Stored: d.Stored + d2.Stored, Duplicated: d.Duplicated + d2.Duplicated,
		Lost: d.Lost + d2.Lost, LostIDs: append(d.LostIDs, d2.LostIDs...), DuplicatedIDs: append(d.DuplicatedIDs, d2.DuplicatedIDs...)}
	r.out, r.dec, r.dup, err = c.SendFromProfiles(ls, tag, 60*time.Second)
	must(t, err)
	checkDelivery(t, r.d)
	if r.dec != r.out || r.dup != 0 {
		t.Errorf("replies (%s): sent %d, decrypted %d, duplicated %d", tag, r.out, r.dec, r.dup)
	}
	return r
}
