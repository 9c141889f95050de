package storagetest

import (
	"context"
	"fmt"
	"testing"

	"github.com/amarula/amarula/storage"
)

// Bench runs the standard storage benchmarks (Put, Get, PutMany of 16
// entries, Txn of two writes and one event, Append) against the store
// newStore returns; each sub-benchmark gets a fresh store. Adapters call it
// from a Benchmark function so results share names across adapters:
// BenchmarkStore/Put, BenchmarkStore/Get, …
func Bench(b *testing.B, newStore func(b *testing.B) storage.Store) {
	value := make([]byte, 512) // about a Signal session record
	for i := range value {
		value[i] = byte(i)
	}
	ctx := context.Background()
	b.Run("Put", func(b *testing.B) {
		st := newStore(b)
		b.SetBytes(int64(len(value)))
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if err := st.Put(ctx, "bench", 1, storage.NSSession, fmt.Sprintf("k%d", i%1024), value); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Get", func(b *testing.B) {
		st := newStore(b)
		for i := 0; i < 1024; i++ {
			if err := st.Put(ctx, "bench", 1, storage.NSSession, fmt.Sprintf("k%d", i), value); err != nil {
				b.Fatal(err)
			}
		}
		b.SetBytes(int64(len(value)))
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if _, err := st.Get(ctx, "bench", storage.NSSession, fmt.Sprintf("k%d", i%1024)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("PutMany16", func(b *testing.B) {
		st := newStore(b)
		batch := make([]storage.Entry, 16)
		b.SetBytes(int64(len(value) * len(batch)))
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			for j := range batch {
				batch[j] = storage.Entry{NS: storage.NSPrekey, Key: fmt.Sprintf("k%d-%d", i%64, j), Value: value}
			}
			if err := st.PutMany(ctx, "bench", 1, batch); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Txn", func(b *testing.B) {
		st := newStore(b)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			_, err := st.Txn(ctx, "bench", 1, func(tx storage.Tx) error {
				tx.Put(storage.NSSession, fmt.Sprintf("k%d", i%1024), value)
				tx.Put(storage.NSEventBuffer, fmt.Sprintf("m%d", i%1024), value)
				tx.Append("message.received", value[:128])
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Append", func(b *testing.B) {
		st := newStore(b)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if _, err := st.Append(ctx, "bench", 1, "message.received", value[:128]); err != nil {
				b.Fatal(err)
			}
		}
	})
}
