package bolt_test

import (
	"path/filepath"
	"testing"

	"github.com/amarula/amarula/storage"
	"github.com/amarula/amarula/storage/bolt"
	"github.com/amarula/amarula/storage/storagetest"
)

// BenchmarkStore measures the bbolt adapter with real fsyncs (the default).
func BenchmarkStore(b *testing.B) {
	storagetest.Bench(b, func(b *testing.B) storage.Store {
		s, err := bolt.Open(filepath.Join(b.TempDir(), "data"), bolt.Options{})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = s.Close() })
		return s
	})
}
