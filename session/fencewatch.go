package session

import (
	"context"
	"errors"

	"github.com/amarula/amarula/storage"
)

// fenceWatch wraps the storage seam handed to the Signal store and the
// message store so that ErrFenced from any write — including the ones
// whatsmeow makes internally (ratchet commits, prekeys, push names), whose
// errors it only logs — stops the session at once.
type fenceWatch struct {
	storage.Store
	onFenced func(error)
}

func (f *fenceWatch) check(err error) error {
	if err != nil && errors.Is(err, storage.ErrFenced) {
		f.onFenced(err)
	}
	return err
}

func (f *fenceWatch) Put(ctx context.Context, profile string, token storage.Token, ns, key string, value []byte) error {
	return f.check(f.Store.Put(ctx, profile, token, ns, key, value))
}

func (f *fenceWatch) PutMany(ctx context.Context, profile string, token storage.Token, entries []storage.Entry) error {
	return f.check(f.Store.PutMany(ctx, profile, token, entries))
}

func (f *fenceWatch) Delete(ctx context.Context, profile string, token storage.Token, ns, key string) error {
	return f.check(f.Store.Delete(ctx, profile, token, ns, key))
}

func (f *fenceWatch) ClearNamespace(ctx context.Context, profile string, token storage.Token, ns string) error {
	return f.check(f.Store.ClearNamespace(ctx, profile, token, ns))
}

func (f *fenceWatch) Clear(ctx context.Context, profile string, token storage.Token) error {
	return f.check(f.Store.Clear(ctx, profile, token))
}

func (f *fenceWatch) Txn(ctx context.Context, profile string, token storage.Token, fn func(tx storage.Tx) error) ([]string, error) {
	cursors, err := f.Store.Txn(ctx, profile, token, fn)
	return cursors, f.check(err)
}

func (f *fenceWatch) Append(ctx context.Context, profile string, token storage.Token, typ string, data []byte) (string, error) {
	cursor, err := f.Store.Append(ctx, profile, token, typ, data)
	return cursor, f.check(err)
}

func (f *fenceWatch) Ack(ctx context.Context, profile string, token storage.Token, consumer, cursor string) error {
	return f.check(f.Store.Ack(ctx, profile, token, consumer, cursor))
}
