package signal

import (
	"context"
	"testing"

	"github.com/amarula/amarula/internal/testenv"
	"github.com/amarula/amarula/storage"
	"github.com/amarula/amarula/storage/bolt"
	"github.com/amarula/amarula/storage/redis"
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
	{name: "redis", make: func(t testing.TB) backend {
		srv := testenv.StartRedis(t) // a real redis-server, stopped at cleanup
		return backend{name: "redis", open: func(t testing.TB) storage.Store {
			t.Helper()
			st, err := redis.New(context.Background(), srv.URL(), redis.Options{})
			if err != nil {
				t.Fatalf("redis.New(%s): %v", srv.URL(), err)
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
