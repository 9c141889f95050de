package signal

import (
	"testing"

	"github.com/amarula/amarula/storage"
	"github.com/amarula/amarula/storage/bolt"
)

// backendMakers lists the adapters every store test runs against, each on
// fresh data.
var backendMakers = []backendMaker{
	{name: "bolt", make: func(t testing.TB) backend {
		dir := t.TempDir()
		return backend{name: "bolt", open: func(t testing.TB) storage.Store {
			t.Helper()
			st, err := bolt.Open(dir, bolt.Options{})
			if err != nil {
				t.Fatalf("bolt.Open(%s): %v", dir, err)
			}
			return st
		}}
	}},
}

// boltStore returns a bolt store in a temp dir for single-backend tests.
func boltStore(t testing.TB) storage.Store {
	t.Helper()
	st, err := bolt.Open(t.TempDir(), bolt.Options{})
	if err != nil {
		t.Fatalf("bolt.Open: %v", err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}
