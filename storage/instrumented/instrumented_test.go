package instrumented

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"

	goredis "github.com/redis/go-redis/v9"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/amarula/amarula/internal/testenv"
	"github.com/amarula/amarula/storage"
	"github.com/amarula/amarula/storage/bolt"
	"github.com/amarula/amarula/storage/redis"
	"github.com/amarula/amarula/storage/storagetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func open(t *testing.T, m *Metrics) *Store {
	t.Helper()
	st, err := bolt.Open(t.TempDir(), bolt.Options{OnCorrupt: m.CorruptRead})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return Wrap(st, m)
}

// corruptible is the wrapped Redis store plus a raw client, so the
// conformance suite can corrupt an entry from outside the adapter.
type corruptible struct {
	*Store
	inner  *redis.Store
	raw    *goredis.Client
	prefix string
}

func (c *corruptible) CorruptReads() uint64 { return c.inner.CorruptReads() }

func (c *corruptible) CorruptForTest(profile, ns, key string) error {
	ctx := context.Background()
	k := fmt.Sprintf("%s{p:%s}:kv:%s", c.prefix, profile, ns)
	raw, err := c.raw.HGet(ctx, k, key).Bytes()
	if err != nil {
		return err
	}
	raw[len(raw)-1] ^= 0x40
	return c.raw.HSet(ctx, k, key, raw).Err()
}

var seq atomic.Int64

// The wrapper must not change behaviour: it passes the whole conformance
// suite (over the real Redis adapter).
func TestConformance(t *testing.T) {
	srv := testenv.StartRedis(t)
	raw := goredis.NewClient(&goredis.Options{Addr: srv.Addr})
	defer raw.Close()
	newStore := func(t *testing.T, r storage.Retention) storage.Store {
		cluster := fmt.Sprintf("t%d", seq.Add(1))
		st, err := redis.New(context.Background(), srv.URL(), redis.Options{Cluster: cluster, Retention: r})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		return &corruptible{Store: Wrap(st, NewMetrics(nil)), inner: st, raw: raw, prefix: "amarula:" + cluster + ":"}
	}
	storagetest.Run(t, func(t *testing.T) storage.Store { return newStore(t, storage.Retention{}) },
		storagetest.WithRetention(newStore))
}

func TestCounts(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	s := open(t, m)
	ctx := context.Background()
	if err := s.RaiseFence(ctx, "alice", 5); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, "alice", 4, "session", "k", []byte("v")); !errors.Is(err, storage.ErrFenced) {
		t.Fatalf("want ErrFenced, got %v", err)
	}
	if _, err := s.Txn(ctx, "alice", 3, func(tx storage.Tx) error { tx.Append("message.received", nil); return nil }); !errors.Is(err, storage.ErrFenced) {
		t.Fatalf("want ErrFenced, got %v", err)
	}
	if got := testutil.ToFloat64(m.fenced.WithLabelValues("put")); got != 1 {
		t.Fatalf("fenced put = %v", got)
	}
	if got := testutil.ToFloat64(m.fenced.WithLabelValues("txn")); got != 1 {
		t.Fatalf("fenced txn = %v", got)
	}
	// A refused or failed transaction counts no event; a committed one does.
	if _, err := s.Txn(ctx, "alice", 5, func(tx storage.Tx) error { tx.Append("message.received", nil); return errors.New("boom") }); err == nil {
		t.Fatal("want error")
	}
	if _, err := s.Txn(ctx, "alice", 5, func(tx storage.Tx) error {
		tx.Append("message.received", nil)
		tx.Append("message.received", nil)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(ctx, "alice", 5, "message.sent", nil); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(m.events.WithLabelValues("message.received")); got != 2 {
		t.Fatalf("message.received = %v, want 2", got)
	}
	if got := testutil.ToFloat64(m.events.WithLabelValues("message.sent")); got != 1 {
		t.Fatalf("message.sent = %v, want 1", got)
	}
	// A miss is not an error.
	if _, err := s.Get(ctx, "alice", "session", "nope"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(m.errors.WithLabelValues("get")); got != 0 {
		t.Fatalf("errors{get} = %v after a miss", got)
	}
	if n := testutil.CollectAndCount(m.opSeconds); n < 5 {
		t.Fatalf("only %d op series observed", n)
	}
	m.CorruptRead("alice", "session", "k")
	if got := testutil.ToFloat64(m.corrupt); got != 1 {
		t.Fatalf("corrupt = %v", got)
	}
}
