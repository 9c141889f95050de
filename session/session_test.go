package session_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/amarula/amarula/msgstore"
	"github.com/amarula/amarula/session"
	"github.com/amarula/amarula/storage"
	"github.com/amarula/amarula/wasim"
)

// TestPairReceiveSend: a fresh profile shows a QR (and a session.qr
// event), the phone links it, it connects; a text from a peer is stored
// exactly once with one message.received event; a send reaches the peer,
// is stored from_me with message.sent, and the peer's delivery receipt
// becomes a message.ack event and status delivered.
func TestPairReceiveSend(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		s, dev := e.pairQR(1)
		if dev.User != e.own.JID().User || dev.Device == 0 {
			t.Fatalf("linked device %s", dev)
		}
		info := s.Info()
		if info.JID != e.own.JID().String() || info.ConnectedSince.IsZero() {
			t.Fatalf("info %+v", info)
		}
		for _, typ := range []string{msgstore.EventSessionQR, msgstore.EventSessionPaired, msgstore.EventSessionConnected} {
			if e.countEvents(typ, "") == 0 {
				t.Fatalf("no %s event in %v", typ, e.events())
			}
		}
		if _, err := s.QR(); !errors.Is(err, session.ErrAlreadyPaired) {
			t.Fatalf("QR after pairing: %v", err)
		}

		id, err := e.peer.SendText(e.own.JID(), "hello gateway")
		if err != nil {
			t.Fatal(err)
		}
		m := e.waitMessage(s, id, nil)
		if m.Type != msgstore.TypeText || m.Text != "hello gateway" || m.FromMe ||
			m.Chat != e.peer.JID().String() || m.From != e.peer.JID().String() || m.To != e.own.JID().String() || m.PushName != "Peer" {
			t.Fatalf("stored %+v", m)
		}
		if n := e.countEvents(msgstore.EventMessageReceived, id); n != 1 {
			t.Fatalf("%d message.received events for %s", n, id)
		}

		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		res, err := s.Send(ctx, session.SendRequest{To: "+" + e.peer.JID().User, Text: "hi from the gateway", ReplyTo: id})
		if err != nil {
			t.Fatal(err)
		}
		if res.ID == "" || res.Timestamp == 0 || res.Message.ReplyTo != id || !res.Message.FromMe {
			t.Fatalf("send result %+v", res)
		}
		waitFor(t, "the peer to decrypt the send", 20*time.Second, func() error {
			for _, rm := range e.peer.Messages(0) {
				if rm.ID == res.ID && rm.Text == "hi from the gateway" {
					return nil
				}
			}
			return errNotYet
		})
		if n := e.countEvents(msgstore.EventMessageSent, res.ID); n != 1 {
			t.Fatalf("%d message.sent events", n)
		}
		e.waitMessage(s, res.ID, func(m msgstore.Message) error {
			if m.Status != msgstore.StatusDelivered && m.Status != msgstore.StatusRead {
				return fmt.Errorf("status %q", m.Status)
			}
			return nil
		})
		if e.countEvents(msgstore.EventMessageAck, res.ID) == 0 {
			t.Fatal("no message.ack event for the delivered send")
		}

		if _, err := s.Send(ctx, session.SendRequest{To: e.peer.JID().String(), Media: struct{}{}}); !errors.Is(err, session.ErrInvalidRequest) {
			t.Fatalf("media send: %v", err)
		}
		if _, err := s.Send(ctx, session.SendRequest{To: "not a number", Text: "x"}); !errors.Is(err, session.ErrInvalidRequest) {
			t.Fatalf("bad recipient: %v", err)
		}
	})
}

// TestIdempotentSend: a retried send with the same Idempotency-Key returns
// the first result and sends nothing new.
func TestIdempotentSend(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		s, _ := e.pairQR(1)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		req := session.SendRequest{To: e.peer.JID().String(), Text: "once", IdempotencyKey: "k-1"}
		first, err := s.Send(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		again, err := s.Send(ctx, req)
		if err != nil || !again.Replayed || again.ID != first.ID {
			t.Fatalf("retry: %+v %v", again, err)
		}
		waitFor(t, "the peer to get the send", 20*time.Second, func() error {
			if len(e.peer.Messages(0)) == 0 {
				return errNotYet
			}
			return nil
		})
		time.Sleep(300 * time.Millisecond) // let a wrongly repeated send arrive, if any
		n := 0
		for _, rm := range e.peer.Messages(0) {
			if rm.Text == "once" {
				n++
			}
		}
		if n != 1 || e.countEvents(msgstore.EventMessageSent, "") != 1 {
			t.Fatalf("peer got %d copies, %d message.sent events", n, e.countEvents(msgstore.EventMessageSent, ""))
		}
	})
}

// TestOpsFromPhone: an edit, reactions and a revoke sent by the peer are
// stored and applied to the original, each with its event.
func TestOpsFromPhone(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		s, _ := e.pairQR(1)
		to := e.own.JID()
		id, err := e.peer.SendText(to, "teh original")
		if err != nil {
			t.Fatal(err)
		}
		e.waitMessage(s, id, nil)
		if _, err := e.peer.SendEdit(to, id, "the original"); err != nil {
			t.Fatal(err)
		}
		e.waitMessage(s, id, func(m msgstore.Message) error {
			if !m.Edited || m.Text != "the original" || len(m.History) != 1 || m.History[0].Text != "teh original" {
				return fmt.Errorf("not edited yet: %+v", m)
			}
			return nil
		})
		if _, err := e.peer.SendReaction(to, id, "👍"); err != nil {
			t.Fatal(err)
		}
		e.waitMessage(s, id, func(m msgstore.Message) error {
			if m.Reactions[e.peer.JID().String()] != "👍" {
				return fmt.Errorf("reactions %v", m.Reactions)
			}
			return nil
		})
		// A reaction by the gateway to the peer's message goes out and is
		// applied locally too.
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if _, err := s.Send(ctx, session.SendRequest{To: e.peer.JID().String(), Reaction: &session.Reaction{TargetID: id, Emoji: "🎉"}}); err != nil {
			t.Fatal(err)
		}
		e.waitMessage(s, id, func(m msgstore.Message) error {
			if m.Reactions[e.own.JID().String()] != "🎉" {
				return fmt.Errorf("own reaction missing: %v", m.Reactions)
			}
			return nil
		})
		if _, err := e.peer.SendRevoke(to, id); err != nil {
			t.Fatal(err)
		}
		e.waitMessage(s, id, func(m msgstore.Message) error {
			if !m.Revoked || m.Text != "" {
				return fmt.Errorf("not revoked: %+v", m)
			}
			return nil
		})
		for _, typ := range []string{msgstore.EventMessageEdited, msgstore.EventMessageReaction, msgstore.EventMessageRevoked} {
			if n := e.countEvents(typ, ""); n != 1 {
				t.Fatalf("%d %s events", n, typ)
			}
		}
		page, err := s.Messages().List(ctx, profile, msgstore.Query{Chat: e.peer.JID().String()})
		if err != nil || len(page.Messages) != 1 {
			t.Fatalf("chat list shows %d messages (%v), want the original only", len(page.Messages), err)
		}
	})
}

// TestRestartWithoutQR: a new Session object on the same store reconnects
// with the stored credentials (never pairing), and what the peer sent
// while it was down arrives exactly once.
func TestRestartWithoutQR(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		s1, dev := e.pairQR(1)
		first, err := e.peer.SendText(e.own.JID(), "before restart")
		if err != nil {
			t.Fatal(err)
		}
		e.waitMessage(s1, first, nil)
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if err := s1.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		if s1.State() != session.StateStopped {
			t.Fatalf("state after Stop %s", s1.State())
		}
		var offline []string
		for i := 0; i < 5; i++ {
			id, err := e.peer.SendText(e.own.JID(), fmt.Sprintf("while down %d", i))
			if err != nil {
				t.Fatal(err)
			}
			offline = append(offline, id)
		}
		var states []session.State
		cfg := e.config(1)
		cfg.OnStateChange = func(_ string, st session.State) { states = append(states, st) }
		s2 := e.start(cfg)
		waitState(t, s2, session.StateConnected, 30*time.Second)
		for _, st := range states {
			if st == session.StatePairing {
				t.Fatalf("restart went through pairing: %v", states)
			}
		}
		for _, id := range offline {
			e.waitMessage(s2, id, nil)
		}
		for _, id := range append(offline, first) {
			if n := e.countEvents(msgstore.EventMessageReceived, id); n != 1 {
				t.Fatalf("%d message.received events for %s", n, id)
			}
		}
		if d := e.device(dev); d.ConnectionsTotal < 2 || !d.Connected {
			t.Fatalf("device %+v", d)
		}
	})
}

// TestConflict: a second connection of the same device makes the server
// replace the first (440): the first session goes to conflict, emits
// session.conflict and does not reconnect (the device's connection count
// stays put), and Connect resumes it.
func TestConflict(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		s1, dev := e.pairQR(1)
		before := e.device(dev).ConnectionsTotal
		s2 := e.start(e.config(1)) // same store, same credentials: a second client of the device
		waitState(t, s2, session.StateConnected, 30*time.Second)
		waitState(t, s1, session.StateConflict, 20*time.Second)
		if e.countEvents(msgstore.EventSessionConflict, "") != 1 {
			t.Fatal("no session.conflict event")
		}
		settled := e.device(dev).ConnectionsTotal
		time.Sleep(3 * time.Second) // several backoff periods of s1 (100 ms … 1 s)
		d := e.device(dev)
		if d.ConnectionsTotal != settled || d.ConnectionsTotal != before+1 || s1.State() != session.StateConflict {
			t.Fatalf("reconnect loop: connections %d → %d → %d (before second client %d), s1 %s", before, settled, d.ConnectionsTotal, before, s1.State())
		}
		t.Logf("connections: before %d, after conflict %d, 3 s later %d; replaced %d", before, settled, d.ConnectionsTotal, d.ReplacedTotal)
		// The operator resumes the first session; it takes the device back.
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if err := s2.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		if err := s1.Connect(ctx); err != nil {
			t.Fatal(err)
		}
		waitState(t, s1, session.StateConnected, 30*time.Second)
	})
}

// TestLoggedOut: the phone unlinks the device: the session goes to
// logged_out, emits session.logged_out, its credentials are gone; asking
// for a QR starts a new pairing and the phone links the profile again.
func TestLoggedOut(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		s, dev := e.pairQR(1)
		if _, err := e.st.Get(context.Background(), profile, storage.NSCreds, storage.CredsKey); err != nil {
			t.Fatalf("creds before unlink: %v", err)
		}
		if err := e.own.Unlink(dev); err != nil {
			t.Fatal(err)
		}
		waitState(t, s, session.StateLoggedOut, 20*time.Second)
		if e.countEvents(msgstore.EventSessionLoggedOut, "") != 1 {
			t.Fatal("no session.logged_out event")
		}
		if _, err := e.st.Get(context.Background(), profile, storage.NSCreds, storage.CredsKey); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("creds after logout: %v", err)
		}
		if kvs, _ := e.st.Scan(context.Background(), profile, storage.NSSession, ""); len(kvs) != 0 {
			t.Fatalf("%d signal sessions left after logout", len(kvs))
		}
		// Polling QR (what GET /qr does) starts a new pairing by itself,
		// and the phone can link the profile again.
		dev2 := e.LinkQR(t, s.QR)
		waitState(t, s, session.StateConnected, 30*time.Second)
		if dev2 == dev || dev2.User != dev.User {
			t.Fatalf("re-paired as %s (was %s)", dev2, dev)
		}
		if _, err := e.st.Get(context.Background(), profile, storage.NSCreds, storage.CredsKey); err != nil {
			t.Fatalf("creds after re-pairing: %v", err)
		}
	})
}

// TestFencedStops: a newer owner raises the fence behind the session's
// back: the next message write is refused, the message is not
// acknowledged, the session stops without reconnecting; the newer owner's
// session then gets the message redelivered and stores it exactly once.
func TestFencedStops(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		s1, dev := e.pairQR(1)
		if err := e.st.RaiseFence(context.Background(), profile, 2); err != nil {
			t.Fatal(err)
		}
		id, err := e.peer.SendText(e.own.JID(), "during the takeover")
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the fenced session to stop", 20*time.Second, func() error {
			select {
			case <-s1.Done():
				return nil
			default:
				return fmt.Errorf("state %s", s1.State())
			}
		})
		if !errors.Is(s1.Err(), storage.ErrFenced) || s1.State() != session.StateStopped {
			t.Fatalf("stopped with %v in %s", s1.Err(), s1.State())
		}
		if _, err := s1.Messages().Get(context.Background(), profile, id); !errors.Is(err, msgstore.ErrNotFound) {
			t.Fatalf("fenced write landed: %v", err)
		}
		conns := e.device(dev).ConnectionsTotal
		time.Sleep(1500 * time.Millisecond)
		if d := e.device(dev); d.ConnectionsTotal != conns {
			t.Fatalf("fenced session reconnected: %d → %d", conns, d.ConnectionsTotal)
		}
		// The new owner (token 2) connects and gets the unacknowledged message.
		s2 := e.start(e.config(2))
		waitState(t, s2, session.StateConnected, 30*time.Second)
		m := e.waitMessage(s2, id, nil)
		if m.Text != "during the takeover" {
			t.Fatalf("redelivered %+v", m)
		}
		if n := e.countEvents(msgstore.EventMessageReceived, id); n != 1 {
			t.Fatalf("%d message.received events", n)
		}
	})
}

// TestPairPhone: phone-code pairing: PairPhone returns a code, the phone
// enters it, the session connects.
func TestPairPhone(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		s := e.start(e.config(1))
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		code, err := s.PairPhone(ctx, "+"+e.own.JID().User)
		if err != nil {
			t.Fatal(err)
		}
		if len(code) != 9 || code[4] != '-' {
			t.Fatalf("code %q", code)
		}
		if _, err := e.own.LinkCode(ctx, code); err != nil {
			t.Fatalf("LinkCode: %v", err)
		}
		waitState(t, s, session.StateConnected, 30*time.Second)
		if _, err := s.PairPhone(ctx, "+"+e.own.JID().User); !errors.Is(err, session.ErrAlreadyPaired) {
			t.Fatalf("PairPhone when paired: %v", err)
		}
	})
}

// TestHistorySync: the phone's bootstrap history sync seeds the store
// (deduplicated against live messages) with one history.synced summary and
// no per-message events.
func TestHistorySync(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		s, dev := e.pairQR(1)
		live, err := e.peer.SendText(e.own.JID(), "live one")
		if err != nil {
			t.Fatal(err)
		}
		e.waitMessage(s, live, nil)
		received := e.countEvents(msgstore.EventMessageReceived, "")
		peer := e.peer.JID().String()
		hist := []wasim.HistoryMessage{
			{Chat: peer, ID: "HIST0000000000000001", Text: "old 1", Timestamp: 1_700_000_000},
			{Chat: peer, ID: "HIST0000000000000002", Text: "old 2", FromMe: true, Timestamp: 1_700_000_060},
			{Chat: peer, ID: live, Text: "live one (from history)", Timestamp: time.Now().Unix()},
		}
		if _, err := e.own.SendHistorySync(dev, hist); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "history.synced", 20*time.Second, func() error {
			if e.countEvents(msgstore.EventHistorySynced, "") != 1 {
				return errNotYet
			}
			return nil
		})
		m := e.waitMessage(s, "HIST0000000000000002", nil)
		if !m.HistorySync || !m.FromMe || m.Text != "old 2" || m.Chat != peer || m.Timestamp != 1_700_000_060 {
			t.Fatalf("history message %+v", m)
		}
		if got := e.waitMessage(s, live, nil); got.Text != "live one" || got.HistorySync {
			t.Fatalf("live message overwritten by history: %+v", got)
		}
		if n := e.countEvents(msgstore.EventMessageReceived, ""); n != received {
			t.Fatalf("history produced %d message.received events", n-received)
		}
		var sum struct{ Stored, Duplicates int }
		for _, ev := range e.events() {
			if ev.Type == msgstore.EventHistorySynced {
				if err := json.Unmarshal(ev.Data, &sum); err != nil {
					t.Fatal(err)
				}
			}
		}
		if sum.Stored != 2 || sum.Duplicates != 1 {
			t.Fatalf("summary %+v", sum)
		}
		page, err := s.Messages().List(context.Background(), profile, msgstore.Query{Chat: peer})
		if err != nil || len(page.Messages) != 3 || page.Messages[2].ID != "HIST0000000000000001" {
			t.Fatalf("chat after history: %+v %v", page.Messages, err)
		}
	})
}

// TestMediaReceivedWithHook: an image from the peer is stored as media in
// state pending with its download descriptor, and the OnNewMessage hook
// records a job in the same transaction (what media.Enqueue does);
// AfterStore is told.
func TestMediaReceivedWithHook(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		var notified atomic.Int64
		cfg := e.config(1)
		cfg.OnNewMessage = func(tx storage.Tx, m msgstore.Message, origin msgstore.Origin) error {
			if m.Media != nil {
				tx.Put("test_jobs", m.ID, []byte(m.Media.DirectPath))
			}
			return nil
		}
		cfg.AfterStore = func(string) { notified.Add(1) }
		s := e.start(cfg)
		e.LinkQR(t, s.QR)
		waitState(t, s, session.StateConnected, 30*time.Second)
		data := []byte("\\x89PNG not really, but bytes to encrypt and upload")
		id, err := e.peer.SendMedia(e.own.JID(), "image", "image/png", data, "look", "")
		if err != nil {
			t.Fatal(err)
		}
		m := e.waitMessage(s, id, nil)
		md := m.Media
		if m.Type != msgstore.TypeMedia || md == nil || md.Kind != msgstore.KindImage || md.State != msgstore.MediaPending ||
			md.Caption != "look" || m.Text != "look" || md.Mime != "image/png" || md.DirectPath == "" || len(md.MediaKey) != 32 ||
			len(md.FileSHA256) != 32 || len(md.FileEncSHA256) != 32 || md.FileLength != uint64(len(data)) || md.SHA256 == "" {
			t.Fatalf("stored media %+v / %+v", m, md)
		}
		job, err := e.st.Get(context.Background(), profile, "test_jobs", id)
		if err != nil || string(job) != md.DirectPath {
			t.Fatalf("job %q %v", job, err)
		}
		if notified.Load() == 0 {
			t.Fatal("AfterStore not called")
		}
	})
}

// TestRequestReupload: for an image whose file the CDN expired, the phone
// re-uploads it on request and the session returns the new direct path;
// for media the phone never sent, it answers "not on phone".
func TestRequestReupload(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		s, _ := e.pairQR(1)
		id, err := e.peer.SendMedia(e.own.JID(), "image", "image/jpeg", []byte("jpeg bytes, more or less"), "", "")
		if err != nil {
			t.Fatal(err)
		}
		m := e.waitMessage(s, id, nil)
		cdn := func(path string) int {
			resp, err := http.Get("http://" + e.Srv.Addr() + path)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			return resp.StatusCode
		}
		if _, err := e.Srv.ExpireMedia(id); err != nil {
			t.Fatal(err)
		}
		if code := cdn(m.Media.DirectPath); code != http.StatusNotFound {
			t.Fatalf("expired file answers %d", code)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		path, err := s.RequestReupload(ctx, id, *m.Media)
		if err != nil {
			t.Fatal(err)
		}
		if code := cdn(path); path == "" || code != http.StatusOK {
			t.Fatalf("re-uploaded direct path %q answers %d", path, code)
		}
		// What the media worker gets to download it the way whatsmeow does.
		hosts, err := s.MediaHosts(ctx)
		if err != nil || len(hosts) == 0 {
			t.Fatalf("media hosts %v %v", hosts, err)
		}
		resp, err := s.MediaHTTPClient().Get("https://" + hosts[0] + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("download through the session's media client: %d", resp.StatusCode)
		}
		// Media the phone never sent (stored by hand here).
		fake := msgstore.Message{ID: "FAKE00000000000000000001", Chat: e.peer.JID().String(), From: e.peer.JID().String(),
			Type: msgstore.TypeMedia, Timestamp: time.Now().Unix(), Media: &msgstore.Media{Kind: "image", MediaKey: m.Media.MediaKey, DirectPath: "/x?y"}}
		if _, err := s.Messages().Put(ctx, profile, 1, fake, msgstore.History); err != nil {
			t.Fatal(err)
		}
		if _, err := s.RequestReupload(ctx, fake.ID, *fake.Media); !errors.Is(err, session.ErrMediaNotOnPhone) {
			t.Fatalf("reupload of unknown media: %v", err)
		}
	})
}

// TestGroup: a message from a member in a group is stored with the group
// as chat (the reply handle) and the member as sender; the gateway's reply
// to the group reaches the other member.
func TestGroup(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		s, _ := e.pairQR(1)
		grp, err := e.Srv.CreateGroup("team", e.peer, e.own)
		if err != nil {
			t.Fatal(err)
		}
		id, err := e.peer.SendText(grp, "hello team")
		if err != nil {
			t.Fatal(err)
		}
		m := e.waitMessage(s, id, nil)
		if m.Chat != grp.String() || m.From != e.peer.JID().String() || m.To != grp.String() || m.Text != "hello team" || m.FromMe {
			t.Fatalf("group message stored as %+v", m)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		res, err := s.Send(ctx, session.SendRequest{To: m.Chat, Text: "hi all", ReplyTo: id})
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the member to get the group reply", 20*time.Second, func() error {
			for _, rm := range e.peer.Messages(0) {
				if rm.ID == res.ID && rm.Text == "hi all" {
					return nil
				}
			}
			return errNotYet
		})
		if sent, err := s.Messages().Get(ctx, profile, res.ID); err != nil || sent.Chat != grp.String() || !sent.FromMe {
			t.Fatalf("stored reply %+v %v", sent, err)
		}
	})
}
