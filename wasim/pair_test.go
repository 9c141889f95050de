package wasim

import (
	"context"
	"testing"
	"time"

	"go.mau.fi/whatsmeow/proto/waE2E"
	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/types/events"
	"google.golang.org/protobuf/proto"
)

func TestQRPairingLoginAndText(t *testing.T) {
	h := newHarness(t)
	alice, err := h.srv.CreatePhone("15550001111", "Alice")
	if err != nil {
		t.Fatal(err)
	}
	bob, err := h.srv.CreatePhone("15550002222", "Bob")
	if err != nil {
		t.Fatal(err)
	}
	c := h.pairQR(alice)
	if c.cli.Store.ID == nil || c.cli.Store.ID.User != "15550001111" || c.cli.Store.ID.Device == 0 {
		t.Fatalf("Store.ID = %v", c.cli.Store.ID)
	}
	if c.cli.Store.LID.User != alice.LID().User || c.cli.Store.LID.Device != c.cli.Store.ID.Device {
		t.Fatalf("Store.LID = %v, want %s with device %d", c.cli.Store.LID, alice.LID().User, c.cli.Store.ID.Device)
	}
	devs := h.srv.Devices()
	if len(devs) != 1 || devs[0].PreKeys < 700 || !devs[0].Connected {
		t.Fatalf("devices after pairing: %+v", devs)
	}

	// Client -> peer phone.
	ctx, cancel := context.WithTimeout(h.ctx, 20*time.Second)
	defer cancel()
	resp, err := c.cli.SendMessage(ctx, bob.JID(), &waE2E.Message{Conversation: proto.String("hello bob")})
	if err != nil {
		t.Fatalf("SendMessage: %v", err)
	}
	if resp.Timestamp.IsZero() {
		t.Fatal("ack without t")
	}
	poll(t, 5*time.Second, "bob receives", func() bool {
		for _, m := range bob.Messages(0) {
			if m.ID == resp.ID && m.Text == "hello bob" && m.Type == "text" {
				return true
			}
		}
		return false
	})
	// Own phone got the DeviceSentMessage copy.
	poll(t, 5*time.Second, "alice phone gets DSM", func() bool {
		for _, m := range alice.Messages(0) {
			if m.ID == resp.ID && m.FromMe && m.Chat == bob.JID().String() {
				return true
			}
		}
		return false
	})
	// Bob's phone sent a delivery receipt.
	waitEvent[*events.Receipt](c, 5*time.Second, func(r *events.Receipt) bool {
		return len(r.MessageIDs) > 0 && r.MessageIDs[0] == resp.ID && r.Type == types.ReceiptTypeDelivered
	})

	// Peer phone -> client.
	id, err := bob.SendText(alice.JID(), "hi alice")
	if err != nil {
		t.Fatal(err)
	}
	msg := waitEvent[*events.Message](c, 10*time.Second, func(m *events.Message) bool { return m.Info.ID == id })
	if msg.Message.GetConversation() != "hi alice" || msg.Info.Sender.User != bob.JID().User || msg.Info.PushName != "Bob" {
		t.Fatalf("got %+v", msg)
	}
	poll(t, 5*time.Second, "bob sees delivery", func() bool { return bob.Receipt(id) != "" })

	// The own phone's message to Bob reaches the companion as a
	// DeviceSentMessage: from me, in the chat with Bob.
	own, err := alice.SendText(bob.JID(), "sent from my phone")
	if err != nil {
		t.Fatal(err)
	}
	msg = waitEvent[*events.Message](c, 10*time.Second, func(m *events.Message) bool { return m.Info.ID == own })
	if !msg.Info.IsFromMe || msg.Info.Chat != bob.JID() || msg.Message.GetConversation() != "sent from my phone" {
		t.Fatalf("DSM %+v", msg.Info)
	}

	// Reconnect as a logged-in device: no new pairing, no prekey upload.
	c.cli.Disconnect()
	c.clearEvents()
	if err := c.cli.Connect(); err != nil {
		t.Fatal(err)
	}
	waitEvent[*events.Connected](c, 10*time.Second, nil)
	id2, err := bob.SendText(alice.JID(), "after reconnect")
	if err != nil {
		t.Fatal(err)
	}
	msg = waitEvent[*events.Message](c, 10*time.Second, func(m *events.Message) bool { return m.Info.ID == id2 })
	if msg.Message.GetConversation() != "after reconnect" {
		t.Fatalf("got %q", msg.Message.GetConversation())
	}
	if d := h.srv.Devices(); d[0].ConnectionsTotal != 2 || d[0].ReplacedTotal != 0 {
		t.Fatalf("device stats %+v", d[0])
	}
}

// A client that cached a user's device list learns about a newly linked
// companion through a devices notification and fans out to it.
func TestDeviceListChangeReachesCachingClients(t *testing.T) {
	h := newHarness(t)
	alice, _ := h.srv.CreatePhone("15550001111", "Alice")
	bob, _ := h.srv.CreatePhone("15550002222", "Bob")
	a1 := h.pairQR(alice)
	b1 := h.pairQR(bob)
	ctx, cancel := context.WithTimeout(h.ctx, 30*time.Second)
	defer cancel()
	if _, err := b1.cli.SendMessage(ctx, alice.JID(), &waE2E.Message{Conversation: proto.String("one")}); err != nil {
		t.Fatal(err)
	}
	a2 := h.pairQR(alice)
	// Bob's client gets (and acks) the devices notification.
	poll(t, 5*time.Second, "notification acked", func() bool {
		for _, d := range h.srv.Devices() {
			if d.JID == b1.cli.Store.ID.String() && d.Queued == 0 {
				return true
			}
		}
		return false
	})
	resp, err := b1.cli.SendMessage(ctx, alice.JID(), &waE2E.Message{Conversation: proto.String("two")})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []*client{a1, a2} {
		waitEvent[*events.Message](c, 10*time.Second, func(m *events.Message) bool { return m.Info.ID == resp.ID })
	}
}

func TestIsOnWhatsAppAndUserInfo(t *testing.T) {
	s := newScenario(t)
	bob, c, ctx := s.bob, s.c, s.ctx
	res, err := c.cli.IsOnWhatsApp(ctx, []string{"+15550002222", "+19999999999"})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, r := range res {
		got[r.JID.User] = r.IsIn
	}
	if !got["15550002222"] || got["19999999999"] {
		t.Fatalf("IsOnWhatsApp %+v", res)
	}
	info, err := c.cli.GetUserInfo(ctx, []types.JID{bob.JID()})
	if err != nil {
		t.Fatal(err)
	}
	if ui := info[bob.JID()]; ui.LID != bob.LID() || len(ui.Devices) != 1 {
		t.Fatalf("GetUserInfo %+v", info)
	}
}
