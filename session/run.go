package session

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"go.mau.fi/whatsmeow"
	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/types/events"

	"github.com/amarula/amarula/msgstore"
	"github.com/amarula/amarula/storage"
)

// Commands and internal signals queued to the supervisor.
type (
	cmdStop       struct{}
	cmdConnect    struct{}
	cmdDisconnect struct{}
	cmdLogout     struct {
		ctx   context.Context
		reply chan error
	}
	// evHalt stops the session at once: a write was fenced.
	evHalt struct{ err error }
	// evStorageFailed: a storage call failed (not fenced).
	evStorageFailed struct{ err error }
)

// Errors recorded as the reason a session rests.
var (
	errConflict  = errors.New("session: connection replaced by another client (440); resume with Connect")
	errLoggedOut = errors.New("session: logged out by the phone or WhatsApp (401); pair again")
	errUnpaired  = errors.New("session: pairing rounds ran out; Connect starts new ones")
)

// step is one state of the supervisor; it returns the next (nil ends).
type step func() step

// push queues v for the supervisor without blocking.
func (s *Session) push(v any) {
	s.mu.Lock()
	s.queue = append(s.queue, v)
	s.mu.Unlock()
	select {
	case s.ctrl <- struct{}{}:
	default:
	}
}

func (s *Session) command(v any) { s.push(v) }

func (s *Session) pop() (any, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.queue) == 0 {
		return nil, false
	}
	v := s.queue[0]
	s.queue[0] = nil
	s.queue = s.queue[1:]
	return v, true
}

// errTimeout is what wait returns when its timer fires.
type evTimeout struct{}

// evLeaseLost is what wait returns when the grant ends.
type evLeaseLost struct{}

// wait returns the next queued item, evLeaseLost when the grant ends, or
// evTimeout after d (d <= 0: no timeout).
func (s *Session) wait(d time.Duration) any {
	var timer <-chan time.Time
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		timer = t.C
	}
	for {
		if v, ok := s.pop(); ok {
			return v
		}
		select {
		case <-s.ctrl:
		case <-s.grantDone:
			return evLeaseLost{}
		case <-timer:
			return evTimeout{}
		case <-s.ctx.Done():
			return cmdStop{}
		}
	}
}

// run is the supervisor goroutine.
func (s *Session) run() {
	defer s.wg.Done()
	defer close(s.done)
	defer s.cancel()
	next := s.begin
	for next != nil {
		next = next()
	}
}

func (s *Session) begin() step {
	if !s.isPaired() {
		return s.pair
	}
	return s.connect
}

func (s *Session) setState(st State, cause error) {
	s.mu.Lock()
	changed := s.state != st
	s.state = st
	s.stopErr = cause
	if st != StatePairing {
		s.qr = nil
	}
	if st != StateConnected {
		s.connectedSince = time.Time{}
	}
	s.mu.Unlock()
	if changed {
		s.log.Info("session state", "state", string(st))
		if s.cfg.OnStateChange != nil {
			s.cfg.OnStateChange(s.cfg.Profile, st)
		}
	}
}

// emit appends a session.* event (best effort: a failure is logged; a
// fenced append halts the session through the storage watcher).
func (s *Session) emit(typ string, data map[string]any) {
	s.mu.Lock()
	halted := s.halted
	s.mu.Unlock()
	if halted {
		return // fenced or lease lost: this node may not write any more
	}
	raw, err := json.Marshal(data)
	if err != nil {
		s.log.Error("encode event", "type", typ, "err", err)
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(s.ctx), s.cfg.StoreTimeout)
	defer cancel()
	if _, err := s.st.Append(ctx, s.cfg.Profile, s.cfg.Token, typ, raw); err != nil {
		s.log.Warn("append event", "type", typ, "err", err)
	}
}

// common handles the items every state treats alike. It returns the next
// step and true when it consumed the item as a transition.
func (s *Session) common(item any) (step, bool) {
	switch ev := item.(type) {
	case cmdStop:
		return s.stop, true
	case evHalt:
		return func() step { return s.halt(ev.err) }, true
	case evLeaseLost:
		return func() step { return s.halt(ErrLeaseLost) }, true
	case *events.StreamReplaced:
		return s.conflict, true
	case *events.LoggedOut:
		return func() step { return s.loggedOut(ev) }, true
	case cmdLogout:
		return func() step { return s.logout(ev) }, true
	case *events.PairSuccess:
		s.onPaired(ev)
	case evStorageFailed:
		s.mu.Lock()
		s.storageDown = false
		s.mu.Unlock()
	}
	return nil, false
}

// pair runs QR pairing rounds until the phone links the device.
func (s *Session) pair() step {
	for round := 1; ; round++ {
		if round > s.cfg.PairingRounds {
			return s.rest(StateUnpaired, errUnpaired)
		}
		cli := s.client()
		if s.isPaired() {
			return s.connect
		}
		roundCtx, cancel := context.WithCancel(s.ctx)
		qrc, err := cli.GetQRChannel(roundCtx)
		if err != nil {
			cancel()
			s.log.Warn("pairing: qr channel", "err", err)
			if errors.Is(err, whatsmeow.ErrQRStoreContainsID) {
				return s.connect
			}
			cli.Disconnect()
			if next, ok := s.sleep(s.backoff(round)); ok {
				return next
			}
			continue
		}
		s.mu.Lock()
		s.qr = nil // the previous round's code is void
		s.mu.Unlock()
		s.setState(StatePairing, nil)
		if next, ok := s.limit(); ok {
			cancel()
			return next
		}
		if err := cli.ConnectContext(s.ctx); err != nil {
			cancel()
			s.log.Warn("pairing: connect", "err", err)
			if next, ok := s.sleep(s.backoff(round)); ok {
				return next
			}
			continue
		}
		next := s.pairRound(qrc)
		cancel()
		if next != nil {
			return next
		}
		cli.Disconnect()
	}
}

// pairRound shows the QR codes of one round. It returns the next step to
// leave pairing, nil to run another round.
func (s *Session) pairRound(qrc <-chan whatsmeow.QRChannelItem) step {
	for {
		if item, ok := s.pop(); ok {
			if next, ok := s.common(item); ok {
				return next
			}
			switch item.(type) {
			case *events.Connected:
				// Paired and logged in before the channel said so.
				s.push(item)
				return s.online
			case cmdDisconnect:
				return nil
			}
			continue
		}
		select {
		case it, ok := <-qrc:
			if !ok {
				return nil
			}
			switch it.Event {
			case whatsmeow.QRChannelEventCode:
				s.showQR(it.Code, it.Timeout)
			case whatsmeow.QRChannelSuccess.Event:
				s.setState(StateConnecting, nil)
				return s.online
			case whatsmeow.QRChannelEventError:
				s.log.Warn("pairing failed", "err", it.Error)
				return nil
			default:
				s.log.Info("pairing round ended", "result", it.Event)
				return nil
			}
		case <-s.ctrl:
		case <-s.grantDone:
			return func() step { return s.halt(ErrLeaseLost) }
		case <-s.ctx.Done():
			return s.stop
		}
	}
}

func (s *Session) showQR(code string, valid time.Duration) {
	qr := QR{Code: code, ExpiresAt: time.Now().Add(valid).UTC().Truncate(time.Second)}
	s.mu.Lock()
	s.qr = &qr
	s.mu.Unlock()
	s.emit(msgstore.EventSessionQR, map[string]any{"code": qr.Code, "expires_at": qr.ExpiresAt.Format(time.RFC3339)})
}

func (s *Session) onPaired(ev *events.PairSuccess) {
	s.setIdentity(ev.ID, ev.LID, "")
	s.log.Info("paired", "jid", ev.ID.ToNonAD().String(), "platform", ev.Platform)
	s.emit(msgstore.EventSessionPaired, map[string]any{
		"jid": ev.ID.ToNonAD().String(), "lid": ev.LID.ToNonAD().String(),
		"business_name": ev.BusinessName, "platform": ev.Platform,
	})
}

// limit waits for the connect limiter (which can take long when a
// failover starts many sessions at once) and then re-checks the grant, so
// a session never dials after losing its lease. ok reports a transition
// instead.
func (s *Session) limit() (step, bool) {
	if s.cfg.ConnectLimiter != nil {
		ctx, cancel := context.WithCancel(s.ctx)
		defer cancel()
		go func() { // ends with ctx (the deferred cancel at the latest)
			select {
			case <-s.grantDone:
			case <-s.stopping:
			case <-ctx.Done():
			}
			cancel()
		}()
		if err := s.cfg.ConnectLimiter.Wait(ctx); err != nil {
			s.log.Debug("connect limiter wait ended", "err", err)
		}
	}
	select {
	case <-s.grantDone:
		return func() step { return s.halt(ErrLeaseLost) }, true
	case <-s.stopping:
		return s.stop, true
	case <-s.ctx.Done():
		return s.stop, true
	default:
		return nil, false
	}
}

// connect opens the connection of a paired device.
func (s *Session) connect() step {
	s.setState(StateConnecting, nil)
	if err := s.pingStorage(); err != nil {
		s.log.Warn("storage unreachable; not connecting yet", "err", err)
		return s.reconnect
	}
	if next, ok := s.limit(); ok {
		return next
	}
	cli := s.client()
	if err := cli.ConnectContext(s.ctx); err != nil && !errors.Is(err, whatsmeow.ErrAlreadyConnected) {
		s.log.Warn("connect failed", "err", err)
		return s.reconnect
	}
	return s.online
}

// loginTimeout bounds the wait for Connected after a connection opened.
const loginTimeout = time.Minute

// pingStorage checks the backend before a connection is opened.
func (s *Session) pingStorage() error {
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.StoreTimeout)
	defer cancel()
	return s.st.Ping(ctx)
}

// online runs while the connection is up (or logging in).
func (s *Session) online() step {
	for {
		var limit time.Duration
		if s.State() != StateConnected {
			limit = loginTimeout
		}
		item := s.wait(limit)
		if _, ok := item.(evTimeout); ok {
			// Connected but never logged in (lost 515 reconnect, no
			// success node): start over.
			s.log.Warn("no login after connecting; reconnecting", "after", loginTimeout.String())
			s.client().Disconnect()
			return s.reconnect
		}
		if next, ok := s.common(item); ok {
			return next
		}
		switch ev := item.(type) {
		case *events.Connected:
			// Event first, then state: whoever sees the state finds the event.
			s.emit(msgstore.EventSessionConnected, map[string]any{"jid": s.ownJID().String()})
			s.mu.Lock()
			s.failures = 0
			s.mu.Unlock()
			s.setState(StateConnected, nil)
			s.mu.Lock()
			s.connectedSince = time.Now().UTC()
			s.mu.Unlock()
		case *events.Disconnected:
			s.emit(msgstore.EventSessionDisconnected, map[string]any{"reason": "connection lost"})
			return s.reconnect
		case evStorageFailed:
			// Stop taking messages we cannot store; WhatsApp keeps them
			// queued until we are back (connect waits for storage).
			s.log.Warn("storage failing; dropping the connection until it answers", "err", ev.err)
			s.client().Disconnect()
			return s.reconnect
		case *events.PairError:
			s.log.Warn("pairing failed after scan", "err", ev.Error)
			s.client().Disconnect()
			return s.pair
		case *events.ConnectFailure:
			s.client().Disconnect()
			s.emit(msgstore.EventSessionDisconnected, map[string]any{"reason": fmt.Sprintf("connect failure %d: %s", int(ev.Reason), ev.Message)})
			return s.reconnect
		case *events.TemporaryBan:
			s.client().Disconnect()
			err := fmt.Errorf("session: temporarily banned: %s", ev.String())
			s.emit(msgstore.EventSessionDisconnected, map[string]any{"reason": err.Error()})
			return s.rest(StateDisconnected, err)
		case *events.ClientOutdated:
			s.client().Disconnect()
			err := errors.New("session: WhatsApp says the client is outdated (405)")
			s.emit(msgstore.EventSessionDisconnected, map[string]any{"reason": err.Error()})
			return s.rest(StateDisconnected, err)
		case *events.KeepAliveTimeout:
			// whatsmeow only forces a reconnect itself with its own
			// auto-reconnect, which the supervisor replaces.
			if time.Since(ev.LastSuccess) > whatsmeow.KeepAliveMaxFailTime {
				s.client().Disconnect()
				s.emit(msgstore.EventSessionDisconnected, map[string]any{"reason": "keepalive timeout"})
				return s.reconnect
			}
		case cmdDisconnect:
			s.client().Disconnect()
			s.emit(msgstore.EventSessionDisconnected, map[string]any{"reason": "requested"})
			return s.reconnect
		case cmdConnect:
			if !s.client().IsConnected() {
				return s.connect
			}
		}
	}
}

// reconnect waits for the backoff, then connects again.
func (s *Session) reconnect() step {
	s.mu.Lock()
	s.failures++
	n := s.failures
	s.mu.Unlock()
	s.setState(StateDisconnected, nil)
	d := s.backoff(n)
	s.log.Info("reconnecting", "in", d.Round(time.Millisecond).String(), "attempt", n)
	if next, ok := s.sleep(d); ok {
		return next
	}
	return s.connect
}

// sleep waits d; Connect cuts it short. ok reports a transition instead.
func (s *Session) sleep(d time.Duration) (step, bool) {
	deadline := time.Now().Add(d)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return nil, false
		}
		item := s.wait(left)
		if next, ok := s.common(item); ok {
			return next, true
		}
		switch item.(type) {
		case evTimeout, cmdConnect:
			return nil, false
		}
	}
}

// backoff is the delay before attempt n (1-based): Initial·2^(n-1) capped
// at Max, ±20 % jitter.
func (s *Session) backoff(n int) time.Duration {
	d := s.cfg.Reconnect.Initial
	for i := 1; i < n && d < s.cfg.Reconnect.Max; i++ {
		d *= 2
	}
	d = min(d, s.cfg.Reconnect.Max)
	jitter := time.Duration(rand.Int64N(int64(d)/5+1)) * 2
	return d - d/5 + jitter
}

// conflict handles 440 replaced: no reconnect, unless the lease is already
// gone (then it is a hand-off).
func (s *Session) conflict() step {
	select {
	case <-s.grantDone:
		return s.halt(ErrLeaseLost)
	default:
	}
	s.client().Disconnect()
	s.log.Warn("connection replaced by another client (440); not reconnecting")
	s.emit(msgstore.EventSessionConflict, map[string]any{"reason": "replaced"})
	return s.rest(StateConflict, errConflict)
}

// loggedOut handles 401: credentials wiped, a new pairing is needed.
func (s *Session) loggedOut(ev *events.LoggedOut) step {
	s.client().Disconnect()
	if next, ok := s.wipe(); ok {
		return next
	}
	s.log.Warn("logged out", "on_connect", ev.OnConnect, "reason", int(ev.Reason))
	s.emit(msgstore.EventSessionLoggedOut, map[string]any{"on_connect": ev.OnConnect, "reason": int(ev.Reason)})
	return s.rest(StateLoggedOut, errLoggedOut)
}

// logout unlinks the device on request (DELETE /profiles/{id}).
func (s *Session) logout(cmd cmdLogout) step {
	cli := s.client()
	var err error
	if s.isPaired() && cli.IsLoggedIn() {
		err = cli.Logout(cmd.ctx)
	}
	cli.Disconnect()
	if next, ok := s.wipe(); ok {
		cmd.reply <- errors.Join(err, s.Err())
		return next
	}
	cmd.reply <- err
	s.emit(msgstore.EventSessionLoggedOut, map[string]any{"reason": "requested"})
	return s.rest(StateLoggedOut, errLoggedOut)
}

// wipe clears the Signal credentials (whatsmeow usually did already) and
// prepares a fresh device and client for the next pairing.
func (s *Session) wipe() (step, bool) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(s.ctx), s.cfg.StoreTimeout)
	defer cancel()
	if err := s.container.Wipe(ctx); err != nil {
		s.log.Error("wipe credentials", "err", err)
		if errors.Is(err, storage.ErrFenced) {
			return func() step { return s.halt(err) }, true
		}
	}
	s.mu.Lock()
	s.jid, s.lid, s.pushName = types.EmptyJID, types.EmptyJID, ""
	s.mu.Unlock()
	device, err := s.container.GetDevice(ctx)
	if err == nil {
		var cli *whatsmeow.Client
		if cli, err = s.newClient(device); err == nil {
			old := s.client()
			s.mu.Lock()
			s.cli = cli
			s.mu.Unlock()
			old.RemoveEventHandlers()
		}
	}
	if err != nil {
		s.log.Error("prepare new device", "err", err)
	}
	return nil, false
}

// rest keeps the session in a state without a connection until Connect,
// Stop, or a halt.
func (s *Session) rest(st State, cause error) step {
	s.setState(st, cause)
	for {
		item := s.wait(0)
		if next, ok := s.common(item); ok {
			return next
		}
		if _, ok := item.(cmdConnect); ok {
			if !s.isPaired() {
				return s.pair
			}
			return s.connect
		}
	}
}

// halt stops at once without writing anything more: the profile was fenced
// by a newer owner or this node's lease is gone.
func (s *Session) halt(cause error) step {
	s.mu.Lock()
	s.halted = true
	s.mu.Unlock()
	s.client().Disconnect()
	s.log.Warn("session halted; not reconnecting", "cause", cause.Error())
	s.drain()
	s.setState(StateStopped, cause)
	return nil
}

// stop ends the session cleanly.
func (s *Session) stop() step {
	s.client().Disconnect()
	s.emit(msgstore.EventSessionDisconnected, map[string]any{"reason": "stopped"})
	s.drain()
	s.setState(StateStopped, nil)
	return nil
}

// drain refuses new message handling, seals the session's storage (no
// write of this session lands after it, not even one whatsmeow finishes
// late) and waits for in-flight writes.
func (s *Session) drain() {
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
	if !s.ws.seal(s.cfg.StoreTimeout + time.Second) {
		s.log.Warn("storage writes still running after the session ended")
	}
	waited := make(chan struct{})
	go func() { s.inflight.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(s.cfg.StoreTimeout + time.Second):
		s.log.Warn("in-flight message writes did not finish")
	}
	s.client().RemoveEventHandlers()
}
