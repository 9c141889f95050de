package media

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/amarula/amarula/msgstore"
	"github.com/amarula/amarula/storage"
	"github.com/amarula/amarula/storage/bolt"
	"github.com/amarula/amarula/storage/s3"
)

// helperEnv names the variable that turns the test binary into a worker
// process for TestKill9MidDownload (see TestMain).
const helperEnv = "AMARULA_MEDIA_WORKER_PROCESS"

// helperConfig is what the worker process needs to reach the test's world.
type helperConfig struct {
	BoltDir   string `json:"bolt_dir"`
	Endpoint  string `json:"endpoint"`
	AccessKey string `json:"access_key"`
	SecretKey string `json:"secret_key"`
	CDNHost   string `json:"cdn_host"`
}

// runWorkerProcess is the main of the worker process: the real pipeline on
// the bolt directory, until it is killed.
func runWorkerProcess(raw string) int {
	var c helperConfig
	if err := json.Unmarshal([]byte(raw), &c); err != nil {
		fmt.Fprintln(os.Stderr, "helper config:", err)
		return 2
	}
	ctx := context.Background()
	h := &storeHandle{name: "bolt", open: func() (storage.Store, error) { return bolt.Open(c.BoltDir, bolt.Options{}) }}
	st, err := h.open()
	if err != nil {
		fmt.Fprintln(os.Stderr, "open bolt:", err)
		return 2
	}
	h.st = st
	obj, err := s3.New(ctx, s3.Config{Endpoint: c.Endpoint, Bucket: bucket, AccessKey: c.AccessKey, SecretKey: c.SecretKey, PathStyle: true, PartSize: s3.MinPartSize})
	if err != nil {
		fmt.Fprintln(os.Stderr, "s3:", err)
		return 2
	}
	w, err := New(Deps{
		Store: st, Objects: obj, Messages: &storeMessages{h: h},
		Downloader: &CDN{Scheme: "http", Hosts: func(context.Context) ([]string, error) { return []string{c.CDNHost}, nil }},
	}, testConfig())
	if err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		return 2
	}
	if err := w.Attach(prof, tok); err != nil {
		fmt.Fprintln(os.Stderr, "attach:", err)
		return 2
	}
	fmt.Fprintln(os.Stderr, "worker process running")
	_ = w.Run(ctx) // until SIGKILL
	return 0
}

// TestKill9MidDownload: a real worker process is killed with SIGKILL while
// the CDN is half-way through a 12 MiB body (no deferred cleanup runs: the
// multipart upload is left dangling, the bolt lock is dropped by the
// kernel). A new worker on the same data directory completes the job
// exactly once: one media.stored, one object, byte-identical.
func TestKill9MidDownload(t *testing.T) {
	boltDir := t.TempDir()
	h := newHandle(t, "bolt", func() (storage.Store, error) { return bolt.Open(boltDir, bolt.Options{}) })
	e := newEnv(t, h)
	r := e.receive("3EB0KILL90001", "document", "application/zip", randBytes(12<<20, 90))
	gate := make(chan struct{})
	defer close(gate)
	e.cdn.set(func(c *fakeCDN) { c.stall[urlPath(r.media.DirectPath)] = gate })
	if err := h.store().Close(); err != nil { // the worker process takes the directory's lock
		t.Fatal(err)
	}

	cfg, _ := json.Marshal(helperConfig{BoltDir: boltDir, Endpoint: e.s3env.Endpoint, AccessKey: e.s3env.AccessKey,
		SecretKey: e.s3env.SecretKey, CDNHost: strings.TrimPrefix(e.cdn.srv.URL, "http://")})
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+string(cfg))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case <-e.cdn.started:
	case err := <-exited:
		t.Fatalf("worker process exited before downloading: %v\n%s", err, out.String())
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
		t.Fatalf("download never started\n%s", out.String())
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := <-exited; err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("worker process: %v, want killed", err)
	}

	st, err := h.open() // the process comes back on the same directory
	if err != nil {
		t.Fatalf("reopen after kill -9: %v", err)
	}
	h.mu.Lock()
	h.st = st
	h.mu.Unlock()
	if j, ok := e.job(r.id); !ok || j.Attempts != 1 || j.State != JobRunning {
		t.Fatalf("after kill -9: job %+v (stored %v), want attempts 1 state running", j, ok)
	}
	if files := e.objectFiles(); len(files) != 0 || len(e.mediaEvents()) != 0 {
		t.Fatalf("after kill -9: objects %v, %d events; want none", files, len(e.mediaEvents()))
	}
	e.cdn.set(func(c *fakeCDN) { delete(c.stall, urlPath(r.media.DirectPath)) })
	w := e.start(testConfig(), Deps{})
	e.assertStored(r)
	w.stop()
	if n := e.eventsFor(r.id); n[msgstore.EventMediaStored] != 1 {
		t.Fatalf("events: %v", n)
	}
	if files := e.objectFiles(); len(files) != 1 {
		t.Fatalf("objects %v, want one", files)
	}
	if _, data := e.waitOutcome(r.id); data.Attempts != 2 {
		t.Fatalf("attempts %d, want 2", data.Attempts)
	}
}
