package bolt_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/amarula/amarula/storage"
	"github.com/amarula/amarula/storage/bolt"
	"github.com/amarula/amarula/storage/storagetest"
)

// lockChildEnv makes the test binary act as a second amarula process that
// tries to open the data directory named in the variable.
const lockChildEnv = "AMARULA_BOLT_LOCK_CHILD"

func TestMain(m *testing.M) {
	if dir := os.Getenv(lockChildEnv); dir != "" {
		s, err := bolt.Open(dir, bolt.Options{})
		if err != nil {
			fmt.Println("OPEN FAILED:", err)
			os.Exit(3)
		}
		_ = s.Close()
		fmt.Println("OPEN OK")
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

func open(t *testing.T, opt bolt.Options) *bolt.Store {
	t.Helper()
	s, err := bolt.Open(filepath.Join(t.TempDir(), "data"), opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return s
}

func TestConformance(t *testing.T) {
	storagetest.Run(t,
		func(t *testing.T) storage.Store { return open(t, bolt.Options{}) },
		storagetest.WithRetention(func(t *testing.T, r storage.Retention) storage.Store {
			return open(t, bolt.Options{Retention: r})
		}))
}

func TestSecondOpenInProcessFails(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	s, err := bolt.Open(dir, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s2, err := bolt.Open(dir, bolt.Options{})
	if err == nil {
		_ = s2.Close()
		_ = s.Close()
		t.Fatal("second Open of the same directory succeeded")
	}
	for _, want := range []string{dir, "another amarula process", fmt.Sprint(os.Getpid())} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Once released, the directory opens again with its data.
	s3, err := bolt.Open(dir, bolt.Options{})
	if err != nil {
		t.Fatalf("Open after Close: %v", err)
	}
	_ = s3.Close()
}

// TestSecondProcessFails runs this test binary as a second process against
// a directory held by this one: flock must stop it, with a clear error,
// and let it in once released.
func TestSecondProcessFails(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	s, err := bolt.Open(dir, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	child := func() (string, error) {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), lockChildEnv+"="+dir)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := child()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 3 {
		t.Fatalf("second process: err %v, output %q; want exit 3", err, out)
	}
	if !strings.Contains(out, "another amarula process") || !strings.Contains(out, dir) {
		t.Fatalf("second process error does not name the directory and the holder: %q", out)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	out, err = child()
	if err != nil || !strings.Contains(out, "OPEN OK") {
		t.Fatalf("second process after release: %v, %q", err, out)
	}
}

func TestDataSurvivesReopen(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "data")
	s, err := bolt.Open(dir, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.RaiseFence(ctx, "alice", 4); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, "alice", 4, storage.NSCreds, storage.CredsKey, []byte(`{"jid":"x"}`)); err != nil {
		t.Fatal(err)
	}
	c, err := s.Append(ctx, "alice", 4, "ev", []byte("d"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Clear(ctx, "alice", 4); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, "alice", 4, storage.NSSession, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	s, err = bolt.Open(dir, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if f, _ := s.Fence(ctx, "alice"); f != 4 {
		t.Fatalf("fence after reopen = %d, want 4", f)
	}
	if v, err := s.Get(ctx, "alice", storage.NSSession, "k"); err != nil || string(v) != "v" {
		t.Fatalf("Get after reopen = %q, %v", v, err)
	}
	// The event sequence survives Clear and reopen: no cursor is reused.
	c2, err := s.Append(ctx, "alice", 4, "ev", []byte("d2"))
	if err != nil {
		t.Fatal(err)
	}
	if n1, n2 := mustUint(t, c), mustUint(t, c2); n2 <= n1 {
		t.Fatalf("cursor after Clear+reopen %s does not follow %s", c2, c)
	}
}

func TestOnCorruptHook(t *testing.T) {
	var got []string
	s := open(t, bolt.Options{OnCorrupt: func(p, ns, k string) { got = append(got, p+"/"+ns+"/"+k) }})
	ctx := context.Background()
	if err := s.Put(ctx, "alice", 1, storage.NSSession, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if err := s.CorruptForTest("alice", storage.NSSession, "k"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "alice", storage.NSSession, "k"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("Get corrupt = %v", err)
	}
	if len(got) != 1 || got[0] != "alice/session/k" || s.CorruptReads() != 1 {
		t.Fatalf("OnCorrupt calls %v, CorruptReads %d", got, s.CorruptReads())
	}
}

func mustUint(t *testing.T, s string) uint64 {
	t.Helper()
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		t.Fatalf("cursor %q is not a decimal sequence: %v", s, err)
	}
	return v
}
