package redis_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/amarula/amarula/internal/testenv"
	"github.com/amarula/amarula/storage"
	"github.com/amarula/amarula/storage/redis"
	"github.com/amarula/amarula/storage/storagetest"
)

// startClusterNode starts a one-node Redis Cluster owning all 16384 slots.
// Even with one node, Redis enforces the cluster rules a multi-node cluster
// relies on: a script or multi-key command whose keys hash to different
// slots fails with CROSSSLOT. Passing the conformance suite here proves the
// adapter's scripts are single-slot.
func startClusterNode(t *testing.T) string {
	t.Helper()
	bin := testenv.NeedBinary(t, "redis-server")
	dir := t.TempDir()
	port := testenv.FreePort(t)
	args := []string{"--port", fmt.Sprint(port), "--bind", "127.0.0.1", "--save", "",
		"--appendonly", "yes", "--appendfsync", "everysec", "--dir", dir, "--protected-mode", "no",
		"--cluster-enabled", "yes", "--cluster-config-file", dir + "/nodes.conf",
		"--cluster-announce-ip", "127.0.0.1"}
	testenv.StartProcess(t, "redis-server-cluster", bin, args, dir)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	testenv.WaitRedis(t, addr)
	c := goredis.NewClient(&goredis.Options{Addr: addr})
	defer c.Close()
	ctx := context.Background()
	if err := c.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", "0", "16383").Err(); err != nil {
		t.Fatalf("cluster addslotsrange: %v", err)
	}
	err := testenv.WaitFor(20*time.Second, func() error {
		info, err := c.ClusterInfo(ctx).Result()
		if err != nil {
			return err
		}
		if !strings.Contains(info, "cluster_state:ok") {
			return fmt.Errorf("cluster not ready")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Sanity: this server does refuse cross-slot scripts.
	err = c.Eval(ctx, "return redis.call('SET', KEYS[1], 1) and redis.call('SET', KEYS[2], 1)", []string{"amarula:{p:a}:x", "amarula:{p:b}:x"}).Err()
	if err == nil || !strings.Contains(err.Error(), "CROSSSLOT") {
		t.Fatalf("cross-slot script on the cluster node: %v, want CROSSSLOT", err)
	}
	return addr
}

func TestConformanceRedisCluster(t *testing.T) {
	addr := startClusterNode(t)
	newStore := func(t *testing.T, r storage.Retention) storage.Store {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s, err := redis.New(ctx, "redis://"+addr, redis.Options{
			RedisCluster: true,
			Cluster:      fmt.Sprintf("c%d", storeSeq.Add(1)),
			Retention:    r,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	storagetest.Run(t,
		func(t *testing.T) storage.Store { return newStore(t, storage.Retention{}) },
		storagetest.WithRetention(newStore))
}
