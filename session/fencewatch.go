package session

import (
	"context"
	"errors"

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
type watchedStore struct {
	storage.Store
	onFenced  func(error)
	onFailure func(error)
}

// check classifies err; it returns err unchanged.
func (w *watchedStore) check(err error) error {
	switch {
	case err == nil,
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
	return w.check(w.Store.Put(ctx, profile, token, ns, key, value))
}

func (w *watchedStore) PutMany(ctx context.Context, profile string, token storage.Token, entries []storage.Entry) error {
	return w.check(w.Store.PutMany(ctx, profile, token, entries))
}

func (w *watchedStore) Delete(ctx context.Context, profile string, token storage.Token, ns, key string) error {
	return w.check(w.Store.Delete(ctx, profile, token, ns, key))
}

func (w *watchedStore) ClearNamespace(ctx context.Context, profile string, token storage.Token, ns string) error {
	return w.check(w.Store.ClearNamespace(ctx, profile, token, ns))
}

func (w *watchedStore) Clear(ctx context.Context, profile string, token storage.Token) error {
	return w.check(w.Store.Clear(ctx, profile, token))
}

// Txn checks the commit and every read inside the transaction, but not
// the callback's own errors: a failed decryption inside whatsmeow's
// decryption transaction is not a storage failure.
func (w *watchedStore) Txn(ctx context.Context, profile string, token storage.Token, fn func(tx storage.Tx) error) ([]string, error) {
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
	cursor, err := w.Store.Append(ctx, profile, token, typ, data)
	return cursor, w.check(err)
}

func (w *watchedStore) Ack(ctx context.Context, profile string, token storage.Token, consumer, cursor string) error {
	return w.check(w.Store.Ack(ctx, profile, token, consumer, cursor))
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
