package signal

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/amarula/amarula/storage"
)

// kv is the profile- and token-scoped view of storage.Store that every store
// implementation of this package reads and writes through.
//
// Every method looks at ctx first: when ctx carries a transaction opened by
// this kv (see runTxn), reads see the transaction's buffered writes and
// writes are buffered into it; otherwise they go straight to the store.
type kv struct {
	st      storage.Store
	profile string
	token   storage.Token

	// txMu serialises decryption transactions of the profile. storage.Tx
	// gives atomic commit but not isolation; two concurrent transactions
	// advancing the same ratchet would lose one of the advances.
	txMu sync.Mutex

	fencedOnce sync.Once
	fenced     chan struct{} // closed on the first write refused with ErrFenced
}

func newKV(st storage.Store, profile string, token storage.Token) *kv {
	return &kv{st: st, profile: profile, token: token, fenced: make(chan struct{})}
}

// checkFenced closes b.fenced if err says a newer owner fenced us off, and
// returns err unchanged. whatsmeow logs and swallows most store errors, so
// the session cannot rely on seeing ErrFenced itself; it watches the channel.
func (b *kv) checkFenced(err error) error {
	if err != nil && errors.Is(err, storage.ErrFenced) {
		b.fencedOnce.Do(func() { close(b.fenced) })
	}
	return err
}

// txKey is the context key under which runTxn stores the open *txn.
type txKey struct{}

// overlayKey addresses one buffered write of a transaction.
type overlayKey struct{ ns, key string }

// overlayVal is one buffered write: a value, or a deletion.
type overlayVal struct {
	value   []byte
	deleted bool
}

// txn is an open storage transaction plus what this package needs on top of
// storage.Tx: a record of its own buffered writes (so Scan and GetMany can
// see them too) and hooks that run when the transaction ends.
type txn struct {
	owner *kv
	tx    storage.Tx

	mu      sync.Mutex
	done    bool // set when the callback returned; later calls bypass the tx
	overlay map[overlayKey]overlayVal
	commit  []func() // run, in order, after a successful commit
	abort   []func() // run, in order, when nothing was committed
}

// txFrom returns the transaction of this kv carried by ctx, or nil. A
// transaction of another Container (another profile) is ignored, and so is
// one whose callback already returned (a ctx that leaked into a goroutine).
func (b *kv) txFrom(ctx context.Context) *txn {
	t, _ := ctx.Value(txKey{}).(*txn)
	if t == nil || t.owner != b {
		return nil
	}
	t.mu.Lock()
	done := t.done
	t.mu.Unlock()
	if done {
		return nil
	}
	return t
}

// lookup reports the transaction's own buffered write of ns/key, if any.
func (t *txn) lookup(ns, key string) (overlayVal, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	v, ok := t.overlay[overlayKey{ns, key}]
	return v, ok
}

// runTxn runs fn inside one storage transaction: every store call made with
// the ctx given to fn is buffered, and the whole lot commits as one fenced
// batch when fn returns nil, or is dropped when it returns an error (which
// is then returned unchanged). A ctx that already carries a transaction of
// this kv is reused: nested calls join the outer transaction.
func (b *kv) runTxn(ctx context.Context, fn func(context.Context) error) error {
	if b.txFrom(ctx) != nil {
		return fn(ctx)
	}
	b.txMu.Lock()
	defer b.txMu.Unlock()

	var (
		last  *txn
		fnErr error
	)
	_, err := b.st.Txn(ctx, b.profile, b.token, func(tx storage.Tx) error {
		// An adapter may run the callback again (optimistic retry): every
		// attempt starts from a clean overlay and its own hooks.
		if last != nil {
			last.finish(false)
		}
		t := &txn{owner: b, tx: tx, overlay: make(map[overlayKey]overlayVal)}
		last = t
		fnErr = fn(context.WithValue(ctx, txKey{}, t))
		t.mu.Lock()
		t.done = true
		t.mu.Unlock()
		return fnErr
	})
	if err != nil {
		if last != nil {
			last.finish(false)
		}
		if fnErr != nil {
			return fnErr
		}
		return b.checkFenced(fmt.Errorf("signal: commit transaction of %s: %w", b.profile, err))
	}
	if last != nil {
		last.finish(true)
	}
	return nil
}

// finish runs the commit or the abort hooks, once.
func (t *txn) finish(committed bool) {
	t.mu.Lock()
	hooks := t.abort
	if committed {
		hooks = t.commit
	}
	t.commit, t.abort = nil, nil
	t.mu.Unlock()
	for _, h := range hooks {
		h()
	}
}

// onCommit runs fn once the writes made with ctx are durable: at once
// outside a transaction (callers invoke it after a successful write), or
// after the enclosing transaction commits. In-memory caches use it so they
// never run ahead of storage. fn must not take a lock its caller holds when
// there is no transaction.
func (b *kv) onCommit(ctx context.Context, fn func()) {
	if t := b.txFrom(ctx); t != nil {
		t.mu.Lock()
		t.commit = append(t.commit, fn)
		t.mu.Unlock()
		return
	}
	fn()
}

// onAbort registers fn to run if the enclosing transaction commits nothing.
// Outside a transaction it does nothing.
func (b *kv) onAbort(ctx context.Context, fn func()) {
	if t := b.txFrom(ctx); t != nil {
		t.mu.Lock()
		t.abort = append(t.abort, fn)
		t.mu.Unlock()
	}
}

// get returns the value of ns/key and whether it exists.
func (b *kv) get(ctx context.Context, ns, key string) ([]byte, bool, error) {
	var (
		v   []byte
		err error
	)
	if t := b.txFrom(ctx); t != nil {
		// One lock covers the overlay and the Tx: a storage.Tx is not safe
		// for concurrent use, and a caller might share its ctx.
		t.mu.Lock()
		ov, ok := t.overlay[overlayKey{ns, key}]
		if !ok {
			v, err = t.tx.Get(ctx, ns, key)
		}
		t.mu.Unlock()
		if ok {
			if ov.deleted {
				return nil, false, nil
			}
			return ov.value, true, nil
		}
	} else {
		v, err = b.st.Get(ctx, b.profile, ns, key)
	}
	if errors.Is(err, storage.ErrNotFound) {
		return nil, false, nil
	} else if err != nil {
		return nil, false, fmt.Errorf("signal: get %s/%s of %s: %w", ns, key, b.profile, err)
	}
	return v, true, nil
}

// getMany returns the values that exist among keys.
func (b *kv) getMany(ctx context.Context, ns string, keys []string) (map[string][]byte, error) {
	if len(keys) == 0 {
		return map[string][]byte{}, nil
	}
	out := make(map[string][]byte, len(keys))
	missing := keys
	if t := b.txFrom(ctx); t != nil {
		missing = make([]string, 0, len(keys))
		for _, k := range keys {
			if ov, ok := t.lookup(ns, k); ok {
				if !ov.deleted {
					out[k] = ov.value
				}
				continue
			}
			missing = append(missing, k)
		}
		if len(missing) == 0 {
			return out, nil
		}
	}
	// Reads the transaction did not write fall through to committed state,
	// exactly as storage.Tx.Get does, but in one round trip.
	got, err := b.st.GetMany(ctx, b.profile, ns, missing)
	if err != nil {
		return nil, fmt.Errorf("signal: get %d keys of %s/%s: %w", len(missing), b.profile, ns, err)
	}
	for k, v := range got {
		out[k] = v
	}
	return out, nil
}

// scan returns every entry of ns whose key starts with prefix, sorted by key,
// including the enclosing transaction's own writes.
func (b *kv) scan(ctx context.Context, ns, prefix string) ([]storage.KeyValue, error) {
	kvs, err := b.st.Scan(ctx, b.profile, ns, prefix)
	if err != nil {
		return nil, fmt.Errorf("signal: scan %s/%s %q: %w", b.profile, ns, prefix, err)
	}
	t := b.txFrom(ctx)
	if t == nil {
		return kvs, nil
	}
	t.mu.Lock()
	var touched map[string]overlayVal
	for k, v := range t.overlay {
		if k.ns == ns && strings.HasPrefix(k.key, prefix) {
			if touched == nil {
				touched = make(map[string]overlayVal)
			}
			touched[k.key] = v
		}
	}
	t.mu.Unlock()
	if touched == nil {
		return kvs, nil
	}
	merged := make([]storage.KeyValue, 0, len(kvs)+len(touched))
	for _, e := range kvs {
		if _, ok := touched[e.Key]; !ok {
			merged = append(merged, e)
		}
	}
	for k, v := range touched {
		if !v.deleted {
			merged = append(merged, storage.KeyValue{Key: k, Value: v.value})
		}
	}
	sort.Slice(merged, func(i, j int) bool { return merged[i].Key < merged[j].Key })
	return merged, nil
}

// write applies entries atomically (one fenced batch), or buffers them into
// the enclosing transaction. A refused write returns an error wrapping
// storage.ErrFenced.
func (b *kv) write(ctx context.Context, entries ...storage.Entry) error {
	if len(entries) == 0 {
		return nil
	}
	if t := b.txFrom(ctx); t != nil {
		t.mu.Lock()
		defer t.mu.Unlock()
		for _, e := range entries {
			if e.Delete {
				t.tx.Delete(e.NS, e.Key)
				t.overlay[overlayKey{e.NS, e.Key}] = overlayVal{deleted: true}
			} else {
				t.tx.Put(e.NS, e.Key, e.Value)
				t.overlay[overlayKey{e.NS, e.Key}] = overlayVal{value: e.Value}
			}
		}
		return nil
	}
	var err error
	switch {
	case len(entries) > 1:
		err = b.st.PutMany(ctx, b.profile, b.token, entries)
	case entries[0].Delete:
		err = b.st.Delete(ctx, b.profile, b.token, entries[0].NS, entries[0].Key)
	default:
		err = b.st.Put(ctx, b.profile, b.token, entries[0].NS, entries[0].Key, entries[0].Value)
	}
	if err != nil {
		return b.checkFenced(fmt.Errorf("signal: write %d entries (%s/%s…) of %s: %w", len(entries), entries[0].NS, entries[0].Key, b.profile, err))
	}
	return nil
}

// put is write of a single value.
func (b *kv) put(ctx context.Context, ns, key string, value []byte) error {
	return b.write(ctx, storage.Entry{NS: ns, Key: key, Value: value})
}

// del is write of a single deletion.
func (b *kv) del(ctx context.Context, ns, key string) error {
	return b.write(ctx, storage.Entry{NS: ns, Key: key, Delete: true})
}

// deletePrefix deletes, in one batch, every key of ns that starts with
// prefix and returns how many there were.
func (b *kv) deletePrefix(ctx context.Context, ns, prefix string) (int, error) {
	kvs, err := b.scan(ctx, ns, prefix)
	if err != nil {
		return 0, err
	}
	entries := make([]storage.Entry, len(kvs))
	for i, e := range kvs {
		entries[i] = storage.Entry{NS: ns, Key: e.Key, Delete: true}
	}
	return len(kvs), b.write(ctx, entries...)
}
