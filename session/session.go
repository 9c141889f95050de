// Package session runs one profile's WhatsApp session: a whatsmeow client
// over the profile's Signal store (package signal), its lifecycle, the
// receive pipeline and sending.
//
// # Lifecycle
//
// A Session owns exactly one supervisor goroutine (started by Start,
// stopped and waited for by Stop) that alone connects and disconnects the
// client. States (design.md §4): a profile without credentials runs QR
// rounds (state pairing; codes rotate, each one is a session.qr event and
// is kept for QR) or phone-code pairing (PairPhone), then connecting →
// connected. A lost connection is disconnected and reconnects after an
// exponential backoff with jitter (Config.Reconnect; optionally paced by
// Config.ConnectLimiter). whatsmeow's own auto-reconnect is off.
//
//   - 440 stream replaced: state conflict, event session.conflict, no
//     reconnect until Connect (unless the lease is already gone: then it is
//     a hand-off and the session just stops).
//   - 401 logged out: state logged_out, Signal credentials wiped, event
//     session.logged_out; Connect starts a new pairing.
//   - storage.ErrFenced from any write (ours or whatsmeow's), or the
//     grant's Done closing: the session stops at once, writes nothing more
//     and does not reconnect (Err tells why).
//   - any other storage failure: the connection is dropped and reopened
//     only once storage answers a Ping again, so WhatsApp keeps what could
//     not be stored queued.
//
// # Receive pipeline
//
// The client runs with SynchronousAck and EnableDecryptedEventBuffer. For
// every message the handler normalises it (msgstore.Normalize), stores it
// and appends its event (message.received, message.edited,
// message.revoked, message.reaction) in one storage transaction, deduped on
// the message id, and only then returns true, which lets whatsmeow
// acknowledge it. A failed write returns false: no ack, WhatsApp
// redelivers, and the decrypted plaintext waiting in the event buffer makes
// the redelivery decrypt again. Receipts for own messages become
// message.ack events and status updates the same way; a history sync
// seeds the store with one history.synced event. whatsmeow's callbacks
// never block on anything but these storage writes; every other event is
// queued to the supervisor.
//
// Known limit (whatsmeow, pinned): a message whose decryption transaction
// itself fails is acknowledged together with a retry receipt, so its
// recovery relies on the sender's retry; the storage watcher drops the
// connection at the first failure to keep that window small.
//
// The package never decides who owns a profile (package lease does) and
// never runs two clients for one Session.
package session

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"go.mau.fi/whatsmeow"
	"go.mau.fi/whatsmeow/store"
	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/types/events"

	"github.com/amarula/amarula/lease"
	"github.com/amarula/amarula/msgstore"
	"github.com/amarula/amarula/signal"
	"github.com/amarula/amarula/storage"
)

// State is a profile's session state (design.md §4).
type State string

// Session states.
const (
	StateUnpaired     State = "unpaired"     // no credentials; not currently showing a QR
	StatePairing      State = "pairing"      // connected to WhatsApp, showing QR codes / waiting for a phone code
	StateConnecting   State = "connecting"   // credentials present, connecting
	StateConnected    State = "connected"    // logged in
	StateDisconnected State = "disconnected" // connection lost; will reconnect after a backoff
	StateConflict     State = "conflict"     // 440 replaced: another connection took the device; no reconnect
	StateLoggedOut    State = "logged_out"   // 401: the phone removed the device; credentials wiped
	StateStopped      State = "stopped"      // stopped (operator, hand-off, lost lease or fenced)
	StateUnassigned   State = "unassigned"   // no live node may own the profile (reported by the registry/API)
)

// Sentinel errors. Check them with errors.Is.
var (
	// ErrNotRunning is returned by operations that need a started session.
	ErrNotRunning = errors.New("session: not running")
	// ErrAlreadyStarted is returned by a second Start.
	ErrAlreadyStarted = errors.New("session: already started")
	// ErrNotConnected is returned by Send while the session is not logged in.
	ErrNotConnected = errors.New("session: not connected")
	// ErrAlreadyPaired is returned by QR and PairPhone for a paired profile.
	ErrAlreadyPaired = errors.New("session: already paired")
	// ErrNoQR is returned by QR when no code is on display (not pairing,
	// or the pairing rounds ran out: Connect starts new ones).
	ErrNoQR = errors.New("session: no QR code available")
	// ErrInvalidRequest is returned by Send for a malformed request.
	ErrInvalidRequest = errors.New("session: invalid request")
	// ErrFenced is returned (wrapping storage.ErrFenced) after the session
	// stopped because a newer owner fenced the profile.
	ErrFenced = storage.ErrFenced
	// ErrLeaseLost is the stop cause when the grant's Done closed.
	ErrLeaseLost = errors.New("session: ownership lease lost")
)

// NotImplementedError is returned for a feature this version does not do
// yet (media sending).
type NotImplementedError struct{ Feature string }

// Error implements error.
func (e *NotImplementedError) Error() string {
	return "session: " + e.Feature + " is not implemented yet"
}

// Limiter paces connection attempts (the node's AMARULA_CONNECT_RATE token
// bucket; *rate.Limiter satisfies it).
type Limiter interface {
	Wait(ctx context.Context) error
}

// Backoff bounds reconnect delays: Initial, doubled per failed attempt up
// to Max, with ±20 % jitter.
type Backoff struct {
	Initial time.Duration // default 1 s
	Max     time.Duration // default 60 s
}

// Config is everything a Session needs. Zero values take the defaults
// documented per field.
type Config struct {
	// Profile is the profile id (storage.ProfileIDPattern).
	Profile string
	// Grant is the ownership of Profile. When set, its Token is the
	// fencing token and its Done closing stops the session at once.
	Grant *lease.Grant
	// Token is the fencing token when Grant is nil (tests, tools).
	Token storage.Token
	// Store is the storage seam (credentials, messages, events).
	Store storage.Store

	// WhatsAppURL points the client at a simulator (wasim), e.g.
	// "ws://127.0.0.1:9800/ws/chat"; empty means real WhatsApp.
	WhatsAppURL string
	// RootKey is the simulator's certificate root public key; required
	// with WhatsAppURL. It is installed process-wide (whatsmeow global).
	RootKey [32]byte

	// Logger receives the session's logs; every line carries the profile.
	// Default: discard.
	Logger *slog.Logger
	// WhatsmeowLogLevel is the lowest whatsmeow log level passed on to
	// Logger. Default slog.LevelWarn (whatsmeow's debug output contains
	// raw nodes).
	WhatsmeowLogLevel slog.Level

	// Reconnect bounds the reconnect backoff.
	Reconnect Backoff
	// ConnectLimiter, if set, is waited on before every connection attempt.
	ConnectLimiter Limiter
	// PairingRounds is how many QR rounds (each about 160 s on WhatsApp)
	// run before the session rests in state unpaired until Connect.
	// Default 3.
	PairingRounds int
	// StoreTimeout bounds one storage transaction of the receive
	// pipeline. Default 10 s.
	StoreTimeout time.Duration
	// OnStateChange, if set, is called after every state change, from the
	// supervisor goroutine. It must not block.
	OnStateChange func(profile string, state State)
	// OnNewMessage, if set, runs inside the transaction that stores each
	// new message (received, sent or from history; not duplicates, edits,
	// revokes or reactions), e.g. to enqueue its media download job with
	// media.Enqueue. An error aborts the transaction: the message is not
	// acknowledged and comes again.
	OnNewMessage msgstore.Hook
	// AfterStore, if set, is called after a transaction stored new
	// messages of the profile (e.g. the media worker's Notify), from the
	// goroutine that stored them. It must not block.
	AfterStore func(profile string)
	// Media configures media sending (object-store copy, size limit, URL
	// fetching).
	Media MediaSending
}

func (c *Config) setDefaults() {
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if c.WhatsmeowLogLevel == 0 {
		c.WhatsmeowLogLevel = slog.LevelWarn
	}
	if c.Reconnect.Initial <= 0 {
		c.Reconnect.Initial = time.Second
	}
	if c.Reconnect.Max <= 0 {
		c.Reconnect.Max = time.Minute
	}
	if c.Reconnect.Max < c.Reconnect.Initial {
		c.Reconnect.Max = c.Reconnect.Initial
	}
	if c.PairingRounds <= 0 {
		c.PairingRounds = 3
	}
	if c.StoreTimeout <= 0 {
		c.StoreTimeout = 10 * time.Second
	}
	if c.Grant != nil {
		c.Token = c.Grant.Token
	}
}

func (c *Config) validate() error {
	if err := storage.ValidateProfile(c.Profile); err != nil {
		return err
	}
	if c.Store == nil {
		return errors.New("session: config: Store is required")
	}
	if c.Grant != nil && c.Grant.Profile != c.Profile {
		return fmt.Errorf("session: config: grant is for profile %q, not %q", c.Grant.Profile, c.Profile)
	}
	if c.WhatsAppURL != "" {
		if _, err := simulatorAddr(c.WhatsAppURL); err != nil {
			return fmt.Errorf("session: config: %w", err)
		}
		if c.RootKey == ([32]byte{}) {
			return errors.New("session: config: RootKey is required with WhatsAppURL")
		}
	}
	return nil
}

// QR is the pairing code on display.
type QR struct {
	Code      string    `json:"code"`
	ExpiresAt time.Time `json:"expires_at"`
}

// Info is a snapshot of a session for the API.
type Info struct {
	Profile        string    `json:"profile"`
	State          State     `json:"state"`
	JID            string    `json:"jid,omitempty"`
	LID            string    `json:"lid,omitempty"`
	PushName       string    `json:"push_name,omitempty"`
	ConnectedSince time.Time `json:"connected_since,omitzero"`
	// Err is why the session stopped or rests (nil while healthy).
	Err error `json:"-"`
}

// Session is one profile's WhatsApp session. Create it with New, run it
// with Start, end it with Stop. All methods are safe for concurrent use.
type Session struct {
	cfg       Config
	log       *slog.Logger
	st        storage.Store // ws, as the seam
	ws        *watchedStore
	msgs      *msgstore.Store
	container *signal.Container
	grantDone <-chan struct{}

	ctx    context.Context // lives from Start to the end of Stop
	cancel context.CancelFunc
	done   chan struct{} // closed when the supervisor has exited
	wg     sync.WaitGroup

	ctrl     chan struct{} // wakes the supervisor; cap 1
	stopping chan struct{} // closed by the first Stop
	stopOnce sync.Once
	inflight sync.WaitGroup

	mu             sync.Mutex
	cli            *whatsmeow.Client
	started        bool
	state          State
	stopErr        error
	qr             *QR
	queue          []any // whatsmeow events and commands for the supervisor
	connectedSince time.Time
	halted         bool                               // fenced or lease lost: refuse every further write
	jid, lid       types.JID                          // own identity (empty until paired), kept here so no
	pushName       string                             // reader races whatsmeow's writes to its device
	closing        bool                               // draining: refuse new message handling
	storageDown    bool                               // a storage failure is queued to the supervisor
	retries        map[string]chan *events.MediaRetry // RequestReupload waiters by message id
	failures       int                                // consecutive failed connection attempts
}

// New validates cfg and builds the session. It starts nothing.
func New(cfg Config) (*Session, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.WhatsAppURL != "" {
		if err := useRootKey(cfg.RootKey); err != nil {
			return nil, err
		}
	}
	s := &Session{
		cfg:      cfg,
		log:      cfg.Logger.With("profile", cfg.Profile),
		done:     make(chan struct{}),
		ctrl:     make(chan struct{}, 1),
		stopping: make(chan struct{}),
		state:    StateStopped,
	}
	// Every write of the session (ours and whatsmeow's) goes through the
	// watcher: a fenced write anywhere halts the session.
	st := &watchedStore{Store: cfg.Store, onFenced: s.fenced, onFailure: s.storageFailed}
	s.ws = st
	container, err := signal.New(st, cfg.Profile, cfg.Token, newWALogger(s.log, cfg.WhatsmeowLogLevel))
	if err != nil {
		return nil, fmt.Errorf("session %s: %w", cfg.Profile, err)
	}
	var hooks []msgstore.Hook
	if cfg.OnNewMessage != nil {
		hooks = append(hooks, cfg.OnNewMessage)
	}
	s.st, s.msgs, s.container = st, msgstore.New(st, hooks...), container
	if cfg.Grant != nil {
		s.grantDone = cfg.Grant.Done()
	}
	return s, nil
}

// Profile returns the profile id.
func (s *Session) Profile() string { return s.cfg.Profile }

// Token returns the fencing token the session writes with.
func (s *Session) Token() storage.Token { return s.cfg.Token }

// Messages returns the session's message store (reads are safe from any
// node; writes belong to the owner).
func (s *Session) Messages() *msgstore.Store { return s.msgs }

// Start loads the profile's device and starts the supervisor, which pairs
// (no credentials) or connects. It returns once the supervisor runs, not
// when the connection is up; watch State or the event log.
func (s *Session) Start(ctx context.Context) error {
	s.mu.Lock()
	if s.started {
		s.mu.Unlock()
		return ErrAlreadyStarted
	}
	s.started = true
	// The session's context outlives the caller's (it ends with Stop);
	// set under the lock so a concurrent Stop always finds cancel.
	s.ctx, s.cancel = context.WithCancel(context.WithoutCancel(ctx))
	s.mu.Unlock()

	device, err := s.container.GetDevice(ctx)
	if err != nil {
		s.cancel()
		s.setState(StateStopped, fmt.Errorf("load device: %w", err))
		close(s.done)
		return fmt.Errorf("session %s: %w", s.cfg.Profile, err)
	}
	cli, err := s.newClient(device)
	if err != nil {
		s.cancel()
		s.setState(StateStopped, err)
		close(s.done)
		return fmt.Errorf("session %s: %w", s.cfg.Profile, err)
	}
	s.mu.Lock()
	s.cli = cli
	s.mu.Unlock()
	if device.ID != nil {
		s.setIdentity(*device.ID, device.LID, device.PushName)
	}
	s.wg.Add(1)
	go s.run()
	return nil
}

// Stop ends the session cleanly: the client disconnects without
// reconnecting, in-flight message writes finish, the supervisor exits and
// the state becomes stopped. It waits until then or until ctx ends. Stop on
// a session that already ended (or never started) returns nil.
func (s *Session) Stop(ctx context.Context) error {
	s.mu.Lock()
	started, cancel := s.started, s.cancel
	s.mu.Unlock()
	if !started {
		return nil
	}
	s.stopOnce.Do(func() { close(s.stopping) })
	s.command(cmdStop{})
	// The supervisor may sit in a connection attempt (handshake timeouts
	// run to 20 s); after a grace period cancel it. Messages being stored
	// then are simply not acknowledged and come again to the next owner.
	grace := time.NewTimer(stopGrace)
	defer grace.Stop()
	select {
	case <-s.done:
		return nil
	case <-grace.C:
		cancel()
	case <-ctx.Done():
		cancel()
	}
	select {
	case <-s.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("session %s: stop: %w", s.cfg.Profile, ctx.Err())
	}
}

// stopGrace is how long Stop lets the supervisor finish on its own.
const stopGrace = 3 * time.Second

// Done is closed when the session has ended (Stop, fencing, lost lease).
func (s *Session) Done() <-chan struct{} { return s.done }

// Err reports why the session ended or rests: wraps ErrFenced,
// ErrLeaseLost, or describes a conflict/logout; nil after a clean Stop or
// while healthy.
func (s *Session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopErr
}

// State returns the current state.
func (s *Session) State() State {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state
}

// Info returns a snapshot of the session.
func (s *Session) Info() Info {
	s.mu.Lock()
	defer s.mu.Unlock()
	in := Info{Profile: s.cfg.Profile, State: s.state, ConnectedSince: s.connectedSince, Err: s.stopErr, PushName: s.pushName}
	if !s.jid.IsEmpty() {
		in.JID = s.jid.String()
	}
	if !s.lid.IsEmpty() {
		in.LID = s.lid.String()
	}
	return in
}

// QR returns the pairing code on display. It fails with ErrAlreadyPaired
// for a paired profile and ErrNoQR when no code is shown yet. Asking while
// the session rests unpaired (its pairing rounds ran out) or logged out
// starts new rounds, so a client polling QR gets a code shortly.
func (s *Session) QR() (QR, error) {
	s.mu.Lock()
	if !s.jid.IsEmpty() {
		s.mu.Unlock()
		return QR{}, ErrAlreadyPaired
	}
	if s.qr != nil && s.state == StatePairing {
		qr := *s.qr
		s.mu.Unlock()
		return qr, nil
	}
	resting := s.state == StateUnpaired || s.state == StateLoggedOut
	s.mu.Unlock()
	if resting && s.running() {
		s.command(cmdConnect{})
	}
	return QR{}, ErrNoQR
}

// Connect resumes a resting session: after a conflict, a logout (new
// pairing), exhausted pairing rounds, or during a reconnect backoff (skips
// the wait). It returns ErrNotRunning if the session has ended; a stopped
// session is resumed by starting a new one (the registry does).
func (s *Session) Connect(ctx context.Context) error {
	if !s.running() {
		return ErrNotRunning
	}
	s.command(cmdConnect{})
	return nil
}

// Disconnect closes the connection but keeps the session (and its
// registry slot): the session is disconnected and reconnects after the
// usual backoff, or at once on Connect.
func (s *Session) Disconnect(ctx context.Context) error {
	if !s.running() {
		return ErrNotRunning
	}
	s.command(cmdDisconnect{})
	return nil
}

// stored tells Config.AfterStore that new messages were committed.
func (s *Session) stored() {
	if s.cfg.AfterStore != nil {
		s.cfg.AfterStore(s.cfg.Profile)
	}
}

func (s *Session) running() bool {
	s.mu.Lock()
	started := s.started
	s.mu.Unlock()
	if !started {
		return false
	}
	select {
	case <-s.done:
		return false
	default:
		return true
	}
}

func (s *Session) client() *whatsmeow.Client {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cli
}

// ownJID is the account's own user JID (no device), empty before pairing.
func (s *Session) ownJID() types.JID {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.jid
}

// isPaired reports whether the profile has credentials.
func (s *Session) isPaired() bool { return !s.ownJID().IsEmpty() }

// setIdentity records the own identity (JIDs without device part).
func (s *Session) setIdentity(jid, lid types.JID, pushName string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.jid, s.lid = jid.ToNonAD(), lid.ToNonAD()
	if lid.IsEmpty() {
		s.lid = types.EmptyJID
	}
	if pushName != "" {
		s.pushName = pushName
	}
}

// newClient builds a whatsmeow client for device with the pipeline's
// settings: acks only after our handler stored the message
// (SynchronousAck), decrypted plaintext buffered atomically with the
// ratchet so a redelivery after a failed store decrypts again
// (EnableDecryptedEventBuffer), and reconnects done by the supervisor.
func (s *Session) newClient(device *store.Device) (*whatsmeow.Client, error) {
	cli := whatsmeow.NewClient(device, newWALogger(s.log, s.cfg.WhatsmeowLogLevel))
	cli.SynchronousAck = true
	cli.EnableDecryptedEventBuffer = true
	cli.EnableAutoReconnect = false
	cli.BackgroundEventCtx = s.ctx
	if s.cfg.WhatsAppURL != "" {
		addr, err := simulatorAddr(s.cfg.WhatsAppURL)
		if err != nil {
			return nil, err
		}
		hc := loopbackHTTPClient(addr)
		cli.SetPreLoginHTTPClient(hc)
		cli.SetWebsocketHTTPClient(hc)
		cli.SetMediaHTTPClient(hc)
	}
	cli.AddEventHandlerWithSuccessStatus(s.handle)
	return cli, nil
}
