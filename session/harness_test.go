package session_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.mau.fi/whatsmeow/types"
	"go.uber.org/goleak"

	"github.com/amarula/amarula/msgstore"
	"github.com/amarula/amarula/session"
	"github.com/amarula/amarula/session/sessiontest"
	"github.com/amarula/amarula/storage"
	"github.com/amarula/amarula/wasim"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, sessiontest.GoleakOptions()...)
}

const profile = "alice"

// env is one test's world: a simulator with two phones and a store.
type env struct {
	t *testing.T
	*sessiontest.Sim
	own, peer *wasim.Phone
	st        storage.Store
}

func forEachBackend(t *testing.T, fn func(t *testing.T, e *env)) {
	sessiontest.ForEachBackend(t, func(t *testing.T, st storage.Store) {
		sim := sessiontest.NewSim(t)
		fn(t, &env{t: t, Sim: sim, own: sim.Own, peer: sim.Peer, st: st})
	})
}

func (e *env) config(token storage.Token) session.Config {
	return e.Config(e.t, e.st, profile, token)
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

func waitFor(t *testing.T, what string, timeout time.Duration, check func() error) {
	t.Helper()
	sessiontest.WaitFor(t, what, timeout, check)
}

func waitState(t *testing.T, s *session.Session, want session.State, timeout time.Duration) {
	t.Helper()
	sessiontest.WaitState(t, s.State, want, timeout)
}

// pairQR starts a fresh session, links it by QR from the own phone and
// waits until it is connected.
func (e *env) pairQR(token storage.Token) (*session.Session, types.JID) {
	e.t.Helper()
	s := e.start(e.config(token))
	dev := e.LinkQR(e.t, s.QR)
	waitState(e.t, s, session.StateConnected, 30*time.Second)
	return s, dev
}

func (e *env) events() []storage.Event { return sessiontest.Events(e.t, e.st, profile) }

func (e *env) countEvents(typ, id string) int {
	return sessiontest.CountEvents(e.t, e.st, profile, typ, id)
}

func (e *env) device(jid types.JID) wasim.DeviceInfo { return e.Device(e.t, jid) }

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

var errNotYet = errors.New("not yet")
