package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/amarula/amarula/internal/testenv"
)

func TestBinaryServesAndStopsOnSIGTERM(t *testing.T) {
	bin := testenv.ProjectBinary(t, "amarula-node", "cmd/node")
	port := testenv.FreePort(t)
	cmd := exec.Command(bin)
	cmd.Env = []string{
		fmt.Sprintf("AMARULA_LISTEN=127.0.0.1:%d", port),
		"AMARULA_DATA_DIR=" + t.TempDir(),
		"AMARULA_NODE_NAME=bin1",
		"PATH=/usr/bin:/bin",
	}
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	url := fmt.Sprintf("http://127.0.0.1:%d/healthz", port)
	if err := testenv.WaitFor(20*time.Second, func() error {
		resp, err := http.Get(url)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	}); err != nil {
		t.Fatalf("healthz: %v", err)
	}
	select {
	case l := <-lines:
		if !strings.Contains(l, "Generated admin key") {
			t.Fatalf("first stdout line should announce the generated admin key, got %q", l)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no admin key printed")
	}
	start := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("did not exit within 10 s of SIGTERM")
	}
	t.Logf("clean exit %s after SIGTERM", time.Since(start).Round(time.Millisecond))
	if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second); err == nil {
		c.Close()
		t.Fatal("port still open after exit")
	}
}

func TestBinaryInvalidConfigFailsFast(t *testing.T) {
	bin := testenv.ProjectBinary(t, "amarula-node", "cmd/node")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin)
	cmd.Env = []string{"AMARULA_LEASE_TTL=banana", "AMARULA_DATA_DIR=" + t.TempDir()}
	out, err := cmd.CombinedOutput()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 2 {
		t.Fatalf("want exit 2, got %v (%s)", err, out)
	}
	text := strings.TrimSpace(string(out))
	if strings.Count(text, "\n") != 0 || !strings.Contains(text, "AMARULA_LEASE_TTL") {
		t.Fatalf("want one line naming AMARULA_LEASE_TTL, got %q", text)
	}
}

func TestBinaryHelp(t *testing.T) {
	bin := testenv.ProjectBinary(t, "amarula-node", "cmd/node")
	out, err := exec.Command(bin, "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("--help: %v", err)
	}
	for _, want := range []string{"AMARULA_ETCD_ENDPOINTS", "AMARULA_REDIS_URL", "AMARULA_WHATSAPP_URL", "--lease-ttl"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("--help lacks %s", want)
		}
	}
}
