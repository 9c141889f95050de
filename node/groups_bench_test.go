package node

import (
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.mau.fi/whatsmeow/types"

	"github.com/amarula/amarula/wasim"
)

// BenchmarkGroupSend measures a group send through the API — POST
// /v1/profiles/{id}/messages to a group of 10, 100 and 1,000 participants
// (the linked account plus simulated phones with one device each) — until
// the 202: whatsmeow encrypts the message once with its sender key and
// the sender key distribution once per participant device (pkmsg/msg), the
// node stores the sent message, wasim fans out and acks. Reported per send:
// ms/send (mean latency), p50-ms, max-ms, cpu-ms/send (CPU time of the
// whole test process per send: node, storage and the in-process wasim,
// whose phones decrypt every copy before the ack) and first-send-ms (the
// first send to the group, which also fetches every participant's device
// list and prekey bundle and starts a Signal session with each device).
// Storage is bolt; GROUP_BENCH_STORE=redis uses Redis.
func BenchmarkGroupSend(b *testing.B) {
	kind := storeKinds[0]
	if os.Getenv("GROUP_BENCH_STORE") == "redis" {
		kind = storeKinds[1]
	}
	for _, size := range []int{10, 100, 1000} {
		var env *groupBench
		b.Run(strconv.Itoa(size), func(sb *testing.B) {
			if env == nil {
				env = newGroupBench(parentTB{TB: sb, parent: b}, kind, size)
				sb.Logf("group of %d: first send %.0f ms", size, env.first.Seconds()*1000)
			}
			env.run(sb)
		})
	}
}

type groupBench struct {
	sim    *sim
	api    *apiClient
	gid    types.JID
	phones []*wasim.Phone
	first  time.Duration
}

const groupBenchProfile = "gbench"

func newGroupBench(t testing.TB, k storeKind, size int) *groupBench {
	s := startSim(t)
	// Members: the gateway's account, the peer, and size-2 more phones.
	phones := []*wasim.Phone{s.peer}
	for i := 0; len(phones) < size-1; i++ {
		p, err := s.srv.CreatePhone(fmt.Sprintf("1555200%04d", i), fmt.Sprintf("P%d", i))
		if err != nil {
			t.Fatal(err)
		}
		phones = append(phones, p)
	}
	n := startNode(t, nodeConfig(s, newBackend(t, k), "gbench"))
	n.api.createProfile(groupBenchProfile, nil)
	n.api.pair(s, groupBenchProfile)
	gid, err := s.srv.CreateGroup("bench", s.peer, append([]*wasim.Phone{s.own}, phones[1:]...)...)
	if err != nil {
		t.Fatal(err)
	}
	g := &groupBench{sim: s, api: n.api, gid: gid, phones: phones}
	start := time.Now()
	id := g.send(t, "first")
	g.first = time.Since(start)
	g.checkDelivered(t, id)
	return g
}

func (g *groupBench) send(t testing.TB, text string) string {
	status, raw, _ := g.api.do(http.MethodPost, "/v1/profiles/"+groupBenchProfile+"/messages",
		map[string]any{"to": g.gid.String(), "text": text}, nil)
	if status != http.StatusAccepted {
		t.Fatalf("group send: %d %s", status, raw)
	}
	return string(raw)
}

// checkDelivered checks that the last phone decrypted the message of the
// send answer raw (wasim delivers to phones before it acks: no wait).
func (g *groupBench) checkDelivered(t testing.TB, raw string) {
	last := g.phones[len(g.phones)-1]
	if !slices.ContainsFunc(last.Messages(0), func(m wasim.ReceivedMessage) bool {
		return m.Chat == g.gid.String() && strings.Contains(raw, `"`+m.ID+`"`)
	}) {
		t.Fatalf("the last member did not decrypt %s", raw)
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func (g *groupBench) run(b *testing.B) {
	lat := make([]time.Duration, 0, b.N)
	var raw string
	b.ResetTimer()
	cpu0 := cpuTime()
	for i := range b.N {
		start := time.Now()
		raw = g.send(b, fmt.Sprintf("bench %d", i))
		lat = append(lat, time.Since(start))
	}
	cpu := cpuTime() - cpu0
	b.StopTimer()
	g.checkDelivered(b, raw)
	slices.Sort(lat)
	var sum time.Duration
	for _, d := range lat {
		sum += d
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(sum)/float64(len(lat)), "ms/send")
	b.ReportMetric(ms(lat[len(lat)/2]), "p50-ms")
	b.ReportMetric(ms(lat[len(lat)-1]), "max-ms")
	b.ReportMetric(ms(cpu)/float64(b.N), "cpu-ms/send")
	b.ReportMetric(ms(g.first), "first-send-ms")
}
