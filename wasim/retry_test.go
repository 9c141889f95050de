package wasim

import (
	"testing"
	"time"

	"go.mau.fi/whatsmeow/proto/waE2E"
	"go.mau.fi/whatsmeow/types/events"
	"google.golang.org/protobuf/proto"
)

// The client loses its Signal session with the phone: the phone's next
// message (a plain "msg") cannot be decrypted, the client sends a retry
// receipt, and the phone re-sends on a fresh session built from a new
// prekey bundle.
func TestRetryReceiptRecoversDroppedClientSession(t *testing.T) {
	s := newScenario(t)
	alice, bob, c, ctx := s.alice, s.bob, s.c, s.ctx

	first, _ := bob.SendText(alice.JID(), "first")
	c.waitMessage(first)
	// Answer once so that the phone's session is acknowledged and its next
	// message is a "msg", not another "pkmsg".
	if _, err := c.cli.SendMessage(ctx, bob.JID(), &waE2E.Message{Conversation: proto.String("ack")}); err != nil {
		t.Fatal(err)
	}
	if err := c.cli.Store.Sessions.DeleteSession(ctx, bob.JID().SignalAddress().String()); err != nil {
		t.Fatal(err)
	}
	id, _ := bob.SendText(alice.JID(), "after the session was lost")
	waitEvent[*events.UndecryptableMessage](c, 10*time.Second, func(u *events.UndecryptableMessage) bool { return u.Info.ID == id })
	m := waitEvent[*events.Message](c, 15*time.Second, func(m *events.Message) bool { return m.Info.ID == id })
	if m.Message.GetConversation() != "after the session was lost" {
		t.Fatalf("got %q", m.Message.GetConversation())
	}
	if m.RetryCount < 1 {
		t.Fatalf("RetryCount = %d", m.RetryCount)
	}
}

// The phone loses its session with the client: it cannot decrypt the
// client's message, answers with retry receipts, and whatsmeow re-sends
// until a fresh session works.
func TestRetryReceiptRecoversDroppedPhoneSession(t *testing.T) {
	s := newScenario(t)
	alice, bob, c, ctx := s.alice, s.bob, s.c, s.ctx

	if _, err := c.cli.SendMessage(ctx, bob.JID(), &waE2E.Message{Conversation: proto.String("one")}); err != nil {
		t.Fatal(err)
	}
	first, _ := bob.SendText(alice.JID(), "reply")
	c.waitMessage(first)
	bob.DropSession(*c.cli.Store.ID)
	resp, err := c.cli.SendMessage(ctx, bob.JID(), &waE2E.Message{Conversation: proto.String("two")})
	if err != nil {
		t.Fatal(err)
	}
	poll(t, 20*time.Second, "bob decrypts the re-sent message", func() bool {
		for _, m := range bob.Messages(0) {
			if m.ID == resp.ID && m.Text == "two" {
				return true
			}
		}
		return false
	})
}
