package main

import (
	"bufio"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestBinaryPrintsURLAndExitsOnSIGTERM runs the real binary: one line with
// the websocket URL and root key, the admin API answering, clean exit on
// SIGTERM.
func TestBinaryPrintsURLAndExitsOnSIGTERM(t *testing.T) {
	bin := filepath.Join(os.Getenv("AMARULA_BIN_DIR"), "wasim")
	if os.Getenv("AMARULA_BIN_DIR") == "" {
		bin = filepath.Join(t.TempDir(), "wasim")
		out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
		if err != nil {
			t.Fatalf("go build: %v\n%s", err, out)
		}
	}
	cmd := exec.Command(bin, "--addr", "127.0.0.1:0", "--log-level", "warn")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			lines <- sc.Text()
		}
		io.Copy(io.Discard, stdout)
		done <- cmd.Wait()
	}()
	var line string
	select {
	case line = <-lines:
	case <-time.After(20 * time.Second):
		t.Fatal("no startup line")
	}
	m := regexp.MustCompile(`^wasim url=ws://([0-9.:]+)/ws/chat root_key=([0-9a-f]{64})$`).FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("startup line %q", line)
	}
	resp, err := http.Get("http://" + m[1] + "/admin/root-key")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if strings.TrimSpace(string(b)) != m[2] {
		t.Fatalf("root-key %q, printed %q", b, m[2])
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no exit after SIGTERM")
	}
}
