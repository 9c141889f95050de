// Package sessiontest is the shared test harness of the session and
// registry packages: real storage adapters (bbolt and a redis-server
// started for the test), a wasim simulator with two phones, and polling
// helpers. It is imported by tests only.
package sessiontest

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"testing"
	"time"

	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/util/keys"
	"go.uber.org/goleak"

	"github.com/amarula/amarula/internal/testenv"
	"github.com/amarula/amarula/session"
	"github.com/amarula/amarula/storage"
	"github.com/amarula/amarula/storage/bolt"
	"github.com/amarula/amarula/storage/redis"
	"github.com/amarula/amarula/wasim"
)

// Root is the one simulator root of a test process: whatsmeow's
// WACertPubKey is a process global, so every simulator shares it.
var Root = keys.NewKeyPair()

// GoleakOptions are the goroutines goleak may ignore in these tests.
func GoleakOptions() []goleak.Option {
	return []goleak.Option{
		// Idle keep-alive connections of http.Transports.
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		// whatsmeow's frame pump can stay blocked handing a last frame to a
		// client that already disconnected (inside whatsmeow).
		goleak.IgnoreTopFunction("go.mau.fi/whatsmeow/socket.(*FrameSocket).frameComplete"),
		// whatsmeow starts one history-sync loop per client on the first
		// history notification and never closes its channel: the goroutine
		// lives as long as the (garbage) client, with no way to stop it.
		goleak.IgnoreTopFunction("go.mau.fi/whatsmeow.(*Client).handleHistorySyncNotificationLoop"),
	}
}

// Logger logs at warn (SESSION_DEBUG=1: debug) to stderr, tagged with the test.
func Logger(t testing.TB) *slog.Logger {
	level := slog.LevelWarn
	if os.Getenv("SESSION_DEBUG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})).With("test", t.Name())
}

// WhatsmeowLevel is debug with WHATSMEOW_DEBUG=1, warn otherwise.
func WhatsmeowLevel() slog.Level {
	if os.Getenv("WHATSMEOW_DEBUG") != "" {
		return slog.LevelDebug
	}
	return slog.LevelWarn
}

// Backend opens a fresh store of one real adapter, closed at cleanup.
type Backend struct {
	Name string
	Open func(t testing.TB) storage.Store
}

// Backends are the real adapters every test runs on.
var Backends = []Backend{
	{"bolt", func(t testing.TB) storage.Store {
		st, err := bolt.Open(t.TempDir(), bolt.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		return st
	}},
	{"redis", func(t testing.TB) storage.Store {
		srv := testenv.StartRedis(t)
		st, err := redis.New(context.Background(), srv.URL(), redis.Options{})
		if err != nil {
			t.Fatalf("redis.New(%s): %v", srv.URL(), err)
		}
		t.Cleanup(func() { _ = st.Close() })
		return st
	}},
}

// ForEachBackend runs fn on a fresh store of every adapter.
func ForEachBackend(t *testing.T, fn func(t *testing.T, st storage.Store)) {
	for _, b := range Backends {
		t.Run(b.Name, func(t *testing.T) { fn(t, b.Open(t)) })
	}
}

// Sim is a running simulator with the account the gateway links to (Own)
// and someone who chats with it (Peer).
type Sim struct {
	Srv  *wasim.Server
	Own  *wasim.Phone
	Peer *wasim.Phone
}

// NewSim starts a simulator, closed at cleanup.
func NewSim(t testing.TB) *Sim {
	t.Helper()
	level := slog.LevelError
	if os.Getenv("WASIM_DEBUG") != "" {
		level = slog.LevelDebug
	}
	srv, err := wasim.New(wasim.Config{
		RootPrivateKey: Root.Priv[:],
		Logger:         slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	own, err := srv.CreatePhone("15550001111", "Own")
	if err != nil {
		t.Fatal(err)
	}
	peer, err := srv.CreatePhone("15550002222", "Peer")
	if err != nil {
		t.Fatal(err)
	}
	return &Sim{Srv: srv, Own: own, Peer: peer}
}

// Config is a session config of profile on st pointed at the simulator,
// with short reconnect backoffs.
func (s *Sim) Config(t testing.TB, st storage.Store, profile string, token storage.Token) session.Config {
	return session.Config{
		Profile:           profile,
		Token:             token,
		Store:             st,
		WhatsAppURL:       s.Srv.URL(),
		RootKey:           *Root.Pub,
		Logger:            Logger(t),
		WhatsmeowLogLevel: WhatsmeowLevel(),
		Reconnect:         session.Backoff{Initial: 100 * time.Millisecond, Max: time.Second},
	}
}

// Device returns the simulator's view of a linked device, read from its
// admin API (GET /admin/devices), as an operator would.
func (s *Sim) Device(t testing.TB, jid types.JID) wasim.DeviceInfo {
	t.Helper()
	resp, err := http.Get("http://" + s.Srv.Addr() + "/admin/devices")
	if err != nil {
		t.Fatalf("GET /admin/devices: %v", err)
	}
	defer resp.Body.Close()
	var devices []wasim.DeviceInfo
	if err := json.NewDecoder(resp.Body).Decode(&devices); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /admin/devices: %d %v", resp.StatusCode, err)
	}
	for _, d := range devices {
		if d.JID == jid.String() {
			return d
		}
	}
	t.Fatalf("device %s unknown to the simulator", jid)
	return wasim.DeviceInfo{}
}

// LinkQR waits for qr to show a code, lets the own phone scan it and
// returns the linked device.
func (s *Sim) LinkQR(t testing.TB, qr func() (session.QR, error)) types.JID {
	t.Helper()
	var code session.QR
	WaitFor(t, "a QR code", 20*time.Second, func() error {
		var err error
		code, err = qr()
		return err
	})
	if code.Code == "" || !code.ExpiresAt.After(time.Now()) {
		t.Fatalf("QR = %+v", code)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dev, err := s.Own.LinkQR(ctx, code.Code)
	if err != nil {
		t.Fatalf("LinkQR: %v", err)
	}
	return dev
}

// WaitFor polls check until it returns nil or fails the test after timeout.
func WaitFor(t testing.TB, what string, timeout time.Duration, check func() error) {
	t.Helper()
	if err := testenv.WaitFor(timeout, check); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

// WaitState waits until state() is want.
func WaitState(t testing.TB, state func() session.State, want session.State, timeout time.Duration) {
	t.Helper()
	WaitFor(t, "state "+string(want), timeout, func() error {
		if got := state(); got != want {
			return fmt.Errorf("state %s", got)
		}
		return nil
	})
}

// Events reads a profile's whole event log.
func Events(t testing.TB, st storage.Store, profile string) []storage.Event {
	t.Helper()
	evs, err := st.Read(context.Background(), profile, "0", 100000)
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

// CountEvents counts events of typ; with id, only those whose data
// carries that message id.
func CountEvents(t testing.TB, st storage.Store, profile, typ, id string) int {
	t.Helper()
	n := 0
	for _, ev := range Events(t, st, profile) {
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
