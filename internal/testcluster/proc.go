// Package testcluster starts a whole Amarula cluster out of real processes
// — etcd, redis-server, wasim and N amarula-node binaries — on loopback or
// inside network namespaces, and gives tests (package chaos) and `make
// demo` what they need to drive and observe it: API and wasim admin
// clients with the admin key, profile linking, sending from phones,
// polling with deadlines, an etcd watch of owner keys and per-process logs.
//
// It never depends on *testing.T: it takes an Env (Logf + Cleanup), which
// *testing.T satisfies and Runtime implements for programs. Every process
// it starts is killed by a registered cleanup; every wait is bounded.
package testcluster

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Env is what the harness needs from its host: a logger and a place to
// register cleanups (run last-registered first). *testing.T implements it.
type Env interface {
	Logf(format string, args ...any)
	Cleanup(func())
}

// failer is implemented by *testing.T: when the test failed, the harness
// prints the log tails of every process at cleanup.
type failer interface{ Failed() bool }

// Runtime is an Env for programs (the demo): Logf writes to W, Close runs
// the cleanups in reverse order of registration.
type Runtime struct {
	W io.Writer

	mu       sync.Mutex
	cleanups []func()
}

// Logf implements Env.
func (r *Runtime) Logf(format string, args ...any) {
	w := r.W
	if w == nil {
		w = os.Stderr
	}
	fmt.Fprintf(w, format+"\n", args...)
}

// Cleanup implements Env.
func (r *Runtime) Cleanup(f func()) {
	r.mu.Lock()
	r.cleanups = append(r.cleanups, f)
	r.mu.Unlock()
}

// Close runs every registered cleanup, newest first.
func (r *Runtime) Close() {
	r.mu.Lock()
	fs := r.cleanups
	r.cleanups = nil
	r.mu.Unlock()
	for i := len(fs) - 1; i >= 0; i-- {
		fs[i]()
	}
}

// Proc is one process started by the harness. Its output goes to a log
// file (appended across restarts) and a bounded in-memory tail.
type Proc struct {
	Name    string
	Bin     string
	Args    []string
	Env     []string // full environment of the process
	Netns   string   // run inside this network namespace ("" = host)
	LogPath string

	mu       sync.Mutex
	cmd      *exec.Cmd
	exited   chan struct{}
	state    *os.ProcessState
	tail     *tailBuffer
	logFile  *os.File
	onStdout func(line string) // optional: sees every stdout line
	started  int
}

// tailBuffer keeps the last limit bytes written to it.
type tailBuffer struct {
	mu    sync.Mutex
	buf   []byte
	limit int
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - b.limit; over > 0 {
		b.buf = append([]byte(nil), b.buf[over:]...)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}

// Start runs the process. It returns once the process was started (not
// once it is ready).
func (p *Proc) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil && !isClosed(p.exited) {
		return fmt.Errorf("%s: already running", p.Name)
	}
	if p.tail == nil {
		p.tail = &tailBuffer{limit: 24 << 10}
	}
	if p.logFile == nil {
		if err := os.MkdirAll(filepath.Dir(p.LogPath), 0o755); err != nil {
			return err
		}
		f, err := os.OpenFile(p.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return err
		}
		p.logFile = f
	}
	p.started++
	fmt.Fprintf(p.logFile, "=== harness: start #%d of %s at %s\n", p.started, p.Name, time.Now().UTC().Format(time.RFC3339Nano))
	bin, args := p.Bin, p.Args
	if p.Netns != "" {
		bin, args = "ip", append([]string{"netns", "exec", p.Netns, p.Bin}, p.Args...)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = p.Env
	out := io.MultiWriter(p.logFile, p.tail)
	cmd.Stderr = out
	cmd.Stdout = out
	var pw *io.PipeWriter
	if fn := p.onStdout; fn != nil {
		var pr *io.PipeReader
		pr, pw = io.Pipe()
		cmd.Stdout = pw
		go func() {
			sc := bufio.NewScanner(pr)
			for sc.Scan() {
				line := sc.Text()
				_, _ = out.Write([]byte(line + "\n"))
				fn(line)
			}
			_, _ = io.Copy(io.Discard, pr)
		}()
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		if pw != nil {
			_ = pw.Close()
		}
		return fmt.Errorf("start %s: %w", p.Name, err)
	}
	exited := make(chan struct{})
	p.cmd, p.exited, p.state = cmd, exited, nil
	go func() {
		_ = cmd.Wait()
		if pw != nil {
			_ = pw.Close()
		}
		p.mu.Lock()
		p.state = cmd.ProcessState
		p.mu.Unlock()
		close(exited)
	}()
	return nil
}

func isClosed(c chan struct{}) bool {
	if c == nil {
		return true
	}
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// Pid is the process id of the current run (0 when not running).
func (p *Proc) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Running reports whether the process is started and has not exited.
func (p *Proc) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd != nil && !isClosed(p.exited)
}

// Signal sends sig to the process group (SIGSTOP, SIGCONT, SIGTERM, …).
func (p *Proc) Signal(sig syscall.Signal) error {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.mu.Unlock()
	if cmd == nil || cmd.Process == nil || isClosed(exited) {
		return fmt.Errorf("%s: not running", p.Name)
	}
	return syscall.Kill(-cmd.Process.Pid, sig)
}

// Kill sends SIGKILL (kill -9) to the process group and waits up to 10 s
// for the exit. It is a no-op when the process is not running.
func (p *Proc) Kill() {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.mu.Unlock()
	if cmd == nil || cmd.Process == nil || isClosed(exited) {
		return
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGCONT) // a stopped process dies only once continued on some kernels
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
	}
}

// Stop sends SIGTERM and waits up to timeout for the exit, then kills.
// It returns the exit state (nil if it had to be killed).
func (p *Proc) Stop(timeout time.Duration) (*os.ProcessState, error) {
	if err := p.Signal(syscall.SIGTERM); err != nil {
		return nil, err
	}
	if p.WaitExit(timeout) {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.state, nil
	}
	p.Kill()
	return nil, fmt.Errorf("%s: no exit within %s of SIGTERM; killed", p.Name, timeout)
}

// WaitExit waits up to timeout for the process to exit.
func (p *Proc) WaitExit(timeout time.Duration) bool {
	p.mu.Lock()
	exited := p.exited
	p.mu.Unlock()
	if exited == nil {
		return true
	}
	select {
	case <-exited:
		return true
	case <-time.After(timeout):
		return false
	}
}

// ExitState is the state of the last finished run (nil while running).
func (p *Proc) ExitState() *os.ProcessState {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state
}

// Tail returns the last lines the process printed.
func (p *Proc) Tail() string {
	p.mu.Lock()
	t := p.tail
	p.mu.Unlock()
	if t == nil {
		return ""
	}
	return t.String()
}

// CountLog counts lines of the whole log file (every run) containing all
// of the given substrings.
func (p *Proc) CountLog(substrs ...string) int {
	b, err := os.ReadFile(p.LogPath)
	if err != nil {
		return 0
	}
	n := 0
	for _, line := range bytes.Split(b, []byte("\n")) {
		ok := true
		for _, s := range substrs {
			if !bytes.Contains(line, []byte(s)) {
				ok = false
				break
			}
		}
		if ok && len(line) > 0 {
			n++
		}
	}
	return n
}

// LogLines returns the lines of the whole log file containing substr.
func (p *Proc) LogLines(substr string) []string {
	b, err := os.ReadFile(p.LogPath)
	if err != nil {
		return nil
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, substr) {
			out = append(out, line)
		}
	}
	return out
}

// close kills the process and closes its log file (cleanup).
func (p *Proc) close() {
	p.Kill()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.logFile != nil {
		_ = p.logFile.Close()
		p.logFile = nil
	}
}

// Poll calls check every interval until it returns nil or timeout passes;
// the error says what was still wrong.
func Poll(timeout, interval time.Duration, what string, check func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return nil
		}
		if !time.Now().Before(deadline) {
			return fmt.Errorf("waiting for %s: still not true after %s: %w", what, timeout, err)
		}
		time.Sleep(interval)
	}
}
