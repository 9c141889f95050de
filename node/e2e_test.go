package node

// End-to-end tests of the single-node gateway (issue 5, "Done means"):
// node.Main on 127.0.0.1:0 against an in-process wasim, driven only through
// the HTTP API of docs/api.md and wasim's admin API, on bolt and on Redis.
// docs/e2e.md lists what each test proves.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	stdpng "image/png"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/amarula/amarula/msgstore"
)

// TestE2ELifecycle walks one profile through its whole life: pairing by QR,
// messages both ways with receipts, edits, revokes and reactions both ways,
// a restart without re-pairing, a 440 takeover by a second client, and an
// unlink from the phone.
func TestE2ELifecycle(t *testing.T) {
	forEachStore(t, func(t *testing.T, b backendEnv) {
		s := startSim(t)
		cfg := nodeConfig(s, b, "n1")
		n := startNode(t, cfg)
		c := n.api
		const id = "alice"

		// Pairing: QR through the API (JSON and PNG), the phone links it.
		c.createProfile(id, nil)
		firstQR := c.waitQR(id)
		status, png, hdr := c.do(http.MethodGet, "/v1/profiles/"+id+"/qr", nil, map[string]string{"Accept": "image/png"})
		if status != http.StatusOK || hdr.Get("Content-Type") != "image/png" {
			t.Fatalf("QR as PNG: status %d, type %q, %d bytes", status, hdr.Get("Content-Type"), len(png))
		}
		if img, err := stdpng.Decode(bytes.NewReader(png)); err != nil || img.Bounds().Dx() < 100 || img.Bounds().Dx() != img.Bounds().Dy() {
			t.Fatalf("QR PNG does not decode to a square image: %v", err)
		}
		device, p := c.pair(s, id)
		if !strings.HasPrefix(p.JID, ownNumber) || p.ConnectedSince == nil {
			t.Fatalf("connected profile %+v: want jid of %s and connected_since", p, ownNumber)
		}
		if st, _, _ := c.do(http.MethodGet, "/v1/profiles/"+id+"/qr", nil, nil); st != http.StatusConflict {
			t.Fatalf("GET /qr of a paired profile: %d, want 409", st)
		}
		c.waitEvent(id, "session.paired", "", nil)
		c.waitEvent(id, "session.connected", "", nil)

		// Phone → gateway: stored once, announced once.
		in1 := s.send(t, peerNumber, map[string]any{"to": s.ownJID(), "text": "hello from the phone"})
		m := c.waitMessage(id, in1, nil)
		if m.Type != msgstore.TypeText || m.Text != "hello from the phone" || m.FromMe || m.Chat != s.peerJID() || !strings.HasPrefix(m.From, peerNumber) {
			t.Fatalf("received message stored as %+v", m)
		}
		c.waitEvent(id, "message.received", in1, nil)

		// The user types on the phone itself: the companion gets a copy,
		// stored as the user's own message in the peer's chat.
		dsm := s.send(t, ownNumber, map[string]any{"to": s.peerJID(), "text": "typed on the phone"})
		if m := c.waitMessage(id, dsm, nil); !m.FromMe || m.Chat != s.peerJID() || m.Text != "typed on the phone" {
			t.Fatalf("message sent from the phone stored as %+v", m)
		}

		// Gateway → phone: text, then a reply quoting in1.
		out1 := c.send(id, map[string]any{"to": s.peerJID(), "text": "hello from the API"})
		if got := s.waitReceived(t, peerNumber, out1.ID); got.Type != "text" || got.Text != "hello from the API" || !strings.HasPrefix(got.From, ownNumber) {
			t.Fatalf("phone received %+v", got)
		}
		out2 := c.send(id, map[string]any{"to": peerNumber, "text": "a reply", "reply_to": in1})
		s.waitReceived(t, peerNumber, out2.ID)
		if q := quotedID(s, out2.ID); q != in1 {
			t.Fatalf("reply quotes %q, want %q", q, in1)
		}
		if m := c.waitMessage(id, out2.ID, nil); !m.FromMe || m.ReplyTo != in1 || m.Chat != s.peerJID() {
			t.Fatalf("sent reply stored as %+v", m)
		}
		c.waitEvent(id, "message.sent", out1.ID, nil)

		// Idempotency-Key: a retried send answers the first result and
		// sends nothing more.
		idem := map[string]string{"Idempotency-Key": "e2e-retry-1"}
		body := map[string]any{"to": s.peerJID(), "text": "sent once"}
		var first, again sendResult
		st1, raw1, _ := c.do(http.MethodPost, "/v1/profiles/"+id+"/messages", body, idem)
		st2, raw2, h2 := c.do(http.MethodPost, "/v1/profiles/"+id+"/messages", body, idem)
		if st1 != http.StatusAccepted || st2 != http.StatusAccepted || json.Unmarshal(raw1, &first) != nil || json.Unmarshal(raw2, &again) != nil ||
			first.ID == "" || again != first || h2.Get("Idempotency-Replayed") != "true" {
			t.Fatalf("idempotent retry: %d %s then %d %s (replayed %q)", st1, raw1, st2, raw2, h2.Get("Idempotency-Replayed"))
		}
		s.waitReceived(t, peerNumber, first.ID)

		// Receipts: delivered (the phone's automatic receipt), then read.
		c.waitEvent(id, "message.ack", out1.ID, ackStatus("delivered"))
		if err := s.peer.MarkRead(out1.ID); err != nil {
			t.Fatal(err)
		}
		c.waitEvent(id, "message.ack", out1.ID, ackStatus("read"))
		c.waitMessage(id, out1.ID, func(m msgstore.Message) error {
			if m.Status != msgstore.StatusRead {
				return fmt.Errorf("status %q", m.Status)
			}
			return nil
		})

		// The phone edits, revokes and reacts: applied to the originals.
		in2 := s.send(t, peerNumber, map[string]any{"to": s.ownJID(), "text": "typo"})
		in3 := s.send(t, peerNumber, map[string]any{"to": s.ownJID(), "text": "oops, wrong chat"})
		c.waitMessage(id, in3, nil)
		ed := s.send(t, peerNumber, map[string]any{"to": s.ownJID(), "edit": "fixed", "target_id": in2})
		rv := s.send(t, peerNumber, map[string]any{"to": s.ownJID(), "revoke": true, "target_id": in3})
		rc := s.send(t, peerNumber, map[string]any{"to": s.ownJID(), "reaction": "👍", "target_id": out1.ID})
		c.waitMessage(id, in2, func(m msgstore.Message) error {
			if !m.Edited || m.Text != "fixed" || len(m.History) != 1 || m.History[0].Text != "typo" {
				return fmt.Errorf("not edited: %+v", m)
			}
			return nil
		})
		c.waitMessage(id, in3, func(m msgstore.Message) error {
			if !m.Revoked {
				return fmt.Errorf("not revoked: %+v", m)
			}
			return nil
		})
		c.waitMessage(id, out1.ID, func(m msgstore.Message) error {
			if !hasReaction(m, peerNumber, "👍") {
				return fmt.Errorf("no reaction: %v", m.Reactions)
			}
			return nil
		})
		c.waitEvent(id, "message.edited", ed, nil)
		c.waitEvent(id, "message.revoked", rv, nil)
		c.waitEvent(id, "message.reaction", rc, nil)

		// The gateway reacts, edits and revokes: the phone gets each.
		react := c.send(id, map[string]any{"to": s.peerJID(), "reaction": map[string]string{"target_id": in1, "emoji": "❤️"}})
		edit := c.send(id, map[string]any{"to": s.peerJID(), "edit": map[string]string{"target_id": out1.ID, "text": "hello, edited"}})
		revoke := c.send(id, map[string]any{"to": s.peerJID(), "revoke": map[string]string{"target_id": out2.ID}})
		for _, w := range []struct{ id, typ, target, text string }{
			{react.ID, "reaction", in1, "❤️"},
			{edit.ID, "edit", out1.ID, "hello, edited"},
			{revoke.ID, "revoke", out2.ID, ""},
		} {
			got := s.waitReceived(t, peerNumber, w.id)
			if got.Type != w.typ || got.TargetID != w.target || got.Text != w.text {
				t.Fatalf("phone received %+v, want %s of %s %q", got, w.typ, w.target, w.text)
			}
		}
		c.waitMessage(id, in1, func(m msgstore.Message) error {
			if !hasReaction(m, ownNumber, "❤️") {
				return fmt.Errorf("own reaction not applied: %v", m.Reactions)
			}
			return nil
		})
		c.waitMessage(id, out1.ID, func(m msgstore.Message) error {
			if !m.Edited || m.Text != "hello, edited" {
				return fmt.Errorf("own edit not applied: %+v", m)
			}
			return nil
		})
		c.waitMessage(id, out2.ID, func(m msgstore.Message) error {
			if !m.Revoked {
				return fmt.Errorf("own revoke not applied: %+v", m)
			}
			return nil
		})

		if n := countReceived(t, s, peerNumber, first.ID); n != 1 {
			t.Fatalf("the phone got the idempotent send %d times", n)
		}
		received := []string{in1, dsm, in2, in3, ed, rv, rc}
		sent := []string{out1.ID, out2.ID, first.ID, react.ID, edit.ID, revoke.ID}
		ops := map[string]bool{ed: true, rv: true, rc: true, react.ID: true, edit.ID: true, revoke.ID: true}
		before := checkStored(t, c, id, received, sent, ops)
		t.Logf("before restart: %d messages stored, %d events", len(before), len(c.events(id, "0")))

		// Restart on the same data: no pairing, nothing lost or doubled. A
		// copy of the stopped node's data is the "second client" below.
		cursor := c.lastCursor(id)
		if err := n.stop(); err != nil {
			t.Fatalf("stop: %v", err)
		}
		twin := snapshot(t, b)
		away := s.send(t, peerNumber, map[string]any{"to": s.ownJID(), "text": "sent while the gateway was down"})
		n = startNode(t, cfg)
		c = n.api
		if again := c.waitState(id, "connected", 30*time.Second); again.JID != p.JID {
			t.Fatalf("after restart connected as %q, was %q", again.JID, p.JID)
		}
		c.waitMessage(id, away, nil)
		received = append(received, away)
		after := c.events(id, cursor)
		for _, e := range after {
			if e.Type == "session.qr" || e.Type == "session.paired" {
				t.Fatalf("restart paired again: %s event after restart", e.Type)
			}
		}
		if countEvents(after, "session.connected", "") == 0 {
			t.Fatal("no session.connected after restart")
		}
		// The idempotency record outlives the restart.
		st3, raw3, h3 := c.do(http.MethodPost, "/v1/profiles/"+id+"/messages", body, idem)
		var third sendResult
		if st3 != http.StatusAccepted || json.Unmarshal(raw3, &third) != nil || third != first || h3.Get("Idempotency-Replayed") != "true" {
			t.Fatalf("idempotent retry after restart: %d %s (replayed %q), first answer %+v", st3, raw3, h3.Get("Idempotency-Replayed"), first)
		}
		if n := countReceived(t, s, peerNumber, first.ID); n != 1 {
			t.Fatalf("the phone got the idempotent send %d times after the replay", n)
		}
		all := checkStored(t, c, id, received, sent, ops)
		if len(all) != len(before)+1 {
			t.Fatalf("after restart %d messages stored, want %d", len(all), len(before)+1)
		}
		t.Logf("after restart: %d messages, %d events after the restart cursor, no session.qr", len(all), len(after))

		// A second client logs in as the same device: the older one gets
		// 440, rests in conflict and does not reconnect.
		n2 := startTwin(t, s, b, twin)
		n2.api.waitState(id, "connected", 30*time.Second)
		c.waitState(id, "conflict", 15*time.Second)
		c.waitEvent(id, "session.conflict", "", nil)
		d0 := s.device(t, device)
		if d0.ReplacedTotal == 0 {
			t.Fatalf("wasim counts no replacement: %+v", d0)
		}
		window := time.Now().Add(3 * time.Second)
		for time.Now().Before(window) {
			d := s.device(t, device)
			if d.ConnectionsTotal != d0.ConnectionsTotal || d.ReplacedTotal != d0.ReplacedTotal {
				t.Fatalf("reconnect loop after 440: device went from %+v to %+v", d0, d)
			}
			if st := c.profile(id).State; st != "conflict" {
				t.Fatalf("state left conflict on its own: %s", st)
			}
			time.Sleep(200 * time.Millisecond)
		}
		if st, raw, _ := c.do(http.MethodPost, "/v1/profiles/"+id+"/messages", map[string]any{"to": s.peerJID(), "text": "during conflict"}, nil); st != http.StatusConflict || !strings.Contains(string(raw), "not_connected") {
			t.Fatalf("send during conflict: %d %s, want 409 not_connected", st, raw)
		}
		t.Logf("440: conflict held 3s, connections_total stayed %d, replaced_total %d, overlap %d ms", d0.ConnectionsTotal, d0.ReplacedTotal, d0.OverlapMsTotal)
		if err := n2.stop(); err != nil {
			t.Fatalf("stop the second client: %v", err)
		}
		c.json(http.MethodPost, "/v1/profiles/"+id+"/connect", nil, http.StatusAccepted, nil)
		c.waitState(id, "connected", 30*time.Second)
		back := s.send(t, peerNumber, map[string]any{"to": s.ownJID(), "text": "after the conflict"})
		c.waitMessage(id, back, nil)

		// The phone removes the device: logged_out, credentials wiped, a
		// new QR pairs a new device.
		httpJSON(t, http.MethodDelete, s.admin+"/admin/phones/"+ownNumber+"/devices/"+device, "", nil, http.StatusOK, nil)
		lo := c.waitState(id, "logged_out", 15*time.Second)
		if lo.JID != "" {
			t.Fatalf("logged out profile keeps jid %q", lo.JID)
		}
		c.waitEvent(id, "session.logged_out", "", nil)
		if st, raw, _ := c.do(http.MethodGet, "/v1/profiles/"+id+"/qr", nil, nil); st != http.StatusConflict || !strings.Contains(string(raw), "no_qr") {
			t.Fatalf("GET /qr after logout: %d %s, want 409 no_qr until connect", st, raw)
		}
		c.json(http.MethodPost, "/v1/profiles/"+id+"/connect", nil, http.StatusAccepted, nil)
		if code := c.waitQR(id); code == firstQR {
			t.Fatal("the QR after logout is the old one")
		}
		// The wipe is in storage, not only in memory: after a restart the
		// profile pairs again.
		if err := n.stop(); err != nil {
			t.Fatal(err)
		}
		n = startNode(t, cfg)
		c = n.api
		if p := c.waitState(id, "pairing", 30*time.Second); p.JID != "" {
			t.Fatalf("restarted after logout with jid %q", p.JID)
		}
		device2, _ := c.pair(s, id)
		if device2 == device {
			t.Fatalf("re-paired as the removed device %s", device)
		}
		t.Logf("unlinked %s: logged_out, credentials wiped, re-paired as %s", device, device2)
	})
}

// countReceived counts the copies of id the phone decrypted.
func countReceived(t testing.TB, s *sim, number, id string) int {
	n := 0
	for _, m := range s.received(t, number, 0) {
		if m.ID == id {
			n++
		}
	}
	return n
}

// quotedID is the id a message the peer phone received quotes.
func quotedID(s *sim, id string) string {
	for _, m := range s.peer.Messages(0) {
		if m.ID == id && m.Message != nil {
			return m.Message.GetExtendedTextMessage().GetContextInfo().GetStanzaID()
		}
	}
	return ""
}

func ackStatus(want string) func(e event) bool {
	return func(e event) bool { return strings.Contains(string(e.Data), `"status":"`+want+`"`) }
}

// hasReaction reports whether m carries emoji from a sender whose JID
// starts with number.
func hasReaction(m msgstore.Message, number, emoji string) bool {
	for from, e := range m.Reactions {
		if strings.HasPrefix(from, number) && e == emoji {
			return true
		}
	}
	return false
}

// checkStored lists every stored message and checks that the list holds
// exactly the expected originals, each once; that edits, revokes and
// reactions (ops) are kept by id but not listed (they show through their
// original); and that every message was announced exactly once: received
// originals by message.received, received ops by message.edited/revoked/
// reaction, own sends by message.sent.
func checkStored(t *testing.T, c *apiClient, id string, received, sent []string, ops map[string]bool) []msgstore.Message {
	t.Helper()
	msgs := c.messages(id)
	seen := map[string]int{}
	for _, m := range msgs {
		seen[m.ID]++
		if seen[m.ID] > 1 {
			t.Fatalf("message %s listed twice", m.ID)
		}
		if ops[m.ID] {
			t.Fatalf("op %s (%s) listed as a message", m.ID, m.Type)
		}
	}
	var listed []string
	for _, mid := range append(slices.Clone(received), sent...) {
		if ops[mid] {
			if _, st := c.message(id, mid); st != http.StatusOK {
				t.Fatalf("op %s not kept by id: GET status %d", mid, st)
			}
			continue
		}
		listed = append(listed, mid)
	}
	if miss := missing(seen, listed); len(miss) > 0 {
		t.Fatalf("messages not stored: %v (stored %d)", miss, len(msgs))
	}
	if len(msgs) != len(listed) {
		t.Fatalf("%d messages stored, want exactly %d", len(msgs), len(listed))
	}
	evs := c.events(id, "0")
	for _, mid := range received {
		n := 0
		for _, typ := range []string{"message.received", "message.edited", "message.revoked", "message.reaction"} {
			n += countEvents(evs, typ, mid)
		}
		if n != 1 {
			t.Fatalf("received message %s announced %d times, want 1", mid, n)
		}
	}
	for _, mid := range sent {
		if n := countEvents(evs, "message.sent", mid); n != 1 {
			t.Fatalf("sent message %s announced %d times, want 1", mid, n)
		}
	}
	return msgs
}

// snapshot copies a stopped node's state so a second node can log in as the
// same device: the data dir for bolt, every Redis key for Redis (renamed
// into the cluster prefix "twin").
func snapshot(t *testing.T, b backendEnv) backendEnv {
	t.Helper()
	twin := backendEnv{kind: b.kind, dataDir: t.TempDir(), redis: b.redis}
	if b.redis == nil {
		copyDir(t, b.dataDir, twin.dataDir)
		return twin
	}
	ctx := context.Background()
	rc := goredis.NewClient(&goredis.Options{Addr: b.redis.Addr})
	defer rc.Close()
	keys, err := rc.Keys(ctx, "amarula:*").Result()
	if err != nil {
		t.Fatal(err)
	}
	copied := 0
	for _, k := range keys {
		if strings.HasPrefix(k, "amarula:twin:") {
			continue
		}
		dump, err := rc.Dump(ctx, k).Result()
		if err != nil {
			t.Fatalf("DUMP %s: %v", k, err)
		}
		if err := rc.RestoreReplace(ctx, "amarula:twin:"+strings.TrimPrefix(k, "amarula:"), 0, dump).Err(); err != nil {
			t.Fatalf("RESTORE %s: %v", k, err)
		}
		copied++
	}
	if copied == 0 {
		t.Fatal("snapshot: no amarula keys in Redis")
	}
	return twin
}

// startTwin starts a second node on a snapshot; it runs the same profile
// with the same credentials.
func startTwin(t *testing.T, s *sim, b backendEnv, twin backendEnv) *testNode {
	t.Helper()
	cfg := nodeConfig(s, twin, "n2")
	if b.redis != nil {
		cfg.Cluster = "twin"
	}
	return startNode(t, cfg)
}
