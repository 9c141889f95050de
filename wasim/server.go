package wasim

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	waBinary "go.mau.fi/whatsmeow/binary"
	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/util/keys"
)

// Server is a loopback WhatsApp Web server simulator: the websocket endpoint
// that unmodified whatsmeow clients connect to, simulated phones, a media
// store and the admin API, all on one HTTP listener.
type Server struct {
	cfg       Config
	log       *slog.Logger
	root      *keys.KeyPair
	static    *keys.KeyPair
	certChain []byte

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	ln     net.Listener
	http   *http.Server
	media  *mediaStore

	mu       sync.RWMutex
	accounts map[string]*account // by phone number
	byLID    map[string]*account
	conns    map[*conn]struct{}
	pairRefs map[string]*conn
	groups   map[string]*group // by group id (JID user)
	gx       groupState
	lidSeq   uint64
	groupSeq uint64
	closed   bool

	connSeq   atomic.Uint64
	msgSeq    atomic.Uint64
	stats     counters
	unknownMu sync.Mutex
	unknown   map[string]bool
}

type counters struct {
	connectionsOpened atomic.Uint64
	handshakeFailures atomic.Uint64
	badFrames         atomic.Uint64
	nodesReceived     atomic.Uint64
	nodesSent         atomic.Uint64
	messagesRouted    atomic.Uint64
	receiptsRouted    atomic.Uint64
	replaced          atomic.Uint64
	pairings          atomic.Uint64
	unknownIQs        atomic.Uint64
	mediaRetries      atomic.Uint64
}

// New builds a Server from cfg. Call Start to listen.
func New(cfg Config) (*Server, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Server{
		cfg:      cfg,
		log:      cfg.Logger,
		static:   keys.NewKeyPair(),
		accounts: map[string]*account{},
		byLID:    map[string]*account{},
		conns:    map[*conn]struct{}{},
		pairRefs: map[string]*conn{},
		groups:   map[string]*group{},
		unknown:  map[string]bool{},
		lidSeq:   100000000000000,
	}
	if cfg.RootPrivateKey != nil {
		s.root = keys.NewKeyPairFromPrivateKey([32]byte(cfg.RootPrivateKey))
	} else {
		s.root = keys.NewKeyPair()
	}
	var err error
	if s.certChain, err = certChain(s.root, s.static); err != nil {
		return nil, fmt.Errorf("wasim: cert chain: %w", err)
	}
	s.media = newMediaStore(s)
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

// Start listens on Config.Addr and serves until Close or ctx ends.
func (s *Server) Start(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("wasim: listen: %w", err)
	}
	s.ln = ln
	s.http = &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return s.ctx },
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		if err := s.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("wasim serve", "err", err)
		}
	}()
	go func() {
		defer s.wg.Done()
		select {
		case <-ctx.Done():
			s.shutdown()
		case <-s.ctx.Done():
		}
	}()
	s.log.Info("wasim listening", "addr", ln.Addr().String())
	return nil
}

// Addr returns the listen address (host:port). Valid after Start.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// URL returns the websocket URL clients would dial, e.g. ws://127.0.0.1:9800/ws/chat.
func (s *Server) URL() string { return "ws://" + s.Addr() + "/ws/chat" }

// RootKey returns the public key of the certificate root. Clients must set
// whatsmeow.WACertPubKey to it (see SetRootKey).
func (s *Server) RootKey() [32]byte { return *s.root.Pub }

// RootKeyHex returns RootKey hex-encoded, as served by GET /admin/root-key.
func (s *Server) RootKeyHex() string { return hex.EncodeToString(s.root.Pub[:]) }

// Close stops the listener, closes every connection and waits for every
// goroutine the server started. It is safe to call more than once.
func (s *Server) Close() error {
	err := s.shutdown()
	s.wg.Wait()
	return err
}

// shutdown stops accepting and closes connections without waiting, so the
// context watcher (itself a server goroutine) can call it.
func (s *Server) shutdown() error {
	s.mu.Lock()
	already := s.closed
	s.closed = true
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	if already {
		return nil
	}
	s.cancel()
	if s.http == nil {
		return nil
	}
	// Hijacked websocket connections are not tracked by Shutdown.
	for _, c := range conns {
		c.ws.CloseNow()
		c.cancel()
	}
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := s.http.Shutdown(sctx); err != nil {
		// Admin requests still running (a link waiting for its companion)
		// are cut off.
		s.http.Close()
	}
	return nil
}

// goAfter runs f after d on a goroutine owned by the server; it is dropped
// when the server closes first.
func (s *Server) goAfter(d time.Duration, f func()) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-s.ctx.Done():
		}
		f()
	}()
}

// Handler returns the server's HTTP handler: /ws/chat, /admin/*, media.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ws/chat", s.handleWS)
	s.adminRoutes(mux)
	s.media.routes(mux)
	return mux
}

func (s *Server) handleWS(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		http.Error(w, "closing", http.StatusServiceUnavailable)
		return
	}
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		s.log.Info("websocket accept failed", "err", err)
		return
	}
	s.serveWS(s.ctx, ws, r.RemoteAddr)
}

func (s *Server) connOpened(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Server) connClosed(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	if c.reg != nil {
		for _, ref := range c.reg.refs {
			if s.pairRefs[ref] == c {
				delete(s.pairRefs, ref)
			}
		}
	}
	s.mu.Unlock()
	if c.reg != nil {
		c.reg.abortPairing(errConnClosed)
		s.abortCodePairing(c)
	}
	if d := c.dev; d != nil {
		d.mu.Lock()
		d.openConns--
		if d.openConns < 2 && !d.overlapSince.IsZero() {
			d.overlap += time.Since(d.overlapSince)
			d.overlapSince = time.Time{}
		}
		if d.conn == c {
			d.conn = nil
			d.active = false
		}
		d.mu.Unlock()
	}
}

// afterHandshake decides between registration (pairing) and login.
func (c *conn) afterHandshake() error {
	if !c.srv.connOpened(c) {
		return errConnClosed
	}
	p := c.payload
	if p.Username == nil || p.GetUsername() == 0 {
		return c.startRegistration()
	}
	return c.login(strconv.FormatUint(p.GetUsername(), 10), uint16(p.GetDevice()))
}

func (c *conn) login(user string, idx uint16) error {
	s := c.srv
	s.mu.RLock()
	var d *device
	if a := s.accounts[user]; a != nil {
		d = a.devices[idx]
	}
	s.mu.RUnlock()
	if d != nil {
		d.mu.Lock()
		if !d.linked || d.removed || d.noisePub != c.noisePub {
			d.mu.Unlock()
			d = nil
		}
	}
	if d == nil {
		c.log.Info("login of unknown device, sending 401", "user", user, "device", idx)
		_ = c.send(waBinary.Node{Tag: "failure", Attrs: waBinary.Attrs{"reason": "401", "location": "wasim"}})
		c.closeAfter(s.cfg.StreamErrorCloseDelay)
		return nil
	}
	// d.mu held.
	authAt := time.Now()
	if old := d.conn; old != nil && old.ctx.Err() == nil {
		// A client that reconnects quickly may log in before we saw its
		// previous socket close: give the old connection a moment to go
		// away on its own before calling it a replacement.
		d.mu.Unlock()
		t := time.NewTimer(s.cfg.ReplaceGrace)
		select {
		case <-old.ctx.Done():
		case <-t.C:
		case <-c.ctx.Done():
		}
		t.Stop()
		d.mu.Lock()
		if d.removed {
			d.mu.Unlock()
			_ = c.send(waBinary.Node{Tag: "failure", Attrs: waBinary.Attrs{"reason": "401", "location": "wasim"}})
			c.closeAfter(s.cfg.StreamErrorCloseDelay)
			return nil
		}
	}
	c.dev = d
	old := d.conn
	if old != nil && old.ctx.Err() != nil {
		old = nil // already gone; its cleanup only decrements openConns
	}
	d.conn = c
	d.active = false
	d.connectionsTotal++
	d.openConns++
	if d.openConns >= 2 && d.overlapSince.IsZero() {
		d.overlapSince = authAt
	}
	if old != nil {
		d.replacedTotal++
	}
	d.mu.Unlock()
	c.log = c.log.With("device", d.jid().String())
	if old != nil {
		s.stats.replaced.Add(1)
		c.log.Info("device connected twice, replacing older connection", "old_conn", old.id)
		_ = old.send(waBinary.Node{Tag: "stream:error", Content: []waBinary.Node{{Tag: "conflict", Attrs: waBinary.Attrs{"type": "replaced"}}}})
		old.closeAfter(s.cfg.StreamErrorCloseDelay)
	}
	return c.send(waBinary.Node{Tag: "success", Attrs: waBinary.Attrs{
		"t":   time.Now().Unix(),
		"lid": d.lidJID(),
	}})
}

// iqResult builds an empty result for a client iq.
func iqResult(req *waBinary.Node, content ...waBinary.Node) waBinary.Node {
	n := waBinary.Node{Tag: "iq", Attrs: waBinary.Attrs{
		"id": req.Attrs["id"], "type": "result", "from": types.ServerJID,
	}}
	if len(content) > 0 {
		n.Content = content
	}
	return n
}

func iqError(req *waBinary.Node, code int, text string) waBinary.Node {
	return waBinary.Node{Tag: "iq", Attrs: waBinary.Attrs{
		"id": req.Attrs["id"], "type": "error", "from": types.ServerJID,
	}, Content: []waBinary.Node{{Tag: "error", Attrs: waBinary.Attrs{"code": code, "text": text}}}}
}

func (s *Server) logUnknownOnce(kind string, attrs ...any) {
	s.stats.unknownIQs.Add(1)
	s.unknownMu.Lock()
	seen := s.unknown[kind]
	s.unknown[kind] = true
	s.unknownMu.Unlock()
	if !seen {
		s.log.Info("unhandled request kind (logged once)", append([]any{"kind", kind}, attrs...)...)
	}
}
