package webhook_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/amarula/amarula/catalog"
	"github.com/amarula/amarula/webhook"
)

// TestManager: one deliverer per started profile, targets read from the
// real catalogue, Stop and Close end them (goleak checks), a fenced
// deliverer reports itself and a restart with the new token resumes from
// the persisted cursor.
func TestManager(t *testing.T) {
	st := newStore(t)
	cat := catalog.NewLocal(st)
	ctx := context.Background()
	rcv := map[string]*receiver{}
	for _, p := range []string{"alice", "bob"} {
		r := newReceiver(t)
		r.profile = p
		rcv[p] = r
		if err := cat.Create(ctx, catalog.Profile{ID: p, Webhook: &catalog.Webhook{URL: r.srv.URL, Secret: secret}}); err != nil {
			t.Fatal(err)
		}
	}
	var fenced atomic.Value
	m := webhook.NewManager(webhook.ManagerConfig{
		Log: st, KV: st, Target: webhook.CatalogTarget(cat), Backoff: fastBackoff(),
		OnFenced: func(p string) { fenced.Store(p) },
	})
	defer m.Close()

	a := appendTo(t, st, "alice", "message.received", 1, 3)
	b := appendTo(t, st, "bob", "message.received", 1, 2)
	m.Start("alice", 1)
	m.Start("bob", 1)
	m.Start("alice", 1) // no-op
	waitFor(t, "both profiles delivered", 5*time.Second, func() bool {
		return len(rcv["alice"].deliveredIDs()) == 3 && len(rcv["bob"].deliveredIDs()) == 2
	})
	if join(rcv["alice"].deliveredIDs()) != join(a) || join(rcv["bob"].deliveredIDs()) != join(b) {
		t.Fatalf("delivered alice %v bob %v", rcv["alice"].deliveredIDs(), rcv["bob"].deliveredIDs())
	}
	if got := m.Running(); join(got) != "alice,bob" {
		t.Fatalf("running %v", got)
	}

	m.Stop("bob")
	appendTo(t, st, "bob", "message.received", 3, 1)
	time.Sleep(100 * time.Millisecond)
	if n := len(rcv["bob"].deliveredIDs()); n != 2 {
		t.Fatalf("stopped deliverer delivered: %d", n)
	}

	// A newer owner fences alice: the deliverer stops and says so.
	if err := st.RaiseFence(ctx, "alice", 7); err != nil {
		t.Fatal(err)
	}
	// The old deliverer notices at its next write (the ack after sending
	// this event), which a real new owner would re-send: at least once.
	if _, err := st.Append(ctx, "alice", 7, "message.received", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "fenced report", 5*time.Second, func() bool { return fenced.Load() == "alice" })
	if got := m.Running(); len(got) != 0 {
		t.Fatalf("running after fence and stop: %v", got)
	}

	// This node becomes the owner again with the new token.
	c, err := st.Append(ctx, "alice", 7, "message.sent", []byte(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	m.Start("alice", 7)
	waitFor(t, "delivery after re-acquire", 5*time.Second, func() bool {
		ids := rcv["alice"].deliveredIDs()
		return len(ids) > 0 && ids[len(ids)-1] == c
	})

	// Removing the webhook from the catalogue stops deliveries (events
	// are acknowledged, not sent).
	if err := cat.Update(ctx, "alice", func(p *catalog.Profile) error { p.Webhook = nil; return nil }); err != nil {
		t.Fatal(err)
	}
	last, err := st.Append(ctx, "alice", 7, "message.sent", []byte(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "skip without webhook", 5*time.Second, func() bool {
		cur, _ := st.Cursor(ctx, "alice", webhook.Consumer)
		return cur == last
	})
	if ids := rcv["alice"].deliveredIDs(); ids[len(ids)-1] == last {
		t.Fatal("delivered after the webhook was removed")
	}
	m.Close()
	m.Start("alice", 8) // ignored after Close
	if got := m.Running(); len(got) != 0 {
		t.Fatalf("running after Close: %v", got)
	}
}
