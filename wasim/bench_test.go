package wasim

import (
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	waBinary "go.mau.fi/whatsmeow/binary"
	"go.mau.fi/whatsmeow/proto/waWa6"
	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/util/keys"
)

// addFakeDevice links a companion with random keys and n one-time prekeys
// without running a client (benchmarks and load tests).
func (s *Server) addFakeDevice(p *Phone, noise *keys.KeyPair, prekeys int) *device {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := p.acct
	a.nextIdx++
	d := &device{acct: a, idx: a.nextIdx, noisePub: *noise.Pub, regID: 1, keyIndex: uint32(a.nextIdx), linked: true}
	copy(d.identity[:], randomBytes(32))
	copy(d.skey[:], randomBytes(32))
	d.prekeys = randomBytes(prekeys * preKeyRecordSize)
	d.deviceIdentity = randomBytes(200)
	a.devices[d.idx] = d
	return d
}

// rawLogin connects as d with its Noise key and turns on live delivery.
func rawLogin(tb testing.TB, h *harness, d *device, noise *keys.KeyPair) *rawClient {
	tb.Helper()
	r := dialRaw(tb, h)
	user, _ := strconv.ParseUint(d.acct.user, 10, 64)
	n := r.handshakeWith(noise, &waWa6.ClientPayload{
		Username: proto.Uint64(user), Device: proto.Uint32(uint32(d.idx)),
		Passive: proto.Bool(true), Pull: proto.Bool(true),
	})
	if n.Tag != "success" {
		tb.Fatalf("login: %v", n)
	}
	must(tb, r.sendNode(waBinary.Node{Tag: "iq", Attrs: waBinary.Attrs{
		"id": "active", "type": "set", "xmlns": "passive", "to": types.ServerJID,
	}, Content: []waBinary.Node{{Tag: "active"}}}))
	return r
}

// Benchmarks here measure a fixed minimum batch whatever b.N is, so that
// `-benchtime 1x` (scripts/bench.sh) still reports meaningful rates.
const (
	minRouteBatch  = 5000
	minDeviceBatch = 2000
)

// BenchmarkRouteMessages measures companion-to-companion routing through
// the server: decode, fan-out, queue, transport encryption, the server ack
// to the sender and the receiver's receipt that dequeues the stanza.
func BenchmarkRouteMessages(b *testing.B) {
	n := max(b.N, minRouteBatch)
	h := newHarness(b)
	alice, _ := h.srv.CreatePhone("15550001111", "Alice")
	bob, _ := h.srv.CreatePhone("15550002222", "Bob")
	na, nb := keys.NewKeyPair(), keys.NewKeyPair()
	da := h.srv.addFakeDevice(alice, na, 10)
	db := h.srv.addFakeDevice(bob, nb, 10)
	ra, rb := rawLogin(b, h, da, na), rawLogin(b, h, db, nb)

	var received, acked atomic.Int64
	recvDone := make(chan struct{})
	go func() {
		defer close(recvDone)
		for {
			n, err := rb.readNode()
			if err != nil {
				return
			}
			if n.Tag == "message" {
				received.Add(1)
				_ = rb.sendNode(waBinary.Node{Tag: "receipt", Attrs: waBinary.Attrs{"id": n.Attrs["id"], "to": n.Attrs["from"]}})
			}
		}
	}()
	ackDone := make(chan struct{})
	go func() {
		defer close(ackDone)
		for {
			n, err := ra.readNode()
			if err != nil {
				return
			}
			if n.Tag == "ack" {
				acked.Add(1)
			}
		}
	}()
	enc := randomBytes(200)
	to := bob.JID()
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < n; i++ {
		err := ra.sendNode(waBinary.Node{Tag: "message", Attrs: waBinary.Attrs{"id": "3EB0" + strconv.Itoa(i), "to": to, "type": "text"},
			Content: []waBinary.Node{{Tag: "participants", Content: []waBinary.Node{{Tag: "to", Attrs: waBinary.Attrs{"jid": db.jid()},
				Content: []waBinary.Node{{Tag: "enc", Attrs: waBinary.Attrs{"v": "2", "type": "msg"}, Content: enc}}}}}}})
		if err != nil {
			b.Fatal(err)
		}
	}
	poll(b, 120*time.Second, "all messages routed", func() bool { return received.Load() >= int64(n) && acked.Load() >= int64(n) })
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(n)/elapsed.Seconds(), "msgs/s")
	poll(b, 10*time.Second, "queue drained", func() bool { return h.srv.Devices()[1].Queued == 0 })
	ra.ws.CloseNow()
	rb.ws.CloseNow()
	<-recvDone
	<-ackDone
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// BenchmarkMemoryPerLinkedDevice measures the heap one linked device costs
// when every device belongs to its own account (simulated phone included)
// and holds the 812 one-time prekeys a fresh whatsmeow client uploads.
func BenchmarkMemoryPerLinkedDevice(b *testing.B) {
	h := newHarness(b)
	n := max(b.N, minDeviceBatch)
	before := heapInUse()
	for i := 0; i < n; i++ {
		p, err := h.srv.CreatePhone(strconv.Itoa(1_000_000_000+i), "User")
		if err != nil {
			b.Fatal(err)
		}
		h.srv.addFakeDevice(p, keys.NewKeyPair(), 812)
	}
	b.StopTimer()
	per := float64(heapInUse()-before) / float64(n)
	b.ReportMetric(per, "bytes/device")
	b.ReportMetric(float64(1<<30)/per, "devices/GiB")
}

// BenchmarkMemoryPerCompanion is the marginal cost of one more companion on
// an existing account (no phone), with 812 prekeys.
func BenchmarkMemoryPerCompanion(b *testing.B) {
	h := newHarness(b)
	p, _ := h.srv.CreatePhone("15550001111", "Alice")
	n := max(b.N, minDeviceBatch)
	before := heapInUse()
	for i := 0; i < n; i++ {
		h.srv.addFakeDevice(p, keys.NewKeyPair(), 812)
	}
	b.StopTimer()
	per := float64(heapInUse()-before) / float64(n)
	b.ReportMetric(per, "bytes/device")
	b.ReportMetric(float64(1<<30)/per, "devices/GiB")
}

// TestManyConnectedDevices holds hundreds of live connections at once and
// routes a message around the ring of them.
func TestManyConnectedDevices(t *testing.T) {
	const n = 200
	h := newHarness(t)
	type dev struct {
		d *device
		r *rawClient
	}
	devs := make([]dev, n)
	for i := range devs {
		p, err := h.srv.CreatePhone(strconv.Itoa(1_555_000_0000+i), "U")
		must(t, err)
		noise := keys.NewKeyPair()
		d := h.srv.addFakeDevice(p, noise, 812)
		devs[i] = dev{d: d, r: rawLogin(t, h, d, noise)}
	}
	if st := h.srv.Stats(); st.DevicesConnected != n {
		t.Fatalf("connected %d", st.DevicesConnected)
	}
	start := time.Now()
	for i, x := range devs {
		next := devs[(i+1)%n].d
		must(t, x.r.sendNode(waBinary.Node{Tag: "message", Attrs: waBinary.Attrs{"id": "M" + strconv.Itoa(i), "to": next.acct.jid(), "type": "text"},
			Content: []waBinary.Node{{Tag: "participants", Content: []waBinary.Node{{Tag: "to", Attrs: waBinary.Attrs{"jid": next.jid()},
				Content: []waBinary.Node{{Tag: "enc", Attrs: waBinary.Attrs{"v": "2", "type": "msg"}, Content: []byte("x")}}}}}}}))
	}
	for i, x := range devs {
		want := "M" + strconv.Itoa((i+n-1)%n)
		for {
			node, err := x.r.readNode()
			must(t, err)
			if node.Tag == "message" {
				if node.Attrs["id"] != want {
					t.Fatalf("device %d got %v, want %s", i, node.Attrs["id"], want)
				}
				break
			}
		}
	}
	t.Logf("%d connected devices, ring of %d messages routed in %v", n, n, time.Since(start))
}
