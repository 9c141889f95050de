package redis_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/amarula/amarula/internal/testenv"
	"github.com/amarula/amarula/storage"
	"github.com/amarula/amarula/storage/redis"
	"github.com/amarula/amarula/storage/storagetest"
)

// BenchmarkStore measures the Redis adapter against a local redis-server
// (AOF on, appendfsync everysec), one round trip per operation.
func BenchmarkStore(b *testing.B) {
	srv := testenv.StartRedis(b)
	storagetest.Bench(b, func(b *testing.B) storage.Store {
		s, err := redis.New(context.Background(), srv.URL(), redis.Options{Cluster: fmt.Sprintf("b%d", storeSeq.Add(1))})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = s.Close() })
		return s
	})
}
