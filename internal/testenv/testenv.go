// Package testenv starts real backing servers (redis-server, etcd, versitygw)
// on free loopback ports for integration tests, waits until they answer, and
// stops them when the test ends.
//
// A missing binary skips the test with a clear message, except in CI
// (CI=true) or when AMARULA_REQUIRE_SERVERS=1, where it fails the test: `make
// test` installs every binary, so a skip there would hide a broken setup.
package testenv

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Required reports whether missing server binaries must fail tests instead
// of skipping them.
func Required() bool {
	return os.Getenv("CI") == "true" || os.Getenv("AMARULA_REQUIRE_SERVERS") == "1"
}

// FindBinary looks for name in AMARULA_TOOLS_BIN, the project's .tools/bin,
// then PATH and /usr/bin, /usr/sbin. It returns "" when absent.
func FindBinary(name string) string {
	var dirs []string
	if d := os.Getenv("AMARULA_TOOLS_BIN"); d != "" {
		dirs = append(dirs, d)
	}
	if root := RepoRoot(); root != "" {
		dirs = append(dirs, filepath.Join(root, ".tools", "bin"), filepath.Join(root, "bin"))
	}
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, d := range []string{"/usr/bin", "/usr/sbin", "/usr/local/bin"} {
		p := filepath.Join(d, name)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

// RepoRoot returns the directory holding go.mod of this module, or "".
func RepoRoot() string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return ""
	}
	dir := filepath.Dir(file)
	for i := 0; i < 6; i++ {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		dir = filepath.Dir(dir)
	}
	return ""
}

// NeedBinary returns the path of name or skips/fails the test.
func NeedBinary(t testing.TB, name string) string {
	t.Helper()
	p := FindBinary(name)
	if p == "" {
		msg := fmt.Sprintf("testenv: %s not found (run `make test`, which installs it)", name)
		if Required() {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return p
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Process is a server process started for a test.
type Process struct {
	Name string
	Cmd  *exec.Cmd
	Args []string
	Dir  string // data directory, kept across Restart
	log  *logTail

	mu     sync.Mutex
	exited chan struct{}
}

// logTail keeps the last lines a process printed, for failure messages.
type logTail struct {
	mu    sync.Mutex
	lines []string
}

func (l *logTail) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	sc := bufio.NewScanner(strings.NewReader(string(p)))
	for sc.Scan() {
		l.lines = append(l.lines, sc.Text())
		if len(l.lines) > 40 {
			l.lines = l.lines[len(l.lines)-40:]
		}
	}
	return len(p), nil
}

func (l *logTail) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// StartProcess runs bin with args, logging its output into a bounded tail,
// and registers a cleanup that kills it.
func StartProcess(t testing.TB, name, bin string, args []string, dir string) *Process {
	t.Helper()
	p := &Process{Name: name, Args: args, Dir: dir, log: &logTail{}}
	p.Cmd = exec.Command(bin, args...)
	p.start(t)
	t.Cleanup(p.Kill)
	return p
}

func (p *Process) start(t testing.TB) {
	t.Helper()
	cmd := exec.Command(p.Cmd.Path, p.Args...)
	cmd.Stdout = io.MultiWriter(p.log)
	cmd.Stderr = io.MultiWriter(p.log)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("testenv: start %s: %v", p.Name, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	p.mu.Lock()
	p.Cmd, p.exited = cmd, exited
	p.mu.Unlock()
}

// Kill stops the process with SIGKILL and waits for it.
func (p *Process) Kill() {
	p.mu.Lock()
	cmd, exited := p.Cmd, p.exited
	p.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	_ = cmd.Process.Kill()
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
	}
}

// Signal sends sig to the process (e.g. SIGSTOP / SIGCONT).
func (p *Process) Signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.Cmd.Process.Signal(sig)
}

// Restart kills the process and starts it again with the same arguments and
// data directory (same port).
func (p *Process) Restart(t testing.TB) {
	t.Helper()
	p.Kill()
	p.start(t)
}

// Output returns the last lines the process printed.
func (p *Process) Output() string { return p.log.String() }

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// WaitFor polls check every 50 ms until it returns nil or timeout passes.
func WaitFor(timeout time.Duration, check func() error) error {
	deadline := time.Now().Add(timeout)
	var err error
	for {
		if err = check(); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %s: %w", timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Redis is a running redis-server.
type Redis struct {
	*Process
	Addr string // host:port
}

// URL returns the redis:// URL of the server.
func (r *Redis) URL() string { return "redis://" + r.Addr + "/0" }

// StartRedis starts redis-server with AOF on (appendfsync everysec), no RDB
// snapshots, on a free loopback port.
func StartRedis(t testing.TB) *Redis {
	t.Helper()
	bin := NeedBinary(t, "redis-server")
	dir := t.TempDir()
	for attempt := 0; ; attempt++ {
		port := FreePort(t)
		args := []string{"--port", fmt.Sprint(port), "--bind", "127.0.0.1", "--save", "",
			"--appendonly", "yes", "--appendfsync", "everysec", "--dir", dir, "--protected-mode", "no"}
		p := StartProcess(t, "redis-server", bin, args, dir)
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		err := WaitFor(10*time.Second, func() error { return redisPing(addr) })
		if err == nil {
			return &Redis{Process: p, Addr: addr}
		}
		p.Kill()
		if attempt >= 2 {
			t.Fatalf("testenv: redis-server not ready: %v\n%s", err, p.Output())
		}
	}
}

// WaitRedis waits until the redis at addr answers PING.
func WaitRedis(t testing.TB, addr string) {
	t.Helper()
	if err := WaitFor(10*time.Second, func() error { return redisPing(addr) }); err != nil {
		t.Fatalf("testenv: redis %s: %v", addr, err)
	}
}

func redisPing(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+PONG") {
		return fmt.Errorf("unexpected reply %q", line)
	}
	return nil
}

// Etcd is a running single-member etcd.
type Etcd struct {
	*Process
	ClientURL string
	PeerURL   string
}

// Endpoints returns the client endpoints for clientv3.
func (e *Etcd) Endpoints() []string { return []string{e.ClientURL} }

// StartEtcd starts a single-member etcd on free loopback ports.
func StartEtcd(t testing.TB) *Etcd {
	t.Helper()
	bin := NeedBinary(t, "etcd")
	dir := t.TempDir()
	for attempt := 0; ; attempt++ {
		cport, pport := FreePort(t), FreePort(t)
		curl := fmt.Sprintf("http://127.0.0.1:%d", cport)
		purl := fmt.Sprintf("http://127.0.0.1:%d", pport)
		args := []string{"--name", "t", "--data-dir", filepath.Join(dir, "data"),
			"--listen-client-urls", curl, "--advertise-client-urls", curl,
			"--listen-peer-urls", purl, "--initial-advertise-peer-urls", purl,
			"--initial-cluster", "t=" + purl, "--logger", "zap", "--log-level", "error"}
		p := StartProcess(t, "etcd", bin, args, dir)
		err := WaitFor(20*time.Second, func() error { return httpOK(curl + "/health") })
		if err == nil {
			return &Etcd{Process: p, ClientURL: curl, PeerURL: purl}
		}
		p.Kill()
		if attempt >= 2 {
			t.Fatalf("testenv: etcd not ready: %v\n%s", err, p.Output())
		}
	}
}

// WaitHealthy waits for etcd's /health after a restart.
func (e *Etcd) WaitHealthy(t testing.TB) {
	t.Helper()
	if err := WaitFor(20*time.Second, func() error { return httpOK(e.ClientURL + "/health") }); err != nil {
		t.Fatalf("testenv: etcd: %v\n%s", err, e.Output())
	}
}

func httpOK(url string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: status %d", url, resp.StatusCode)
	}
	return nil
}

// S3 is a running versitygw with a posix backend.
type S3 struct {
	*Process
	Endpoint  string // http://127.0.0.1:port
	AccessKey string
	SecretKey string
	Root      string // posix root; a bucket is a directory below it
}

// StartS3 starts versitygw (posix backend) on a free loopback port. Buckets
// named in buckets are created as directories before start.
func StartS3(t testing.TB, buckets ...string) *S3 {
	t.Helper()
	bin := NeedBinary(t, "versitygw")
	root := t.TempDir()
	for _, b := range buckets {
		if err := os.MkdirAll(filepath.Join(root, b), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	const ak, sk = "amarulatest", "amarulatestsecret"
	for attempt := 0; ; attempt++ {
		port := FreePort(t)
		args := []string{"--access", ak, "--secret", sk, "--port", fmt.Sprintf("127.0.0.1:%d", port), "posix", root}
		p := StartProcess(t, "versitygw", bin, args, root)
		ep := fmt.Sprintf("http://127.0.0.1:%d", port)
		err := WaitFor(15*time.Second, func() error {
			c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
			if err != nil {
				return err
			}
			return c.Close()
		})
		if err == nil {
			return &S3{Process: p, Endpoint: ep, AccessKey: ak, SecretKey: sk, Root: root}
		}
		p.Kill()
		if attempt >= 2 {
			t.Fatalf("testenv: versitygw not ready: %v\n%s", err, p.Output())
		}
	}
}

// ErrMissing marks a missing binary in helpers that return errors.
var ErrMissing = errors.New("testenv: binary missing")

// RedisPing sends PING to the redis at addr and checks for +PONG.
func RedisPing(addr string) error { return redisPing(addr) }
