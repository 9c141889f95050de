package storagetest

import (
	"errors"
	"fmt"
	"testing"

	"github.com/amarula/amarula/storage"
)

func (s suite) testRaiseFence(t *testing.T) {
	st := s.newStore(t)
	ctx := ctxT(t)
	steps := []struct {
		raise   storage.Token
		wantErr error
		fence   storage.Token
	}{
		{0, nil, 0},               // raising to the initial value is a no-op
		{5, nil, 5},               // first raise
		{5, nil, 5},               // equal: no-op
		{3, storage.ErrFenced, 5}, // lower: refused, fence unchanged
		{7, nil, 7},               // higher
		{6, storage.ErrFenced, 7}, // lower again
		{1 << 60, nil, 1 << 60},   // large tokens compare as integers, not strings
		{1<<60 - 1, storage.ErrFenced, 1 << 60},
	}
	if f, err := st.Fence(ctx, "alice"); err != nil || f != 0 {
		t.Fatalf("initial Fence = %d, %v; want 0", f, err)
	}
	for i, step := range steps {
		err := st.RaiseFence(ctx, "alice", step.raise)
		if step.wantErr == nil && err != nil || step.wantErr != nil && !errors.Is(err, step.wantErr) {
			t.Fatalf("step %d: RaiseFence(%d) = %v, want %v", i, step.raise, err, step.wantErr)
		}
		if f, err := st.Fence(ctx, "alice"); err != nil || f != step.fence {
			t.Fatalf("step %d: Fence = %d, %v; want %d", i, f, err, step.fence)
		}
	}
	if f, err := st.Fence(ctx, "bob"); err != nil || f != 0 {
		t.Fatalf("Fence of another profile = %d, %v; want 0", f, err)
	}
	// Writes: lower refused, equal and higher accepted (a higher token does
	// not raise the fence by itself: only RaiseFence does).
	if err := st.RaiseFence(ctx, "bob", 10); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "Put with token 9 < fence 10", st.Put(ctx, "bob", 9, storage.NSSession, "k", []byte("old owner")), storage.ErrFenced)
	wantMiss(t, st, "bob", storage.NSSession, "k")
	if err := st.Put(ctx, "bob", 10, storage.NSSession, "k", []byte("owner")); err != nil {
		t.Fatalf("Put with token == fence: %v", err)
	}
	if err := st.Put(ctx, "bob", 11, storage.NSSession, "k", []byte("newer")); err != nil {
		t.Fatalf("Put with token > fence: %v", err)
	}
	wantValue(t, st, "bob", storage.NSSession, "k", "newer")
	if f, _ := st.Fence(ctx, "bob"); f != 10 {
		t.Fatalf("a write raised the fence to %d", f)
	}
}

// testStaleToken proves that every mutating call with a token below the
// fence is refused with ErrFenced and leaves no trace: the profile's data,
// log, cursors and fence are exactly as before.
func (s suite) testStaleToken(t *testing.T) {
	st := s.newStore(t)
	ctx := ctxT(t)
	const fence, stale storage.Token = 20, 19
	nss := []string{storage.NSSession, storage.NSIdentity, storage.NSPrekey}
	if err := st.RaiseFence(ctx, "alice", fence); err != nil {
		t.Fatal(err)
	}
	for _, ns := range nss {
		if err := st.Put(ctx, "alice", fence, ns, "k", []byte("owner-"+ns)); err != nil {
			t.Fatal(err)
		}
	}
	c, err := st.Append(ctx, "alice", fence, "ev", []byte("owner event"))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Ack(ctx, "alice", fence, "webhook", c); err != nil {
		t.Fatal(err)
	}
	before := takeSnapshot(t, st, "alice", nss, []string{"webhook", "ws"})
	ops := []struct {
		name string
		call func() error
	}{
		{"Put", func() error { return st.Put(ctx, "alice", stale, storage.NSSession, "k", []byte("zombie")) }},
		{"Put new key", func() error { return st.Put(ctx, "alice", stale, storage.NSSession, "new", []byte("zombie")) }},
		{"PutMany", func() error {
			return st.PutMany(ctx, "alice", stale, []storage.Entry{
				{NS: storage.NSSession, Key: "k", Value: []byte("zombie")},
				{NS: storage.NSIdentity, Key: "k", Delete: true},
				{NS: storage.NSPrekey, Key: "new", Value: []byte("zombie")},
			})
		}},
		{"Delete", func() error { return st.Delete(ctx, "alice", stale, storage.NSIdentity, "k") }},
		{"ClearNamespace", func() error { return st.ClearNamespace(ctx, "alice", stale, storage.NSPrekey) }},
		{"Clear", func() error { return st.Clear(ctx, "alice", stale) }},
		{"Append", func() error { _, err := st.Append(ctx, "alice", stale, "ev", []byte("zombie")); return err }},
		{"Ack", func() error { return st.Ack(ctx, "alice", stale, "webhook", "0") }},
		{"Ack new consumer", func() error { return st.Ack(ctx, "alice", stale, "ws", c) }},
		{"Txn", func() error {
			cs, err := st.Txn(ctx, "alice", stale, func(tx storage.Tx) error {
				tx.Put(storage.NSSession, "k", []byte("zombie"))
				tx.Delete(storage.NSIdentity, "k")
				tx.Append("ev", []byte("zombie"))
				return nil
			})
			if len(cs) != 0 {
				t.Errorf("fenced Txn returned cursors %v", cs)
			}
			return err
		}},
		{"RaiseFence", func() error { return st.RaiseFence(ctx, "alice", stale) }},
	}
	for _, op := range ops {
		wantErr(t, op.name+" with a stale token", op.call(), storage.ErrFenced)
		if d := before.diff(takeSnapshot(t, st, "alice", nss, []string{"webhook", "ws"})); d != "" {
			t.Fatalf("refused %s changed the profile: %s", op.name, d)
		}
	}
	wantMiss(t, st, "alice", storage.NSSession, "new")
	wantMiss(t, st, "alice", storage.NSPrekey, "new")
}

var errBoom = errors.New("boom")

func (s suite) testTxnRollback(t *testing.T) {
	st := s.newStore(t)
	ctx := ctxT(t)
	mustPut(t, st, "alice", storage.NSSession, "k", "before")
	mustPut(t, st, "alice", storage.NSEventBuffer, "buf", "before")
	before := takeSnapshot(t, st, "alice", []string{storage.NSSession, storage.NSEventBuffer}, nil)
	cs, err := st.Txn(ctx, "alice", tok, func(tx storage.Tx) error {
		tx.Put(storage.NSSession, "k", []byte("ratchet advanced"))
		tx.Put(storage.NSEventBuffer, "new", []byte("decrypted"))
		tx.Delete(storage.NSEventBuffer, "buf")
		tx.Append("message", []byte("must not appear"))
		if v, err := tx.Get(ctx, storage.NSSession, "k"); err != nil || string(v) != "ratchet advanced" {
			t.Errorf("read-your-writes inside the failing txn = %q, %v", v, err)
		}
		return errBoom
	})
	if !errors.Is(err, errBoom) {
		t.Fatalf("Txn returned %v, want the callback's error", err)
	}
	if len(cs) != 0 {
		t.Fatalf("failed Txn returned cursors %v", cs)
	}
	if d := before.diff(takeSnapshot(t, st, "alice", []string{storage.NSSession, storage.NSEventBuffer}, nil)); d != "" {
		t.Fatalf("failed Txn left writes behind: %s", d)
	}
}

func (s suite) testTxnReadYourWrites(t *testing.T) {
	st := s.newStore(t)
	ctx := ctxT(t)
	mustPut(t, st, "alice", storage.NSSession, "k", "v1")
	mustPut(t, st, "alice", storage.NSSession, "del", "x")
	_, err := st.Txn(ctx, "alice", tok, func(tx storage.Tx) error {
		steps := []struct {
			do   func()
			key  string
			want string // "" = miss
		}{
			{nil, "k", "v1"},    // falls through to the store
			{nil, "absent", ""}, // store miss
			{func() { tx.Put(storage.NSSession, "k", []byte("v2")) }, "k", "v2"},
			{func() { tx.Delete(storage.NSSession, "k") }, "k", ""},
			{func() { tx.Put(storage.NSSession, "k", []byte("v3")) }, "k", "v3"},
			{func() { tx.Delete(storage.NSSession, "del") }, "del", ""},
			{func() { tx.Put(storage.NSSession, "new", []byte("n")) }, "new", "n"},
		}
		for i, step := range steps {
			if step.do != nil {
				step.do()
			}
			v, err := tx.Get(ctx, storage.NSSession, step.key)
			switch {
			case step.want == "" && !errors.Is(err, storage.ErrNotFound):
				return fmt.Errorf("step %d: want a miss for %s, got %q, %v", i, step.key, v, err)
			case step.want != "" && (err != nil || string(v) != step.want):
				return fmt.Errorf("step %d: %s = %q, %v; want %q", i, step.key, v, err, step.want)
			}
		}
		// Nothing is visible outside the transaction before commit.
		if v, err := st.Get(ctx, "alice", storage.NSSession, "k"); err != nil || string(v) != "v1" {
			return fmt.Errorf("uncommitted write visible outside the txn: %q, %v", v, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	wantValue(t, st, "alice", storage.NSSession, "k", "v3")
	wantValue(t, st, "alice", storage.NSSession, "new", "n")
	wantMiss(t, st, "alice", storage.NSSession, "del")
}

func (s suite) testTxnEvents(t *testing.T) {
	st := s.newStore(t)
	ctx := ctxT(t)
	first := mustAppend(t, st, "alice", "before", "0")
	cs, err := st.Txn(ctx, "alice", tok, func(tx storage.Tx) error {
		tx.Put(storage.NSEventBuffer, "plaintext", []byte("hello"))
		tx.Append("message.received", []byte("1"))
		tx.Append("receipt", []byte("2"))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 2 {
		t.Fatalf("Txn returned %d cursors, want 2", len(cs))
	}
	evs := readAll(t, st, "alice")
	if got, want := cursors(evs), []string{first, cs[0], cs[1]}; !equalStrings(got, want) {
		t.Fatalf("log cursors = %v, want %v", got, want)
	}
	if evs[1].Type != "message.received" || string(evs[1].Data) != "1" || evs[2].Type != "receipt" || string(evs[2].Data) != "2" {
		t.Fatalf("txn events = %+v", evs[1:])
	}
	wantValue(t, st, "alice", storage.NSEventBuffer, "plaintext", "hello")
	// A Txn with no writes commits nothing and returns no cursors.
	cs, err = st.Txn(ctx, "alice", tok, func(tx storage.Tx) error { return nil })
	if err != nil || len(cs) != 0 {
		t.Fatalf("empty Txn = %v, %v", cs, err)
	}
}

func (s suite) testTxnInvalidWrite(t *testing.T) {
	st := s.newStore(t)
	ctx := ctxT(t)
	cases := []struct {
		name string
		fn   func(tx storage.Tx)
	}{
		{"bad namespace", func(tx storage.Tx) { tx.Put("Bad NS", "k", nil) }},
		{"empty key", func(tx storage.Tx) { tx.Delete(storage.NSSession, "") }},
		{"empty event type", func(tx storage.Tx) { tx.Append("", nil) }},
	}
	for _, tc := range cases {
		_, err := st.Txn(ctx, "alice", tok, func(tx storage.Tx) error {
			tx.Put(storage.NSSession, "good", []byte("v"))
			tc.fn(tx)
			return nil
		})
		wantErr(t, "Txn with "+tc.name, err, storage.ErrInvalidArgument)
		wantMiss(t, st, "alice", storage.NSSession, "good")
	}
}
