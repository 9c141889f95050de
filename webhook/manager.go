package webhook

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sort"
	"sync"

	"github.com/amarula/amarula/catalog"
	"github.com/amarula/amarula/storage"
)

// ProfileGetter looks up a profile's configuration (catalog.Catalog
// satisfies it).
type ProfileGetter interface {
	Get(ctx context.Context, id string) (catalog.Profile, error)
}

// CatalogTarget returns the webhook Target of a profile from the catalogue:
// no webhook (or no profile) is an empty Target.
func CatalogTarget(c ProfileGetter) func(ctx context.Context, profile string) (Target, error) {
	return func(ctx context.Context, profile string) (Target, error) {
		p, err := c.Get(ctx, profile)
		if errors.Is(err, catalog.ErrNotFound) || errors.Is(err, storage.ErrNotFound) {
			return Target{}, nil
		}
		if err != nil {
			return Target{}, err
		}
		if p.Webhook == nil {
			return Target{}, nil
		}
		return Target{URL: p.Webhook.URL, Secret: p.Webhook.Secret, Events: p.Webhook.Events}, nil
	}
}

// ManagerConfig is what every deliverer of a Manager shares.
type ManagerConfig struct {
	Log        Log
	KV         KV
	Target     func(ctx context.Context, profile string) (Target, error)
	HTTPClient *http.Client
	Backoff    Backoff
	Clock      Clock
	Logger     *slog.Logger
	Metrics    *Metrics
	// OnFenced, if set, is called (from the deliverer's goroutine) when a
	// deliverer stopped because a newer owner fenced the profile.
	OnFenced func(profile string)
}

// Manager runs one deliverer per profile this node owns. The owner of the
// node calls Start when it acquires a profile, Stop when it releases it,
// and Close at shutdown; the Manager owns the goroutines and waits for them.
type Manager struct {
	cfg ManagerConfig

	mu     sync.Mutex
	closed bool
	runs   map[string]*managed
}

type managed struct {
	token  storage.Token
	cancel context.CancelFunc
	done   chan struct{}
}

// NewManager returns an empty Manager.
func NewManager(cfg ManagerConfig) *Manager {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Manager{cfg: cfg, runs: make(map[string]*managed)}
}

// Start runs the deliverer of profile with token. A deliverer already
// running with the same token is kept; one with another token is stopped
// and replaced. Start after Close does nothing.
func (m *Manager) Start(profile string, token storage.Token) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	if r, ok := m.runs[profile]; ok {
		select {
		case <-r.done:
		default:
			if r.token == token {
				return
			}
		}
		r.cancel()
		<-r.done
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &managed{token: token, cancel: cancel, done: make(chan struct{})}
	m.runs[profile] = r
	cfg := Config{
		Profile: profile, Token: token, Log: m.cfg.Log, KV: m.cfg.KV,
		Target:     func(ctx context.Context) (Target, error) { return m.cfg.Target(ctx, profile) },
		HTTPClient: m.cfg.HTTPClient, Backoff: m.cfg.Backoff, Clock: m.cfg.Clock,
		Logger: m.cfg.Logger, Metrics: m.cfg.Metrics,
	}
	go func() {
		defer close(r.done)
		err := Run(ctx, cfg)
		switch {
		case errors.Is(err, storage.ErrFenced):
			m.cfg.Logger.Info("webhook deliverer fenced by a newer owner", "profile", profile)
			if m.cfg.OnFenced != nil {
				m.cfg.OnFenced(profile)
			}
		case err != nil:
			m.cfg.Logger.Error("webhook deliverer stopped", "profile", profile, "err", err)
		}
	}()
}

// Stop stops the deliverer of profile, if any, and waits for it.
func (m *Manager) Stop(profile string) {
	m.mu.Lock()
	r, ok := m.runs[profile]
	delete(m.runs, profile)
	m.mu.Unlock()
	if ok {
		r.cancel()
		<-r.done
	}
}

// Running lists the profiles whose deliverer is running, sorted.
func (m *Manager) Running() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for p, r := range m.runs {
		select {
		case <-r.done:
		default:
			out = append(out, p)
		}
	}
	sort.Strings(out)
	return out
}

// Close stops every deliverer and waits for them; later Starts are ignored.
func (m *Manager) Close() {
	m.mu.Lock()
	m.closed = true
	runs := m.runs
	m.runs = make(map[string]*managed)
	m.mu.Unlock()
	for _, r := range runs {
		r.cancel()
	}
	for _, r := range runs {
		<-r.done
	}
}
