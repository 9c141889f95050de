package wasim

import (
	"testing"
	"time"

	"go.mau.fi/whatsmeow/proto/waE2E"
	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/types/events"
	"google.golang.org/protobuf/proto"
)

func TestGroupMessagesBothWays(t *testing.T) {
	s := newScenario(t)
	h, alice, bob, a1, ctx := s.harness, s.alice, s.bob, s.c, s.ctx
	carol, _ := h.srv.CreatePhone("15550003333", "Carol")
	b1 := h.pairQR(bob)
	gid, err := h.srv.CreateGroup("friends", alice, bob, carol)
	if err != nil {
		t.Fatal(err)
	}
	info, err := a1.cli.GetGroupInfo(ctx, gid)
	if err != nil || info.Name != "friends" || len(info.Participants) != 3 {
		t.Fatalf("GetGroupInfo %+v %v", info, err)
	}

	// Client -> group: every member's phone decrypts, Bob's client too.
	for i, text := range []string{"hello group", "second"} {
		resp, err := a1.cli.SendMessage(ctx, gid, &waE2E.Message{Conversation: proto.String(text)})
		if err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		for _, p := range []*Phone{bob, carol, alice} {
			poll(t, 10*time.Second, p.acct.name+" decrypts "+text, func() bool {
				for _, m := range p.Messages(0) {
					if m.ID == resp.ID && m.Text == text && m.Chat == gid.String() {
						return true
					}
				}
				return false
			})
		}
		m := b1.waitContent(resp.ID)
		if !m.Info.IsGroup || m.Info.Chat != gid || m.Info.Sender.User != alice.JID().User || m.Message.GetConversation() != text {
			t.Fatalf("b1 got %+v", m.Info)
		}
	}

	// Phone -> group: both clients decrypt; Bob's own client sees it as from me.
	for _, text := range []string{"from carol", "carol again"} {
		id, err := carol.SendText(gid, text)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []*client{a1, b1} {
			m := c.waitContent(id)
			if !m.Info.IsGroup || m.Info.Sender.User != carol.JID().User || m.Message.GetConversation() != text {
				t.Fatalf("group message %+v", m.Info)
			}
		}
	}
	id, _ := bob.SendText(gid, "bob's phone")
	if m := b1.waitContent(id); !m.Info.IsFromMe {
		t.Fatalf("own phone's group message not from me: %+v", m.Info)
	}
	a1.waitContent(id)
	// Delivery receipts come back from the group.
	waitEvent[*events.Receipt](a1, 10*time.Second, func(r *events.Receipt) bool {
		return r.Chat == gid && r.Sender.User == bob.JID().User
	})
	// A lost Signal session with a group sender is repaired by a retry
	// receipt: the phone re-sends its sender key on a fresh session.
	if err := a1.cli.Store.Sessions.DeleteSession(ctx, carol.JID().SignalAddress().String()); err != nil {
		t.Fatal(err)
	}
	id, _ = carol.SendText(gid, "after the lost session")
	waitEvent[*events.UndecryptableMessage](a1, 10*time.Second, func(u *events.UndecryptableMessage) bool { return u.Info.ID == id })
	if m := a1.waitContent(id); m.Message.GetConversation() != "after the lost session" {
		t.Fatalf("retried group message %q", m.Message.GetConversation())
	}

	// Non-members are refused.
	dave, _ := h.srv.CreatePhone("15550004444", "Dave")
	d1 := h.pairQR(dave)
	if _, err := d1.cli.GetGroupInfo(ctx, gid); err == nil {
		t.Fatal("non-member got group info")
	}
	if _, err := d1.cli.GetGroupInfo(ctx, types.NewJID("1203639999", types.GroupServer)); err == nil {
		t.Fatal("unknown group answered")
	}
}

// waitContent waits for the event of message id that carries content (a
// group stanza first yields an event for its sender key distribution).
func (c *client) waitContent(id string) *events.Message {
	c.t.Helper()
	return waitEvent[*events.Message](c, 10*time.Second, func(m *events.Message) bool {
		return m.Info.ID == id && m.Message.GetSenderKeyDistributionMessage() == nil
	})
}

func TestGroupReactionNamesTheParticipant(t *testing.T) {
	s := newScenario(t)
	h, alice, bob, a1, ctx := s.harness, s.alice, s.bob, s.c, s.ctx
	gid, _ := h.srv.CreateGroup("g", alice, bob)
	resp, err := a1.cli.SendMessage(ctx, gid, &waE2E.Message{Conversation: proto.String("react to me")})
	if err != nil {
		t.Fatal(err)
	}
	poll(t, 10*time.Second, "bob has it", func() bool { return len(bob.Messages(0)) > 0 })
	rid, err := bob.SendReaction(gid, resp.ID, "👍")
	if err != nil {
		t.Fatal(err)
	}
	m := a1.waitContent(rid)
	key := m.Message.GetReactionMessage().GetKey()
	if key.GetID() != resp.ID || key.GetParticipant() != alice.JID().String() || key.GetRemoteJID() != gid.String() {
		t.Fatalf("reaction key %+v", key)
	}
}
