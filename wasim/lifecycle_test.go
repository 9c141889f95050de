package wasim

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/types/events"
	"go.mau.fi/whatsmeow/util/keys"
)

func TestOfflineQueueDeliveredAfterReconnect(t *testing.T) {
	h := newHarness(t)
	alice, _ := h.srv.CreatePhone("15550001111", "Alice")
	bob, _ := h.srv.CreatePhone("15550002222", "Bob")
	c := h.pairQR(alice)
	c.cli.Disconnect()
	poll(t, 5*time.Second, "server sees disconnect", func() bool { return !h.srv.Devices()[0].Connected })

	var ids []string
	for i := 0; i < 3; i++ {
		id, err := bob.SendText(alice.JID(), fmt.Sprintf("offline %d", i))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if q := h.srv.Devices()[0].Queued; q != 3 {
		t.Fatalf("queued = %d, want 3", q)
	}
	c.clearEvents()
	if err := c.cli.Connect(); err != nil {
		t.Fatal(err)
	}
	done := waitEvent[*events.OfflineSyncCompleted](c, 10*time.Second, nil)
	if done.Count != 3 {
		t.Fatalf("OfflineSyncCompleted.Count = %d", done.Count)
	}
	for i, id := range ids {
		m := c.waitMessage(id)
		if want := fmt.Sprintf("offline %d", i); m.Message.GetConversation() != want {
			t.Fatalf("message %d = %q, want %q", i, m.Message.GetConversation(), want)
		}
	}
	poll(t, 5*time.Second, "queue drained by receipts", func() bool { return h.srv.Devices()[0].Queued == 0 })
}

func TestSecondConnectionReplacesOlder(t *testing.T) {
	h := newHarness(t)
	alice, _ := h.srv.CreatePhone("15550001111", "Alice")
	c1 := h.pairQR(alice)
	dev, err := c1.container.GetDevice(context.Background(), *c1.cli.Store.ID)
	if err != nil || dev == nil {
		t.Fatalf("GetDevice: %v %v", dev, err)
	}
	c2 := h.newClient(dev, c1.container)
	if err := c2.cli.Connect(); err != nil {
		t.Fatal(err)
	}
	waitEvent[*events.Connected](c2, 10*time.Second, nil)
	waitEvent[*events.StreamReplaced](c1, 10*time.Second, nil)
	// Observed server-side: whatsmeow's IsConnected is not race-free.
	poll(t, 5*time.Second, "older connection closed", func() bool { return h.srv.Stats().Connections == 1 })
	d := h.srv.Devices()[0]
	if d.ReplacedTotal != 1 || d.ConnectionsTotal != 2 || !d.Connected {
		t.Fatalf("device stats %+v", d)
	}
	// The old connection stayed open for the close delay: that is the
	// double-owner window the chaos tests measure.
	if d.OverlapMsTotal <= 0 || d.OverlapMsTotal > 5000 {
		t.Fatalf("overlap_ms_total = %d", d.OverlapMsTotal)
	}
	// c2 still works.
	bob, _ := h.srv.CreatePhone("15550002222", "Bob")
	id, _ := bob.SendText(alice.JID(), "to the survivor")
	waitEvent[*events.Message](c2, 10*time.Second, func(m *events.Message) bool { return m.Info.ID == id })
	if c1.count(func(e any) bool { _, ok := e.(*events.Message); return ok }) != 0 {
		t.Fatal("replaced client received a message")
	}
}

func TestUnlinkGives401(t *testing.T) {
	h := newHarness(t)
	alice, _ := h.srv.CreatePhone("15550001111", "Alice")

	// Connected device: stream error 401 device_removed.
	c := h.pairQR(alice)
	jid := *c.cli.Store.ID
	if err := alice.Unlink(jid); err != nil {
		t.Fatal(err)
	}
	lo := waitEvent[*events.LoggedOut](c, 10*time.Second, nil)
	if lo.OnConnect {
		t.Fatalf("LoggedOut %+v, want OnConnect=false", lo)
	}
	// The store is deleted concurrently with the event; read it through
	// the database rather than the racy in-memory field.
	poll(t, 5*time.Second, "store wiped", func() bool {
		d, err := c.container.GetDevice(context.Background(), jid)
		return err == nil && d == nil
	})

	// Offline device: <failure reason=401> at its next login.
	c2 := h.pairQR(alice)
	c2.cli.Disconnect()
	jid2 := *c2.cli.Store.ID
	if err := alice.Unlink(jid2); err != nil {
		t.Fatal(err)
	}
	c2.clearEvents()
	_ = c2.cli.Connect()
	lo = waitEvent[*events.LoggedOut](c2, 10*time.Second, nil)
	if !lo.OnConnect {
		t.Fatalf("LoggedOut %+v, want OnConnect=true", lo)
	}

	// The companion logs itself out (remove-companion-device).
	c3 := h.pairQR(alice)
	ctx, cancel := context.WithTimeout(h.ctx, 10*time.Second)
	defer cancel()
	if err := c3.cli.Logout(ctx); err != nil {
		t.Fatalf("Logout: %v", err)
	}
	for _, d := range h.srv.Devices() {
		if !d.Removed {
			t.Fatalf("device not removed: %+v", d)
		}
	}
}

func TestHTTPClientAcceptsURL(t *testing.T) {
	h := newHarness(t)
	for _, target := range []string{h.srv.Addr(), h.srv.URL()} {
		hc := HTTPClient(target)
		resp, err := hc.Get("https://web.whatsapp.com/admin/root-key")
		if err != nil {
			t.Fatalf("%s: %v", target, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		hc.CloseIdleConnections()
		if string(b) != h.srv.RootKeyHex() {
			t.Fatalf("%s: got %q", target, b)
		}
	}
}

func TestReadReceiptsBothWays(t *testing.T) {
	s := newScenario(t)
	alice, bob, c, ctx := s.alice, s.bob, s.c, s.ctx

	// Client marks the phone's message read: the phone records "read".
	id, _ := bob.SendText(alice.JID(), "read me")
	m := c.waitMessage(id)
	poll(t, 5*time.Second, "delivery receipt", func() bool { return bob.Receipt(id) == "delivery" })
	if err := c.cli.MarkRead(ctx, []types.MessageID{id}, time.Now(), m.Info.Chat, m.Info.Sender); err != nil {
		t.Fatal(err)
	}
	poll(t, 5*time.Second, "read receipt", func() bool { return bob.Receipt(id) == "read" })

	// The phone reads the client's message: the client gets a read receipt.
	resp, err := c.cli.SendMessage(ctx, bob.JID(), textMessage("did you read it?"))
	if err != nil {
		t.Fatal(err)
	}
	poll(t, 5*time.Second, "bob has it", func() bool { return len(bob.Messages(0)) > 0 })
	if err := bob.MarkRead(resp.ID); err != nil {
		t.Fatal(err)
	}
	waitEvent[*events.Receipt](c, 10*time.Second, func(r *events.Receipt) bool {
		return r.Type == types.ReceiptTypeRead && len(r.MessageIDs) == 1 && r.MessageIDs[0] == resp.ID
	})
}

// Cancelling Start's context shuts the server down; Close then returns
// once every goroutine has stopped (goleak checks the rest).
func TestStartContextCancelStopsServer(t *testing.T) {
	srv, err := New(Config{RootPrivateKey: testRoot.Priv[:]})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	addr := srv.Addr()
	cancel()
	done := make(chan struct{})
	go func() { srv.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close hangs after context cancel")
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatal("listener still open")
	}
}

// A connection that stops talking (frozen process) is dropped, and a
// second login replaces a frozen one within the close delay.
func TestIdleAndFrozenConnections(t *testing.T) {
	h := newHarnessWith(t, func(c *Config) { c.IdleTimeout = 300 * time.Millisecond })
	alice, _ := h.srv.CreatePhone("15550001111", "Alice")
	noise := keys.NewKeyPair()
	d := h.srv.addFakeDevice(alice, noise, 10)
	r := rawLogin(t, h, d, noise)
	r.expectClosed()
	poll(t, 5*time.Second, "idle device disconnected", func() bool { return !h.srv.Devices()[0].Connected })

	h2 := newHarness(t)
	bob, _ := h2.srv.CreatePhone("15550002222", "Bob")
	d2 := h2.srv.addFakeDevice(bob, noise, 10)
	frozen := rawLogin(t, h2, d2, noise) // never reads again
	_ = frozen
	start := time.Now()
	r2 := rawLogin(t, h2, d2, noise)
	poll(t, 5*time.Second, "frozen connection dropped", func() bool { return h2.srv.Stats().Connections == 1 })
	if el := time.Since(start); el > 3*time.Second {
		t.Fatalf("replacing a frozen connection took %v", el)
	}
	info := h2.srv.Devices()[0]
	if info.ReplacedTotal != 1 || info.OverlapMsTotal < 400 || info.OverlapMsTotal > 3000 {
		t.Fatalf("device %+v", info)
	}
	r2.ws.CloseNow()
}

func TestPhoneInboxIsBounded(t *testing.T) {
	h := newHarnessWith(t, func(c *Config) { c.PhoneInboxLimit = 3 })
	alice, _ := h.srv.CreatePhone("15550001111", "Alice")
	bob, _ := h.srv.CreatePhone("15550002222", "Bob")
	for i := 0; i < 5; i++ {
		if _, err := alice.SendText(bob.JID(), fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
	}
	msgs := bob.Messages(0)
	if len(msgs) != 3 || msgs[0].Seq != 3 || msgs[2].Seq != 5 || msgs[2].Text != "4" {
		t.Fatalf("inbox %+v", msgs)
	}
	if got := bob.Messages(4); len(got) != 1 || got[0].Seq != 5 {
		t.Fatalf("after=4: %+v", got)
	}
}

// When other devices use up a device's one-time prekeys the server asks it
// to upload more, and the client does.
func TestPreKeyTopUp(t *testing.T) {
	s := newScenario(t)
	h, c := s.harness, s.c
	jid := *c.cli.Store.ID
	d := h.srv.lookupDevice(jid)
	d.mu.Lock()
	d.prekeys = d.prekeys[:6*preKeyRecordSize] // pretend most were consumed
	d.mu.Unlock()
	for i := 0; i < 3; i++ {
		if _, ok := h.srv.bundleFor(jid); !ok {
			t.Fatal("no bundle")
		}
	}
	poll(t, 10*time.Second, "client uploads more prekeys", func() bool { return h.srv.Devices()[0].PreKeys >= 50 })
}

// A message the client did not confirm (its handler failed, so whatsmeow
// sent no receipt) stays queued and is delivered again after a reconnect;
// with whatsmeow's decrypted-event buffer the retry decrypts.
func TestUnconfirmedMessageRedeliveredAfterReconnect(t *testing.T) {
	s := newScenario(t)
	h, alice, bob, c := s.harness, s.alice, s.bob, s.c
	c.cli.EnableDecryptedEventBuffer = true
	var attempts atomic.Int32
	c.cli.AddEventHandlerWithSuccessStatus(func(evt any) bool {
		if m, ok := evt.(*events.Message); ok && m.Message.GetConversation() == "must not be lost" {
			return attempts.Add(1) > 1 // fail the first time
		}
		return true
	})
	id, _ := bob.SendText(alice.JID(), "must not be lost")
	poll(t, 10*time.Second, "first attempt", func() bool { return attempts.Load() == 1 })
	if q := h.srv.Devices()[0].Queued; q != 1 {
		t.Fatalf("queued = %d, want the unconfirmed message", q)
	}
	c.cli.Disconnect()
	must(t, c.cli.Connect())
	poll(t, 10*time.Second, "redelivery handled", func() bool { return attempts.Load() == 2 })
	poll(t, 10*time.Second, "queue drained", func() bool { return h.srv.Devices()[0].Queued == 0 })
	poll(t, 5*time.Second, "delivery receipt", func() bool { return bob.HasReceipt(id, "delivery") })
}
