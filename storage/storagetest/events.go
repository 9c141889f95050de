package storagetest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/amarula/amarula/storage"
)

func (s suite) testEventPaging(t *testing.T) {
	st := s.newStore(t)
	ctx := ctxT(t)
	if c, err := st.LastCursor(ctx, "alice"); err != nil || c != "0" {
		t.Fatalf("LastCursor of an empty log = %q, %v; want 0", c, err)
	}
	for _, after := range []string{"", "0"} {
		evs, err := st.Read(ctx, "alice", after, 10)
		if err != nil || len(evs) != 0 {
			t.Fatalf("Read(empty log, %q) = %v, %v", after, evs, err)
		}
	}
	const n = 25
	start := time.Now()
	var appended []string
	for i := 0; i < n; i++ {
		appended = append(appended, mustAppend(t, st, "alice", fmt.Sprintf("type-%d", i%3), fmt.Sprintf("data-%02d", i)))
	}
	end := time.Now()
	if c, err := st.LastCursor(ctx, "alice"); err != nil || c != appended[n-1] {
		t.Fatalf("LastCursor = %q, %v; want %q", c, err, appended[n-1])
	}
	pages := []struct {
		after string
		limit int
		want  []int // indexes into appended
	}{
		{"", 10, seq(0, 10)},
		{"0", 10, seq(0, 10)},
		{appended[9], 10, seq(10, 20)},
		{appended[19], 10, seq(20, 25)},
		{appended[24], 10, nil},
		{appended[0], 1, seq(1, 2)},
		{appended[3], 100, seq(4, 25)},
	}
	for _, p := range pages {
		evs, err := st.Read(ctx, "alice", p.after, p.limit)
		if err != nil {
			t.Fatalf("Read(%q, %d): %v", p.after, p.limit, err)
		}
		if len(evs) != len(p.want) {
			t.Fatalf("Read(%q, %d) returned %d events, want %d", p.after, p.limit, len(evs), len(p.want))
		}
		for j, idx := range p.want {
			e := evs[j]
			if e.Cursor != appended[idx] || string(e.Data) != fmt.Sprintf("data-%02d", idx) || e.Type != fmt.Sprintf("type-%d", idx%3) {
				t.Fatalf("Read(%q, %d)[%d] = %+v, want event %d (%s)", p.after, p.limit, j, e, idx, appended[idx])
			}
			if e.Time.Before(start.Add(-2*time.Second)) || e.Time.After(end.Add(2*time.Second)) {
				t.Fatalf("event %d time %s outside [%s, %s]", idx, e.Time, start, end)
			}
		}
	}
	// limit <= 0 means the default page size.
	evs, err := st.Read(ctx, "alice", "", 0)
	if err != nil || len(evs) != n {
		t.Fatalf("Read(limit 0) = %d events, %v; want %d", len(evs), err, n)
	}
	all := readAll(t, st, "alice")
	if got := cursors(all); !equalStrings(got, appended) {
		t.Fatalf("paged read = %v, want %v", got, appended)
	}
	// Events round-trip binary data and an empty payload.
	bin := string([]byte{0, 0xff, '\n', 1})
	c1 := mustAppend(t, st, "alice", "bin", bin)
	c2 := mustAppend(t, st, "alice", "empty", "")
	evs, err = st.Read(ctx, "alice", appended[n-1], 10)
	if err != nil || len(evs) != 2 || evs[0].Cursor != c1 || !bytesEqual(evs[0].Data, bin) || evs[1].Cursor != c2 || len(evs[1].Data) != 0 {
		t.Fatalf("binary/empty events = %+v, %v", evs, err)
	}
}

func seq(from, to int) []int {
	var out []int
	for i := from; i < to; i++ {
		out = append(out, i)
	}
	return out
}

func (s suite) testEventIsolation(t *testing.T) {
	st := s.newStore(t)
	mustAppend(t, st, "alice", "ev", "a1")
	mustAppend(t, st, "bob", "ev", "b1")
	mustAppend(t, st, "alice", "ev", "a2")
	if got := eventDatas(readAll(t, st, "alice")); !equalStrings(got, []string{"a1", "a2"}) {
		t.Fatalf("alice's log = %v", got)
	}
	if got := eventDatas(readAll(t, st, "bob")); !equalStrings(got, []string{"b1"}) {
		t.Fatalf("bob's log = %v", got)
	}
	if got := eventDatas(readAll(t, st, "carol")); len(got) != 0 {
		t.Fatalf("carol's log = %v", got)
	}
}

type tailResult struct {
	evs []storage.Event
	err error
	at  time.Time
}

func startTail(ctx context.Context, st storage.Store, profile, after string) <-chan tailResult {
	ch := make(chan tailResult, 1)
	go func() {
		evs, err := st.Tail(ctx, profile, after, 10)
		ch <- tailResult{evs, err, time.Now()}
	}()
	return ch
}

func (s suite) testTailBlocks(t *testing.T) {
	st := s.newStore(t)
	ctx := ctxT(t)
	for _, after := range []string{"", "last"} {
		if after == "last" {
			after = mustAppend(t, st, "alice", "old", "old")
		}
		ch := startTail(ctx, st, "alice", after)
		// Another profile's event must not wake the tail.
		mustAppend(t, st, "bob", "ev", "not for alice")
		select {
		case r := <-ch:
			t.Fatalf("Tail(after %q) returned before any Append: %+v, %v", after, r.evs, r.err)
		case <-time.After(300 * time.Millisecond):
		}
		appendedAt := time.Now()
		c := mustAppend(t, st, "alice", "new", "wake up")
		r := waitResult(t, ch, 10*time.Second, "Tail after Append")
		if r.err != nil {
			t.Fatal(r.err)
		}
		if len(r.evs) != 1 || r.evs[0].Cursor != c || string(r.evs[0].Data) != "wake up" {
			t.Fatalf("Tail returned %+v, want the new event %s", r.evs, c)
		}
		t.Logf("Tail woke %s after Append", r.at.Sub(appendedAt))
	}
	// An append inside a Txn wakes a tail too.
	last, _ := st.LastCursor(ctx, "alice")
	ch := startTail(ctx, st, "alice", last)
	cs, err := st.Txn(ctx, "alice", tok, func(tx storage.Tx) error { tx.Append("txn", []byte("x")); return nil })
	if err != nil {
		t.Fatal(err)
	}
	r := waitResult(t, ch, 10*time.Second, "Tail after Txn")
	if r.err != nil || len(r.evs) != 1 || r.evs[0].Cursor != cs[0] {
		t.Fatalf("Tail after Txn = %+v, %v; want %v", r.evs, r.err, cs)
	}
}

func (s suite) testTailExisting(t *testing.T) {
	st := s.newStore(t)
	ctx := ctxT(t)
	c1 := mustAppend(t, st, "alice", "ev", "1")
	c2 := mustAppend(t, st, "alice", "ev", "2")
	short, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for _, tc := range []struct {
		after string
		want  []string
	}{{"", []string{c1, c2}}, {"0", []string{c1, c2}}, {c1, []string{c2}}} {
		evs, err := st.Tail(short, "alice", tc.after, 10)
		if err != nil || !equalStrings(cursors(evs), tc.want) {
			t.Fatalf("Tail(%q) = %v, %v; want %v at once", tc.after, cursors(evs), err, tc.want)
		}
	}
}

func (s suite) testTailCancel(t *testing.T) {
	st := s.newStore(t)
	ctx, cancel := context.WithCancel(ctxT(t))
	ch := startTail(ctx, st, "alice", "")
	select {
	case r := <-ch:
		t.Fatalf("Tail returned without events: %+v, %v", r.evs, r.err)
	case <-time.After(200 * time.Millisecond):
	}
	cancelled := time.Now()
	cancel()
	r := waitResult(t, ch, 10*time.Second, "Tail after cancel")
	if !errors.Is(r.err, context.Canceled) || len(r.evs) != 0 {
		t.Fatalf("Tail after cancel = %+v, %v; want context.Canceled", r.evs, r.err)
	}
	t.Logf("Tail returned %s after cancel", r.at.Sub(cancelled))
	dctx, dcancel := context.WithTimeout(ctxT(t), 300*time.Millisecond)
	defer dcancel()
	_, err := st.Tail(dctx, "alice", "", 10)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Tail past its deadline = %v, want DeadlineExceeded", err)
	}
}

func (s suite) testConsumerCursors(t *testing.T) {
	st := s.newStore(t)
	ctx := ctxT(t)
	if c, err := st.Cursor(ctx, "alice", "webhook"); err != nil || c != "0" {
		t.Fatalf("Cursor of a new consumer = %q, %v; want 0", c, err)
	}
	var cs []string
	for i := 0; i < 6; i++ {
		cs = append(cs, mustAppend(t, st, "alice", "ev", fmt.Sprint(i)))
	}
	mustAppend(t, st, "bob", "ev", "bob")
	if err := st.Ack(ctx, "alice", tok, "webhook", cs[2]); err != nil {
		t.Fatal(err)
	}
	if err := st.Ack(ctx, "alice", tok, "ws.1", cs[4]); err != nil {
		t.Fatal(err)
	}
	if c, _ := st.Cursor(ctx, "alice", "webhook"); c != cs[2] {
		t.Fatalf("Cursor(webhook) = %q, want %q", c, cs[2])
	}
	if c, _ := st.Cursor(ctx, "alice", "ws.1"); c != cs[4] {
		t.Fatalf("Cursor(ws.1) = %q, want %q", c, cs[4])
	}
	if c, _ := st.Cursor(ctx, "bob", "webhook"); c != "0" {
		t.Fatalf("bob's Cursor(webhook) = %q, want 0 (cursors are per profile)", c)
	}
	// Resume: read after the acknowledged cursor.
	cur, _ := st.Cursor(ctx, "alice", "webhook")
	evs, err := st.Read(ctx, "alice", cur, 2)
	if err != nil || !equalStrings(eventDatas(evs), []string{"3", "4"}) {
		t.Fatalf("resume from %s = %v, %v; want [3 4]", cur, eventDatas(evs), err)
	}
	// Ack moves forward and may be reset to "0".
	if err := st.Ack(ctx, "alice", tok, "webhook", cs[5]); err != nil {
		t.Fatal(err)
	}
	if c, _ := st.Cursor(ctx, "alice", "webhook"); c != cs[5] {
		t.Fatalf("Cursor after second Ack = %q, want %q", c, cs[5])
	}
	if err := st.Ack(ctx, "alice", tok, "webhook", "0"); err != nil {
		t.Fatal(err)
	}
	if c, _ := st.Cursor(ctx, "alice", "webhook"); c != "0" {
		t.Fatalf("Cursor after reset = %q, want 0", c)
	}
}

func (s suite) retentionStore(t *testing.T, r storage.Retention) storage.Store {
	t.Helper()
	if s.cfg.withRetention == nil {
		t.Fatal("adapter test must pass storagetest.WithRetention: retention is part of the contract")
	}
	return s.cfg.withRetention(t, r)
}

func (s suite) testRetentionMaxEvents(t *testing.T) {
	const keep = 5
	st := s.retentionStore(t, storage.Retention{MaxEvents: keep, MaxAge: time.Hour})
	var cs []string
	for i := 0; i < 3; i++ {
		cs = append(cs, mustAppend(t, st, "alice", "ev", fmt.Sprint(i)))
	}
	if got := cursors(readAll(t, st, "alice")); !equalStrings(got, cs) {
		t.Fatalf("below the bound nothing is trimmed: %v, want %v", got, cs)
	}
	for i := 3; i < 17; i++ {
		cs = append(cs, mustAppend(t, st, "alice", "ev", fmt.Sprint(i)))
	}
	mustAppend(t, st, "bob", "ev", "bob")
	if got, want := cursors(readAll(t, st, "alice")), cs[len(cs)-keep:]; !equalStrings(got, want) {
		t.Fatalf("retained %v, want the newest %d: %v", got, keep, want)
	}
	// Reading from the start or from a trimmed cursor starts at the oldest
	// retained event.
	evs, err := st.Read(ctxT(t), "alice", cs[2], 2)
	if err != nil || !equalStrings(cursors(evs), cs[len(cs)-keep:len(cs)-keep+2]) {
		t.Fatalf("Read after a trimmed cursor = %v, %v", cursors(evs), err)
	}
	// Trimming is per profile.
	if got := eventDatas(readAll(t, st, "bob")); !equalStrings(got, []string{"bob"}) {
		t.Fatalf("bob's log = %v", got)
	}
	// Batches in a Txn are trimmed too.
	var txnCursors []string
	txnCursors, err = st.Txn(ctxT(t), "alice", tok, func(tx storage.Tx) error {
		for i := 0; i < keep+2; i++ {
			tx.Append("txn", []byte(fmt.Sprint(i)))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := cursors(readAll(t, st, "alice")), txnCursors[2:]; !equalStrings(got, want) {
		t.Fatalf("after a Txn of %d events retained %v, want %v", keep+2, got, want)
	}
}

func (s suite) testRetentionMaxAge(t *testing.T) {
	const maxAge = 400 * time.Millisecond
	st := s.retentionStore(t, storage.Retention{MaxEvents: 1000, MaxAge: maxAge})
	old := mustAppend(t, st, "alice", "ev", "old")
	if got := cursors(readAll(t, st, "alice")); !equalStrings(got, []string{old}) {
		t.Fatalf("fresh event missing: %v", got)
	}
	// Old events are dropped when newer ones are appended after MaxAge.
	deadline := time.Now().Add(10 * time.Second)
	var last string
	for {
		last = mustAppend(t, st, "alice", "ev", "new")
		evs := readAll(t, st, "alice")
		if len(evs) > 0 && evs[0].Cursor != old {
			for _, e := range evs {
				if time.Since(e.Time) > maxAge+5*time.Second {
					t.Fatalf("event %s is %s old, retention is %s", e.Cursor, time.Since(e.Time), maxAge)
				}
			}
			if evs[len(evs)-1].Cursor != last {
				t.Fatalf("newest event %s missing after age trim: %v", last, cursors(evs))
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("event older than MaxAge %s still retained after %s", maxAge, 10*time.Second)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s suite) testPingClose(t *testing.T) {
	st := s.newStore(t)
	ctx := ctxT(t)
	if err := st.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	mustPut(t, st, "alice", storage.NSSession, "k", "v")
	// A Tail blocked at Close returns instead of hanging.
	ch := startTail(ctx, st, "alice", "")
	select {
	case r := <-ch:
		t.Fatalf("Tail returned early: %+v, %v", r.evs, r.err)
	case <-time.After(100 * time.Millisecond):
	}
	if err := st.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if r := waitResult(t, ch, 10*time.Second, "Tail after Close"); r.err == nil {
		t.Fatalf("Tail after Close returned %+v without error", r.evs)
	}
	if err := st.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	_, err := st.Get(ctx, "alice", storage.NSSession, "k")
	wantErr(t, "Get after Close", err, storage.ErrClosed)
	wantErr(t, "Put after Close", st.Put(ctx, "alice", tok, storage.NSSession, "k", nil), storage.ErrClosed)
	_, err = st.Append(ctx, "alice", tok, "ev", nil)
	wantErr(t, "Append after Close", err, storage.ErrClosed)
	if err := st.Ping(ctx); err == nil {
		t.Fatal("Ping after Close succeeded")
	}
}
