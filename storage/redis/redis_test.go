package redis_test

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/amarula/amarula/internal/testenv"
	"github.com/amarula/amarula/storage"
	"github.com/amarula/amarula/storage/redis"
	"github.com/amarula/amarula/storage/storagetest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var storeSeq atomic.Int64

// open returns a Store on srv in its own keyspace (a unique cluster name),
// so subtests sharing one redis-server never see each other's keys.
func open(t *testing.T, srv *testenv.Redis, opt redis.Options) *redis.Store {
	t.Helper()
	if opt.Cluster == "" {
		opt.Cluster = fmt.Sprintf("t%d", storeSeq.Add(1))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := redis.New(ctx, srv.URL(), opt)
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
	srv := testenv.StartRedis(t)
	opt := redis.Options{} // production defaults, including the Tail block slice
	storagetest.Run(t,
		func(t *testing.T) storage.Store { return open(t, srv, opt) },
		storagetest.WithRetention(func(t *testing.T, r storage.Retention) storage.Store {
			o := opt
			o.Retention = r
			return open(t, srv, o)
		}))
}

func rawClient(t *testing.T, srv *testenv.Redis) *goredis.Client {
	t.Helper()
	c := goredis.NewClient(&goredis.Options{Addr: srv.Addr})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// TestKeyLayout inspects the real keys a default-cluster store writes: every
// key of a profile is amarula:{p:<profile>}:… (one cluster slot), and only
// the documented profile index is outside a profile's hash tag.
func TestKeyLayout(t *testing.T) {
	srv := testenv.StartRedis(t)
	s := open(t, srv, redis.Options{Cluster: "default"})
	ctx := context.Background()
	for _, p := range []string{"alice", "bob-2"} {
		if err := s.RaiseFence(ctx, p, 3); err != nil {
			t.Fatal(err)
		}
		if err := s.Put(ctx, p, 3, storage.NSSession, "user@s.whatsapp.net:1", []byte("x")); err != nil {
			t.Fatal(err)
		}
		if err := s.Put(ctx, p, 3, storage.NSCreds, storage.CredsKey, []byte("{}")); err != nil {
			t.Fatal(err)
		}
		c, err := s.Append(ctx, p, 3, "message", []byte("m"))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Ack(ctx, p, 3, "webhook", c); err != nil {
			t.Fatal(err)
		}
	}
	keys, err := rawClient(t, srv).Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(keys)
	want := []string{
		"amarula:profiles",
		"amarula:{p:alice}:cursors",
		"amarula:{p:alice}:events",
		"amarula:{p:alice}:fence",
		"amarula:{p:alice}:kv:creds",
		"amarula:{p:alice}:kv:session",
		"amarula:{p:alice}:nss",
		"amarula:{p:bob-2}:cursors",
		"amarula:{p:bob-2}:events",
		"amarula:{p:bob-2}:fence",
		"amarula:{p:bob-2}:kv:creds",
		"amarula:{p:bob-2}:kv:session",
		"amarula:{p:bob-2}:nss",
	}
	if strings.Join(keys, "\n") != strings.Join(want, "\n") {
		t.Fatalf("keys:\n%s\nwant:\n%s", strings.Join(keys, "\n"), strings.Join(want, "\n"))
	}
	for _, k := range keys {
		if k == "amarula:profiles" {
			continue
		}
		// The hash tag is the first {…} of the key, so it alone picks the slot.
		open, close := strings.IndexByte(k, '{'), strings.IndexByte(k, '}')
		tag := k[open+1 : close]
		if open != len("amarula:") || (tag != "p:alice" && tag != "p:bob-2") {
			t.Fatalf("key %s: hash tag %q, want p:<profile> right after the prefix", k, tag)
		}
	}
	typ := map[string]string{"events": "stream", "fence": "string", "kv:session": "hash", "cursors": "hash", "nss": "set"}
	for suffix, want := range typ {
		got, err := rawClient(t, srv).Type(ctx, "amarula:{p:alice}:"+suffix).Result()
		if err != nil || got != want {
			t.Fatalf("type of %s = %q, %v; want %s", suffix, got, err, want)
		}
	}
	if f, _ := rawClient(t, srv).Get(ctx, "amarula:{p:alice}:fence").Result(); f != "3" {
		t.Fatalf("fence key holds %q, want 3", f)
	}
}

// TestClusterPrefix checks that a non-default cluster name is part of every
// key and isolates the keyspace.
func TestClusterPrefix(t *testing.T) {
	srv := testenv.StartRedis(t)
	ctx := context.Background()
	a := open(t, srv, redis.Options{Cluster: "blue"})
	b := open(t, srv, redis.Options{Cluster: "green"})
	if err := a.Put(ctx, "alice", 1, storage.NSSession, "k", []byte("blue")); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Get(ctx, "alice", storage.NSSession, "k"); err == nil {
		t.Fatal("cluster green sees cluster blue's key")
	}
	keys, _ := rawClient(t, srv).Keys(ctx, "*").Result()
	sort.Strings(keys)
	if want := "amarula:blue:profiles amarula:blue:{p:alice}:kv:session amarula:blue:{p:alice}:nss"; strings.Join(keys, " ") != want {
		t.Fatalf("keys = %v, want %s", keys, want)
	}
	if _, err := redis.New(ctx, srv.URL(), redis.Options{Cluster: "Bad:Name"}); err == nil {
		t.Fatal("invalid cluster name accepted")
	}
}

// TestScriptReloadAfterFlush proves the EVALSHA → EVAL fallback: after
// SCRIPT FLUSH the next fenced write still lands and is still fenced.
func TestScriptReloadAfterFlush(t *testing.T) {
	srv := testenv.StartRedis(t)
	s := open(t, srv, redis.Options{})
	ctx := context.Background()
	if err := s.RaiseFence(ctx, "alice", 5); err != nil {
		t.Fatal(err)
	}
	if err := rawClient(t, srv).ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, "alice", 5, storage.NSSession, "k", []byte("v")); err != nil {
		t.Fatalf("Put after SCRIPT FLUSH: %v", err)
	}
	if err := s.Put(ctx, "alice", 4, storage.NSSession, "k", []byte("zombie")); err == nil {
		t.Fatal("stale Put accepted after SCRIPT FLUSH")
	}
	if v, _ := s.Get(ctx, "alice", storage.NSSession, "k"); string(v) != "v" {
		t.Fatalf("value = %q", v)
	}
}

// TestSurvivesRedisRestart: with AOF on (as testenv and docs/storage.md
// require), acknowledged writes, the fence and the log survive a restart.
func TestSurvivesRedisRestart(t *testing.T) {
	srv := testenv.StartRedis(t)
	s := open(t, srv, redis.Options{})
	ctx := context.Background()
	if err := s.RaiseFence(ctx, "alice", 9); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, "alice", 9, storage.NSSession, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	c, err := s.Append(ctx, "alice", 9, "ev", []byte("d"))
	if err != nil {
		t.Fatal(err)
	}
	// With AOF on, Redis write(2)s the AOF before it replies, so killing the
	// process (not the machine) loses nothing even with appendfsync everysec.
	srv.Restart(t)
	testenv.WaitRedis(t, srv.Addr)
	err = testenv.WaitFor(10*time.Second, func() error {
		_, err := s.Get(ctx, "alice", storage.NSSession, "k")
		return err
	})
	if err != nil {
		t.Fatalf("value lost over restart: %v", err)
	}
	if f, _ := s.Fence(ctx, "alice"); f != 9 {
		t.Fatalf("fence after restart = %d", f)
	}
	if last, _ := s.LastCursor(ctx, "alice"); last != c {
		t.Fatalf("last cursor after restart = %q, want %q", last, c)
	}
	if err := s.Put(ctx, "alice", 8, storage.NSSession, "k", []byte("zombie")); err == nil {
		t.Fatal("stale write accepted after restart")
	}
}
