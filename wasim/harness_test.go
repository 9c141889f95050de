package wasim

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/mattn/go-sqlite3"
	"go.uber.org/goleak"

	"go.mau.fi/whatsmeow"
	"go.mau.fi/whatsmeow/store"
	"go.mau.fi/whatsmeow/store/sqlstore"
	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/types/events"
	"go.mau.fi/whatsmeow/util/keys"
	waLog "go.mau.fi/whatsmeow/util/log"
)

var testRoot = keys.NewKeyPair()

func TestMain(m *testing.M) {
	// Process-global, once, before any client goroutine (notes §0).
	SetRootKey(*testRoot.Pub)
	goleak.VerifyTestMain(m,
		// database/sql keeps a connection opener per DB for the process.
		goleak.IgnoreTopFunction("database/sql.(*DB).connectionOpener"),
		// Idle keep-alive connections of the clients' http.Transports.
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		// whatsmeow's own frame pump can stay blocked handing a last frame
		// to a client that already disconnected (client-side, not ours).
		goleak.IgnoreTopFunction("go.mau.fi/whatsmeow/socket.(*FrameSocket).frameComplete"),
		// whatsmeow starts this loop on the first history sync and keeps
		// it for the lifetime of the Client object.
		goleak.IgnoreTopFunction("go.mau.fi/whatsmeow.(*Client).handleHistorySyncNotificationLoop"),
	)
}

type harness struct {
	t   testing.TB
	srv *Server
	ctx context.Context
}

func newHarness(t testing.TB) *harness {
	t.Helper()
	return newHarnessWith(t, nil)
}

func newHarnessWith(t testing.TB, tweak func(*Config)) *harness {
	t.Helper()
	level := slog.LevelWarn
	if os.Getenv("WASIM_DEBUG") != "" {
		level = slog.LevelDebug
	}
	cfg := Config{
		RootPrivateKey: testRoot.Priv[:],
		Logger:         slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})),
	}
	if tweak != nil {
		tweak(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		srv.Close()
	})
	return &harness{t: t, srv: srv, ctx: ctx}
}

var dbSeq atomic.Int64

// client wraps a real whatsmeow client with an event recorder.
type client struct {
	t         testing.TB
	cli       *whatsmeow.Client
	container *sqlstore.Container

	mu     sync.Mutex
	events []any
}

func (h *harness) newContainer() *sqlstore.Container {
	h.t.Helper()
	name := fmt.Sprintf("file:wasim%d_%d?mode=memory&cache=shared&_foreign_keys=on", os.Getpid(), dbSeq.Add(1))
	c, err := sqlstore.New(h.ctx, "sqlite3", name, waLog.Noop)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { c.Close() })
	return c
}

func (h *harness) newClient(dev *store.Device, container *sqlstore.Container) *client {
	h.t.Helper()
	var log waLog.Logger = waLog.Noop
	if os.Getenv("WASIM_DEBUG") != "" {
		log = waLog.Stdout("cli", "DEBUG", true)
	}
	c := &client{t: h.t, cli: whatsmeow.NewClient(dev, log), container: container}
	c.cli.EnableAutoReconnect = false
	ConfigureClient(c.cli, h.srv.Addr())
	c.cli.AddEventHandler(func(evt any) {
		c.mu.Lock()
		c.events = append(c.events, evt)
		c.mu.Unlock()
	})
	h.t.Cleanup(c.cli.Disconnect)
	return c
}

// waitFor polls the recorded events until match returns true for one.
func waitEvent[T any](c *client, d time.Duration, match func(T) bool) T {
	c.t.Helper()
	deadline := time.Now().Add(d)
	for {
		c.mu.Lock()
		for _, e := range c.events {
			if v, ok := e.(T); ok && (match == nil || match(v)) {
				c.mu.Unlock()
				return v
			}
		}
		c.mu.Unlock()
		if time.Now().After(deadline) {
			var zero T
			c.t.Fatalf("timed out after %v waiting for %T", d, zero)
			return zero
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (c *client) clearEvents() {
	c.mu.Lock()
	c.events = nil
	c.mu.Unlock()
}

func (c *client) count(match func(any) bool) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, e := range c.events {
		if match(e) {
			n++
		}
	}
	return n
}

// pairQR creates a fresh client and pairs it with p by QR; it returns the
// client once it is connected as a logged-in device.
func (h *harness) pairQR(p *Phone) *client {
	h.t.Helper()
	container := h.newContainer()
	c := h.newClient(container.NewDevice(), container)
	qrCh, err := c.cli.GetQRChannel(h.ctx)
	if err != nil {
		h.t.Fatal(err)
	}
	if err := c.cli.Connect(); err != nil {
		h.t.Fatal(err)
	}
	var code string
	select {
	case item := <-qrCh:
		if item.Event != "code" {
			h.t.Fatalf("first QR channel item: %+v", item)
		}
		code = item.Code
	case <-time.After(10 * time.Second):
		h.t.Fatal("no QR code")
	}
	ctx, cancel := context.WithTimeout(h.ctx, 15*time.Second)
	defer cancel()
	jid, err := p.LinkQR(ctx, code)
	if err != nil {
		h.t.Fatalf("link: %v", err)
	}
	ps := waitEvent[*events.PairSuccess](c, 10*time.Second, nil)
	if ps.ID != jid {
		h.t.Fatalf("PairSuccess ID %s, server said %s", ps.ID, jid)
	}
	waitEvent[*events.Connected](c, 15*time.Second, nil)
	return c
}

func mustJID(s string) types.JID {
	j, err := types.ParseJID(s)
	if err != nil {
		panic(err)
	}
	return j
}

// poll waits until cond holds.
func poll(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// scenario is the common test setup: Alice's phone with one paired
// whatsmeow client, Bob's phone, and a bounded context.
type scenario struct {
	*harness
	alice, bob *Phone
	c          *client
	ctx        context.Context
}

func newScenario(t *testing.T) *scenario {
	t.Helper()
	h := newHarness(t)
	alice, err := h.srv.CreatePhone("15550001111", "Alice")
	must(t, err)
	bob, err := h.srv.CreatePhone("15550002222", "Bob")
	must(t, err)
	c := h.pairQR(alice)
	ctx, cancel := context.WithTimeout(h.ctx, 60*time.Second)
	t.Cleanup(cancel)
	return &scenario{harness: h, alice: alice, bob: bob, c: c, ctx: ctx}
}

// waitMessage waits for the client event of message id.
func (c *client) waitMessage(id string) *events.Message {
	c.t.Helper()
	return waitEvent[*events.Message](c, 10*time.Second, func(m *events.Message) bool { return m.Info.ID == id })
}
