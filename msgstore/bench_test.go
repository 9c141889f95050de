package msgstore_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/amarula/amarula/msgstore"
)

// BenchmarkPut measures storing a received message with its event (one
// fenced transaction: dedup read, pending-ops read, sequence, message, two
// index keys, event) per adapter.
func BenchmarkPut(b *testing.B) {
	for _, nb := range backends {
		b.Run(nb.name, func(b *testing.B) {
			st := nb.open(b)
			s := msgstore.New(st)
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				m := text(fmt.Sprintf("BENCH%012d", i), chatA, int64(1_700_000_000+i), "hello, this is a message of ordinary length")
				if _, err := s.Put(ctx, prof, token, m, msgstore.Received); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}
