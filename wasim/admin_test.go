package wasim

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"testing"
	"time"

	"go.mau.fi/whatsmeow/proto/waE2E"
	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/types/events"
	"google.golang.org/protobuf/proto"
)

type adminClient struct {
	t    *testing.T
	base string
}

func (a adminClient) do(method, path string, body any, out any) int {
	a.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, a.base+path, rd)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		a.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode < 300 {
		if s, ok := out.(*string); ok {
			*s = string(data)
		} else if err := json.Unmarshal(data, out); err != nil {
			a.t.Fatalf("%s %s: %v: %s", method, path, err, data)
		}
	}
	return resp.StatusCode
}

func TestAdminAPI(t *testing.T) {
	h := newHarness(t)
	defer http.DefaultClient.CloseIdleConnections()
	a := adminClient{t: t, base: "http://" + h.srv.Addr()}

	var key string
	if st := a.do("GET", "/admin/root-key", nil, &key); st != 200 || key != h.srv.RootKeyHex() {
		t.Fatalf("root-key %d %q", st, key)
	}
	var created map[string]string
	if st := a.do("POST", "/admin/phones", map[string]string{"phone": "15550001111", "name": "Alice"}, &created); st != 201 || created["jid"] != "15550001111@s.whatsapp.net" {
		t.Fatalf("create: %d %v", st, created)
	}
	a.do("POST", "/admin/phones", map[string]string{"phone": "15550002222", "name": "Bob"}, nil)
	if st := a.do("POST", "/admin/phones", map[string]string{"phone": "15550002222"}, nil); st != http.StatusConflict {
		t.Fatalf("duplicate phone: %d", st)
	}
	if st := a.do("POST", "/admin/phones", map[string]string{"phone": "abc"}, nil); st != http.StatusBadRequest {
		t.Fatalf("bad phone: %d", st)
	}
	if st := a.do("POST", "/admin/phones/19999999999/messages", map[string]string{"to": "15550001111@s.whatsapp.net", "text": "x"}, nil); st != http.StatusNotFound {
		t.Fatalf("unknown phone: %d", st)
	}

	// QR pairing through the admin API.
	container := h.newContainer()
	c := h.newClient(container.NewDevice(), container)
	qrCh, _ := c.cli.GetQRChannel(h.ctx)
	must(t, c.cli.Connect())
	item := <-qrCh
	var linked map[string]string
	if st := a.do("POST", "/admin/phones/15550001111/link", map[string]string{"qr": item.Code}, &linked); st != 200 {
		t.Fatalf("link: %d", st)
	}
	waitEvent[*events.Connected](c, 15*time.Second, nil)
	if linked["device_jid"] != c.cli.Store.ID.String() {
		t.Fatalf("device_jid %q, store %s", linked["device_jid"], c.cli.Store.ID)
	}

	// Text, media, reaction, edit, revoke from Bob's phone.
	send := func(body map[string]any) string {
		var r map[string]string
		if st := a.do("POST", "/admin/phones/15550002222/messages", body, &r); st != 200 || r["id"] == "" {
			t.Fatalf("send %v: %d", body, st)
		}
		return r["id"]
	}
	to := "15550001111@s.whatsapp.net"
	textID := send(map[string]any{"to": to, "text": "hello via admin"})
	evt := waitEvent[*events.Message](c, 10*time.Second, func(m *events.Message) bool { return m.Info.ID == textID })
	if evt.Message.GetConversation() != "hello via admin" {
		t.Fatalf("text %+v", evt.Message)
	}
	pic := randomBytes(5000)
	mediaID := send(map[string]any{"to": to, "media": map[string]string{"kind": "image", "mime": "image/jpeg", "data": base64.StdEncoding.EncodeToString(pic), "caption": "pic"}})
	evt = waitEvent[*events.Message](c, 10*time.Second, func(m *events.Message) bool { return m.Info.ID == mediaID })
	ctx, cancel := context.WithTimeout(h.ctx, 10*time.Second)
	defer cancel()
	if data, err := c.cli.Download(ctx, evt.Message.GetImageMessage()); err != nil || !bytes.Equal(data, pic) {
		t.Fatalf("download: %v", err)
	}
	for _, body := range []map[string]any{
		{"to": to, "reaction": "🎉", "target_id": textID},
		{"to": to, "edit": "edited via admin", "target_id": textID},
		{"to": to, "revoke": true, "target_id": textID},
	} {
		id := send(body)
		waitEvent[*events.Message](c, 10*time.Second, func(m *events.Message) bool { return m.Info.ID == id })
	}
	if st := a.do("POST", "/admin/phones/15550002222/messages", map[string]any{"to": to, "revoke": true}, nil); st != http.StatusBadRequest {
		t.Fatalf("revoke without target: %d", st)
	}

	// The client sends to Bob; Bob's decrypted inbox is served as JSON.
	if _, err := c.cli.SendMessage(ctx, mustJID("15550002222@s.whatsapp.net"), textMessage("hi bob")); err != nil {
		t.Fatal(err)
	}
	var msgs []ReceivedMessage
	poll(t, 5*time.Second, "bob's inbox", func() bool {
		msgs = nil
		a.do("GET", "/admin/phones/15550002222/messages?after=0", nil, &msgs)
		for _, m := range msgs {
			if m.Text == "hi bob" && m.Type == "text" && m.From == c.cli.Store.ID.String() {
				return true
			}
		}
		return false
	})
	// Bob's phone reads it: the client gets a read receipt.
	var hiBob string
	for _, m := range msgs {
		if m.Text == "hi bob" {
			hiBob = m.ID
		}
	}
	if code := a.do("POST", "/admin/phones/15550002222/read", map[string]string{"id": hiBob}, nil); code != 200 {
		t.Fatalf("read: %d", code)
	}
	waitEvent[*events.Receipt](c, 10*time.Second, func(r *events.Receipt) bool {
		return r.Type == types.ReceiptTypeRead && len(r.MessageIDs) == 1 && r.MessageIDs[0] == hiBob
	})
	if code := a.do("POST", "/admin/phones/15550002222/read", map[string]string{"id": "nope"}, nil); code != http.StatusNotFound {
		t.Fatalf("read of unknown message: %d", code)
	}
	last := msgs[len(msgs)-1].Seq
	var none []ReceivedMessage
	a.do("GET", "/admin/phones/15550002222/messages?after="+url.QueryEscape(itoa(last)), nil, &none)
	if len(none) != 0 {
		t.Fatalf("after=%d returned %d messages", last, len(none))
	}

	var grp map[string]string
	if code := a.do("POST", "/admin/groups", map[string]any{"subject": "team", "creator": "15550002222", "members": []string{"15550001111"}}, &grp); code != 201 {
		t.Fatalf("create group: %d", code)
	}
	gid := send(map[string]any{"to": grp["jid"], "text": "to the group"})
	ge := waitEvent[*events.Message](c, 10*time.Second, func(m *events.Message) bool {
		return m.Info.ID == gid && m.Message.GetConversation() == "to the group"
	})
	if !ge.Info.IsGroup || ge.Info.Chat.String() != grp["jid"] {
		t.Fatalf("group message %+v", ge.Info)
	}
	if code := a.do("POST", "/admin/groups", map[string]any{"creator": "19999999999"}, nil); code != http.StatusNotFound {
		t.Fatalf("group with unknown creator: %d", code)
	}

	var devs []DeviceInfo
	a.do("GET", "/admin/devices", nil, &devs)
	if len(devs) != 1 || !devs[0].Connected || devs[0].JID != c.cli.Store.ID.String() {
		t.Fatalf("devices %+v", devs)
	}
	var st Stats
	a.do("GET", "/admin/stats", nil, &st)
	if st.Phones != 2 || st.Devices != 1 || st.MessagesRouted < 6 || st.MediaBlobs < 1 {
		t.Fatalf("stats %+v", st)
	}
	var exp map[string]int
	if code := a.do("POST", "/admin/media/expire", map[string]string{}, &exp); code != 200 || exp["expired"] < 1 {
		t.Fatalf("expire all: %d %v", code, exp)
	}
	if _, err := c.cli.Download(ctx, evt.Message.GetImageMessage()); err == nil {
		t.Fatal("expired media still downloads")
	}

	if code := a.do("DELETE", "/admin/phones/15550001111/devices/"+url.PathEscape(c.cli.Store.ID.String()), nil, nil); code != 200 {
		t.Fatalf("unlink: %d", code)
	}
	waitEvent[*events.LoggedOut](c, 10*time.Second, nil)
}

func itoa(v int64) string { return strconv.FormatInt(v, 10) }

func textMessage(s string) *waE2E.Message { return &waE2E.Message{Conversation: proto.String(s)} }
