// Package api is Amarula's HTTP API (docs/api.md): profiles, pairing,
// messages, the event log (paging and WebSocket), webhook dead letters,
// bearer-key auth, health, readiness, metrics and the web dashboard.
//
// The package owns the wire contract — routes, JSON shapes, error codes,
// auth, request limits, idempotent sends — and nothing behind it: every
// dependency is an interface declared here (Profiles, Sessions, Owners,
// Messages, Events, KV, Fences, Webhooks, Readiness) and wired by package
// node; catalog.Catalog, the session registry, *msgstore.Store, the storage
// adapters and *webhook.DeadLetters satisfy them without glue. It
// never talks to WhatsApp, never decides which node owns a profile and never
// forwards requests (the cluster layer wraps this handler for that). It
// never logs keys, webhook secrets or message bodies.
package api

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/amarula/amarula/catalog"
	"github.com/amarula/amarula/msgstore"
	"github.com/amarula/amarula/session"
	"github.com/amarula/amarula/storage"
	"github.com/amarula/amarula/webhook"
	"github.com/prometheus/client_golang/prometheus"
)

// Profiles is the catalogue of profiles (the desired set); catalog.Catalog
// satisfies it. Errors wrapping catalog.ErrExists, catalog.ErrNotFound and
// catalog.ErrInvalid answer 409, 404 and 400.
type Profiles interface {
	Create(ctx context.Context, p catalog.Profile) error
	Get(ctx context.Context, id string) (catalog.Profile, error)
	List(ctx context.Context) ([]catalog.Profile, error)
	// Update applies fn to the stored profile atomically; an error from fn
	// aborts the update and is returned.
	Update(ctx context.Context, id string, fn func(*catalog.Profile) error) error
	Delete(ctx context.Context, id string) error
}

// SendRequest is the body of POST /v1/profiles/{id}/messages. Exactly one of
// Text, Media, Reaction, Edit and Revoke is set (Decode validates it).
type SendRequest struct {
	To       string        `json:"to"`
	Text     string        `json:"text,omitempty"`
	Media    *SendMedia    `json:"media,omitempty"`
	Reaction *SendReaction `json:"reaction,omitempty"`
	Edit     *SendEdit     `json:"edit,omitempty"`
	Revoke   *SendRevoke   `json:"revoke,omitempty"`
	ReplyTo  string        `json:"reply_to,omitempty"`

	// IdempotencyKey is the request's Idempotency-Key header (not part of
	// the body). The API answers replays itself and also hands the key to
	// Sessions, so that a send interrupted between WhatsApp and the store is
	// retried with the same message id.
	IdempotencyKey string `json:"-"`
}

// sessionRequest converts the API body to the session's request. Media is
// passed as *SendMedia.
func (req SendRequest) sessionRequest() session.SendRequest {
	out := session.SendRequest{To: req.To, Text: req.Text, ReplyTo: req.ReplyTo, IdempotencyKey: req.IdempotencyKey}
	if req.Reaction != nil {
		out.Reaction = &session.Reaction{TargetID: req.Reaction.TargetID, Emoji: req.Reaction.Emoji}
	}
	if req.Edit != nil {
		out.Edit = &session.Edit{TargetID: req.Edit.TargetID, Text: req.Edit.Text}
	}
	if req.Revoke != nil {
		out.Revoke = &session.Revoke{TargetID: req.Revoke.TargetID}
	}
	if req.Media != nil {
		out.Media = req.Media
	}
	return out
}

// SendMedia is an attachment to send: fetched from URL or given inline as
// base64 Data (exactly one of them).
type SendMedia struct {
	Kind     string `json:"kind"` // image, video, audio, voice, document, sticker
	URL      string `json:"url,omitempty"`
	Data     []byte `json:"data,omitempty"` // base64 in JSON
	Mime     string `json:"mime,omitempty"`
	Caption  string `json:"caption,omitempty"`
	FileName string `json:"file_name,omitempty"`
}

// SendReaction reacts to a message; an empty Emoji removes the reaction.
type SendReaction struct {
	TargetID string `json:"target_id"`
	Emoji    string `json:"emoji"`
}

// SendEdit replaces the text of an own message.
type SendEdit struct {
	TargetID string `json:"target_id"`
	Text     string `json:"text"`
}

// SendRevoke deletes an own message for everyone.
type SendRevoke struct {
	TargetID string `json:"target_id"`
}

// sendAnswer is the JSON answer of a send.
type sendAnswer struct {
	ID        string `json:"id"`
	Status    string `json:"status"`    // "sent"
	Timestamp int64  `json:"timestamp"` // Unix seconds
}

// Sessions drives the session of one profile; the session registry
// (*registry.Registry) satisfies it. The session package's sentinel errors
// are mapped (ErrAlreadyPaired and ErrNoQR → 409, ErrNotConnected → 409,
// ErrInvalidRequest → 400, ErrNotRunning and ErrLeaseLost → 503,
// *NotImplementedError → 501); others can be added with Config.Errors.
type Sessions interface {
	// Info returns the live state. An error that maps to 404 or 503 (no
	// session here) is shown as state unassigned.
	Info(ctx context.Context, profile string) (session.Info, error)
	// QR returns the pairing code on display.
	QR(ctx context.Context, profile string) (session.QR, error)
	// PairPhone starts phone-number pairing and returns the code to type
	// on the phone ("ABCD-EFGH").
	PairPhone(ctx context.Context, profile, phone string) (string, error)
	// Connect resumes a session after conflict or stop.
	Connect(ctx context.Context, profile string) error
	// Stop stops the session and frees its slot; the profile stays, in
	// state stopped, until Connect.
	Stop(ctx context.Context, profile string) error
	// Send sends one message and returns its id once WhatsApp accepted it.
	Send(ctx context.Context, profile string, req session.SendRequest) (session.SendResult, error)
	// Delete logs the profile out on WhatsApp and wipes its credentials,
	// messages, media and events; the API then removes it from Profiles.
	Delete(ctx context.Context, profile string) error
}

// Owners names the node that owns a profile ("" when none);
// *registry.Registry satisfies it. Optional: without it "owner" is empty.
type Owners interface {
	Whereis(ctx context.Context, profile string) (string, error)
}

// Messages reads the message store (*msgstore.Store satisfies it).
type Messages interface {
	// Get returns one message or an error wrapping msgstore.ErrNotFound.
	Get(ctx context.Context, profile, id string) (msgstore.Message, error)
	// List returns a page newest first; Page.Next continues it ("" at the
	// end).
	List(ctx context.Context, profile string, q msgstore.Query) (msgstore.Page, error)
}

// Events is the read side of the per-profile event log
// (storage.EventLog satisfies it).
type Events interface {
	Read(ctx context.Context, profile, after string, limit int) ([]storage.Event, error)
	Tail(ctx context.Context, profile, after string, limit int) ([]storage.Event, error)
	LastCursor(ctx context.Context, profile string) (string, error)
}

// KV stores API keys (namespace "api_keys") and idempotency records
// (namespace "idempotency") of each profile (storage.KV satisfies it).
type KV interface {
	Get(ctx context.Context, profile, ns, key string) ([]byte, error)
	Put(ctx context.Context, profile string, token storage.Token, ns, key string, value []byte) error
	Delete(ctx context.Context, profile string, token storage.Token, ns, key string) error
	Scan(ctx context.Context, profile, ns, prefix string) ([]storage.KeyValue, error)
	ClearNamespace(ctx context.Context, profile string, token storage.Token, ns string) error
}

// Fences gives the token that API-side writes of a profile carry. API keys
// and idempotency records are not session state, so they are written at the
// profile's current fence (storage.Fencer satisfies it).
type Fences interface {
	Fence(ctx context.Context, profile string) (storage.Token, error)
}

// Webhooks lists and redelivers parked webhook events
// (*webhook.DeadLetters satisfies it).
type Webhooks interface {
	Dead(ctx context.Context, profile string) ([]webhook.DeadLetter, error)
	Redeliver(ctx context.Context, profile string, ids []string) (webhook.RedeliverResult, error)
}

// Readiness reports whether this node can serve (joined the cluster, lease
// alive, storage reachable).
type Readiness interface {
	Ready(ctx context.Context) error
}

// ReadyFunc adapts a function to Readiness.
type ReadyFunc func(ctx context.Context) error

// Ready calls f.
func (f ReadyFunc) Ready(ctx context.Context) error { return f(ctx) }

// ErrorMapping maps a dependency's sentinel error (matched with errors.Is)
// to a status and error code, e.g. {catalog.ErrExists, 409, "profile_exists"}.
type ErrorMapping struct {
	Err    error
	Status int
	Code   string
}

// Config is everything the API needs. AdminKey is required; a nil
// dependency makes the endpoints that need it answer 501 not_implemented.
type Config struct {
	// AdminKey is the bearer token that may do everything.
	AdminKey string

	Profiles  Profiles
	Sessions  Sessions
	Owners    Owners
	Messages  Messages
	Events    Events
	KV        KV
	Fences    Fences
	Webhooks  Webhooks
	Readiness Readiness // nil: always ready

	// Optional handlers for endpoints served by other packages. Auth and
	// profile-id validation are applied before they run.
	Cluster   http.Handler // GET /v1/cluster (admin)
	Move      http.Handler // POST /v1/profiles/{id}/move (admin)
	Media     http.Handler // GET /v1/profiles/{id}/media/{msgid} (profile)
	Dashboard http.Handler // GET / (no auth); nil serves the built-in dashboard

	// Gatherer serves /metrics; nil answers 501. Registerer receives the
	// API's own metrics (amarula_http_requests_total,
	// amarula_http_request_seconds); nil registers none.
	Gatherer   prometheus.Gatherer
	Registerer prometheus.Registerer

	Logger *slog.Logger
	// Errors maps the dependencies' own sentinel errors to statuses.
	Errors []ErrorMapping

	// MaxBodyBytes bounds JSON request bodies; default 1 MiB.
	MaxBodyBytes int64
	// MaxSendBodyBytes bounds POST .../messages bodies (inline base64
	// media); default 32 MiB.
	MaxSendBodyBytes int64
	// PingInterval is the WebSocket keep-alive period; default 20 s.
	PingInterval time.Duration
	// WriteTimeout bounds one WebSocket write or ping; default 10 s.
	WriteTimeout time.Duration
	// IdempotencyTTL is how long a stored send answer is replayed for its
	// Idempotency-Key; older records are ignored and pruned. Default 24 h.
	IdempotencyTTL time.Duration
	// WSOriginPatterns are the browser origins allowed to open the
	// WebSocket besides the API's own host (coder/websocket syntax).
	WSOriginPatterns []string
	// Now is the clock; default time.Now.
	Now func() time.Time
}

func (c *Config) setDefaults() error {
	if c.AdminKey == "" {
		return errors.New("api: Config.AdminKey is required")
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.MaxBodyBytes <= 0 {
		c.MaxBodyBytes = 1 << 20
	}
	if c.MaxSendBodyBytes <= 0 {
		c.MaxSendBodyBytes = 32 << 20
	}
	if c.PingInterval <= 0 {
		c.PingInterval = 20 * time.Second
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.IdempotencyTTL <= 0 {
		c.IdempotencyTTL = 24 * time.Hour
	}
	return nil
}

// Server is the API's http.Handler. Close ends the long-lived WebSocket
// streams it owns; http.Server.Shutdown does not reach hijacked connections.
type Server struct {
	cfg     Config
	log     *slog.Logger
	handler http.Handler
	metrics *httpMetrics
	idem    keyedMutex

	pruneMu   sync.Mutex
	lastPrune map[string]time.Time // per profile, for idempotency records

	// streams owns the WebSocket goroutines.
	baseCtx context.Context
	cancel  context.CancelFunc
	mu      sync.Mutex
	closed  bool
	streams sync.WaitGroup
}

// New builds the API handler.
func New(cfg Config) (*Server, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	m, err := newHTTPMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: cfg.Logger.With("component", "api"), metrics: m, lastPrune: map[string]time.Time{}}
	s.baseCtx, s.cancel = context.WithCancel(context.Background())
	s.handler = s.routes()
	return s, nil
}

// ServeHTTP serves one request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

// Close closes every WebSocket stream with 1001 "going away" and waits for
// their goroutines. New streams are refused with 503 afterwards. Call it
// after (or alongside) http.Server.Shutdown.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	s.streams.Wait()
	return nil
}

// track registers a long-lived stream; false once Close was called.
func (s *Server) track() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.streams.Add(1)
	return true
}

// keyedMutex serialises work per key (idempotent sends of one key).
type keyedMutex struct {
	mu    sync.Mutex
	locks map[string]*refMutex
}

type refMutex struct {
	sync.Mutex
	refs int
}

func (k *keyedMutex) lock(key string) func() {
	k.mu.Lock()
	if k.locks == nil {
		k.locks = make(map[string]*refMutex)
	}
	m := k.locks[key]
	if m == nil {
		m = &refMutex{}
		k.locks[key] = m
	}
	m.refs++
	k.mu.Unlock()
	m.Lock()
	return func() {
		m.Unlock()
		k.mu.Lock()
		m.refs--
		if m.refs == 0 {
			delete(k.locks, key)
		}
		k.mu.Unlock()
	}
}
