package session_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/util/keys"
	"go.uber.org/goleak"

	"github.com/amarula/amarula/internal/testenv"
	"github.com/amarula/amarula/msgstore"
	"github.com/amarula/amarula/session"
	"github.com/amarula/amarula/storage"
	"github.com/amarula/amarula/storage/bolt"
	"github.com/amarula/amarula/storage/redis"
	"github.com/amarula/amarula/wasim"
)

// testRoot is the one simulator root of this test process: whatsmeow's
// WACertPubKey is a process global.
var testRoot = keys.NewKeyPair()

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// Idle keep-alive connections of http.Transports (clients' and ours).
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		// whatsmeow's frame pump can stay blocked handing a last frame to a
		// client that already disconnected (inside whatsmeow).
		goleak.IgnoreTopFunction("go.mau.fi/whatsmeow/socket.(*FrameSocket).frameComplete"),
	)
}

func logger(t *testing.T) *slog.Logger {
	level := slog.LevelWarn
	if os.Getenv("SESSION_DEBUG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})).With("test", t.Name())
}

// env is one test's world: a simulator with two phones (own: the account
// the gateway links to; peer: someone who chats with it) and a store.
type env struct {
	t    *testing.T
	srv  *wasim.Server
	own  *wasim.Phone
	peer *wasim.Phone
	st   storage.Store
	ctx  context.Context
}

// backendMaker opens a store; each test runs on every real adapter.
type backendMaker struct {
	name string
	open func(t *testing.T) storage.Store
}

var backendMakers = []backendMaker{
	{"bolt", func(t *testing.T) storage.Store {
		st, err := bolt.Open(t.TempDir(), bolt.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		return st
	}},
	{"redis", func(t *testing.T) storage.Store {
		srv := testenv.StartRedis(t)
		st, err := redis.New(context.Background(), srv.URL(), redis.Options{})
		if err != nil {
			t.Fatalf("redis.New(%s): %v", srv.URL(), err)
		}
		t.Cleanup(func() { _ = st.Close() })
		return st
	}},
}

func forEachBackend(t *testing.T, fn func(t *testing.T, e *env)) {
	for _, bm := range backendMakers {
		t.Run(bm.name, func(t *testing.T) { fn(t, newEnv(t, bm.open(t))) })
	}
}

func newEnv(t *testing.T, st storage.Store) *env {
	t.Helper()
	level := slog.LevelError
	if os.Getenv("WASIM_DEBUG") != "" {
		level = slog.LevelDebug
	}
	srv, err := wasim.New(wasim.Config{
		RootPrivateKey: testRoot.Priv[:],
		Logger:         slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	// Registered before the sessions' cleanups, so it runs after them.
	// Close before cancel: wasim's ctx watcher calls Close itself and then
	// waits for its own WaitGroup (a self-deadlock inside wasim), so the
	// watcher must find the server already closed.
	t.Cleanup(func() { _ = srv.Close(); cancel() })
	own, err := srv.CreatePhone("15550001111", "Own")
	if err != nil {
		t.Fatal(err)
	}
	peer, err := srv.CreatePhone("15550002222", "Peer")
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, srv: srv, own: own, peer: peer, st: st, ctx: ctx}
}

const profile = "alice"

// config is the session config of profile on e with token.
func (e *env) config(token storage.Token) session.Config {
	return session.Config{
		Profile:           profile,
		Token:             token,
		Store:             e.st,
		WhatsAppURL:       e.srv.URL(),
		RootKey:           *testRoot.Pub,
		Logger:            logger(e.t),
		Reconnect:         session.Backoff{Initial: 100 * time.Millisecond, Max: time.Second},
		WhatsmeowLogLevel: wmLevel(),
	}
}

// start creates and starts a session; it is stopped at cleanup.
func (e *env) start(cfg session.Config) *session.Session {
	e.t.Helper()
	s, err := session.New(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if err := s.Stop(ctx); err != nil {
			e.t.Errorf("stop: %v", err)
		}
	})
	return s
}

// waitFor polls check until it returns nil or the deadline passes.
func waitFor(t *testing.T, what string, timeout time.Duration, check func() error) {
	t.Helper()
	if err := testenv.WaitFor(timeout, check); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

func waitState(t *testing.T, s *session.Session, want session.State, timeout time.Duration) {
	t.Helper()
	waitFor(t, "state "+string(want), timeout, func() error {
		if got := s.State(); got != want {
			return fmt.Errorf("state %s (err %v)", got, s.Err())
		}
		return nil
	})
}

// pairQR starts a fresh session, links it by QR from the own phone and
// waits until it is connected. It returns the session and device JID.
func (e *env) pairQR(token storage.Token) (*session.Session, types.JID) {
	e.t.Helper()
	s := e.start(e.config(token))
	var qr session.QR
	waitFor(e.t, "a QR code", 20*time.Second, func() error {
		var err error
		qr, err = s.QR()
		return err
	})
	if qr.Code == "" || !qr.ExpiresAt.After(time.Now()) {
		e.t.Fatalf("QR = %+v", qr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dev, err := e.own.LinkQR(ctx, qr.Code)
	if err != nil {
		e.t.Fatalf("LinkQR: %v", err)
	}
	waitState(e.t, s, session.StateConnected, 30*time.Second)
	return s, dev
}

// events reads the profile's whole event log.
func (e *env) events() []storage.Event {
	e.t.Helper()
	evs, err := e.st.Read(context.Background(), profile, "0", 10000)
	if err != nil {
		e.t.Fatal(err)
	}
	return evs
}

// countEvents counts events of typ whose data has the message id.
func (e *env) countEvents(typ, id string) int {
	n := 0
	for _, ev := range e.events() {
		if ev.Type != typ {
			continue
		}
		if id == "" {
			n++
			continue
		}
		var d struct {
			ID string `json:"id"`
		}
		if json.Unmarshal(ev.Data, &d) == nil && d.ID == id {
			n++
		}
	}
	return n
}

// waitMessage waits until message id is stored and check accepts it.
func (e *env) waitMessage(s *session.Session, id string, check func(m msgstore.Message) error) msgstore.Message {
	e.t.Helper()
	var m msgstore.Message
	waitFor(e.t, "message "+id, 20*time.Second, func() error {
		var err error
		m, err = s.Messages().Get(context.Background(), profile, id)
		if err != nil {
			return err
		}
		if check != nil {
			return check(m)
		}
		return nil
	})
	return m
}

// device returns the simulator's view of the linked device.
func (e *env) device(jid types.JID) wasim.DeviceInfo {
	e.t.Helper()
	for _, d := range e.srv.Devices() {
		if d.JID == jid.String() {
			return d
		}
	}
	e.t.Fatalf("device %s unknown to the simulator", jid)
	return wasim.DeviceInfo{}
}

var errNotYet = errors.New("not yet")

func wmLevel() slog.Level {
	if os.Getenv("WHATSMEOW_DEBUG") != "" {
		return slog.LevelDebug
	}
	return slog.LevelWarn
}
