package chaos

import (
	"testing"
	"time"

	"github.com/amarula/amarula/internal/testcluster"
)

// TestChaosKillOwner: kill -9 the owner of every profile while a phone
// keeps sending to all of them. Every profile must be connected again on a
// survivor, every message stored exactly once, nothing undecryptable, no
// double connection in wasim; failover time (kill → wasim sees the device
// connected again) is reported as p50/p99.
func TestChaosKillOwner(t *testing.T) {
	f := pick(form{profiles: 6, messages: 80, interval: 40 * time.Millisecond, ttl: 5 * time.Second},
		form{profiles: 50, messages: 1000, interval: 15 * time.Millisecond, ttl: 10 * time.Second})
	c := start(t, testcluster.Options{Nodes: 3, LeaseTTL: f.ttl})
	w, err := c.WatchOwners()
	must(t, err)
	ls, err := c.LinkMany("kill", f.profiles, 4)
	must(t, err)
	victim := c.Nodes()[0]
	pinAll(t, c, w, ls, victim.Name)
	devices := testcluster.Devices(ls)
	before, _, err := c.DeviceTotals(devices)
	must(t, err)
	_, devsBefore, err := c.DeviceTotals(nil)
	must(t, err)

	sampler := c.SampleOwnership(len(ls), 200*time.Millisecond, func(n *testcluster.Node) bool { return n == victim })
	tr := c.StartTraffic(ls, f.messages, f.interval, 2*time.Minute)
	must(t, tr.WaitCount(f.messages/4, time.Minute)) // a quarter of the traffic before the crash
	killedAt := time.Now()
	victim.Kill()
	took, err := c.WaitReconnected(devices, devsBefore, killedAt, 60*time.Second)
	must(t, err)
	ds := testcluster.Values(took)
	p50, p99, pmax := testcluster.Percentile(ds, 50), testcluster.Percentile(ds, 99), testcluster.Percentile(ds, 100)
	figures(t, "kill-9-failover", "profiles", len(ls), "failover_p50", p50, "failover_p99", p99, "failover_max", pmax, "lease_ttl", f.ttl)
	sent, sendErrs, lastErr := tr.Wait()
	excess, excessFor, samples := sampler.Stop()
	if sendErrs > 0 {
		t.Errorf("%d phone sends failed (last: %v)", sendErrs, lastErr)
	}
	for p, o := range w.Owners() {
		if o == victim.Name {
			t.Errorf("%s still owned by the killed node", p)
		}
	}
	must(t, c.WaitConnected(ls, 30*time.Second))
	// Long form: the survivors hold 25 profiles each and work through
	// the backlog slowly (see docs/reliability.md, Redis pool); a message
	// stored late is not lost.
	d, err := c.CheckStored(sent, map[bool]time.Duration{false: 90 * time.Second, true: 5 * time.Minute}[long()])
	must(t, err)
	figures(t, "kill-9-delivery", "profiles", len(ls), "sent", d.Sent, "stored", d.Stored, "duplicated", d.Duplicated, "lost", d.Lost,
		"send_errors", sendErrs)
	_ = c.SendLatencies()
	out, dec, dup, err := c.SendFromProfiles(ls, "after-kill", 60*time.Second)
	must(t, err)
	sendP99 := testcluster.Percentile(c.SendLatencies(), 99)
	after, _, err := c.DeviceTotals(devices)
	must(t, err)
	nodeDec, transientDec, phoneDec := checkDecrypt(t, c, sent)
	figures(t, "kill-9", "profiles", len(ls), "sent", d.Sent, "stored", d.Stored, "duplicated", d.Duplicated, "lost", d.Lost,
		"replies_sent", out, "replies_decrypted", dec, "replies_dup", dup, "reply_send_p99", sendP99,
		"decrypt_failures_nodes", nodeDec, "decrypt_transient_healed", transientDec, "decrypt_failures_phones", phoneDec,
		"fenced_writes", sum(c.FencedWrites()), "overlap_ms", after.OverlapMs-before.OverlapMs,
		"replaced", after.Replaced-before.Replaced, "owned_sum_excess", excess, "owned_excess_for", excessFor, "samples", samples,
		"failover_p50", p50, "failover_p99", p99, "failover_max", pmax, "lease_ttl", f.ttl)
	checkDelivery(t, d)
	if dec != out || dup != 0 {
		t.Errorf("replies after failover: sent %d, decrypted %d, duplicated %d", out, dec, dup)
	}
	// The survivors now hold every profile: an API send must still be
	// quick (with 25+ profiles per node the Redis pool starves today).
	if sendP99 >= 5*time.Second {
		t.Errorf("API send on the survivors: p99 %s, want < 5s", sendP99)
	}
	if ov := after.OverlapMs - before.OverlapMs; ov != 0 {
		t.Errorf("overlap_ms_total grew by %d ms: two connections of a device were open at once", ov)
	}
	if p := w.Problems(); len(p) > 0 {
		t.Errorf("owner keys: %v", p)
	}
	// The target is p99 < 5 s with a 10 s TTL; failover does not wait for
	// the TTL (the dead node's lease is revoked), so it holds for 5 s too.
	if p99 >= 5*time.Second {
		t.Errorf("failover p99 %s, want < 5s", p99)
	}
}
