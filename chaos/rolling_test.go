package chaos

import (
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/amarula/amarula/internal/testcluster"
)

// TestChaosRollingRestart restarts every node in turn (SIGTERM → graceful
// drain → exit → start again) while a phone keeps sending. No message may
// be lost or duplicated, no device connected twice; each hand-off is
// measured from SIGTERM to the device connected again on its new owner
// (an upper bound of the profile's unavailability).
func TestChaosRollingRestart(t *testing.T) {
	f := pick(form{profiles: 6, messages: 200, interval: 40 * time.Millisecond, ttl: 5 * time.Second},
		form{profiles: 30, messages: 1500, interval: 20 * time.Millisecond, ttl: 10 * time.Second})
	c := start(t, testcluster.Options{Nodes: 3, LeaseTTL: f.ttl})
	w, err := c.WatchOwners()
	must(t, err)
	ls, err := c.LinkMany("roll", f.profiles, 4)
	must(t, err)
	devOf := map[string]string{}
	for _, l := range ls {
		devOf[l.Profile] = l.DeviceJID
	}
	devices := testcluster.Devices(ls)
	before, _, err := c.DeviceTotals(devices)
	must(t, err)
	tr := c.StartTraffic(ls, f.messages, f.interval, 5*time.Minute)
	var handoffs []time.Duration
	var drains []time.Duration
	for _, n := range c.Nodes() {
		owned := w.OwnedBy(n.Name)
		var devs []string
		for _, p := range owned {
			devs = append(devs, devOf[p])
		}
		_, snap, err := c.DeviceTotals(nil)
		must(t, err)
		termAt := time.Now()
		type stopped struct {
			state *os.ProcessState
			err   error
			took  time.Duration
		}
		stopc := make(chan stopped, 1)
		go func() {
			st, err := n.Stop(30 * time.Second)
			stopc <- stopped{st, err, time.Since(termAt)}
		}()
		// Polled while the node drains: the hand-off is over when the
		// device is connected on its new owner, whatever the exit does.
		took, err := c.WaitReconnected(devs, snap, termAt, 30*time.Second)
		st := <-stopc
		must(t, err)
		must(t, st.err)
		drains = append(drains, st.took)
		if !st.state.Success() {
			t.Errorf("%s exited with %v after SIGTERM", n.Name, st.state)
		}
		for _, d := range took {
			handoffs = append(handoffs, d)
		}
		t.Logf("%s: %d profiles handed off, drain+exit %s, slowest reconnect %s", n.Name, len(owned),
			drains[len(drains)-1].Round(time.Millisecond), testcluster.Percentile(testcluster.Values(took), 100).Round(time.Millisecond))
		must(t, n.Restart(60*time.Second))
		must(t, c.WaitConnected(ls, 60*time.Second))
	}
	sent, sendErrs, lastErr := tr.Wait()
	if sendErrs > 0 {
		t.Errorf("%d phone sends failed (last: %v)", sendErrs, lastErr)
	}
	d, err := c.CheckStored(sent, 90*time.Second)
	must(t, err)
	out, dec, dup, err := c.SendFromProfiles(ls, "after-roll", 30*time.Second)
	must(t, err)
	after, _, err := c.DeviceTotals(devices)
	must(t, err)
	nodeDec, transientDec, phoneDec := checkDecrypt(t, c, sent)
	figures(t, "rolling-restart", "nodes", len(c.Nodes()), "profiles", len(ls), "handoffs", len(handoffs),
		"sent", d.Sent, "stored", d.Stored, "duplicated", d.Duplicated, "lost", d.Lost,
		"replies_sent", out, "replies_decrypted", dec, "replies_dup", dup,
		"decrypt_failures_nodes", nodeDec, "decrypt_transient_healed", transientDec, "decrypt_failures_phones", phoneDec,
		"fenced_writes", sum(c.FencedWrites()), "overlap_ms", after.OverlapMs-before.OverlapMs, "replaced", after.Replaced-before.Replaced,
		"handoff_p50", testcluster.Percentile(handoffs, 50), "handoff_p99", testcluster.Percentile(handoffs, 99),
		"handoff_max", testcluster.Percentile(handoffs, 100), "drain_exit_max", testcluster.Percentile(drains, 100))
	checkDelivery(t, d)
	if dec != out || dup != 0 {
		t.Errorf("replies after the rolling restart: sent %d, decrypted %d, duplicated %d", out, dec, dup)
	}
	if ov := after.OverlapMs - before.OverlapMs; ov != 0 {
		t.Errorf("overlap_ms_total grew by %d ms during graceful hand-offs", ov)
	}
	if p99 := testcluster.Percentile(handoffs, 99); p99 >= 2*time.Second {
		t.Errorf("graceful hand-off p99 %s, want < 2s", p99)
	}
	if p := w.Problems(); len(p) > 0 {
		t.Errorf("owner keys: %v", p)
	}
}

// TestChaosJoin adds a fourth node under traffic: profiles move to it
// gradually (rate-limited), each at most once, with no double connection.
func TestChaosJoin(t *testing.T) {
	f := pick(form{profiles: 12, messages: 300, interval: 40 * time.Millisecond, ttl: 5 * time.Second},
		form{profiles: 50, messages: 1500, interval: 20 * time.Millisecond, ttl: 10 * time.Second})
	c := start(t, testcluster.Options{Nodes: 3, LeaseTTL: f.ttl})
	w, err := c.WatchOwners()
	must(t, err)
	ls, err := c.LinkMany("join", f.profiles, 4)
	must(t, err)
	devices := testcluster.Devices(ls)
	before, _, err := c.DeviceTotals(devices)
	must(t, err)
	tr := c.StartTraffic(ls, f.messages, f.interval, 5*time.Minute)
	joinAt := time.Now()
	n4, err := c.AddNode(nil, true)
	must(t, err)
	// Rebalancing waits out the settle period (10 s) and then moves at
	// most MoveRate per second: wait until owners are stable for 5 s.
	lastChange := time.Now()
	lastCount := 0
	must(t, testcluster.Poll(120*time.Second, 250*time.Millisecond, "rebalance settled", func() error {
		ch := len(w.Since(joinAt))
		if ch != lastCount {
			lastCount, lastChange = ch, time.Now()
		}
		if len(w.OwnedBy(n4.Name)) == 0 || time.Since(lastChange) < 5*time.Second {
			return fmt.Errorf("%s owns %d, %d owner changes so far", n4.Name, len(w.OwnedBy(n4.Name)), ch)
		}
		return nil
	}))
	must(t, c.WaitConnected(ls, 60*time.Second))
	sent, sendErrs, lastErr := tr.Wait()
	if sendErrs > 0 {
		t.Errorf("%d phone sends failed (last: %v)", sendErrs, lastErr)
	}
	d, err := c.CheckStored(sent, 90*time.Second)
	must(t, err)
	after, _, err := c.DeviceTotals(devices)
	must(t, err)
	acq := w.Acquisitions(joinAt.Add(time.Millisecond))
	moved, thrash := 0, 0
	var first, last time.Time
	for _, ch := range w.Since(joinAt) {
		if ch.Owner == n4.Name {
			if first.IsZero() {
				first = ch.At
			}
			last = ch.At
		}
	}
	for p, k := range acq {
		moved++
		if k > 1 {
			thrash++
			t.Errorf("%s acquired %d times after the join, want at most once", p, k)
		}
	}
	rate := 0.0
	if span := last.Sub(first); span > 0 {
		rate = float64(moved-1) / span.Seconds()
	}
	nodeDec, transientDec, phoneDec := checkDecrypt(t, c, sent)
	figures(t, "join", "profiles", len(ls), "moved", moved, "moved_to_new", len(w.OwnedBy(n4.Name)), "thrash", thrash,
		"first_move_after_join", first.Sub(joinAt), "move_span", last.Sub(first), "move_rate_per_s", fmt.Sprintf("%.1f", rate),
		"sent", d.Sent, "stored", d.Stored, "duplicated", d.Duplicated, "lost", d.Lost,
		"decrypt_failures_nodes", nodeDec, "decrypt_transient_healed", transientDec, "decrypt_failures_phones", phoneDec,
		"fenced_writes", sum(c.FencedWrites()), "overlap_ms", after.OverlapMs-before.OverlapMs, "replaced", after.Replaced-before.Replaced)
	checkDelivery(t, d)
	if ov := after.OverlapMs - before.OverlapMs; ov != 0 {
		t.Errorf("overlap_ms_total grew by %d ms during rebalancing", ov)
	}
	if p := w.Problems(); len(p) > 0 {
		t.Errorf("owner keys: %v", p)
	}
}
