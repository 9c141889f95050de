package node

// Cluster benchmarks (make bench, suite "cluster"): real processes — etcd,
// redis-server, wasim and amarula-node binaries — started by
// internal/testcluster. Each benchmark measures once (run with -benchtime
// 1x); every wait is bounded. Figures go to b.ReportMetric and to the log
// as one "FIGURES" line. Sizes: AMARULA_BENCH_PROFILES (default 200).

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/amarula/amarula/internal/testcluster"
	"github.com/amarula/amarula/internal/testenv"
)

// benchProfiles is the number of profiles of the cluster benchmarks.
func benchProfiles(def int) int {
	if v, err := strconv.Atoi(os.Getenv("AMARULA_BENCH_PROFILES")); err == nil && v > 0 {
		return min(v, 1000)
	}
	return def
}

// benchStart starts a cluster of real processes for a benchmark.
func benchStart(b *testing.B, o testcluster.Options) *testcluster.Cluster {
	b.Helper()
	testenv.NeedBinary(b, "etcd")
	testenv.NeedBinary(b, "redis-server")
	if o.NodeBin == "" {
		o.NodeBin = testenv.ProjectBinary(b, "amarula-node", "cmd/node")
	}
	if o.WasimBin == "" {
		o.WasimBin = testenv.ProjectBinary(b, "wasim", "cmd/wasim")
	}
	if o.LogLevel == "" {
		o.LogLevel = "warn"
	}
	c, err := testcluster.Start(b, o)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := c.EnsurePeer(); err != nil {
		b.Fatal(err)
	}
	return c
}

// benchRedisPool optionally sizes the nodes' go-redis pool (pool_size in
// AMARULA_REDIS_URL) from AMARULA_BENCH_REDIS_POOL: a number, or "auto"
// for profiles + 64. Default: go-redis's own pool (10 × GOMAXPROCS). Before
// 2995d4c every owned profile's webhook tail held a pooled connection in
// XREAD BLOCK and the default pool starved above ≈20 profiles per node;
// the override reproduces the sized-pool runs of that time. Running nodes
// are stopped (they own nothing yet) and restarted with the new URL; nodes
// added later get it too. It returns the size set (0: default).
func benchRedisPool(b *testing.B, c *testcluster.Cluster, profiles int) int {
	b.Helper()
	size := 0
	switch v := os.Getenv("AMARULA_BENCH_REDIS_POOL"); v {
	case "":
	case "auto":
		size = profiles + 64
	default:
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			b.Fatalf("AMARULA_BENCH_REDIS_POOL=%q: want a number or auto", v)
		}
		size = n
	}
	if size == 0 {
		return 0
	}
	url := fmt.Sprintf("redis://%s/0?pool_size=%d", c.Redis.Addr, size)
	if c.Opts.NodeEnv == nil {
		c.Opts.NodeEnv = map[string]string{}
	}
	c.Opts.NodeEnv["AMARULA_REDIS_URL"] = url
	for _, n := range c.Running() {
		if _, err := n.Stop(30 * time.Second); err != nil {
			b.Fatal(err)
		}
		for i, e := range n.Env {
			if strings.HasPrefix(e, "AMARULA_REDIS_URL=") {
				n.Env[i] = "AMARULA_REDIS_URL=" + url
			}
		}
		if err := n.Restart(60 * time.Second); err != nil {
			b.Fatal(err)
		}
	}
	return size
}

// benchFigures logs one FIGURES line (key=value pairs).
func benchFigures(b *testing.B, name string, kv ...any) {
	b.Helper()
	var s strings.Builder
	fmt.Fprintf(&s, "FIGURES %s", name)
	for i := 0; i+1 < len(kv); i += 2 {
		v := kv[i+1]
		if d, ok := v.(time.Duration); ok {
			v = d.Round(time.Millisecond)
		}
		if f, ok := v.(float64); ok {
			v = strconv.FormatFloat(f, 'f', 2, 64)
		}
		fmt.Fprintf(&s, " %v=%v", kv[i], v)
	}
	b.Log(s.String())
}

// rssBytes reads VmRSS of a process from /proc.
func rssBytes(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			fs := strings.Fields(rest)
			if len(fs) == 0 {
				break
			}
			kb, err := strconv.ParseInt(fs[0], 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmRSS for pid %d", pid)
}

// nodeMemory returns a node's RSS and Go heap in use (/metrics).
func nodeMemory(b *testing.B, n *testcluster.Node) (rss, heap float64) {
	b.Helper()
	r, err := rssBytes(n.Pid())
	if err != nil {
		b.Fatal(err)
	}
	m, err := n.API.Metrics()
	if err != nil {
		b.Fatal(err)
	}
	return float64(r), m["go_memstats_heap_inuse_bytes"]
}

// redisInfo runs INFO <section> on a Redis server (raw RESP, no client
// library) and returns its fields.
func redisInfo(addr, section string) (map[string]string, error) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(conn, "*2\r\n$4\r\nINFO\r\n$%d\r\n%s\r\n", len(section), section); err != nil {
		return nil, err
	}
	r := bufio.NewReader(conn)
	hdr, err := r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	if !strings.HasPrefix(hdr, "$") {
		return nil, fmt.Errorf("INFO: %q", hdr)
	}
	size, err := strconv.Atoi(strings.TrimSpace(hdr[1:]))
	if err != nil {
		return nil, err
	}
	buf := make([]byte, size+2)
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, line := range strings.Split(string(buf[:size]), "\r\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && !strings.HasPrefix(line, "#") {
			out[k] = v
		}
	}
	return out, nil
}

// redisCalls returns total_commands_processed and calls per command
// (commandstats) of a Redis server.
func redisCalls(b *testing.B, addr string) (total float64, per map[string]float64) {
	b.Helper()
	st, err := redisInfo(addr, "stats")
	if err != nil {
		b.Fatal(err)
	}
	total, _ = strconv.ParseFloat(st["total_commands_processed"], 64)
	cs, err := redisInfo(addr, "commandstats")
	if err != nil {
		b.Fatal(err)
	}
	per = map[string]float64{}
	for k, v := range cs { // cmdstat_xadd:calls=3,usec=...
		name, ok := strings.CutPrefix(k, "cmdstat_")
		if !ok {
			continue
		}
		for _, f := range strings.Split(v, ",") {
			if c, ok := strings.CutPrefix(f, "calls="); ok {
				per[name], _ = strconv.ParseFloat(c, 64)
			}
		}
	}
	return total, per
}

// redisUsedMemory is INFO memory used_memory of a Redis server.
func redisUsedMemory(b *testing.B, addr string) float64 {
	b.Helper()
	m, err := redisInfo(addr, "memory")
	if err != nil {
		b.Fatal(err)
	}
	v, err := strconv.ParseFloat(m["used_memory"], 64)
	if err != nil {
		b.Fatal(err)
	}
	return v
}

// etcdCounterNames are the etcd server counters the takeover benchmark
// reads: gRPC requests handled (every method, unary and closed streams),
// and the MVCC operations behind them.
var etcdCounterNames = []string{
	"grpc_server_handled_total", "grpc_server_started_total",
	"etcd_mvcc_put_total", "etcd_mvcc_txn_total", "etcd_mvcc_range_total", "etcd_mvcc_delete_total",
	"etcd_server_proposals_committed_total",
}

// etcdCounters reads etcd's own /metrics.
func etcdCounters(b *testing.B, c *testcluster.Cluster) map[string]float64 {
	b.Helper()
	m, err := testcluster.NewClient(c.EtcdURL(), "").Metrics()
	if err != nil {
		b.Fatal(err)
	}
	out := map[string]float64{}
	for _, k := range etcdCounterNames {
		if v, ok := m[k]; ok {
			out[k] = v
		}
	}
	return out
}

// BenchmarkClusterProfilesPerNode: one amarula-node process holding N idle
// linked profiles against wasim. Memory per session is the RSS delta
// (/proc/<pid>/status VmRSS) and the Go heap delta
// (go_memstats_heap_inuse_bytes) divided by N, once after linking and once
// after a restart that reconnects the N sessions from stored credentials
// (the restart also gives the connect time for N). Redis used_memory
// (INFO memory) before and after linking, divided by N, is the storage
// side of a freshly linked profile (credentials, Signal state, catalogue;
// no messages yet).
func BenchmarkClusterProfilesPerNode(b *testing.B) {
	n := benchProfiles(200)
	for i := 0; i < b.N; i++ {
		if i > 0 {
			break // one measurement per run (-benchtime 1x)
		}
		c := benchStart(b, testcluster.Options{Nodes: 1})
		pool := benchRedisPool(b, c, n)
		node := c.Nodes()[0]
		time.Sleep(2 * time.Second) // idle baseline
		rss0, heap0 := nodeMemory(b, node)
		redis0 := redisUsedMemory(b, c.Redis.Addr)

		linkStart := time.Now()
		ls, err := c.LinkMany("idle", n, 8)
		if err != nil {
			b.Fatal(err)
		}
		linkDur := time.Since(linkStart)
		time.Sleep(3 * time.Second)
		rss1, heap1 := nodeMemory(b, node)
		redis1 := redisUsedMemory(b, c.Redis.Addr)

		// Restart: the node reconnects N sessions from storage.
		if _, err := node.Stop(60 * time.Second); err != nil {
			b.Fatal(err)
		}
		devices := testcluster.Devices(ls)
		_, before, err := c.DeviceTotals(nil)
		if err != nil {
			b.Fatal(err)
		}
		restartAt := time.Now()
		if err := node.Restart(60 * time.Second); err != nil {
			b.Fatal(err)
		}
		took, err := c.WaitReconnected(devices, before, restartAt, 3*time.Minute)
		if err != nil {
			b.Fatal(err)
		}
		ds := testcluster.Values(took)
		all := testcluster.Percentile(ds, 100)
		if err := c.WaitConnected(ls, time.Minute); err != nil {
			b.Fatal(err)
		}
		time.Sleep(3 * time.Second)
		rss2, heap2 := nodeMemory(b, node)

		fn := float64(n)
		rssPer := max(rss1-rss0, rss2-rss0) / fn
		b.ReportMetric(float64(n), "profiles")
		b.ReportMetric((rss1-rss0)/fn/1024, "KiB-RSS/session-linked")
		b.ReportMetric((rss2-rss0)/fn/1024, "KiB-RSS/session-restarted")
		b.ReportMetric((heap1-heap0)/fn/1024, "KiB-heap/session-linked")
		b.ReportMetric((heap2-heap0)/fn/1024, "KiB-heap/session-restarted")
		b.ReportMetric(float64(1<<30)/rssPer, "profiles/GiB")
		b.ReportMetric((redis1-redis0)/fn/1024, "KiB-redis/profile")
		b.ReportMetric(all.Seconds(), "s-connect-all")
		b.ReportMetric(fn/all.Seconds(), "connects/s")
		b.ReportMetric(linkDur.Seconds(), "s-link-all")
		benchFigures(b, "profiles-per-node", "profiles", n, "redis_pool_size", pool,
			"rss_idle_MiB", rss0/(1<<20), "rss_linked_MiB", rss1/(1<<20), "rss_restarted_MiB", rss2/(1<<20),
			"heap_idle_MiB", heap0/(1<<20), "heap_linked_MiB", heap1/(1<<20), "heap_restarted_MiB", heap2/(1<<20),
			"redis_used_idle_MiB", redis0/(1<<20), "redis_used_linked_MiB", redis1/(1<<20),
			"redis_per_profile_KiB", (redis1-redis0)/fn/1024,
			"rss_per_session_KiB", rssPer/1024, "profiles_per_GiB", float64(1<<30)/rssPer,
			"link_all", linkDur, "restart_connect_p50", testcluster.Percentile(ds, 50),
			"restart_connect_p99", testcluster.Percentile(ds, 99), "restart_connect_all", all)
	}
}

// BenchmarkClusterTakeover: three node processes; n1 alone links M
// profiles, n2 and n3 join, and n1 is killed with SIGKILL before the
// survivors start rebalancing (SettlePeriod 10 s). Reported: takeovers per
// second (M / time from the kill until wasim sees every device connected
// again), p50/p99 of that time per profile, and etcd requests per takeover
// from etcd's own /metrics (deltas over the takeover window, minus the
// background rate measured over an idle window just before the kill).
func BenchmarkClusterTakeover(b *testing.B) {
	m := benchProfiles(200)
	for i := 0; i < b.N; i++ {
		if i > 0 {
			break
		}
		c := benchStart(b, testcluster.Options{Nodes: 1, LeaseTTL: 10 * time.Second})
		pool := benchRedisPool(b, c, m)
		w, err := c.WatchOwners()
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(w.Close)
		ls, err := c.LinkMany("take", m, 8)
		if err != nil {
			b.Fatal(err)
		}
		victim := c.Nodes()[0]
		for j := 0; j < 2; j++ {
			if _, err := c.AddNode(nil, true); err != nil {
				b.Fatal(err)
			}
		}
		// Both peers must have joined memberlist before the kill.
		if err := testcluster.Poll(30*time.Second, 100*time.Millisecond, "3 members", func() error {
			v, err := victim.API.Cluster()
			if err != nil {
				return err
			}
			if len(v.Nodes) < 3 {
				return fmt.Errorf("%d members", len(v.Nodes))
			}
			return nil
		}); err != nil {
			b.Fatal(err)
		}
		// Background etcd traffic of three idle nodes over a short window.
		idle0 := etcdCounters(b, c)
		idleStart := time.Now()
		time.Sleep(2 * time.Second)
		idle1 := etcdCounters(b, c)
		idleDur := time.Since(idleStart)
		if owned := len(w.OwnedBy(victim.Name)); owned != m {
			b.Fatalf("%s owns %d of %d profiles before the kill (rebalanced early?)", victim.Name, owned, m)
		}
		devices := testcluster.Devices(ls)
		_, before, err := c.DeviceTotals(nil)
		if err != nil {
			b.Fatal(err)
		}
		e0 := etcdCounters(b, c)
		killedAt := time.Now()
		victim.Kill() // SIGKILL to the process group
		took, err := c.WaitReconnected(devices, before, killedAt, 3*time.Minute)
		if err != nil {
			b.Fatal(err)
		}
		window := time.Since(killedAt)
		e1 := etcdCounters(b, c)
		ds := testcluster.Values(took)
		all := testcluster.Percentile(ds, 100)
		// The first takeover happens only after failure detection and the
		// lease revocation: the rate is also given from the first connect.
		first := testcluster.Percentile(ds, 0)
		fm := float64(m)
		b.ReportMetric(fm, "profiles")
		b.ReportMetric(fm/all.Seconds(), "takeovers/s")
		if all > first {
			b.ReportMetric((fm-1)/(all-first).Seconds(), "takeovers/s-after-first")
		}
		b.ReportMetric(testcluster.Percentile(ds, 50).Seconds(), "s-p50-connected")
		b.ReportMetric(testcluster.Percentile(ds, 99).Seconds(), "s-p99-connected")
		b.ReportMetric(all.Seconds(), "s-all-connected")
		kv := []any{"profiles", m, "redis_pool_size", pool, "first_connected", first, "p50", testcluster.Percentile(ds, 50),
			"p99", testcluster.Percentile(ds, 99), "all_connected", all, "takeovers_per_s", fm / all.Seconds()}
		keys := make([]string, 0, len(e1))
		for k := range e1 {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			bg := (idle1[k] - idle0[k]) / idleDur.Seconds() * window.Seconds()
			d := e1[k] - e0[k]
			per := (d - bg) / fm
			kv = append(kv, k+"_delta", d, k+"_background", bg, k+"_per_takeover", per)
			switch k {
			case "grpc_server_handled_total":
				b.ReportMetric(per, "etcd-grpc-handled/takeover")
			case "etcd_mvcc_put_total":
				b.ReportMetric(per, "etcd-puts/takeover")
			case "etcd_mvcc_txn_total":
				b.ReportMetric(per, "etcd-txns/takeover")
			case "etcd_mvcc_range_total":
				b.ReportMetric(per, "etcd-ranges/takeover")
			case "etcd_mvcc_delete_total":
				b.ReportMetric(per, "etcd-deletes/takeover")
			case "etcd_server_proposals_committed_total":
				b.ReportMetric(per, "etcd-proposals/takeover")
			}
		}
		benchFigures(b, "takeover", kv...)
		owners := w.Owners()
		byNode := map[string]int{}
		for _, l := range ls {
			byNode[owners[l.Profile]]++
		}
		b.Logf("owners after takeover: %v (window %s)", byNode, window.Round(time.Millisecond))
	}
}

// BenchmarkClusterRedisCommandsPerMessage: one node with a few linked
// profiles; the peer phone sends K texts; Redis total_commands_processed
// (and INFO commandstats) delta over the burst, minus the idle rate
// measured just before (the per-profile webhook tails poll XREAD BLOCK),
// divided by K.
func BenchmarkClusterRedisCommandsPerMessage(b *testing.B) {
	const profiles, k = 4, 200
	for i := 0; i < b.N; i++ {
		if i > 0 {
			break
		}
		c := benchStart(b, testcluster.Options{Nodes: 1})
		ls, err := c.LinkMany("rcmd", profiles, 4)
		if err != nil {
			b.Fatal(err)
		}
		time.Sleep(2 * time.Second)
		idleT0, idleP0 := redisCalls(b, c.Redis.Addr)
		idleStart := time.Now()
		time.Sleep(3 * time.Second)
		idleT1, idleP1 := redisCalls(b, c.Redis.Addr)
		idleDur := time.Since(idleStart)

		t0, p0 := redisCalls(b, c.Redis.Addr)
		start := time.Now()
		tr := c.StartTraffic(ls, k, 10*time.Millisecond, time.Minute)
		sent, sendErrs, lastErr := tr.Wait()
		if sendErrs > 0 {
			b.Fatalf("%d sends failed: %v", sendErrs, lastErr)
		}
		d, err := c.CheckStored(sent, 90*time.Second)
		if err != nil {
			b.Fatal(err)
		}
		dur := time.Since(start)
		t1, p1 := redisCalls(b, c.Redis.Addr)
		// CheckStored reads through the API: those reads are in the
		// delta too; reported separately (see the per-command list).
		rate := (idleT1 - idleT0) / idleDur.Seconds()
		bg := rate * dur.Seconds()
		per := (t1 - t0 - bg) / float64(len(sent))
		b.ReportMetric(float64(len(sent)), "messages")
		b.ReportMetric(per, "redis-cmds/msg")
		b.ReportMetric((t1-t0)/float64(len(sent)), "redis-cmds/msg-raw")
		type cmd struct {
			name string
			per  float64
		}
		var cmds []cmd
		for name, v := range p1 {
			dv := v - p0[name] - (idleP1[name]-idleP0[name])/idleDur.Seconds()*dur.Seconds()
			if dv/float64(len(sent)) >= 0.05 {
				cmds = append(cmds, cmd{name, dv / float64(len(sent))})
			}
		}
		sort.Slice(cmds, func(a, b int) bool { return cmds[a].per > cmds[b].per })
		var list []string
		for _, c := range cmds {
			list = append(list, fmt.Sprintf("%s=%.2f", c.name, c.per))
		}
		benchFigures(b, "redis-commands-per-message", "profiles", profiles, "sent", d.Sent, "stored", d.Stored,
			"duplicated", d.Duplicated, "lost", d.Lost, "window", dur, "idle_cmds_per_s", rate,
			"cmds_delta", t1-t0, "background", bg, "cmds_per_msg", per)
		b.Logf("per message by command (idle rate removed): %s", strings.Join(list, " "))
	}
}
