package ctl

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/amarula/amarula/internal/testenv"
	"github.com/amarula/amarula/node"
	"github.com/amarula/amarula/wasim"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("go.mau.fi/whatsmeow.(*Client).handlerQueueLoop"))
}

const adminKey = "ctl-test-admin-key-0123"

// startNode runs a single node (bolt) pointed at an in-process wasim.
func startNode(t *testing.T) string {
	t.Helper()
	sim, err := wasim.New(wasim.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := sim.Start(ctx); err != nil {
		cancel()
		t.Fatal(err)
	}
	cfg := node.DefaultConfig()
	cfg.Listen, cfg.DataDir, cfg.NodeName, cfg.AdminKey = "127.0.0.1:0", t.TempDir(), "ctl1", adminKey
	cfg.WhatsAppURL, cfg.WhatsAppRootKey = sim.URL(), sim.RootKeyHex()
	m := node.New(cfg, node.NewLogger(cfg, io.Discard))
	if err := m.Open(ctx); err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		_ = sim.Close()
	})
	return m.URL()
}

func run(t *testing.T, url string, args ...string) (int, string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	env := map[string]string{"AMARULA_URL": url, "AMARULA_ADMIN_KEY": adminKey}
	code, err := Run(context.Background(), args, func(k string) string { return env[k] }, &out, &errb)
	return code, out.String() + errb.String(), err
}

func TestProfilesAndCluster(t *testing.T) {
	url := startNode(t)
	if code, out, err := run(t, url, "profiles", "create", "alice", "--webhook", "http://127.0.0.1:1/hook", "--webhook-secret", "s3cret"); code != 0 {
		t.Fatalf("create: %d %v %s", code, err, out)
	}
	// A second create of the same id reports the API's error and exits 1.
	if code, _, err := run(t, url, "profiles", "create", "alice"); code != 1 || err == nil || !strings.Contains(err.Error(), "profile_exists") {
		t.Fatalf("duplicate create: %d %v", code, err)
	}
	var out string
	if err := testenv.WaitFor(20*time.Second, func() error {
		code, o, err := run(t, url, "profiles", "qr", "alice")
		if code != 0 {
			return err
		}
		out = o
		return nil
	}); err != nil {
		t.Fatalf("qr: %v", err)
	}
	if !strings.HasPrefix(out, "2@") || !strings.Contains(out, "expires ") {
		t.Fatalf("qr output: %q", out)
	}
	png := filepath.Join(t.TempDir(), "qr.png")
	if code, o, err := run(t, url, "profiles", "qr", "alice", "--png", png); code != 0 {
		t.Fatalf("qr png: %v %s", err, o)
	}
	if b, err := os.ReadFile(png); err != nil || !bytes.HasPrefix(b, []byte("\x89PNG")) {
		t.Fatalf("png: %v", err)
	}
	code, out, err := run(t, url, "profiles", "list")
	if code != 0 || !strings.Contains(out, "alice") || !strings.Contains(out, "pairing") {
		t.Fatalf("list: %d %v %q", code, err, out)
	}
	code, out, err = run(t, url, "cluster", "status")
	if code != 0 || !strings.Contains(out, "ctl1") || !strings.Contains(out, "alive") || !strings.Contains(out, "1 total") {
		t.Fatalf("cluster: %d %v %q", code, err, out)
	}
}

func TestErrors(t *testing.T) {
	url := startNode(t)
	cases := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"profiles"}, 2, "missing command"},
		{[]string{"nodes", "list"}, 2, "unknown command"},
		{[]string{"profiles", "create"}, 2, "profiles create ID"},
		{[]string{"profiles", "create", "Bad/Id"}, 1, "invalid_profile"},
		{[]string{"profiles", "qr", "nobody"}, 1, "404"},
		{[]string{"--url", "ftp://x", "profiles", "list"}, 2, "not an http"},
	}
	for _, tc := range cases {
		code, out, err := run(t, url, tc.args...)
		msg := out
		if err != nil {
			msg += err.Error()
		}
		if code != tc.code || !strings.Contains(msg, tc.want) {
			t.Errorf("%v: code %d, %q; want %d containing %q", tc.args, code, msg, tc.code, tc.want)
		}
	}
	// A wrong key is the API's 401, exit 1.
	var out, errb bytes.Buffer
	code, err := Run(context.Background(), []string{"profiles", "list"},
		func(k string) string {
			return map[string]string{"AMARULA_URL": url, "AMARULA_ADMIN_KEY": "wrong-key-wrong-key"}[k]
		}, &out, &errb)
	if code != 1 || err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("wrong key: %d %v", code, err)
	}
}
