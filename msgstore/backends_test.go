package msgstore_test

import (
	"context"
	"testing"

	"go.uber.org/goleak"

	"github.com/amarula/amarula/internal/testenv"
	"github.com/amarula/amarula/storage/bolt"
	"github.com/amarula/amarula/storage/redis"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// backends lists the real adapters the store tests run against.
var backends = []struct {
	name string
	open func(t testing.TB) backend
}{
	{"bolt", openBolt},
	{"redis", openRedis},
}

// openRedis starts a real redis-server for the test.
func openRedis(t testing.TB) backend {
	srv := testenv.StartRedis(t)
	st, err := redis.New(context.Background(), srv.URL(), redis.Options{})
	if err != nil {
		t.Fatalf("redis.New(%s): %v", srv.URL(), err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

func openBolt(t testing.TB) backend {
	st, err := bolt.Open(t.TempDir(), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}
