package session

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/amarula/amarula/storage"
)

// watchedStore wraps the storage seam handed to the Signal store and the
// message store, so that failures of any call — including the ones
// whatsmeow makes internally (ratchet commits, prekeys, push names), whose
// errors it only logs — reach the supervisor:
//
//   - ErrFenced from any write stops the session at once (a newer owner);
//   - any other backend failure (unreachable, timeout, closed) makes the
//     session drop its connection and reconnect only once storage answers
//     again, so WhatsApp keeps the messages it could not store queued
//     instead of handing them to a session that cannot keep them.
//
// It also seals the session's storage when the session ends: after seal
// returns, no write of this session lands any more (whatsmeow may still be
// finishing a decryption on its own goroutine after the socket closed; a
// late ratchet commit racing the next session's would corrupt the Signal
// state). The refused decryption is not acknowledged either (the socket is
// gone), so WhatsApp redelivers it to the next session.
type watchedStore struct {
	storage.Store
	onFenced  func(error)
	onFailure func(error)

	mu     sync.Mutex
	sealed bool
	active int           // writes in progress
	idle   chan struct{} // closed when active drops to 0 after sealing
}

// errSealed refuses writes of a session that has ended.
var errSealed = errors.New("session: ended; its storage is sealed")

// enter admits one write, or refuses it after seal.
func (w *watchedStore) enter() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.sealed {
		return errSealed
	}
	w.active++
	return nil
}

func (w *watchedStore) exit() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.active--
	if w.active == 0 && w.idle != nil {
		close(w.idle)
		w.idle = nil
	}
}

// seal refuses every later write and waits (at most timeout) for the
// writes in progress. It reports whether they all finished.
func (w *watchedStore) seal(timeout time.Duration) bool {
	w.mu.Lock()
	w.sealed = true
	if w.active == 0 {
		w.mu.Unlock()
		return true
	}
	if w.idle == nil {
		w.idle = make(chan struct{})
	}
	idle := w.idle
	w.mu.Unlock()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-idle:
		return true
	case <-t.C:
		return false
	}
}

// write runs one gated write.
func (w *watchedStore) write(do func() error) error {
	if err := w.enter(); err != nil {
		return err
	}
	defer w.exit()
	return w.check(do())
}

// check classifies err; it returns err unchanged.
func (w *watchedStore) check(err error) error {
	switch {
	case err == nil,
		errors.Is(err, errSealed),
		errors.Is(err, storage.ErrNotFound),
		errors.Is(err, context.Canceled),
		errors.Is(err, storage.ErrInvalidArgument),
		errors.Is(err, storage.ErrInvalidProfile):
	case errors.Is(err, storage.ErrFenced):
		w.onFenced(err)
	default:
		w.onFailure(err)
	}
	return err
}

func (w *watchedStore) Get(ctx context.Context, profile, ns, key string) ([]byte, error) {
	v, err := w.Store.Get(ctx, profile, ns, key)
	return v, w.check(err)
}

func (w *watchedStore) GetMany(ctx context.Context, profile, ns string, keys []string) (map[string][]byte, error) {
	v, err := w.Store.GetMany(ctx, profile, ns, keys)
	return v, w.check(err)
}

func (w *watchedStore) Scan(ctx context.Context, profile, ns, prefix string) ([]storage.KeyValue, error) {
	v, err := w.Store.Scan(ctx, profile, ns, prefix)
	return v, w.check(err)
}

func (w *watchedStore) Put(ctx context.Context, profile string, token storage.Token, ns, key string, value []byte) error {
	return w.write(func() error { return w.Store.Put(ctx, profile, token, ns, key, value) })
}

func (w *watchedStore) PutMany(ctx context.Context, profile string, token storage.Token, entries []storage.Entry) error {
	return w.write(func() error { return w.Store.PutMany(ctx, profile, token, entries) })
}

func (w *watchedStore) Delete(ctx context.Context, profile string, token storage.Token, ns, key string) error {
	return w.write(func() error { return w.Store.Delete(ctx, profile, token, ns, key) })
}

func (w *watchedStore) ClearNamespace(ctx context.Context, profile string, token storage.Token, ns string) error {
	return w.write(func() error { return w.Store.ClearNamespace(ctx, profile, token, ns) })
}

func (w *watchedStore) Clear(ctx context.Context, profile string, token storage.Token) error {
	return w.write(func() error { return w.Store.Clear(ctx, profile, token) })
}

// Txn checks the commit and every read inside the transaction, but not
// the callback's own errors: a failed decryption inside whatsmeow's
// decryption transaction is not a storage failure.
func (w *watchedStore) Txn(ctx context.Context, profile string, token storage.Token, fn func(tx storage.Tx) error) ([]string, error) {
	if err := w.enter(); err != nil {
		return nil, err
	}
	defer w.exit()
	var fnErr error
	cursors, err := w.Store.Txn(ctx, profile, token, func(tx storage.Tx) error {
		fnErr = fn(&watchedTx{Tx: tx, w: w})
		return fnErr
	})
	if err != nil && fnErr == nil {
		w.check(err)
	}
	return cursors, err
}

func (w *watchedStore) Append(ctx context.Context, profile string, token storage.Token, typ string, data []byte) (string, error) {
	var cursor string
	err := w.write(func() error {
		var err error
		cursor, err = w.Store.Append(ctx, profile, token, typ, data)
		return err
	})
	return cursor, err
}

func (w *watchedStore) Ack(ctx context.Context, profile string, token storage.Token, consumer, cursor string) error {
	return w.write(func() error { return w.Store.Ack(ctx, profile, token, consumer, cursor) })
}

// watchedTx checks the reads of a transaction.
type watchedTx struct {
	storage.Tx
	w *watchedStore
}

func (t *watchedTx) Get(ctx context.Context, ns, key string) ([]byte, error) {
	v, err := t.Tx.Get(ctx, ns, key)
	return v, t.w.check(err)
}
