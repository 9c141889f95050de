package testcluster

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/amarula/amarula/internal/testenv"
)

// binary finds a server binary (testenv's search: .tools/bin, PATH, …).
func binary(name string) (string, error) {
	if p := testenv.FindBinary(name); p != "" {
		return p, nil
	}
	return "", fmt.Errorf("%s not found (run `make test-deps`, which installs it)", name)
}

// freePort returns a TCP port free a moment ago on host (an address of
// this network namespace).
func freePort(host string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("free port on %s: %w", host, err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Server is a backing server process (etcd, redis-server, versitygw,
// wasim) reachable at Addr.
type Server struct {
	*Proc
	Addr string // host:port clients use
	// ready reports nil once the server answers.
	ready func() error
}

// WaitReady polls until the server answers or timeout passes.
func (s *Server) WaitReady(timeout time.Duration) error {
	return Poll(timeout, 50*time.Millisecond, s.Name+" ready", func() error {
		if !s.Running() {
			return fmt.Errorf("%s exited: %v\n%s", s.Name, s.ExitState(), s.Tail())
		}
		return s.ready()
	})
}

// Restart kills the server and starts it again on the same address and
// data directory, then waits until it answers.
func (s *Server) Restart(timeout time.Duration) error {
	s.Kill()
	if err := s.Start(); err != nil {
		return err
	}
	return s.WaitReady(timeout)
}

// startServer starts the process behind s, retrying on a port collision
// (pick, a fresh port each attempt, configures s).
func startServer(env Env, pick func() (*Server, error)) (*Server, error) {
	var last error
	for attempt := 0; attempt < 3; attempt++ {
		s, err := pick()
		if err != nil {
			return nil, err
		}
		env.Cleanup(s.close)
		if err := s.Start(); err != nil {
			return nil, err
		}
		if last = s.WaitReady(30 * time.Second); last == nil {
			return s, nil
		}
		s.Kill()
	}
	return nil, last
}

// StartEtcd starts a single-member etcd listening on host (127.0.0.1 or a
// test-created bridge address) with its data under dir.
func StartEtcd(env Env, host, dir string) (*Server, error) {
	bin, err := binary("etcd")
	if err != nil {
		return nil, err
	}
	return startServer(env, func() (*Server, error) {
		cport, err := freePort(host)
		if err != nil {
			return nil, err
		}
		pport, err := freePort(host)
		if err != nil {
			return nil, err
		}
		curl := fmt.Sprintf("http://%s", net.JoinHostPort(host, fmt.Sprint(cport)))
		purl := fmt.Sprintf("http://%s", net.JoinHostPort(host, fmt.Sprint(pport)))
		args := []string{"--name", "chaos", "--data-dir", filepath.Join(dir, "etcd"),
			"--listen-client-urls", curl, "--advertise-client-urls", curl,
			"--listen-peer-urls", purl, "--initial-advertise-peer-urls", purl,
			"--initial-cluster", "chaos=" + purl, "--logger", "zap", "--log-level", "warn"}
		s := &Server{Proc: &Proc{Name: "etcd", Bin: bin, Args: args, Env: os.Environ(), LogPath: filepath.Join(dir, "logs", "etcd.log")},
			Addr: net.JoinHostPort(host, fmt.Sprint(cport))}
		s.ready = func() error { return httpOK(curl + "/health") }
		return s, nil
	})
}

// StartRedis starts redis-server with AOF (appendfsync everysec) on host.
func StartRedis(env Env, host, dir string) (*Server, error) {
	bin, err := binary("redis-server")
	if err != nil {
		return nil, err
	}
	data := filepath.Join(dir, "redis")
	if err := os.MkdirAll(data, 0o755); err != nil {
		return nil, err
	}
	return startServer(env, func() (*Server, error) {
		port, err := freePort(host)
		if err != nil {
			return nil, err
		}
		args := []string{"--port", fmt.Sprint(port), "--bind", host, "--save", "",
			"--appendonly", "yes", "--appendfsync", "everysec", "--dir", data, "--protected-mode", "no"}
		s := &Server{Proc: &Proc{Name: "redis", Bin: bin, Args: args, Env: os.Environ(), LogPath: filepath.Join(dir, "logs", "redis.log")},
			Addr: net.JoinHostPort(host, fmt.Sprint(port))}
		s.ready = func() error { return testenv.RedisPing(s.Addr) }
		return s, nil
	})
}

// StartVersity starts versitygw (S3) on host with a posix backend under
// dir; it returns nil, nil when the binary is absent (S3 is optional).
func StartVersity(env Env, host, dir, access, secret string) (*Server, error) {
	bin := testenv.FindBinary("versitygw")
	if bin == "" {
		return nil, nil
	}
	root := filepath.Join(dir, "s3")
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, err
	}
	return startServer(env, func() (*Server, error) {
		port, err := freePort(host)
		if err != nil {
			return nil, err
		}
		addr := net.JoinHostPort(host, fmt.Sprint(port))
		args := []string{"--access", access, "--secret", secret, "--port", addr, "posix", root}
		s := &Server{Proc: &Proc{Name: "versitygw", Bin: bin, Args: args, Env: os.Environ(), LogPath: filepath.Join(dir, "logs", "versitygw.log")}, Addr: addr}
		s.ready = func() error {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				c.Close()
			}
			return err
		}
		return s, nil
	})
}

// Wasim is a running wasim binary.
type Wasim struct {
	*Server
	URL     string // ws://host:port/ws/chat, for AMARULA_WHATSAPP_URL
	RootKey string // hex public root key, for AMARULA_WHATSAPP_ROOT_KEY
	Admin   *WasimClient
}

// StartWasim starts bin/wasim on host with its logs at info level (the
// harness counts "could not decrypt" lines in them).
func StartWasim(env Env, bin, host, dir string) (*Wasim, error) {
	w := &Wasim{}
	s, err := startServer(env, func() (*Server, error) {
		port, err := freePort(host)
		if err != nil {
			return nil, err
		}
		addr := net.JoinHostPort(host, fmt.Sprint(port))
		var mu sync.Mutex
		var url, key string
		p := &Proc{Name: "wasim", Bin: bin, Args: []string{"--addr", addr, "--log-level", "info"}, Env: os.Environ(),
			LogPath: filepath.Join(dir, "logs", "wasim.log")}
		p.onStdout = func(line string) {
			if !strings.HasPrefix(line, "wasim url=") {
				return
			}
			for _, f := range strings.Fields(line) {
				if v, ok := strings.CutPrefix(f, "url="); ok {
					mu.Lock()
					url = v
					mu.Unlock()
				}
				if v, ok := strings.CutPrefix(f, "root_key="); ok {
					mu.Lock()
					key = v
					mu.Unlock()
				}
			}
		}
		s := &Server{Proc: p, Addr: addr}
		s.ready = func() error {
			mu.Lock()
			defer mu.Unlock()
			if url == "" || key == "" {
				return fmt.Errorf("no `wasim url=… root_key=…` line yet")
			}
			w.URL, w.RootKey = url, key
			return nil
		}
		return s, nil
	})
	if err != nil {
		return nil, err
	}
	w.Server = s
	w.Admin = &WasimClient{Base: "http://" + s.Addr, HTTP: &http.Client{Timeout: 20 * time.Second}}
	return w, nil
}

func httpOK(url string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := newHTTPClient(2 * time.Second).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: status %d", url, resp.StatusCode)
	}
	return nil
}
