package wasim

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.mau.fi/whatsmeow"
	"go.mau.fi/whatsmeow/proto/waE2E"
	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/types/events"
	"google.golang.org/protobuf/proto"
)

// TestGroupAdministration: whatsmeow sees the group it was put in
// (JoinedGroup, GetJoinedGroups), participant and subject changes
// (GroupInfo), and after an add its next group message reaches the new
// member; after a remove it no longer does.
func TestGroupAdministration(t *testing.T) {
	s := newScenario(t)
	h, alice, bob, a1, ctx := s.harness, s.alice, s.bob, s.c, s.ctx
	carol, _ := h.srv.CreatePhone("15550003333", "Carol")
	dave, _ := h.srv.CreatePhone("15550004444", "Dave")

	gid, err := h.srv.CreateGroup("team", bob, alice, carol)
	must(t, err)
	j := waitEvent[*events.JoinedGroup](a1, 10*time.Second, func(e *events.JoinedGroup) bool { return e.JID == gid })
	if j.Name != "team" || len(j.Participants) != 3 || j.Type != "new" {
		t.Fatalf("JoinedGroup %+v", j.GroupInfo)
	}
	joined, err := a1.cli.GetJoinedGroups(ctx)
	if err != nil || len(joined) != 1 || joined[0].JID != gid || len(joined[0].Participants) != 3 {
		t.Fatalf("GetJoinedGroups %v %v", joined, err)
	}

	// Add Dave: alice's client learns it and its next message reaches him.
	must(t, h.srv.AddParticipants(gid, nil, dave))
	gi := waitEvent[*events.GroupInfo](a1, 10*time.Second, func(e *events.GroupInfo) bool { return e.JID == gid && len(e.Join) > 0 })
	if gi.Join[0].User != dave.JID().User || gi.Sender == nil || gi.Sender.User != bob.JID().User {
		t.Fatalf("GroupInfo join %+v", gi)
	}
	resp, err := a1.cli.SendMessage(ctx, gid, &waE2E.Message{Conversation: proto.String("welcome dave")})
	must(t, err)
	for _, p := range []*Phone{bob, carol, dave} {
		poll(t, 10*time.Second, p.acct.name+" decrypts", func() bool {
			for _, m := range p.Messages(0) {
				if m.ID == resp.ID && m.Text == "welcome dave" {
					return true
				}
			}
			return false
		})
	}

	// Remove Carol: she is no longer a target.
	must(t, h.srv.RemoveParticipants(gid, nil, carol))
	waitEvent[*events.GroupInfo](a1, 10*time.Second, func(e *events.GroupInfo) bool { return e.JID == gid && len(e.Leave) > 0 })
	resp2, err := a1.cli.SendMessage(ctx, gid, &waE2E.Message{Conversation: proto.String("carol left")})
	must(t, err)
	poll(t, 10*time.Second, "dave decrypts", func() bool {
		for _, m := range dave.Messages(0) {
			if m.ID == resp2.ID {
				return true
			}
		}
		return false
	})
	for _, m := range carol.Messages(0) {
		if m.ID == resp2.ID {
			t.Fatal("removed member got the message")
		}
	}
	if _, err := carol.SendText(gid, "still here?"); err == nil {
		t.Fatal("removed member could send")
	}

	// Subject.
	must(t, h.srv.SetGroupSubject(gid, bob, "renamed"))
	gi = waitEvent[*events.GroupInfo](a1, 10*time.Second, func(e *events.GroupInfo) bool { return e.JID == gid && e.Name != nil })
	if gi.Name.Name != "renamed" {
		t.Fatalf("subject change %+v", gi.Name)
	}
	info, err := a1.cli.GetGroupInfo(ctx, gid)
	if err != nil || info.Name != "renamed" || len(info.Participants) != 3 {
		t.Fatalf("GetGroupInfo after changes %+v %v", info, err)
	}

	// Bad input and unknown groups.
	if err := h.srv.RemoveParticipants(gid, nil, bob); err == nil {
		t.Fatal("removed the creator")
	}
	if err := h.srv.AddParticipants(types.NewJID("1203630000", types.GroupServer), nil, dave); err == nil {
		t.Fatal("added to an unknown group")
	}
}

// TestSenderKeyOnce: with SetSenderKeyOnce a phone sends its sender key to
// a companion once; later messages carry only the skmsg, and the companion
// decrypts them with the key it kept. The phone records the sender key id
// the companion distributes.
func TestSenderKeyOnce(t *testing.T) {
	s := newScenario(t)
	h, alice, bob, a1, ctx := s.harness, s.alice, s.bob, s.c, s.ctx
	h.srv.SetSenderKeyOnce(true)
	gid, err := h.srv.CreateGroup("g", bob, alice)
	must(t, err)
	for _, text := range []string{"one", "two", "three"} {
		id, err := bob.SendText(gid, text)
		must(t, err)
		if m := a1.waitContent(id); m.Message.GetConversation() != text {
			t.Fatalf("got %q", m.Message.GetConversation())
		}
	}
	resp, err := a1.cli.SendMessage(ctx, gid, &waE2E.Message{Conversation: proto.String("hi")})
	must(t, err)
	poll(t, 10*time.Second, "bob decrypts", func() bool { return len(bob.Messages(0)) > 0 })
	dev := a1.cli.Store.GetJID()
	if _, ok := bob.SenderKeyID(gid, dev); !ok {
		// whatsmeow may address its own sender key by LID; the phone
		// records the device the stanza came from.
		t.Fatalf("no sender key id recorded for %s (message %s)", dev, resp.ID)
	}
}

func TestGroupAdminAPI(t *testing.T) {
	h := newHarness(t)
	for _, n := range []string{"15550001111", "15550002222", "15550003333"} {
		_, err := h.srv.CreatePhone(n, "P"+n)
		must(t, err)
	}
	srv := httptest.NewServer(h.srv.Handler())
	t.Cleanup(srv.Close)
	do := func(method, path, body string) (int, string) {
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		must(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	st, body := do("POST", "/admin/groups", `{"subject":"s","creator":"15550001111","members":["15550002222"]}`)
	if st != http.StatusCreated {
		t.Fatalf("create %d %s", st, body)
	}
	gid := body[strings.Index(body, `"jid":"`)+7 : strings.Index(body, `@g.us`)]
	for _, c := range []struct {
		method, path, body string
		want               int
		has                string
	}{
		{"POST", "/admin/groups/" + gid + "/participants", `{"add":["15550003333"]}`, 200, "15550003333@s.whatsapp.net"},
		{"POST", "/admin/groups/" + gid + "/participants", `{"remove":["15550002222"]}`, 200, `"subject":"s"`},
		{"POST", "/admin/groups/" + gid + "/subject", `{"subject":"new","by":"15550003333"}`, 200, `"subject":"new"`},
		{"GET", "/admin/groups/" + gid + "@g.us", ``, 200, `"participants":["15550001111@s.whatsapp.net","15550003333@s.whatsapp.net"]`},
		{"POST", "/admin/groups/" + gid + "/participants", `{}`, 400, "add or remove"},
		{"POST", "/admin/groups/" + gid + "/participants", `{"add":["19999999999"]}`, 404, "unknown"},
		{"POST", "/admin/groups/" + gid + "/subject", `{"subject":""}`, 400, "subject"},
		{"GET", "/admin/groups/1203630001", ``, 404, "unknown group"},
		{"GET", "/admin/groups/x@s.whatsapp.net", ``, 400, "bad group"},
	} {
		st, body := do(c.method, c.path, c.body)
		if st != c.want || !strings.Contains(body, c.has) {
			t.Errorf("%s %s %s: %d %s, want %d with %q", c.method, c.path, c.body, st, body, c.want, c.has)
		}
	}
}

// TestGroupAdminFromClient: whatsmeow's CreateGroup, UpdateGroupParticipants
// and SetGroupName work against wasim; only the creator may change a group.
func TestGroupAdminFromClient(t *testing.T) {
	s := newScenario(t)
	h, alice, bob, a1, ctx := s.harness, s.alice, s.bob, s.c, s.ctx
	carol, _ := h.srv.CreatePhone("15550003333", "Carol")
	info, err := a1.cli.CreateGroup(ctx, whatsmeow.ReqCreateGroup{Name: "made by alice", Participants: []types.JID{bob.JID()}})
	if err != nil || info.Name != "made by alice" || len(info.Participants) != 2 {
		t.Fatalf("CreateGroup %+v %v", info, err)
	}
	waitEvent[*events.JoinedGroup](a1, 10*time.Second, func(e *events.JoinedGroup) bool { return e.JID == info.JID })
	parts, err := a1.cli.UpdateGroupParticipants(ctx, info.JID, []types.JID{carol.JID(), mustJID("19999999999@s.whatsapp.net")}, whatsmeow.ParticipantChangeAdd)
	if err != nil || len(parts) != 2 || parts[0].Error != 0 || parts[1].Error != 404 {
		t.Fatalf("add %+v %v", parts, err)
	}
	waitEvent[*events.GroupInfo](a1, 10*time.Second, func(e *events.GroupInfo) bool { return len(e.Join) == 1 && e.Join[0].User == carol.JID().User })
	must(t, a1.cli.SetGroupName(ctx, info.JID, "renamed"))
	if _, err := a1.cli.UpdateGroupParticipants(ctx, info.JID, []types.JID{bob.JID()}, whatsmeow.ParticipantChangeRemove); err != nil {
		t.Fatal(err)
	}
	g, err := h.srv.Group(info.JID)
	if err != nil || g.Subject != "renamed" || len(g.Participants) != 2 || g.Creator != alice.JID().String() {
		t.Fatalf("group after the changes %+v %v", g, err)
	}
	// Bob (not the creator, and no longer in it) may not change it.
	b1 := h.pairQR(bob)
	if err := b1.cli.SetGroupName(ctx, info.JID, "mine"); err == nil {
		t.Fatal("a non-admin renamed the group")
	}
}
