package catalog

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/amarula/amarula/internal/testenv"
	"github.com/amarula/amarula/storage/bolt"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func newClient(t *testing.T, endpoints []string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// next reads one change or fails after a deadline.
func next(t *testing.T, ch <-chan Change) Change {
	t.Helper()
	select {
	case c, ok := <-ch:
		if !ok {
			t.Fatal("watch channel closed")
		}
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("no change within 5s")
	}
	return Change{}
}

// testCatalog is the behaviour every implementation shares. a and b are
// two handles on the same catalog (two etcd clients, or one local store).
func testCatalog(t *testing.T, a, b Catalog) {
	ctx := ctxT(t)
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	changes := b.Watch(wctx)

	for _, bad := range []Profile{{ID: "Alice"}, {ID: "../x"}, {ID: ""}, {ID: ReservedID},
		{ID: "ok", Webhook: &Webhook{URL: "ftp://x"}}, {ID: "ok", Webhook: &Webhook{URL: "/relative"}}, {ID: "ok", Pin: "a/b"}} {
		if err := a.Create(ctx, bad); !errors.Is(err, ErrInvalid) {
			t.Fatalf("create %+v: %v, want ErrInvalid", bad, err)
		}
	}
	if _, err := a.Get(ctx, "../etc"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("get invalid id: %v", err)
	}

	bob := Profile{ID: "bob", Webhook: &Webhook{URL: "https://hooks.example/b", Secret: "s", Events: []string{"message"}}}
	for _, p := range []Profile{bob, {ID: "alice"}} {
		if err := a.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Create(ctx, Profile{ID: "bob"}); !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate create: %v", err)
	}
	got, err := b.Get(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	if got.Webhook == nil || got.Webhook.URL != bob.Webhook.URL || got.Webhook.Secret != "s" || got.CreatedAt.IsZero() || got.Stopped {
		t.Fatalf("get bob = %+v", got)
	}
	if _, err := b.Get(ctx, "carol"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get missing: %v", err)
	}
	list, err := b.List(ctx)
	if err != nil || len(list) != 2 || list[0].ID != "alice" || list[1].ID != "bob" {
		t.Fatalf("list = %+v, %v", list, err)
	}

	if err := a.Update(ctx, "alice", func(p *Profile) error { p.Stopped = true; return nil }); err != nil {
		t.Fatal(err)
	}
	if p, _ := b.Get(ctx, "alice"); !p.Stopped {
		t.Fatal("update not visible")
	}
	boom := errors.New("boom")
	if err := a.Update(ctx, "alice", func(p *Profile) error { p.Stopped = false; return boom }); !errors.Is(err, boom) {
		t.Fatalf("update fn error: %v", err)
	}
	if err := a.Update(ctx, "alice", func(p *Profile) error { p.ID = "eve"; return nil }); !errors.Is(err, ErrInvalid) {
		t.Fatalf("update changing id: %v", err)
	}
	if p, _ := b.Get(ctx, "alice"); !p.Stopped {
		t.Fatal("aborted update landed")
	}
	if err := a.Update(ctx, "carol", func(*Profile) error { return nil }); !errors.Is(err, ErrNotFound) {
		t.Fatalf("update missing: %v", err)
	}

	if err := a.Delete(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	if err := a.Delete(ctx, "bob"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	if _, err := b.Get(ctx, "bob"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get deleted: %v", err)
	}

	// The watcher on b saw every change made through a, in order.
	want := []struct {
		typ     ChangeType
		id      string
		stopped bool
	}{{Put, "bob", false}, {Put, "alice", false}, {Put, "alice", true}, {Delete, "bob", false}}
	for i, w := range want {
		c := next(t, changes)
		if c.Type != w.typ || c.ID != w.id || (c.Type == Put && (c.Profile == nil || c.Profile.Stopped != w.stopped)) {
			t.Fatalf("change %d = %v %s %+v, want %v %s stopped=%v", i, c.Type, c.ID, c.Profile, w.typ, w.id, w.stopped)
		}
	}
	stop()
	for range changes { // the channel closes when the watch context ends
	}

	// Concurrent read-modify-write from both handles: no update is lost.
	if err := a.Create(ctx, Profile{ID: "counter", Webhook: &Webhook{URL: "http://h"}}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i, c := range []Catalog{a, b, a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 5; j++ {
				if err := c.Update(ctx, "counter", func(p *Profile) error {
					p.Webhook.Events = append(p.Webhook.Events, fmt.Sprintf("e%d-%d", i, j))
					return nil
				}); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	if p, _ := a.Get(ctx, "counter"); len(p.Webhook.Events) != 20 {
		t.Fatalf("%d events after 20 concurrent updates", len(p.Webhook.Events))
	}
}

func TestEtcdCatalog(t *testing.T) {
	e := testenv.StartEtcd(t)
	testCatalog(t, NewEtcd(newClient(t, e.Endpoints()), "t"), NewEtcd(newClient(t, e.Endpoints()), "t"))
}

func TestLocalCatalog(t *testing.T) {
	st, err := bolt.Open(t.TempDir(), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	l := NewLocal(st)
	testCatalog(t, l, l)

	// Wiping a profile's own data does not touch its catalog entry, and a
	// raised fence on the reserved scope does not block catalog writes.
	ctx := ctxT(t)
	if err := st.Clear(ctx, "alice", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Get(ctx, "alice"); err != nil {
		t.Fatalf("entry gone after Clear of the profile: %v", err)
	}
	if err := st.RaiseFence(ctx, ReservedID, 7); err != nil {
		t.Fatal(err)
	}
	if err := l.Create(ctx, Profile{ID: "dave"}); err != nil {
		t.Fatalf("create under a raised fence: %v", err)
	}
}

// TestEtcdWatchSurvivesRestartAndCompaction: a watcher keeps delivering
// across an etcd restart, and a watcher whose history was compacted away
// gets a Reset and then live changes.
func TestEtcdWatchSurvivesRestartAndCompaction(t *testing.T) {
	e := testenv.StartEtcd(t)
	ctx := ctxT(t)
	a := NewEtcd(newClient(t, e.Endpoints()), "t")
	b := NewEtcd(newClient(t, e.Endpoints()), "t")
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	changes := b.Watch(wctx)
	if err := a.Create(ctx, Profile{ID: "p1"}); err != nil {
		t.Fatal(err)
	}
	if c := next(t, changes); c.ID != "p1" {
		t.Fatalf("got %+v", c)
	}

	e.Restart(t)
	e.WaitHealthy(t)
	if err := testenv.WaitFor(10*time.Second, func() error { return a.Create(ctx, Profile{ID: "p2"}) }); err != nil {
		t.Fatal(err)
	}
	if c := next(t, changes); c.Type != Put || c.ID != "p2" {
		t.Fatalf("after restart got %+v", c)
	}

	// Compact everything, then start a watcher from revision 1.
	resp, err := a.cli.Get(ctx, "x")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.cli.Compact(ctx, resp.Header.Revision); err != nil {
		t.Fatal(err)
	}
	out := make(chan Change, 8)
	done := make(chan struct{})
	go func() { defer close(done); b.watch(wctx, 1, out) }()
	if c := next(t, out); c.Type != Reset {
		t.Fatalf("compacted watcher got %+v, want Reset", c)
	}
	if err := a.Delete(ctx, "p1"); err != nil {
		t.Fatal(err)
	}
	if c := next(t, out); c.Type != Delete || c.ID != "p1" {
		t.Fatalf("after reset got %+v", c)
	}
	stop()
	<-done
}
