// Package node wires every part of an Amarula node together: configuration,
// storage, leases, membership, sessions, the HTTP API. cmd/node is a thin
// wrapper around Main; end-to-end tests start Main on port 0.
package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Version is the build version, set with -ldflags "-X ...node.Version=…".
var Version = "dev"

// Main is one running node.
type Main struct {
	Config Config
	Logger *slog.Logger

	// Out receives the one-time printout of a generated admin key.
	Out io.Writer

	Registry *prometheus.Registry

	mu       sync.Mutex
	listener net.Listener
	server   *http.Server
	parts    *parts
	bg       sync.WaitGroup // background loops of the parts
}

// NewLogger builds the slog logger the config asks for.
func NewLogger(cfg Config, w io.Writer) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(cfg.LogLevel))
	opts := &slog.HandlerOptions{Level: lvl}
	var h slog.Handler
	if cfg.LogFormat == "json" {
		h = slog.NewJSONHandler(w, opts)
	} else {
		h = slog.NewTextHandler(w, opts)
	}
	return slog.New(h).With("node", cfg.NodeName)
}

// New builds a node from a validated config. Nothing is started yet.
func New(cfg Config, logger *slog.Logger) *Main {
	if logger == nil {
		logger = NewLogger(cfg, os.Stderr)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return &Main{Config: cfg, Logger: logger, Out: os.Stdout, Registry: reg}
}

// Addr returns the address the HTTP server listens on (after Open).
func (m *Main) Addr() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.listener == nil {
		return ""
	}
	return m.listener.Addr().String()
}

// URL returns http://<listen address> after Open ("" before), with a
// wildcard bind replaced by 127.0.0.1.
func (m *Main) URL() string {
	addr := m.Addr()
	if addr == "" {
		return ""
	}
	host, port, _ := net.SplitHostPort(addr)
	if host == "" || host == "::" || host == "0.0.0.0" {
		host = "127.0.0.1" // a wildcard bind is reachable on loopback
	}
	return "http://" + net.JoinHostPort(host, port)
}

// Open prepares the data directory, opens storage and the other backends,
// and binds the HTTP listener. Run serves.
func (m *Main) Open(ctx context.Context) error {
	if err := os.MkdirAll(m.Config.DataDir, 0o700); err != nil {
		return fmt.Errorf("data dir %s: %w", m.Config.DataDir, err)
	}
	if err := m.ensureAdminKey(); err != nil {
		return err
	}
	l, err := net.Listen("tcp", m.Config.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", m.Config.Listen, err)
	}
	m.mu.Lock()
	m.listener = l
	m.mu.Unlock()
	if err := m.openParts(ctx); err != nil {
		_ = l.Close()
		return err
	}
	m.mu.Lock()
	m.server = &http.Server{
		Handler:           m.handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(m.Logger.Handler(), slog.LevelWarn),
	}
	m.mu.Unlock()
	return nil
}

// ensureAdminKey generates an admin key when none is configured, keeps it in
// the data dir (mode 0600) so restarts reuse it, and prints it once.
func (m *Main) ensureAdminKey() error {
	if m.Config.AdminKey != "" {
		return nil
	}
	path := filepath.Join(m.Config.DataDir, "admin.key")
	if b, err := os.ReadFile(path); err == nil && len(strings.TrimSpace(string(b))) >= 16 {
		m.Config.AdminKey = strings.TrimSpace(string(b))
		m.Logger.Info("admin key loaded from data dir", "path", path)
		return nil
	}
	var raw [24]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return fmt.Errorf("generate admin key: %w", err)
	}
	key := "amadm_" + hex.EncodeToString(raw[:])
	if err := os.WriteFile(path, []byte(key+"\n"), 0o600); err != nil {
		return fmt.Errorf("store admin key: %w", err)
	}
	m.Config.AdminKey = key
	fmt.Fprintf(m.Out, "Generated admin key (printed once, kept in %s):\n  %s\n", path, key)
	return nil
}

// Run serves until ctx is cancelled, then shuts down within the configured
// timeout: drain (hand every profile off), stop accepting, stop sessions,
// flush, close backends.
func (m *Main) Run(ctx context.Context) error {
	m.mu.Lock()
	srv, l := m.server, m.listener
	m.mu.Unlock()
	if srv == nil {
		return errors.New("node: Run before Open")
	}
	bgCtx, stopBG := context.WithCancel(context.Background())
	defer stopBG()
	m.startParts(bgCtx)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	m.Logger.Info("node serving", "addr", l.Addr().String(), "version", Version, "single_node", m.Config.SingleNode())

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
		if errors.Is(serveErr, http.ErrServerClosed) {
			serveErr = nil
		}
	}
	return errors.Join(serveErr, m.shutdown(stopBG))
}

// shutdown drains, stops the HTTP server, stops the background loops and
// closes every part, within Config.ShutdownTimeout.
func (m *Main) shutdown(stopBG context.CancelFunc) error {
	ctx, cancel := context.WithTimeout(context.Background(), m.Config.ShutdownTimeout)
	defer cancel()
	start := time.Now()
	m.Logger.Info("shutting down", "budget", m.Config.ShutdownTimeout)
	var errs []error
	// Hand profiles off while the API still answers (forwarded requests
	// find the new owner), within most of the budget.
	dctx, dcancel := context.WithTimeout(ctx, m.Config.ShutdownTimeout*6/10)
	if err := m.drain(dctx); err != nil {
		errs = append(errs, fmt.Errorf("drain: %w", err))
	}
	dcancel()
	m.mu.Lock()
	srv := m.server
	m.mu.Unlock()
	if err := srv.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("http shutdown: %w", err))
	}
	stopBG()
	m.bg.Wait()
	if err := m.closeParts(ctx); err != nil {
		errs = append(errs, err)
	}
	m.Logger.Info("shut down", "took", time.Since(start).Round(time.Millisecond))
	return errors.Join(errs...)
}
