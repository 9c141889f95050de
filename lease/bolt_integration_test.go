package lease_test

import (
	"context"
	"errors"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/amarula/amarula/internal/testenv"
	"github.com/amarula/amarula/lease"
	"github.com/amarula/amarula/storage"
	"github.com/amarula/amarula/storage/bolt"
)

// These tests use the real embedded store as the Fencer: they prove that a
// grant's token really fences the previous owner's writes. (Test-only
// import: package lease itself imports nothing of ours.)

func openBolt(t *testing.T, dir string) *bolt.Store {
	t.Helper()
	s, err := bolt.Open(dir, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestEtcdTakeoverFencesOldOwnerInBolt(t *testing.T) {
	e := testenv.StartEtcd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st := openBolt(t, t.TempDir())
	defer st.Close()

	mk := func(node string) *lease.Etcd {
		cli, err := clientv3.New(clientv3.Config{Endpoints: e.Endpoints(), DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cli.Close() })
		m, err := lease.NewEtcd(ctx, cli, lease.EtcdConfig{Cluster: "b", Node: node, TTL: 3 * time.Second,
			SafetyMargin: time.Second, RenewInterval: 500 * time.Millisecond, Fencer: st})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		return m
	}
	n1, n2 := mk("n1"), mk("n2")

	g1, err := n1.Acquire(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if f, _ := st.Fence(ctx, "alice"); f != g1.Token {
		t.Fatalf("fence %d, token %d", f, g1.Token)
	}
	if err := st.Put(ctx, "alice", g1.Token, storage.NSSession, "k", []byte("v1")); err != nil {
		t.Fatal(err)
	}
	// n1 is declared dead and revoked while it still runs (false verdict).
	if err := n2.RevokeNode(ctx, "n1"); err != nil {
		t.Fatal(err)
	}
	g2, err := n2.Acquire(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	// The zombie's late write is refused; the new owner's lands.
	if err := st.Put(ctx, "alice", g1.Token, storage.NSSession, "k", []byte("zombie")); !errors.Is(err, storage.ErrFenced) {
		t.Fatalf("late write of the old owner: %v, want ErrFenced", err)
	}
	if err := st.Put(ctx, "alice", g2.Token, storage.NSSession, "k", []byte("v2")); err != nil {
		t.Fatal(err)
	}
	if v, _ := st.Get(ctx, "alice", storage.NSSession, "k"); string(v) != "v2" {
		t.Fatalf("value %q", v)
	}
	select {
	case <-g1.Done():
	case <-time.After(3 * time.Second):
		t.Fatal("old grant still open after revocation")
	}
}

func TestLocalTokensSurviveRestartInBolt(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	var last uint64
	for run := 0; run < 3; run++ {
		st := openBolt(t, dir)
		l := lease.NewLocal(st, "solo")
		g, err := l.Acquire(ctx, "alice")
		if err != nil {
			t.Fatal(err)
		}
		if g.Token <= last {
			t.Fatalf("run %d: token %d not above %d", run, g.Token, last)
		}
		if last > 0 {
			if err := st.Put(ctx, "alice", last, storage.NSSession, "k", nil); !errors.Is(err, storage.ErrFenced) {
				t.Fatalf("write with the previous run's token: %v", err)
			}
		}
		last = g.Token
		l.Close()
		if err := st.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
