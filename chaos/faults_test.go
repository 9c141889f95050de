package chaos

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/amarula/amarula/internal/testcluster"
)

// TestChaosEtcdDownAtStart: a node started while etcd is down starts
// not-ready (/readyz 503 saying why, one clear log line) and becomes ready
// — and useful — once etcd answers.
func TestChaosEtcdDownAtStart(t *testing.T) {
	c := start(t, testcluster.Options{Nodes: 0, LeaseTTL: 5 * time.Second})
	c.Etcd.Kill()
	n, err := c.AddNode(nil, false)
	must(t, err)
	var readyErr error
	must(t, testcluster.Poll(30*time.Second, 100*time.Millisecond, n.Name+" answers /readyz 503", func() error {
		if !n.Running() {
			t.Fatalf("%s exited with etcd down: %v\n%s", n.Name, n.ExitState(), n.Tail())
		}
		readyErr = n.API.Ready()
		if testcluster.StatusOf(readyErr) != http.StatusServiceUnavailable {
			return readyErr
		}
		return nil
	}))
	if !strings.Contains(readyErr.Error(), "etcd") {
		t.Errorf("/readyz with etcd down does not say why: %v", readyErr)
	}
	// Still down a little later: not ready, not dead.
	time.Sleep(2 * time.Second)
	if n.API.Ready() == nil || !n.Running() {
		t.Fatalf("%s ready or gone while etcd is down", n.Name)
	}
	restartAt := time.Now()
	must(t, c.Etcd.Restart(30*time.Second))
	must(t, n.WaitReady(60*time.Second))
	readyAfter := time.Since(restartAt)
	ls, err := c.LinkMany("etcddown", 1, 1)
	must(t, err)
	tr := c.StartTraffic(ls, 5, 20*time.Millisecond, 30*time.Second)
	sent, _, _ := tr.Wait()
	d, err := c.CheckStored(sent, 30*time.Second)
	must(t, err)
	figures(t, "etcd-down-at-start", "readyz_while_down", readyErr.Error(), "ready_after_etcd_restart", readyAfter,
		"sent", d.Sent, "stored", d.Stored, "lost", d.Lost)
	checkDelivery(t, d)
}

// TestChaosRedisRestart: Redis is killed under connected sessions while
// phones keep sending and restarted on the same port and data: sessions
// pause (nodes not ready) without corrupting state and resume; every
// message is stored exactly once and messages after recovery decrypt both
// ways. Also: an unknown profile is 404 on every node.
func TestChaosRedisRestart(t *testing.T) {
	f := pick(form{profiles: 3, messages: 60, interval: 50 * time.Millisecond, ttl: 5 * time.Second},
		form{profiles: 12, messages: 400, interval: 25 * time.Millisecond, ttl: 10 * time.Second})
	c := start(t, testcluster.Options{Nodes: 3, LeaseTTL: f.ttl})
	ls, err := c.LinkMany("redis", f.profiles, 3)
	must(t, err)
	for _, n := range c.Nodes() {
		_, err := n.API.Profile("no-such-profile")
		if testcluster.StatusOf(err) != http.StatusNotFound {
			t.Errorf("%s: GET of an unknown profile: %v, want 404", n.Name, err)
		}
	}
	devices := testcluster.Devices(ls)
	before, _, err := c.DeviceTotals(devices)
	must(t, err)
	tr := c.StartTraffic(ls, f.messages, f.interval, 2*time.Minute)
	must(t, tr.WaitCount(f.messages/4, time.Minute))
	c.Redis.Kill()
	downAt := time.Now()
	var notReady error
	must(t, testcluster.Poll(20*time.Second, 100*time.Millisecond, "nodes not ready without Redis", func() error {
		notReady = c.Nodes()[0].API.Ready()
		if notReady == nil {
			return fmt.Errorf("still ready")
		}
		return nil
	}))
	// Down for a while with messages arriving (they wait in wasim).
	must(t, tr.WaitCount(f.messages*3/4, time.Minute))
	must(t, c.Redis.Restart(30*time.Second))
	downFor := time.Since(downAt)
	for _, n := range c.Nodes() {
		must(t, n.WaitReady(60*time.Second))
	}
	must(t, c.WaitConnected(ls, 60*time.Second))
	recovered := time.Since(downAt)
	sent, sendErrs, lastErr := tr.Wait()
	if sendErrs > 0 {
		t.Errorf("%d phone sends failed (last: %v)", sendErrs, lastErr)
	}
	r := checkRecovered(t, c, ls, sent, "after-redis")
	after, _, err := c.DeviceTotals(devices)
	must(t, err)
	nodeDec, transientDec, phoneDec := checkDecrypt(t, c, r.sent)
	figures(t, "redis-restart", "profiles", len(ls), "redis_down_for", downFor, "all_connected_after", recovered,
		"readyz_while_down", notReady.Error(),
		"sent", r.d.Sent, "stored", r.d.Stored, "duplicated", r.d.Duplicated, "lost", r.d.Lost,
		"replies_sent", r.out, "replies_decrypted", r.dec, "replies_dup", r.dup,
		"decrypt_failures_nodes", nodeDec, "decrypt_transient_healed", transientDec, "decrypt_failures_phones", phoneDec, "overlap_ms", after.OverlapMs-before.OverlapMs)
	if ov := after.OverlapMs - before.OverlapMs; ov != 0 {
		t.Errorf("overlap_ms_total grew by %d ms", ov)
	}
}
