package wasim

import (
	"bytes"
	"compress/zlib"
	"context"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/protobuf/proto"

	"go.mau.fi/whatsmeow"
	waBinary "go.mau.fi/whatsmeow/binary"
	"go.mau.fi/whatsmeow/proto/waWa6"
	"go.mau.fi/whatsmeow/socket"
	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/util/keys"
)

// rawClient speaks the wire protocol by hand so tests can send what a real
// client never would.
type rawClient struct {
	t  testing.TB
	ws *websocket.Conn
	tr *transport // client view: read = server's write key
}

func dialRaw(t testing.TB, h *harness) *rawClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(h.ctx, 5*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, h.srv.URL(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ws.SetReadLimit(1 << 24)
	t.Cleanup(func() { ws.CloseNow() })
	return &rawClient{t: t, ws: ws}
}

func (r *rawClient) writeMsg(b []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return r.ws.Write(ctx, websocket.MessageBinary, b)
}

func (r *rawClient) readFrame() ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, data, err := r.ws.Read(ctx)
	if err != nil {
		return nil, err
	}
	frames, err := DecodeFrames(data, false, 1<<24)
	if err != nil || len(frames) != 1 {
		r.t.Fatalf("server frame: %v (%d frames)", err, len(frames))
	}
	return frames[0], nil
}

// handshake performs the client side of the Noise handshake with a
// registration payload; the server answers with pair-device.
func (r *rawClient) handshake() {
	r.t.Helper()
	payload := &waWa6.ClientPayload{DevicePairingData: &waWa6.ClientPayload_DevicePairingRegistrationData{
		ERegid: be32(7), EKeytype: []byte{5}, EIdent: randomBytes(32), ESkeyID: be24(1),
		ESkeyVal: randomBytes(32), ESkeySig: randomBytes(64),
	}}
	n := r.handshakeWith(keys.NewKeyPair(), payload)
	if n.GetChildByTag("pair-device").Tag != "pair-device" {
		r.t.Fatalf("expected pair-device, got %v", n)
	}
}

// handshakeWith runs the Noise handshake with the given static key and
// ClientPayload and returns the first node the server sends.
func (r *rawClient) handshakeWith(cs *keys.KeyPair, clientPayload *waWa6.ClientPayload) *waBinary.Node {
	r.t.Helper()
	ns := newNoiseState()
	e := keys.NewKeyPair()
	ns.authenticate(e.Pub[:])
	hello, _ := proto.Marshal(&waWa6.HandshakeMessage{ClientHello: &waWa6.HandshakeMessage_ClientHello{Ephemeral: e.Pub[:]}})
	f, _ := EncodeFrame(hello)
	if err := r.writeMsg(append(append([]byte{}, socket.WAConnHeader...), f...)); err != nil {
		r.t.Fatal(err)
	}
	resp, err := r.readFrame()
	if err != nil {
		r.t.Fatal(err)
	}
	var hm waWa6.HandshakeMessage
	if err := proto.Unmarshal(resp, &hm); err != nil {
		r.t.Fatal(err)
	}
	sh := hm.GetServerHello()
	ns.authenticate(sh.GetEphemeral())
	must(r.t, ns.mixDH(e.Priv[:], sh.GetEphemeral()))
	static, err := ns.decrypt(sh.GetStatic())
	must(r.t, err)
	must(r.t, ns.mixDH(e.Priv[:], static))
	if _, err := ns.decrypt(sh.GetPayload()); err != nil {
		r.t.Fatal(err)
	}
	staticCT := ns.encrypt(cs.Pub[:])
	must(r.t, ns.mixDH(cs.Priv[:], sh.GetEphemeral()))
	payload, _ := proto.Marshal(clientPayload)
	fin, _ := proto.Marshal(&waWa6.HandshakeMessage{ClientFinish: &waWa6.HandshakeMessage_ClientFinish{
		Static: staticCT, Payload: ns.encrypt(payload),
	}})
	f, _ = EncodeFrame(fin)
	must(r.t, r.writeMsg(f))
	k1, k2, err := ns.split()
	must(r.t, err)
	r.tr = &transport{read: k2, write: k1}
	n, err := r.readNode()
	must(r.t, err)
	return n
}

func (r *rawClient) readNode() (*waBinary.Node, error) {
	pt, err := r.readFrame()
	if err != nil {
		return nil, err
	}
	plain, err := r.tr.open(pt)
	if err != nil {
		return nil, err
	}
	return DecodeNode(plain, 1<<24)
}

func (r *rawClient) sendNode(n waBinary.Node) error {
	b, err := EncodeNode(n)
	if err != nil {
		return err
	}
	return r.sendEncrypted(b)
}

func (r *rawClient) sendEncrypted(payload []byte) error {
	f, err := EncodeFrame(r.tr.seal(payload))
	if err != nil {
		return err
	}
	return r.writeMsg(f)
}

// expectClosed waits until the server closes the connection.
func (r *rawClient) expectClosed() {
	r.t.Helper()
	for i := 0; i < 10; i++ {
		if _, err := r.readFrame(); err != nil {
			return
		}
	}
	r.t.Fatal("server kept the connection open")
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func deepNode(depth int) []byte {
	// <x> with a JID attribute made of `depth` nested JID pairs.
	b := []byte{0, 248, 3, 4, 5}
	for i := 0; i < depth; i++ {
		b = append(b, 250)
	}
	return b
}

func zlibBomb(size int) []byte {
	var buf bytes.Buffer
	w := zlib.NewWriter(&buf)
	w.Write(make([]byte, size))
	w.Close()
	return append([]byte{2}, buf.Bytes()...)
}

func TestBadInputClosesOnlyThatConnection(t *testing.T) {
	h := newHarness(t)
	big := make([]byte, 3)
	big[0], big[1], big[2] = 0xFF, 0xFF, 0xFF

	preHandshake := map[string][]byte{
		"wrong header":      []byte("GET / HTTP/1.1\r\n"),
		"oversized frame":   append(append([]byte{}, socket.WAConnHeader...), append(big, make([]byte, 100)...)...),
		"truncated frame":   append(append([]byte{}, socket.WAConnHeader...), 0, 0, 50, 1, 2),
		"garbage hello":     append(append([]byte{}, socket.WAConnHeader...), 0, 0, 4, 0xFF, 0xFF, 0xFF, 0xFF),
		"hello without key": append(append([]byte{}, socket.WAConnHeader...), 0, 0, 0),
	}
	for name, msg := range preHandshake {
		t.Run(name, func(t *testing.T) {
			r := dialRaw(t, h)
			_ = r.writeMsg(msg)
			r.expectClosed()
		})
	}
	bomb := zlibBomb(64 << 20)
	postHandshake := map[string]func(r *rawClient) error{
		"undecryptable frame": func(r *rawClient) error {
			f, _ := EncodeFrame(randomBytes(64))
			return r.writeMsg(f)
		},
		"garbage node":   func(r *rawClient) error { return r.sendEncrypted([]byte{0, 248, 9, 250, 250, 1}) },
		"deep nesting":   func(r *rawClient) error { return r.sendEncrypted(deepNode(1 << 20)) },
		"zlib bomb":      func(r *rawClient) error { return r.sendEncrypted(bomb) },
		"empty frame":    func(r *rawClient) error { return r.sendEncrypted(nil) },
		"oversized node": func(r *rawClient) error { return r.sendEncrypted(make([]byte, 5<<20)) },
	}
	for name, send := range postHandshake {
		t.Run(name, func(t *testing.T) {
			r := dialRaw(t, h)
			r.handshake()
			_ = send(r)
			r.expectClosed()
		})
	}
	if st := h.srv.Stats(); st.HandshakeFailures < uint64(len(preHandshake)) || st.BadFrames < 5 {
		t.Fatalf("stats %+v", st)
	}
	// The server still pairs a real client.
	alice, _ := h.srv.CreatePhone("15550001111", "Alice")
	h.pairQR(alice)
}

func TestUnknownIQAnsweredWithError(t *testing.T) {
	h := newHarness(t)
	alice, _ := h.srv.CreatePhone("15550001111", "Alice")
	c := h.pairQR(alice)
	ctx, cancel := context.WithTimeout(h.ctx, 5*time.Second)
	defer cancel()
	// Group info is not simulated: the client must get an error quickly,
	// not wait 75 s.
	_, err := c.cli.GetGroupInfo(ctx, mustJID("123456789-123@g.us"))
	if err == nil {
		t.Fatal("expected an error for an unsimulated iq")
	}
	if ctx.Err() != nil {
		t.Fatal("iq was not answered")
	}
	// Keepalive pings are answered.
	if _, err := c.cli.DangerousInternals().SendIQ(ctx, whatsmeowPing()); err != nil {
		t.Fatalf("w:p: %v", err)
	}
}

func whatsmeowPing() whatsmeow.DangerousInfoQuery {
	return whatsmeow.DangerousInfoQuery{Namespace: "w:p", Type: "get", To: types.ServerJID}
}

func TestMessageToUnsimulatedServerIsRejected(t *testing.T) {
	h := newHarness(t)
	alice, _ := h.srv.CreatePhone("15550001111", "Alice")
	noise := keys.NewKeyPair()
	r := rawLogin(t, h, h.srv.addFakeDevice(alice, noise, 10), noise)
	for target, want := range map[string]string{"status@broadcast": "501", "123-456@g.us": "404"} {
		id := "X" + want
		must(t, r.sendNode(waBinary.Node{Tag: "message", Attrs: waBinary.Attrs{"id": id, "to": mustJID(target), "type": "text"},
			Content: []waBinary.Node{{Tag: "enc", Attrs: waBinary.Attrs{"v": "2", "type": "skmsg"}, Content: []byte{1}}}}))
		for {
			n, err := r.readNode()
			must(t, err)
			if n.Tag == "ack" && n.Attrs["id"] == id {
				if n.Attrs["error"] != want {
					t.Fatalf("%s: ack %v", target, n.Attrs)
				}
				break
			}
		}
	}
}
