package signal

import (
	"context"
	"encoding/hex"
	"errors"
	"testing"
	"time"

	"go.uber.org/goleak"

	"go.mau.fi/whatsmeow/store"
	"go.mau.fi/whatsmeow/types"

	"github.com/amarula/amarula/storage"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// tok is the fencing token tests write with unless they are about fencing.
const tok storage.Token = 5

// backend opens stores on one shared data set: each open returns a new store
// object (a new "process") on the same data. With bolt the previous object
// must be closed first (the file is locked).
type backend struct {
	name string
	open func(t testing.TB) storage.Store
}

// forEachBackend runs fn once per real adapter, each on fresh data.
func forEachBackend(t *testing.T, fn func(t *testing.T, be backend)) {
	t.Helper()
	for _, mk := range backendMakers {
		t.Run(mk.name, func(t *testing.T) {
			fn(t, mk.make(t))
		})
	}
}

type backendMaker struct {
	name string
	make func(t testing.TB) backend
}

// openStore opens a store on be and closes it when the test ends (closing
// twice is harmless).
func openStore(t testing.TB, be backend) storage.Store {
	t.Helper()
	st := be.open(t)
	t.Cleanup(func() { _ = st.Close() })
	return st
}

func ctxT(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// newContainer returns a Container of profile on st with token tok.
func newContainer(t testing.TB, st storage.Store, profile string) *Container {
	t.Helper()
	c, err := New(st, profile, tok, nil)
	if err != nil {
		t.Fatalf("New(%s): %v", profile, err)
	}
	if err := st.RaiseFence(ctxT(t), profile, tok); err != nil && !errors.Is(err, storage.ErrFenced) {
		t.Fatalf("RaiseFence(%s, %d): %v", profile, tok, err)
	}
	return c
}

// pairedDevice returns a device of c saved with the given PN JID (device 1).
func pairedDevice(t testing.TB, c *Container, user string) *store.Device {
	t.Helper()
	ctx := ctxT(t)
	d, err := c.GetDevice(ctx)
	if err != nil {
		t.Fatalf("GetDevice: %v", err)
	}
	jid := pn(user, 1)
	d.ID = &jid
	if err := d.Save(ctx); err != nil {
		t.Fatalf("Save: %v", err)
	}
	return d
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func pn(user string, device uint16) types.JID {
	return types.JID{User: user, Device: device, Server: types.DefaultUserServer}
}

func lidJID(user string, device uint16) types.JID {
	return types.JID{User: user, Device: device, Server: types.HiddenUserServer}
}

func hexKey(h [32]byte) string { return hex.EncodeToString(h[:]) }

// aliceOn opens be and returns a test context, the store and a device of
// profile "alice" paired as user 100.
func aliceOn(t *testing.T, be backend) (context.Context, storage.Store, *store.Device) {
	t.Helper()
	st := openStore(t, be)
	return ctxT(t), st, pairedDevice(t, newContainer(t, st, "alice"), "100")
}
