// Package registry is this node's table of running sessions: at most one
// session per profile in the process, looked up by profile id.
//
// It implements the method set of cluster.Runner (Start a session for a
// lease grant, Stop it), and the per-profile operations the API needs
// (state, QR, phone pairing, connect, send, stop, logout/delete). A session
// whose grant ends, or that is fenced, stops by itself and its slot is
// freed. Disconnect keeps the slot; Stop frees it.
//
// The registry owns one watcher goroutine per running session and stops
// them all on Close. It never decides placement (package cluster does) and
// never takes ownership by itself, except Connect of a stopped profile,
// which acquires a grant through the configured lease.Manager (single-node
// mode).
package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/amarula/amarula/lease"
	"github.com/amarula/amarula/media"
	"github.com/amarula/amarula/msgstore"
	"github.com/amarula/amarula/session"
	"github.com/amarula/amarula/storage"
)

// Sentinel errors. Check them with errors.Is.
var (
	// ErrNotFound is returned for a profile with no session on this node.
	ErrNotFound = errors.New("registry: no session for profile on this node")
	// ErrRunning is returned by Start when the profile already runs here.
	ErrRunning = errors.New("registry: session already running")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("registry: closed")
)

// Config configures a Registry.
type Config struct {
	// Node is this node's name (Whereis answers it for local sessions).
	Node string
	// Store is the storage seam every session uses.
	Store storage.Store
	// Leases, if set, lets Connect take ownership of a profile that does
	// not run here (single-node mode) and Whereis report remote owners.
	Leases lease.Manager
	// Session is the template of every session's config; Profile, Grant,
	// Token and Store are filled in per profile.
	Session session.Config
	// Logger receives the registry's logs. Default: discard.
	Logger *slog.Logger
	// StopTimeout bounds stopping one session in Close. Default 10 s.
	StopTimeout time.Duration
	// CloseParallelism bounds how many sessions Close stops at once
	// (drain). Default 64.
	CloseParallelism int
	// ConnectRate bounds connection attempts of all sessions of this node
	// per second (AMARULA_CONNECT_RATE), so a failover of thousands of
	// profiles does not hammer WhatsApp; the sessions' backoff adds jitter.
	// Default 20; negative: unlimited. Ignored when Session.ConnectLimiter
	// is set.
	ConnectRate float64
}

// DefaultConnectRate is the default of Config.ConnectRate.
const DefaultConnectRate = 20

// slot is one running session.
type slot struct {
	sess  *session.Session
	grant *lease.Grant
	owned bool // acquired by the registry itself (Connect): released on Stop
}

var _ media.Rerequester = (*Registry)(nil)

// Registry is the local table of running sessions. Safe for concurrent use.
type Registry struct {
	cfg  Config
	log  *slog.Logger
	msgs *msgstore.Store

	mu      sync.Mutex
	slots   map[string]*slot
	stopped map[string]bool // stopped here by request (reported as stopped)
	closed  bool
	wg      sync.WaitGroup
}

// New returns an empty registry.
func New(cfg Config) (*Registry, error) {
	if cfg.Store == nil {
		return nil, errors.New("registry: config: Store is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = 10 * time.Second
	}
	if cfg.CloseParallelism <= 0 {
		cfg.CloseParallelism = 64
	}
	if cfg.ConnectRate == 0 {
		cfg.ConnectRate = DefaultConnectRate
	}
	if cfg.Session.ConnectLimiter == nil && cfg.ConnectRate > 0 {
		cfg.Session.ConnectLimiter = rate.NewLimiter(rate.Limit(cfg.ConnectRate), max(1, int(cfg.ConnectRate)))
	}
	return &Registry{
		cfg:     cfg,
		log:     cfg.Logger.With("node", cfg.Node),
		msgs:    msgstore.New(cfg.Store),
		slots:   make(map[string]*slot),
		stopped: make(map[string]bool),
	}, nil
}

// Messages returns the message store for reads (GET messages).
func (r *Registry) Messages() *msgstore.Store { return r.msgs }

// Start runs the session of g.Profile with g's token (cluster.Runner). It
// returns once the session's supervisor runs; the session stops by itself
// when g.Done() closes, and its slot is then freed.
func (r *Registry) Start(ctx context.Context, g *lease.Grant) error {
	return r.start(ctx, g, false)
}

func (r *Registry) start(ctx context.Context, g *lease.Grant, owned bool) error {
	if g == nil {
		return errors.New("registry: start: nil grant")
	}
	if err := storage.ValidateProfile(g.Profile); err != nil {
		return fmt.Errorf("registry: start: %w", err)
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return ErrClosed
	}
	if _, ok := r.slots[g.Profile]; ok {
		r.mu.Unlock()
		return fmt.Errorf("registry: start %s: %w", g.Profile, ErrRunning)
	}
	// Reserve the slot while the session loads its device.
	sl := &slot{grant: g, owned: owned}
	r.slots[g.Profile] = sl
	delete(r.stopped, g.Profile)
	r.mu.Unlock()

	cfg := r.cfg.Session
	cfg.Profile, cfg.Grant, cfg.Token, cfg.Store = g.Profile, g, g.Token, r.cfg.Store
	if cfg.Logger == nil {
		cfg.Logger = r.cfg.Logger
	}
	s, err := session.New(cfg)
	if err == nil {
		err = s.Start(ctx)
	}
	if err != nil {
		r.mu.Lock()
		if r.slots[g.Profile] == sl {
			delete(r.slots, g.Profile)
		}
		r.mu.Unlock()
		return fmt.Errorf("registry: start %s: %w", g.Profile, err)
	}
	r.mu.Lock()
	if r.slots[g.Profile] != sl || r.closed {
		// Stopped (or the registry closed) while the session was starting.
		r.mu.Unlock()
		_ = s.Stop(context.WithoutCancel(ctx))
		return fmt.Errorf("registry: start %s: stopped while starting", g.Profile)
	}
	sl.sess = s
	r.wg.Add(1)
	r.mu.Unlock()
	go r.watch(g.Profile, sl)
	r.log.Info("session started", "profile", g.Profile, "token", g.Token)
	return nil
}

// watch frees the slot when the session ends on its own (fenced, lease
// lost) or by Stop.
func (r *Registry) watch(profile string, sl *slot) {
	defer r.wg.Done()
	<-sl.sess.Done()
	r.mu.Lock()
	byItself := r.slots[profile] == sl // not through Stop
	if byItself {
		delete(r.slots, profile)
	}
	r.mu.Unlock()
	if err := sl.sess.Err(); err != nil {
		r.log.Warn("session ended", "profile", profile, "err", err)
	}
	if byItself {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r.release(ctx, sl)
	}
}

// release gives up a grant the registry acquired itself (Connect).
func (r *Registry) release(ctx context.Context, sl *slot) {
	if !sl.owned || r.cfg.Leases == nil {
		return
	}
	if err := r.cfg.Leases.Release(ctx, sl.grant); err != nil && !errors.Is(err, lease.ErrNotOwner) {
		r.log.Warn("release grant", "profile", sl.grant.Profile, "err", err)
	}
}

// Stop stops the profile's session cleanly and frees its slot
// (cluster.Runner). The profile then reports state stopped here until it
// starts again. Stopping a profile that does not run is not an error.
func (r *Registry) Stop(ctx context.Context, profile string) error {
	r.mu.Lock()
	sl, ok := r.slots[profile]
	if ok {
		delete(r.slots, profile)
		r.stopped[profile] = true
	}
	r.mu.Unlock()
	if !ok || sl.sess == nil {
		return nil
	}
	if err := sl.sess.Stop(ctx); err != nil {
		return fmt.Errorf("registry: stop %s: %w", profile, err)
	}
	// Released only once the session wrote its last: a Connect right
	// after Stop can acquire the profile again at once.
	r.release(ctx, sl)
	return nil
}

// Lookup returns the profile's running session on this node.
func (r *Registry) Lookup(profile string) (*session.Session, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	sl, ok := r.slots[profile]
	if !ok || sl.sess == nil {
		return nil, false
	}
	return sl.sess, true
}

// Whereis names the node running profile: this node for a local session,
// otherwise the lease owner (if Leases is set). "" means nobody.
func (r *Registry) Whereis(ctx context.Context, profile string) (string, error) {
	if _, ok := r.Lookup(profile); ok {
		return r.cfg.Node, nil
	}
	if r.cfg.Leases == nil {
		return "", nil
	}
	node, _, err := r.cfg.Leases.Owner(ctx, profile)
	if err != nil {
		return "", fmt.Errorf("registry: whereis %s: %w", profile, err)
	}
	return node, nil
}

// List returns a snapshot of every running session, sorted by profile.
func (r *Registry) List() []session.Info {
	r.mu.Lock()
	sessions := make([]*session.Session, 0, len(r.slots))
	for _, sl := range r.slots {
		if sl.sess != nil {
			sessions = append(sessions, sl.sess)
		}
	}
	r.mu.Unlock()
	out := make([]session.Info, 0, len(sessions))
	for _, s := range sessions {
		out = append(out, s.Info())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Profile < out[j].Profile })
	return out
}

// session returns the running session or ErrNotFound.
func (r *Registry) session(profile string) (*session.Session, error) {
	if s, ok := r.Lookup(profile); ok {
		return s, nil
	}
	return nil, fmt.Errorf("%w: %s", ErrNotFound, profile)
}

// Info returns the session's snapshot. A profile stopped here by request
// reports state stopped; one that never ran here returns ErrNotFound.
func (r *Registry) Info(ctx context.Context, profile string) (session.Info, error) {
	s, err := r.session(profile)
	if err == nil {
		return s.Info(), nil
	}
	r.mu.Lock()
	stopped := r.stopped[profile]
	r.mu.Unlock()
	if stopped {
		return session.Info{Profile: profile, State: session.StateStopped}, nil
	}
	return session.Info{}, err
}

// State is Info's state, StateUnassigned when nothing runs here.
func (r *Registry) State(profile string) session.State {
	in, err := r.Info(context.Background(), profile)
	if err != nil {
		return session.StateUnassigned
	}
	return in.State
}

// QR returns the pairing code on display (session.ErrAlreadyPaired,
// session.ErrNoQR otherwise).
func (r *Registry) QR(ctx context.Context, profile string) (session.QR, error) {
	s, err := r.session(profile)
	if err != nil {
		return session.QR{}, err
	}
	return s.QR()
}

// PairPhone starts phone-code pairing and returns the code.
func (r *Registry) PairPhone(ctx context.Context, profile, phone string) (string, error) {
	s, err := r.session(profile)
	if err != nil {
		return "", err
	}
	return s.PairPhone(ctx, phone)
}

// Send sends a message through the profile's session.
func (r *Registry) Send(ctx context.Context, profile string, req session.SendRequest) (session.SendResult, error) {
	s, err := r.session(profile)
	if err != nil {
		return session.SendResult{}, err
	}
	return s.Send(ctx, req)
}

// RequestReupload asks the sender's phone to re-upload the media of
// message msgID of profile and returns the new direct path; it implements
// media.Rerequester. A phone that no longer has the file answers an error
// wrapping media.ErrPermanent (and session.ErrMediaNotOnPhone).
func (r *Registry) RequestReupload(ctx context.Context, profile, msgID string, m msgstore.Media) (string, error) {
	s, err := r.session(profile)
	if err != nil {
		return "", err
	}
	path, err := s.RequestReupload(ctx, msgID, m)
	if errors.Is(err, session.ErrMediaNotOnPhone) {
		return "", fmt.Errorf("%w: %w", media.ErrPermanent, err)
	}
	return path, err
}

// MediaHosts returns WhatsApp's media CDN hosts as seen by a connected
// session of this node (they are the same for every account), for the
// media worker's CDN downloader (media.CDN.Hosts).
func (r *Registry) MediaHosts(ctx context.Context) ([]string, error) {
	r.mu.Lock()
	var sessions []*session.Session
	for _, sl := range r.slots {
		if sl.sess != nil && sl.sess.State() == session.StateConnected {
			sessions = append(sessions, sl.sess)
		}
	}
	r.mu.Unlock()
	var errs []error
	for _, s := range sessions {
		hosts, err := s.MediaHosts(ctx)
		if err == nil && len(hosts) > 0 {
			return hosts, nil
		}
		errs = append(errs, err)
	}
	return nil, fmt.Errorf("registry: media hosts: no connected session answered: %w", errors.Join(append(errs, ErrNotFound)...))
}

// Disconnect closes the profile's connection but keeps its slot; the
// session reconnects after its backoff (or at once on Connect).
func (r *Registry) Disconnect(ctx context.Context, profile string) error {
	s, err := r.session(profile)
	if err != nil {
		return err
	}
	return s.Disconnect(ctx)
}

// Connect resumes the profile: a running session (after a conflict, a
// logout or exhausted pairing rounds) connects again; a profile that does
// not run here is acquired through Leases and started (single-node mode).
func (r *Registry) Connect(ctx context.Context, profile string) error {
	if s, ok := r.Lookup(profile); ok {
		return s.Connect(ctx)
	}
	if err := storage.ValidateProfile(profile); err != nil {
		return fmt.Errorf("registry: connect: %w", err)
	}
	if r.cfg.Leases == nil {
		return fmt.Errorf("registry: connect %s: %w", profile, ErrNotFound)
	}
	g, err := r.cfg.Leases.Acquire(ctx, profile)
	if err != nil {
		return fmt.Errorf("registry: connect %s: %w", profile, err)
	}
	if err := r.start(ctx, g, true); err != nil {
		_ = r.cfg.Leases.Release(context.WithoutCancel(ctx), g)
		return err
	}
	return nil
}

// Logout unlinks the profile's device on WhatsApp and wipes its
// credentials; the session rests in logged_out.
func (r *Registry) Logout(ctx context.Context, profile string) error {
	s, err := r.session(profile)
	if err != nil {
		return err
	}
	return s.Logout(ctx)
}

// Delete logs the profile out (best effort: a profile that is not
// connected is just wiped), stops its session, and clears every namespace,
// the event log and consumer cursors of the profile.
func (r *Registry) Delete(ctx context.Context, profile string) error {
	if err := storage.ValidateProfile(profile); err != nil {
		return fmt.Errorf("registry: delete: %w", err)
	}
	var token storage.Token
	if s, ok := r.Lookup(profile); ok {
		token = s.Token()
		if err := s.Logout(ctx); err != nil {
			r.log.Warn("logout before delete", "profile", profile, "err", err)
		}
		if err := r.Stop(ctx, profile); err != nil {
			return err
		}
	} else {
		fence, err := r.cfg.Store.Fence(ctx, profile)
		if err != nil {
			return fmt.Errorf("registry: delete %s: %w", profile, err)
		}
		token = fence
	}
	if err := r.cfg.Store.Clear(ctx, profile, token); err != nil {
		return fmt.Errorf("registry: delete %s: %w", profile, err)
	}
	r.mu.Lock()
	delete(r.stopped, profile)
	r.mu.Unlock()
	r.log.Info("profile deleted", "profile", profile)
	return nil
}

// Close stops every session (at most CloseParallelism at once, each within
// StopTimeout) and waits for the registry's goroutines. Start fails
// afterwards.
func (r *Registry) Close(ctx context.Context) error {
	r.mu.Lock()
	r.closed = true
	profiles := make([]string, 0, len(r.slots))
	for p := range r.slots {
		profiles = append(profiles, p)
	}
	r.mu.Unlock()
	sem := make(chan struct{}, r.cfg.CloseParallelism)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for _, p := range profiles {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			sctx, cancel := context.WithTimeout(ctx, r.cfg.StopTimeout)
			defer cancel()
			if err := r.Stop(sctx, p); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	done := make(chan struct{})
	go func() { r.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		errs = append(errs, fmt.Errorf("registry: close: %w", ctx.Err()))
	}
	return errors.Join(errs...)
}
