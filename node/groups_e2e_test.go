package node

// End-to-end tests of groups (issue 9): node.Main against an in-process
// wasim whose phones create and change groups, on bolt and Redis.

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"

	"go.mau.fi/whatsmeow/types"

	"github.com/amarula/amarula/internal/testenv"
	"github.com/amarula/amarula/msgstore"
	"github.com/amarula/amarula/wasim"
)

// groupJSON is a group of GET /v1/profiles/{id}/groups[/{jid}].
type groupJSON struct {
	JID          string `json:"jid"`
	Subject      string `json:"subject"`
	Participants []struct {
		JID   string `json:"jid"`
		Admin bool   `json:"admin"`
	} `json:"participants"`
}

func (g groupJSON) members() []string {
	var out []string
	for _, p := range g.Participants {
		out = append(out, p.JID)
	}
	slices.Sort(out)
	return out
}

// createGroup makes phone creator create a group through wasim's admin API.
func (s *sim) createGroup(t testing.TB, subject, creator string, members ...string) types.JID {
	t.Helper()
	var out struct {
		JID string `json:"jid"`
	}
	httpJSON(t, http.MethodPost, s.admin+"/admin/groups", "",
		map[string]any{"subject": subject, "creator": creator, "members": members}, http.StatusCreated, &out)
	return userJID(t, out.JID)
}

// groupEventHas reports whether a group.* event is about gid and, when
// key is set, lists jid under key.
func groupEventHas(gid types.JID, key, jid string) func(e event) bool {
	return func(e event) bool {
		var d map[string]any
		if json.Unmarshal(e.Data, &d) != nil || d["jid"] != gid.String() {
			return false
		}
		if key == "" {
			return true
		}
		list, _ := d[key].([]any)
		for _, v := range list {
			if v == jid {
				return true
			}
		}
		return false
	}
}

// sendAll makes each phone send one text to the group and checks the
// gateway stores it with the group as chat and the phone as sender.
func sendAll(t *testing.T, s *sim, c *apiClient, profile string, gid types.JID, phones []*wasim.Phone, names []string, label string) []string {
	t.Helper()
	var ids []string
	for i, p := range phones {
		text := fmt.Sprintf("%s from %s", label, names[i])
		mid, err := p.SendText(gid, text)
		if err != nil {
			t.Fatal(err)
		}
		c.waitMessage(profile, mid, func(m msgstore.Message) error {
			if m.Chat != gid.String() || m.To != gid.String() || m.From != p.JID().String() || m.PushName != names[i] ||
				m.FromMe || m.Text != text || m.Type != msgstore.TypeText {
				return fmt.Errorf("stored as %+v", m)
			}
			return nil
		})
		ids = append(ids, mid)
	}
	return ids
}

// apiSendAll sends a text to the group through the API and waits until
// every phone decrypted it.
func apiSendAll(t *testing.T, s *sim, c *apiClient, profile string, gid types.JID, numbers []string, text string) string {
	t.Helper()
	out := c.send(profile, map[string]any{"to": gid.String(), "text": text})
	for _, num := range numbers {
		got := s.waitReceived(t, num, out.ID)
		if got.Text != text || got.Chat != gid.String() {
			t.Fatalf("phone %s received %+v", num, got)
		}
	}
	c.waitMessage(profile, out.ID, func(m msgstore.Message) error {
		if !m.FromMe || m.Chat != gid.String() || m.Text != text {
			return fmt.Errorf("stored as %+v", m)
		}
		return nil
	})
	return out.ID
}

// TestE2EGroups: a phone creates a group with the profile's account and
// two other phones; the gateway announces group.joined and serves the group
// (list and one); each phone's messages are stored with chat = group and
// from = that phone (with its push name); a send through the API reaches
// every phone, which decrypts it, and so do a reply (quoting a member's
// message), a reaction (naming the member) and an image (byte-identical);
// a phone's image is stored as group media; a participant added later decrypts the
// next message; a subject change is announced and served; after a restart
// of the node, messages both ways decrypt with the sender keys kept in
// storage (the phones hand out their sender keys once, and no retry is
// needed), and the gateway still uses its own sender key; sends and reads
// for groups the profile is not in answer 403/404, malformed JIDs 400.
func TestE2EGroups(t *testing.T) {
	forEachStore(t, func(t *testing.T, b backendEnv) {
		s := startSim(t)
		s.srv.SetSenderKeyOnce(true)
		carol, err := s.srv.CreatePhone("15550003333", "Carol")
		if err != nil {
			t.Fatal(err)
		}
		dave, _ := s.srv.CreatePhone("15550004444", "Dave")
		erin, _ := s.srv.CreatePhone("15550005555", "Erin")
		cfg := nodeConfig(s, b, "n1")
		n := startNode(t, cfg)
		c := n.api
		const id = "alice"
		c.createProfile(id, nil)
		device, _ := c.pair(s, id)
		deviceJID := userJID(t, device)

		gid := s.createGroup(t, "team", peerNumber, ownNumber, carol.JID().User, dave.JID().User)
		c.waitEvent(id, "group.joined", "", groupEventHas(gid, "", ""))
		var list struct {
			Groups []groupJSON `json:"groups"`
		}
		c.json(http.MethodGet, "/v1/profiles/"+id+"/groups", nil, http.StatusOK, &list)
		want := []string{s.ownJID(), s.peerJID(), carol.JID().String(), dave.JID().String()}
		slices.Sort(want)
		if len(list.Groups) != 1 || list.Groups[0].JID != gid.String() || list.Groups[0].Subject != "team" ||
			!slices.Equal(list.Groups[0].members(), want) {
			t.Fatalf("groups %+v, want %s with %v", list, gid, want)
		}
		for _, p := range list.Groups[0].Participants {
			if p.Admin != (p.JID == s.peerJID()) {
				t.Fatalf("admin flags %+v: only the creator is admin", list.Groups[0].Participants)
			}
		}

		phones := []*wasim.Phone{s.peer, carol, dave}
		names := []string{"Peer", "Carol", "Dave"}
		numbers := []string{peerNumber, carol.JID().User, dave.JID().User}
		in := sendAll(t, s, c, id, gid, phones, names, "hello")
		apiSendAll(t, s, c, id, gid, numbers, "hello team")

		// A reply quoting Carol and a reaction to her message, through the
		// API: the phones get them with the right quote and target.
		reply := c.send(id, map[string]any{"to": gid.String(), "text": "hi carol", "reply_to": in[1]})
		s.waitReceived(t, peerNumber, reply.ID)
		if q := quotedID(s, reply.ID); q != in[1] {
			t.Fatalf("group reply quotes %q, want %q", q, in[1])
		}
		react := c.send(id, map[string]any{"to": gid.String(), "reaction": map[string]any{"target_id": in[1], "emoji": "👍"}})
		if got := s.waitReceived(t, carol.JID().User, react.ID); got.Type != "reaction" || got.TargetID != in[1] || got.Text != "👍" {
			t.Fatalf("carol got the reaction as %+v", got)
		}
		if key := reactionKey(s, carol, react.ID); key != carol.JID().String() {
			t.Fatalf("reaction names participant %q, want carol", key)
		}

		// Media both ways: an image through the API decrypts byte-identical
		// on every phone; one from a phone is stored as the group's media.
		img := testPNG(t, 32)
		pic := c.send(id, map[string]any{"to": gid.String(), "media": map[string]any{
			"kind": "image", "data": base64.StdEncoding.EncodeToString(img), "caption": "for the team"}})
		for _, p := range phones {
			s.waitReceived(t, p.JID().User, pic.ID)
			if data := receivedData(p, pic.ID); !bytes.Equal(data, img) {
				t.Fatalf("%s decrypted %d bytes of the group image, want %d identical", p.JID().User, len(data), len(img))
			}
		}
		mid, err := dave.SendMedia(gid, "image", "image/png", img, "from dave", "")
		if err != nil {
			t.Fatal(err)
		}
		c.waitMessage(id, mid, func(m msgstore.Message) error {
			if m.Type != msgstore.TypeMedia || m.Chat != gid.String() || m.From != dave.JID().String() || m.Media == nil ||
				m.Media.Kind != "image" || m.Media.Caption != "from dave" {
				return fmt.Errorf("stored as %+v", m)
			}
			return nil
		})
		keyBefore, ok := s.peer.SenderKeyID(gid, deviceJID)
		if !ok {
			t.Fatal("the phones did not get the gateway's sender key")
		}

		// Erin joins: the event, the served group, and she decrypts the
		// next message (whatsmeow distributes its sender key to her).
		httpJSON(t, http.MethodPost, s.admin+"/admin/groups/"+gid.User+"/participants", "",
			map[string]any{"add": []string{erin.JID().User}}, http.StatusOK, nil)
		c.waitEvent(id, "group.participants_changed", "", groupEventHas(gid, "join", erin.JID().String()))
		var one groupJSON
		c.json(http.MethodGet, "/v1/profiles/"+id+"/groups/"+url.PathEscape(gid.String()), nil, http.StatusOK, &one)
		if !slices.Contains(one.members(), erin.JID().String()) || len(one.Participants) != 5 {
			t.Fatalf("group after the add: %+v", one)
		}
		phones, names = append(phones, erin), append(names, "Erin")
		numbers = append(numbers, erin.JID().User)
		apiSendAll(t, s, c, id, gid, numbers, "welcome erin")
		sendAll(t, s, c, id, gid, phones[3:], names[3:], "hi")

		// Subject change.
		httpJSON(t, http.MethodPost, s.admin+"/admin/groups/"+gid.User+"/subject", "",
			map[string]any{"subject": "team 2"}, http.StatusOK, nil)
		c.waitEvent(id, "group.updated", "", func(e event) bool {
			var d map[string]any
			return json.Unmarshal(e.Data, &d) == nil && d["jid"] == gid.String() && d["subject"] == "team 2"
		})
		c.json(http.MethodGet, "/v1/profiles/"+id+"/groups/"+gid.User, nil, http.StatusOK, &one)
		if one.Subject != "team 2" {
			t.Fatalf("subject after the change: %+v", one)
		}

		// Restart: both directions decrypt with the stored sender keys.
		retries := s.srv.GroupRetries()
		if err := n.stop(); err != nil {
			t.Fatal(err)
		}
		n = startNode(t, cfg)
		c = n.api
		c.waitState(id, "connected", 30*time.Second)
		sendAll(t, s, c, id, gid, phones, names, "after the restart")
		apiSendAll(t, s, c, id, gid, numbers, "back again")
		if got := s.srv.GroupRetries(); got != retries {
			t.Fatalf("%d group messages needed a retry after the restart (missing sender key or bad MAC)", got-retries)
		}
		if keyAfter, _ := s.peer.SenderKeyID(gid, deviceJID); keyAfter != keyBefore {
			t.Fatalf("the gateway's sender key changed across the restart: %d, was %d", keyAfter, keyBefore)
		}
		if evs := c.events(id, "0"); countEvents(evs, "group.joined", "") != 1 {
			t.Fatalf("%d group.joined events, want 1", countEvents(evs, "group.joined", ""))
		}

		// Bad input.
		other := s.createGroup(t, "without alice", peerNumber, carol.JID().User)
		for _, tc := range []struct {
			method, path string
			body         any
			status       int
			code         string
		}{
			{http.MethodPost, "/messages", map[string]any{"to": other.String(), "text": "let me in"}, http.StatusForbidden, "not_in_group"},
			{http.MethodPost, "/messages", map[string]any{"to": "120363999999999999@g.us", "text": "anyone?"}, http.StatusNotFound, "group_not_found"},
			{http.MethodPost, "/messages", map[string]any{"to": "not-a-group@g.us", "text": "x"}, http.StatusBadRequest, "invalid_message"},
			{http.MethodGet, "/groups/" + other.User, nil, http.StatusForbidden, "not_in_group"},
			{http.MethodGet, "/groups/120363999999999999@g.us", nil, http.StatusNotFound, "group_not_found"},
			{http.MethodGet, "/groups/not-a-group", nil, http.StatusBadRequest, "invalid_group_jid"},
			{http.MethodGet, "/groups/" + url.PathEscape(s.peerJID()), nil, http.StatusBadRequest, "invalid_group_jid"},
		} {
			status, raw, _ := c.do(tc.method, "/v1/profiles/"+id+tc.path, tc.body, nil)
			var e struct {
				Error struct {
					Code    string `json:"code"`
					Message string `json:"message"`
				} `json:"error"`
			}
			if status != tc.status || json.Unmarshal(raw, &e) != nil || e.Error.Code != tc.code || e.Error.Message == "" {
				t.Errorf("%s %s %v: %d %s, want %d %s", tc.method, tc.path, tc.body, status, raw, tc.status, tc.code)
			}
		}
		for _, num := range []string{peerNumber, carol.JID().User} {
			for _, m := range s.received(t, num, 0) {
				if m.Chat == other.String() && m.From == device {
					t.Fatalf("a refused send reached %s: %+v", num, m)
				}
			}
		}
	})
}

// TestE2EGroupsHandOff: two nodes (etcd, Redis). After the owner of the
// profile stops (its profile is handed off to the other node), a group
// message sent through the new owner's API right away decrypts for every
// phone with the same sender key, and the phones' messages decrypt on the
// new owner with the sender keys they distributed before (no retry).
func TestE2EGroupsHandOff(t *testing.T) {
	s := startSim(t)
	s.srv.SetSenderKeyOnce(true)
	carol, _ := s.srv.CreatePhone("15550003333", "Carol")
	etcd := testenv.StartEtcd(t)
	b := newBackend(t, storeKinds[1])
	gossip := []string{fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)), fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))}
	nodes := map[string]*testNode{}
	for i, name := range []string{"n1", "n2"} {
		cfg := nodeConfig(s, b, name)
		cfg.DataDir = t.TempDir()
		cfg.EtcdEndpoints = etcd.Endpoints()
		cfg.GossipBind = gossip[i]
		if i > 0 {
			cfg.Join = gossip[:1]
		}
		cfg.LeaseTTL = 3 * time.Second
		nodes[name] = startNode(t, cfg)
	}
	c := nodes["n1"].api
	const id = "alice"
	c.createProfile(id, nil)
	device, _ := c.pair(s, id)
	deviceJID := userJID(t, device)
	gid := s.createGroup(t, "team", peerNumber, ownNumber, carol.JID().User)
	c.waitEvent(id, "group.joined", "", groupEventHas(gid, "", ""))
	phones, names := []*wasim.Phone{s.peer, carol}, []string{"Peer", "Carol"}
	numbers := []string{peerNumber, carol.JID().User}
	sendAll(t, s, c, id, gid, phones, names, "before")
	apiSendAll(t, s, c, id, gid, numbers, "before the hand-off")
	keyBefore, _ := s.peer.SenderKeyID(gid, deviceJID)
	retries := s.srv.GroupRetries()

	owner := c.profile(id).Owner
	next := map[string]string{"n1": "n2", "n2": "n1"}[owner]
	if next == "" {
		t.Fatalf("profile owned by %q", owner)
	}
	start := time.Now()
	if err := nodes[owner].stop(); err != nil {
		t.Fatal(err)
	}
	c = nodes[next].api
	waitFor(t, "the other node to own and connect the profile", 30*time.Second, func() error {
		if p := c.profile(id); p.Owner != next || p.State != "connected" {
			return fmt.Errorf("owner %q state %q", p.Owner, p.State)
		}
		return nil
	})
	t.Logf("hand-off %s → %s: connected after %v", owner, next, time.Since(start).Round(time.Millisecond))
	apiSendAll(t, s, c, id, gid, numbers, "right after the hand-off")
	sendAll(t, s, c, id, gid, phones, names, "after")
	if got := s.srv.GroupRetries(); got != retries {
		t.Fatalf("%d group messages needed a retry after the hand-off", got-retries)
	}
	if keyAfter, _ := s.peer.SenderKeyID(gid, deviceJID); keyAfter != keyBefore {
		t.Fatalf("sender key changed across the hand-off: %d, was %d", keyAfter, keyBefore)
	}
	var one groupJSON
	c.json(http.MethodGet, "/v1/profiles/"+id+"/groups/"+gid.User, nil, http.StatusOK, &one)
	if len(one.Participants) != 3 {
		t.Fatalf("group on the new owner: %+v", one)
	}
}

// reactionKey is the participant a reaction received by phone p names.
func reactionKey(s *sim, p *wasim.Phone, id string) string {
	for _, m := range p.Messages(0) {
		if m.ID == id && m.Message != nil {
			return m.Message.GetReactionMessage().GetKey().GetParticipant()
		}
	}
	return ""
}

// receivedData is the decrypted media of message id as phone p got it.
func receivedData(p *wasim.Phone, id string) []byte {
	for _, m := range p.Messages(0) {
		if m.ID == id {
			return m.Data
		}
	}
	return nil
}
