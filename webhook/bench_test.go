package webhook_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/amarula/amarula/webhook"
)

// BenchmarkDelivery measures events delivered per second by one profile's
// deliverer (log read, signed POST to a loopback receiver, fenced ack) on
// each adapter.
func BenchmarkDelivery(b *testing.B) {
	for _, tc := range []struct {
		name  string
		store func(testing.TB) testStore
	}{{"bolt", newStore}, {"redis", newRedisStore}} {
		b.Run(tc.name, func(b *testing.B) {
			st := tc.store(b)
			var got atomic.Int64
			rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				got.Add(1)
				w.WriteHeader(http.StatusNoContent)
			}))
			defer rcv.Close()
			for i := 0; i < b.N; i++ {
				if _, err := st.Append(context.Background(), "alice", 1, "message.received", []byte(`{"id":"x","text":"hello"}`)); err != nil {
					b.Fatal(err)
				}
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			cfg := config(st, rcv.URL, 1)
			b.ResetTimer()
			go func() { done <- webhook.Run(ctx, cfg) }()
			deadline := time.Now().Add(2 * time.Minute)
			for got.Load() < int64(b.N) && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			b.StopTimer()
			cancel()
			<-done
			if got.Load() < int64(b.N) {
				b.Fatalf("delivered %d of %d", got.Load(), b.N)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}
