package chaos

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/amarula/amarula/internal/testcluster"
	"github.com/amarula/amarula/storage"
)

// TestChaosZombie: SIGSTOP the owner of every profile past its lease TTL,
// let the profiles fail over, then SIGCONT it. The zombie must stop its
// sessions without reconnecting them (every new wasim connection after
// SIGCONT matches a new owner key in etcd), its late writes are fenced,
// and the ratchets stay intact: messages both ways decrypt afterwards.
//
// While the zombie is frozen its sockets stay open, so wasim sees the new
// owner's login as a second connection and answers the frozen one with
// 440 "replaced": that window (ReplaceGrace + StreamErrorCloseDelay,
// ≈700 ms per device) is the only overlap allowed, and only before SIGCONT.
func TestChaosZombie(t *testing.T) {
	f := pick(form{profiles: 4, messages: 60, interval: 40 * time.Millisecond, ttl: 5 * time.Second},
		form{profiles: 20, messages: 400, interval: 20 * time.Millisecond, ttl: 10 * time.Second})
	c := start(t, testcluster.Options{Nodes: 3, LeaseTTL: f.ttl})
	w, err := c.WatchOwners()
	must(t, err)
	ls, err := c.LinkMany("zombie", f.profiles, 4)
	must(t, err)
	zombie := c.Nodes()[0]
	pinAll(t, c, w, ls, zombie.Name)
	devices := testcluster.Devices(ls)
	before, devsBefore, err := c.DeviceTotals(devices)
	must(t, err)
	zombieTokens := w.Tokens()

	tr := c.StartTraffic(ls, f.messages, f.interval, 2*time.Minute)
	must(t, tr.WaitCount(f.messages/4, time.Minute))
	frozenAt := time.Now()
	must(t, c.Freeze(zombie))
	thawed := false
	t.Cleanup(func() {
		if !thawed {
			_ = c.Thaw(zombie)
		}
	})
	took, err := c.WaitReconnected(devices, devsBefore, frozenAt, 3*f.ttl+30*time.Second)
	must(t, err)
	// Stay frozen past the TTL in any case.
	if d := time.Until(frozenAt.Add(f.ttl + time.Second)); d > 0 {
		time.Sleep(d)
	}
	for p, o := range w.Owners() {
		if o == zombie.Name {
			t.Errorf("%s still owned by the frozen node", p)
		}
	}
	atThaw, devsAtThaw, err := c.DeviceTotals(devices)
	must(t, err)
	thawedAt := time.Now()
	must(t, c.Thaw(zombie))
	thawed = true
	// The zombie notices its lease is gone, stops its sessions, grants a
	// new lease and becomes ready again.
	must(t, zombie.WaitReady(30*time.Second))
	halted := zombie.CountLog("session halted")
	// A late write of the zombie, carrying its token, against the live
	// store: refused, and the fence is the new owner's token.
	refused := probeFence(t, c, ls, zombieTokens, w.Tokens())
	sent, sendErrs, lastErr := tr.Wait()
	if sendErrs > 0 {
		t.Errorf("%d phone sends failed (last: %v)", sendErrs, lastErr)
	}
	// Pinned profiles return to the zombie once it is eligible again, by
	// graceful hand-off: wait for that before judging connections.
	must(t, testcluster.Poll(60*time.Second, 200*time.Millisecond, "profiles back on "+zombie.Name, func() error {
		if n := len(w.OwnedBy(zombie.Name)); n != len(ls) {
			return fmt.Errorf("%s owns %d of %d", zombie.Name, n, len(ls))
		}
		return nil
	}))
	must(t, c.WaitConnected(ls, 60*time.Second))
	// Ratchets after the zombie episode: phone → profile and back.
	r := checkRecovered(t, c, ls, sent, "after-zombie")

	after, devsAfter, err := c.DeviceTotals(devices)
	must(t, err)
	acq := w.Acquisitions(thawedAt)
	var unexplained []string
	for _, l := range ls {
		extra := int(devsAfter[l.DeviceJID].ConnectionsTotal - devsAtThaw[l.DeviceJID].ConnectionsTotal)
		if extra > acq[l.Profile] {
			unexplained = append(unexplained, fmt.Sprintf("%s: %d connections, %d acquisitions", l.Profile, extra, acq[l.Profile]))
		}
	}
	fenced := c.FencedWrites()[zombie.Name]
	fencedLogged := c.FencedLogLines()[zombie.Name]
	nodeDec, transientDec, phoneDec := checkDecrypt(t, c, r.sent)
	ds := testcluster.Values(took)
	figures(t, "zombie", "profiles", len(ls), "sent", r.d.Sent, "stored", r.d.Stored,
		"duplicated", r.d.Duplicated, "lost", r.d.Lost,
		"replies_sent", r.out, "replies_decrypted", r.dec, "replies_dup", r.dup,
		"decrypt_failures_nodes", nodeDec, "decrypt_transient_healed", transientDec, "decrypt_failures_phones", phoneDec,
		"zombie_fenced_writes_metric", fenced, "zombie_fenced_log_lines", fencedLogged, "late_writes_refused", fmt.Sprintf("%d/%d", refused, len(ls)), "sessions_halted_logged", halted,
		"overlap_ms_frozen", atThaw.OverlapMs-before.OverlapMs, "overlap_ms_after_thaw", after.OverlapMs-atThaw.OverlapMs,
		"replaced_frozen", atThaw.Replaced-before.Replaced, "replaced_after_thaw", after.Replaced-atThaw.Replaced,
		"failover_p50", testcluster.Percentile(ds, 50), "failover_p99", testcluster.Percentile(ds, 99),
		"failover_max", testcluster.Percentile(ds, 100), "lease_ttl", f.ttl)
	if len(unexplained) > 0 {
		t.Errorf("the zombie reconnected sessions it no longer owned: %v", unexplained)
	}
	if ov := after.OverlapMs - atThaw.OverlapMs; ov != 0 {
		t.Errorf("overlap after SIGCONT: %d ms (the zombie's sessions must be gone, hand-offs back graceful)", ov)
	}
	// The frozen sockets are replaced once each; more would mean repeated
	// double connections.
	if r := atThaw.Replaced - before.Replaced; r > uint64(len(ls)) {
		t.Errorf("replaced %d times while frozen, want at most once per device (%d)", r, len(ls))
	}
	if ov := atThaw.OverlapMs - before.OverlapMs; ov > int64(len(ls))*1500 {
		t.Errorf("overlap while frozen %d ms, want at most the 440 window per device", ov)
	}
	if p := w.Problems(); len(p) > 0 {
		t.Errorf("owner keys: %v", p)
	}
}

// probeFence writes, for each profile, one value with the token the
// zombie held (old) straight into the cluster's Redis: each must be
// refused with ErrFenced, and the fence must be the new owner's token.
func probeFence(t *testing.T, c *testcluster.Cluster, ls []testcluster.Linked, old, cur map[string]int64) int {
	t.Helper()
	st, err := c.Store()
	must(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	refused := 0
	for _, l := range ls {
		fence, err := st.Fence(ctx, l.Profile)
		must(t, err)
		if int64(fence) < cur[l.Profile] || int64(fence) <= old[l.Profile] {
			t.Errorf("%s: fence %d, zombie token %d, new owner token %d", l.Profile, fence, old[l.Profile], cur[l.Profile])
		}
		err = st.Put(ctx, l.Profile, storage.Token(old[l.Profile]), "chaos_probe", "late", []byte("zombie"))
		if errors.Is(err, storage.ErrFenced) {
			refused++
		} else {
			t.Errorf("%s: a write with the zombie's token %d: %v, want ErrFenced", l.Profile, old[l.Profile], err)
		}
	}
	return refused
}
