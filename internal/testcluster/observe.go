package testcluster

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/amarula/amarula/lease"
)

// OwnerChange is one change of a profile's owner key in etcd.
type OwnerChange struct {
	At      time.Time
	Profile string
	Owner   string // "" when the key was deleted
	Token   int64  // create revision of the key (0 on delete)
}

// OwnerWatch records every change of the owner keys
// (/amarula/<cluster>/owners/) from etcd's watch, so a test can count
// moves per profile and check that tokens only grow.
type OwnerWatch struct {
	cli    *clientv3.Client
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	changes []OwnerChange
	current map[string]OwnerChange
	errs    []string
}

// WatchOwners starts the watch from the current state (initial owners
// are recorded as changes at the start time). Stop it with Close (also
// registered as a cleanup).
func (c *Cluster) WatchOwners() (*OwnerWatch, error) {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{c.EtcdURL()}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return nil, err
	}
	prefix := lease.OwnersPrefix(c.Opts.Cluster)
	ctx, cancel := context.WithCancel(context.Background())
	gctx, gcancel := context.WithTimeout(ctx, 5*time.Second)
	resp, err := cli.Get(gctx, prefix, clientv3.WithPrefix())
	gcancel()
	if err != nil {
		cancel()
		_ = cli.Close()
		return nil, err
	}
	w := &OwnerWatch{cli: cli, cancel: cancel, done: make(chan struct{}), current: map[string]OwnerChange{}}
	now := time.Now()
	for _, kv := range resp.Kvs {
		ch := OwnerChange{At: now, Profile: strings.TrimPrefix(string(kv.Key), prefix), Owner: string(kv.Value), Token: kv.CreateRevision}
		w.changes = append(w.changes, ch)
		w.current[ch.Profile] = ch
	}
	wch := cli.Watch(clientv3.WithRequireLeader(ctx), prefix, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1))
	go func() {
		defer close(w.done)
		for wr := range wch {
			at := time.Now()
			if err := wr.Err(); err != nil {
				w.mu.Lock()
				w.errs = append(w.errs, err.Error())
				w.mu.Unlock()
				continue
			}
			w.mu.Lock()
			for _, ev := range wr.Events {
				ch := OwnerChange{At: at, Profile: strings.TrimPrefix(string(ev.Kv.Key), prefix)}
				if ev.Type == clientv3.EventTypePut {
					ch.Owner, ch.Token = string(ev.Kv.Value), ev.Kv.CreateRevision
					if prev, ok := w.current[ch.Profile]; ok && prev.Owner != "" && prev.Token != ch.Token {
						w.errs = append(w.errs, fmt.Sprintf("%s: owner key replaced without a delete (%s→%s)", ch.Profile, prev.Owner, ch.Owner))
					}
				}
				w.changes = append(w.changes, ch)
				w.current[ch.Profile] = ch
			}
			w.mu.Unlock()
		}
	}()
	c.Env.Cleanup(w.Close)
	return w, nil
}

// Close stops the watch.
func (w *OwnerWatch) Close() {
	w.cancel()
	<-w.done
	_ = w.cli.Close()
}

// Owners returns the current owner of every profile with an owner key.
func (w *OwnerWatch) Owners() map[string]string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := map[string]string{}
	for p, ch := range w.current {
		if ch.Owner != "" {
			out[p] = ch.Owner
		}
	}
	return out
}

// Tokens returns the fencing token (owner key create revision) of every
// profile that has an owner now.
func (w *OwnerWatch) Tokens() map[string]int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := map[string]int64{}
	for p, ch := range w.current {
		if ch.Owner != "" {
			out[p] = ch.Token
		}
	}
	return out
}

// Since returns the changes recorded at or after t.
func (w *OwnerWatch) Since(t time.Time) []OwnerChange {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []OwnerChange
	for _, ch := range w.changes {
		if !ch.At.Before(t) {
			out = append(out, ch)
		}
	}
	return out
}

// Problems lists violations seen: tokens that did not grow, keys replaced
// without a delete, watch errors.
func (w *OwnerWatch) Problems() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := append([]string(nil), w.errs...)
	last := map[string]int64{}
	for _, ch := range w.changes {
		if ch.Owner == "" {
			continue
		}
		if prev, ok := last[ch.Profile]; ok && ch.Token < prev {
			out = append(out, fmt.Sprintf("%s: token went back %d → %d", ch.Profile, prev, ch.Token))
		}
		last[ch.Profile] = ch.Token
	}
	return out
}

// Acquisitions counts, per profile, the owner keys created at or after t
// (each is one acquisition by some node).
func (w *OwnerWatch) Acquisitions(t time.Time) map[string]int {
	out := map[string]int{}
	seen := map[string]int64{}
	for _, ch := range w.Since(t) {
		if ch.Owner != "" && seen[ch.Profile] != ch.Token {
			seen[ch.Profile] = ch.Token
			out[ch.Profile]++
		}
	}
	return out
}

// OwnedBy returns the profiles node owns now (per etcd).
func (w *OwnerWatch) OwnedBy(node string) []string {
	var out []string
	for p, o := range w.Owners() {
		if o == node {
			out = append(out, p)
		}
	}
	sort.Strings(out)
	return out
}

// Overlap sums overlap_ms_total, replaced_total and connections_total over
// the given devices (all when nil).
type Overlap struct {
	OverlapMs   int64
	Replaced    uint64
	Connections uint64
}

// DeviceTotals reads wasim's counters for devices.
func (c *Cluster) DeviceTotals(devices []string) (Overlap, map[string]Device, error) {
	devs, err := c.Wasim.Admin.Devices()
	if err != nil {
		return Overlap{}, nil, err
	}
	var o Overlap
	add := func(d Device) {
		o.OverlapMs += d.OverlapMsTotal
		o.Replaced += d.ReplacedTotal
		o.Connections += d.ConnectionsTotal
	}
	if devices == nil {
		for _, d := range devs {
			add(d)
		}
	} else {
		for _, j := range devices {
			add(devs[j])
		}
	}
	return o, devs, nil
}

// Devices returns the device JIDs of ls.
func Devices(ls []Linked) []string {
	out := make([]string, len(ls))
	for i, l := range ls {
		out[i] = l.DeviceJID
	}
	return out
}

// WaitReconnected polls wasim (every 50 ms) until each device is connected
// with more connections than in before, and returns, per device, the time
// from start to the first poll that saw it so.
func (c *Cluster) WaitReconnected(devices []string, before map[string]Device, start time.Time, timeout time.Duration) (map[string]time.Duration, error) {
	got := map[string]time.Duration{}
	err := Poll(timeout, 50*time.Millisecond, fmt.Sprintf("%d devices reconnected", len(devices)), func() error {
		devs, err := c.Wasim.Admin.Devices()
		if err != nil {
			return err
		}
		at := time.Since(start)
		var missing []string
		for _, j := range devices {
			if _, ok := got[j]; ok {
				continue
			}
			if d := devs[j]; d.Connected && d.ConnectionsTotal > before[j].ConnectionsTotal {
				got[j] = at
			} else {
				missing = append(missing, j)
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("not reconnected: %v", missing)
		}
		return nil
	})
	return got, err
}

// Percentile returns the p-th percentile (0–100, nearest rank) of ds.
func Percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	rank := int(math.Ceil(p/100*float64(len(s)))) - 1
	rank = max(0, min(rank, len(s)-1))
	return s[rank]
}

// Values returns the durations of a map.
func Values(m map[string]time.Duration) []time.Duration {
	out := make([]time.Duration, 0, len(m))
	for _, d := range m {
		out = append(out, d)
	}
	return out
}

// OwnershipSampler polls every running node's amarula_profiles_owned and
// records the largest excess of the sum over the number of profiles (two
// nodes both believing they own something) and for how long it was seen.
type OwnershipSampler struct {
	stop chan struct{}
	done chan struct{}

	mu        sync.Mutex
	maxExcess int
	excessFor time.Duration
	samples   int
}

// SampleOwnership starts the sampler (every interval) for total profiles;
// skip lists nodes not to ask (frozen ones would stall the sampler).
func (c *Cluster) SampleOwnership(total int, interval time.Duration, skip func(*Node) bool) *OwnershipSampler {
	s := &OwnershipSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		last := time.Now()
		for i := 0; i < 100000; i++ {
			sum := 0
			for _, n := range c.Running() {
				if skip != nil && skip(n) {
					continue
				}
				if m, err := n.API.Metrics(); err == nil {
					sum += int(m["amarula_profiles_owned"])
				}
			}
			now := time.Now()
			s.mu.Lock()
			s.samples++
			if ex := sum - total; ex > 0 {
				s.maxExcess = max(s.maxExcess, ex)
				s.excessFor += now.Sub(last)
			}
			s.mu.Unlock()
			last = now
			select {
			case <-s.stop:
				return
			case <-time.After(interval):
			}
		}
	}()
	c.Env.Cleanup(func() { s.Stop() })
	return s
}

// Stop ends the sampler; it returns the largest excess, how long an
// excess was seen, and the number of samples.
func (s *OwnershipSampler) Stop() (maxExcess int, excessFor time.Duration, samples int) {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.maxExcess, s.excessFor, s.samples
}
