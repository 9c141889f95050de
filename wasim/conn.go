package wasim

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/protobuf/proto"

	waBinary "go.mau.fi/whatsmeow/binary"
	"go.mau.fi/whatsmeow/proto/waWa6"
	"go.mau.fi/whatsmeow/util/keys"
)

// conn is one websocket connection from a client. Its read loop runs in the
// HTTP handler goroutine and handles nodes in order; writes from any
// goroutine are serialized by wmu.
type conn struct {
	srv *Server
	ws  *websocket.Conn
	id  uint64
	log *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc

	wmu sync.Mutex
	tr  *transport

	noisePub [32]byte
	payload  *waWa6.ClientPayload

	// dev is set once a login handshake authenticated a known device.
	dev *device
	// reg is set for an unpaired (registration) connection.
	reg *registration

	closing atomic.Bool
}

// registration is what an unpaired client told us in its ClientPayload.
type registration struct {
	regID    uint32
	identity [32]byte
	skeyID   uint32
	skey     [32]byte
	skeySig  [64]byte
	refs     []string

	mu sync.Mutex
	// pairIQ is the id of the pair-success iq we sent, with the device we
	// provisionally created for it.
	pairIQ  string
	pairDev *device
	pairRes chan error
	// link-code (phone-code) pairing state.
	code *codePairing
}

func (s *Server) serveWS(ctx context.Context, ws *websocket.Conn, remote string) {
	c := &conn{srv: s, ws: ws, id: s.connSeq.Add(1)}
	c.ctx, c.cancel = context.WithCancel(ctx)
	defer c.cancel()
	c.log = s.log.With("conn", c.id, "remote", remote)
	ws.SetReadLimit(int64(s.cfg.MaxFrameSize) + 64)
	s.stats.connectionsOpened.Add(1)
	defer c.closed()

	if err := c.handshake(); err != nil {
		s.stats.handshakeFailures.Add(1)
		c.log.Info("handshake failed, closing", "err", err)
		ws.Close(websocket.StatusPolicyViolation, "handshake failed")
		return
	}
	if err := c.afterHandshake(); err != nil {
		c.log.Info("closing after handshake", "err", err)
		return
	}
	c.readLoop()
}

func (c *conn) readFrames(ctx context.Context, first bool) ([][]byte, error) {
	typ, data, err := c.ws.Read(ctx)
	if err != nil {
		return nil, err
	}
	if typ != websocket.MessageBinary {
		return nil, nil
	}
	return DecodeFrames(data, first, c.srv.cfg.MaxFrameSize)
}

func (c *conn) readHandshakeMessage(ctx context.Context, first bool) (*waWa6.HandshakeMessage, error) {
	for {
		frames, err := c.readFrames(ctx, first)
		if err != nil {
			return nil, err
		}
		if len(frames) == 0 {
			continue
		}
		if len(frames) != 1 {
			return nil, errors.New("more than one frame during handshake")
		}
		var hm waWa6.HandshakeMessage
		if err := proto.Unmarshal(frames[0], &hm); err != nil {
			return nil, fmt.Errorf("handshake message: %w", err)
		}
		return &hm, nil
	}
}

func (c *conn) writeRaw(ctx context.Context, payload []byte) error {
	frame, err := EncodeFrame(payload)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, c.srv.cfg.WriteTimeout)
	defer cancel()
	return c.ws.Write(ctx, websocket.MessageBinary, frame)
}

// handshake runs the Noise XX responder (notes §2.2).
func (c *conn) handshake() error {
	ctx, cancel := context.WithTimeout(c.ctx, c.srv.cfg.HandshakeTimeout)
	defer cancel()
	hello, err := c.readHandshakeMessage(ctx, true)
	if err != nil {
		return fmt.Errorf("client hello: %w", err)
	}
	eph := hello.GetClientHello().GetEphemeral()
	if len(eph) != 32 {
		return errors.New("client hello: bad ephemeral")
	}
	ns := newNoiseState()
	ns.authenticate(eph)
	se := keys.NewKeyPair()
	ns.authenticate(se.Pub[:])
	if err := ns.mixDH(se.Priv[:], eph); err != nil {
		return err
	}
	staticCT := ns.encrypt(c.srv.static.Pub[:])
	if err := ns.mixDH(c.srv.static.Priv[:], eph); err != nil {
		return err
	}
	payloadCT := ns.encrypt(c.srv.certChain)
	out, err := proto.Marshal(&waWa6.HandshakeMessage{ServerHello: &waWa6.HandshakeMessage_ServerHello{
		Ephemeral: se.Pub[:], Static: staticCT, Payload: payloadCT,
	}})
	if err != nil {
		return err
	}
	if err := c.writeRaw(ctx, out); err != nil {
		return fmt.Errorf("server hello: %w", err)
	}
	finish, err := c.readHandshakeMessage(ctx, false)
	if err != nil {
		return fmt.Errorf("client finish: %w", err)
	}
	cf := finish.GetClientFinish()
	if cf == nil {
		return errors.New("client finish missing")
	}
	static, err := ns.decrypt(cf.GetStatic())
	if err != nil || len(static) != 32 {
		return errors.New("client finish: bad static")
	}
	if err := ns.mixDH(se.Priv[:], static); err != nil {
		return err
	}
	payloadPT, err := ns.decrypt(cf.GetPayload())
	if err != nil {
		return errors.New("client finish: payload decryption failed")
	}
	var payload waWa6.ClientPayload
	if err := proto.Unmarshal(payloadPT, &payload); err != nil {
		return fmt.Errorf("client payload: %w", err)
	}
	read, write, err := ns.split()
	if err != nil {
		return err
	}
	c.tr = &transport{read: read, write: write}
	copy(c.noisePub[:], static)
	c.payload = &payload
	return nil
}

// send encrypts and writes one node. Safe for concurrent use.
func (c *conn) send(n waBinary.Node) error {
	data, err := EncodeNode(n)
	if err != nil {
		return fmt.Errorf("marshal %s: %w", n.Tag, err)
	}
	return c.sendEncoded(data)
}

func (c *conn) sendEncoded(data []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.closing.Load() && c.ctx.Err() != nil {
		return errConnClosed
	}
	if err := c.writeRaw(c.ctx, c.tr.seal(data)); err != nil {
		c.cancel()
		return err
	}
	c.srv.stats.nodesSent.Add(1)
	return nil
}

var errConnClosed = errors.New("wasim: connection closed")

func (c *conn) readLoop() {
	for {
		// whatsmeow pings every 20-30 s; a silent peer (frozen process,
		// dead network) is dropped after IdleTimeout.
		ctx, cancel := context.WithTimeout(c.ctx, c.srv.cfg.IdleTimeout)
		frames, err := c.readFrames(ctx, false)
		idle := ctx.Err() != nil && c.ctx.Err() == nil
		cancel()
		if idle {
			c.log.Info("idle connection, closing", "idle_timeout", c.srv.cfg.IdleTimeout)
			return
		}
		if err != nil {
			if c.ctx.Err() == nil && !isNormalClose(err) {
				c.log.Info("closing connection", "err", err)
				if errors.Is(err, ErrFrameTooLarge) || errors.Is(err, ErrShortFrame) {
					c.srv.stats.badFrames.Add(1)
					c.ws.Close(websocket.StatusPolicyViolation, "bad frame")
				}
			}
			return
		}
		for _, f := range frames {
			pt, err := c.tr.open(f)
			if err != nil {
				// whatsmeow drops such frames too; a peer that cannot
				// encrypt is broken, so close.
				c.srv.stats.badFrames.Add(1)
				c.log.Info("undecryptable frame, closing")
				c.ws.Close(websocket.StatusPolicyViolation, "bad frame")
				return
			}
			node, err := DecodeNode(pt, c.srv.cfg.MaxFrameSize)
			if err != nil {
				c.srv.stats.badFrames.Add(1)
				c.log.Info("undecodable node, closing", "err", err)
				c.ws.Close(websocket.StatusPolicyViolation, "bad node")
				return
			}
			c.srv.stats.nodesReceived.Add(1)
			if c.closing.Load() {
				// After a terminal stream error (replaced, device_removed,
				// 515) nothing from this connection is routed any more:
				// only its newer replacement speaks for the device.
				continue
			}
			c.handleNode(node)
		}
	}
}

func isNormalClose(err error) bool {
	s := websocket.CloseStatus(err)
	return s == websocket.StatusNormalClosure || s == websocket.StatusGoingAway
}

// closeAfter sends nothing more and closes the socket after the configured
// delay, so that the client has handled the preceding stream error.
func (c *conn) closeAfter(delay time.Duration) {
	if !c.closing.CompareAndSwap(false, true) {
		return
	}
	c.srv.goAfter(delay, func() {
		// A hard close: a frozen peer must not stretch the close handshake
		// (and the overlap a replaced connection is charged with).
		c.ws.CloseNow()
		c.cancel()
	})
}

func (c *conn) closed() {
	c.closing.Store(true)
	c.ws.CloseNow()
	c.srv.connClosed(c)
}

func randomID(n int) string {
	const hex = "0123456789ABCDEF"
	b := make([]byte, n)
	rand.Read(b)
	out := make([]byte, 2*n)
	for i, v := range b {
		out[2*i], out[2*i+1] = hex[v>>4], hex[v&15]
	}
	return string(out)
}
