package chaos

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/amarula/amarula/internal/testcluster"
)

// TestChaosPartition runs each node in its own network namespace on a
// bridge created by the test and cuts links with blackhole routes:
//
//	(a) the owner of the most profiles loses etcd but keeps its peers:
//	    it self-fences before its lease can expire, the others take over
//	    once it has expired;
//	(b) the owner of the most profiles loses its peers but keeps etcd:
//	    the majority revokes its lease and takes over, the isolated node
//	    (no quorum) acquires nothing.
//
// In both, wasim must never see two connections of a device at once, the
// owner keys only move forward, and the majority keeps serving: messages
// sent during the partition are stored exactly once and replies decrypt.
func TestChaosPartition(t *testing.T) {
	if err := testcluster.NetnsSupported(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("network namespaces are required in CI: %v", err)
		}
		t.Skipf("skipping the partition scenarios: %v (needs root and `ip netns add`)", err)
	}
	f := pick(form{profiles: 6, messages: 240, interval: 50 * time.Millisecond, ttl: 5 * time.Second},
		form{profiles: 30, messages: 1500, interval: 25 * time.Millisecond, ttl: 10 * time.Second})
	c := start(t, testcluster.Options{Nodes: 3, LeaseTTL: f.ttl, Netns: true})
	w, err := c.WatchOwners()
	must(t, err)
	ls, err := c.LinkMany("part", f.profiles, 4)
	must(t, err)
	devOf := map[string]string{}
	for _, l := range ls {
		devOf[l.Profile] = l.DeviceJID
	}
	devices := testcluster.Devices(ls)
	baseline, _, err := c.DeviceTotals(devices)
	must(t, err)
	sampler := c.SampleOwnership(len(ls), 200*time.Millisecond, nil)
	tr := c.StartTraffic(ls, f.messages, f.interval, 5*time.Minute)

	busiest := func() *testcluster.Node {
		var best *testcluster.Node
		for _, n := range c.Running() {
			if best == nil || len(w.OwnedBy(n.Name)) > len(w.OwnedBy(best.Name)) {
				best = n
			}
		}
		return best
	}
	phase := func(name string, cut func(*testcluster.Node) error, timeout time.Duration) time.Duration {
		victim := busiest()
		owned := w.OwnedBy(victim.Name)
		var devs []string
		for _, p := range owned {
			devs = append(devs, devOf[p])
		}
		ovBefore, snap, err := c.DeviceTotals(devices)
		must(t, err)
		revokesBefore := victim.CountLog("revoked lease of dead node")
		cutAt := time.Now()
		must(t, cut(victim))
		took, err := c.WaitReconnected(devs, snap, cutAt, timeout)
		must(t, err)
		// The cut-off node holds nothing now and acquires nothing while
		// cut (sampled for 3 s).
		for i, until := 0, time.Now().Add(3*time.Second); i < 100 && time.Now().Before(until); i++ {
			if o := w.OwnedBy(victim.Name); len(o) > 0 {
				t.Errorf("%s: cut-off %s owns %v", name, victim.Name, o)
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		readyErr := victim.API.Ready()
		// The cut-off node is the minority: it must not revoke anyone.
		minorityRevokes := victim.LogLines("revoked lease of dead node")[revokesBefore:]
		out, dec, dup, err := c.SendFromProfiles(ls, "during-"+name, 30*time.Second)
		must(t, err)
		healAt := time.Now()
		must(t, c.Heal())
		must(t, victim.WaitReady(60*time.Second))
		must(t, c.WaitConnected(ls, 60*time.Second))
		ovAfter, _, err := c.DeviceTotals(devices)
		must(t, err)
		ds := testcluster.Values(took)
		figures(t, "partition-"+name, "victim", victim.Name, "victim_profiles", len(owned),
			"victim_readyz_while_cut", fmt.Sprintf("%q", errString(readyErr)),
			"replies_sent", out, "replies_decrypted", dec, "replies_dup", dup,
			"minority_revocations", len(minorityRevokes), "overlap_ms", ovAfter.OverlapMs-ovBefore.OverlapMs, "replaced", ovAfter.Replaced-ovBefore.Replaced,
			"takeover_p50", testcluster.Percentile(ds, 50), "takeover_p99", testcluster.Percentile(ds, 99),
			"takeover_max", testcluster.Percentile(ds, 100), "healed_after", healAt.Sub(cutAt), "lease_ttl", f.ttl)
		if len(minorityRevokes) > 0 {
			t.Errorf("%s: the cut-off node %s (no quorum) revoked leases of majority members:\n%s", name, victim.Name, strings.Join(minorityRevokes, "\n"))
		}
		if dec != out || dup != 0 {
			t.Errorf("%s: replies sent %d, decrypted %d, duplicated %d", name, out, dec, dup)
		}
		if ov := ovAfter.OverlapMs - ovBefore.OverlapMs; ov != 0 {
			t.Errorf("%s: overlap_ms_total grew by %d ms: two owners connected at once", name, ov)
		}
		if len(owned) > 0 && readyErr == nil && name == "etcd" {
			t.Errorf("%s: the node cut from etcd answered /readyz 200", name)
		}
		return testcluster.Percentile(ds, 100)
	}
	phase("etcd", c.CutFromEtcd, 3*f.ttl+30*time.Second)
	phase("peers", c.CutFromPeers, 3*f.ttl+30*time.Second)

	sent, sendErrs, lastErr := tr.Wait()
	excess, excessFor, samples := sampler.Stop()
	if sendErrs > 0 {
		t.Errorf("%d phone sends failed (last: %v)", sendErrs, lastErr)
	}
	d, err := c.CheckStored(sent, 90*time.Second)
	must(t, err)
	end, _, err := c.DeviceTotals(devices)
	must(t, err)
	nodeDec, transientDec, phoneDec := checkDecrypt(t, c, sent)
	figures(t, "partition", "profiles", len(ls), "sent", d.Sent, "stored", d.Stored, "duplicated", d.Duplicated, "lost", d.Lost,
		"decrypt_failures_nodes", nodeDec, "decrypt_transient_healed", transientDec, "decrypt_failures_phones", phoneDec, "fenced_writes", sum(c.FencedWrites()),
		"overlap_ms", end.OverlapMs-baseline.OverlapMs, "owned_sum_excess", excess, "owned_excess_for", excessFor, "samples", samples)
	checkDelivery(t, d)
	if p := w.Problems(); len(p) > 0 {
		t.Errorf("owner keys: %v", p)
	}
}

func errString(err error) string {
	if err == nil {
		return "ready"
	}
	return err.Error()
}
