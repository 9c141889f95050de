package node

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/amarula/amarula/session/sessiontest"
)

func TestMain(m *testing.M) {
	// whatsmeow starts one history-sync loop per client on the first
	// history notification and never stops it (TestE2EHistorySync1000).
	// Only goroutines whatsmeow itself never stops are ignored (see
	// sessiontest.GoleakOptions); everything of ours must be gone.
	goleak.VerifyTestMain(m, sessiontest.GoleakOptions()...)
}

// startMain runs a node on 127.0.0.1:0 with a temp data dir and returns it
// with a stop function that waits for Run to return.
func startMain(t *testing.T, mutate func(*Config)) (*Main, func() error) {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	cfg.NodeName = "t1"
	if mutate != nil {
		mutate(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	m := New(cfg, NewLogger(cfg, io.Discard))
	var out bytes.Buffer
	m.Out = &out
	ctx, cancel := context.WithCancel(context.Background())
	if err := m.Open(ctx); err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	stopped := false
	stop := func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(15 * time.Second):
			t.Fatal("Run did not return within 15s of cancel")
			return nil
		}
	}
	t.Cleanup(func() { _ = stop() })
	return m, stop
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestHealthReadyMetrics(t *testing.T) {
	m, stop := startMain(t, nil)
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		code, body := get(t, m.URL()+path)
		if code != http.StatusOK {
			t.Fatalf("%s: status %d: %s", path, code, body)
		}
	}
	if _, body := get(t, m.URL()+"/metrics"); !strings.Contains(body, "go_goroutines") {
		t.Fatalf("metrics lacks go collector: %.200s", body)
	}
	if err := stop(); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if _, err := http.Get(m.URL() + "/healthz"); err == nil {
		t.Fatal("server still answering after shutdown")
	}
}

func TestGeneratedAdminKeyKeptAcrossRestarts(t *testing.T) {
	dir := t.TempDir()
	m1, stop1 := startMain(t, func(c *Config) { c.DataDir = dir })
	key := m1.Config.AdminKey
	if len(key) < 16 {
		t.Fatalf("no admin key generated: %q", key)
	}
	if err := stop1(); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, "admin.key"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("admin key file: %v mode %v", err, st.Mode())
	}
	m2, _ := startMain(t, func(c *Config) { c.DataDir = dir })
	if m2.Config.AdminKey != key {
		t.Fatal("admin key changed across restart")
	}
}
