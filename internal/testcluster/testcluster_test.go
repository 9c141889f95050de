package testcluster_test

import (
	"net/http"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/amarula/amarula/internal/testcluster"
	"github.com/amarula/amarula/internal/testenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestHarness starts a 3-node cluster, links two profiles through the
// API of different nodes, exchanges messages both ways and checks the
// harness's own observations (owners watch, wasim counters, 404s).
func TestHarness(t *testing.T) {
	testenv.NeedBinary(t, "etcd")
	testenv.NeedBinary(t, "redis-server")
	c, err := testcluster.Start(t, testcluster.Options{Nodes: 3, LeaseTTL: 5 * time.Second,
		NodeBin:  testenv.ProjectBinary(t, "amarula-node", "cmd/node"),
		WasimBin: testenv.ProjectBinary(t, "wasim", "cmd/wasim")})
	if err != nil {
		t.Fatal(err)
	}
	watch, err := c.WatchOwners()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.EnsurePeer(); err != nil {
		t.Fatal(err)
	}
	ls, err := c.LinkMany("h", 2, 2)
	if err != nil {
		t.Fatal(err)
	}
	owners := watch.Owners()
	for _, l := range ls {
		if owners[l.Profile] == "" {
			t.Errorf("%s: no owner key in etcd", l.Profile)
		}
	}
	tr := c.StartTraffic(ls, 6, 50*time.Millisecond, 30*time.Second)
	sent, sendErrs, lastErr := tr.Wait()
	if sendErrs > 0 {
		t.Fatalf("%d phone sends failed: %v", sendErrs, lastErr)
	}
	d, err := c.CheckStored(sent, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("harness: %s", d)
	if d.Stored != len(sent) || d.Duplicated != 0 || d.Lost != 0 {
		t.Fatalf("delivery %s (lost %v, duplicated %v)", d, d.LostIDs, d.DuplicatedIDs)
	}
	n, dec, dup, err := c.SendFromProfiles(ls, "h", 30*time.Second)
	if err != nil || dec != n || dup != 0 {
		t.Fatalf("outbound: sent %d decrypted %d dup %d: %v", n, dec, dup, err)
	}
	for _, node := range c.Nodes() {
		_, err := node.API.Profile("no-such-profile")
		if testcluster.StatusOf(err) != http.StatusNotFound {
			t.Errorf("%s: unknown profile answered %v, want 404", node.Name, err)
		}
	}
	ov, _, err := c.DeviceTotals(testcluster.Devices(ls))
	if err != nil {
		t.Fatal(err)
	}
	if ov.OverlapMs != 0 {
		t.Errorf("overlap_ms_total = %d, want 0", ov.OverlapMs)
	}
	if p := watch.Problems(); len(p) > 0 {
		t.Errorf("owner watch: %v", p)
	}
	nodes, phones := c.DecryptFailures()
	if len(nodes)+len(phones) != 0 {
		t.Errorf("decrypt failures: nodes %v, phones %v", nodes, phones)
	}
}
