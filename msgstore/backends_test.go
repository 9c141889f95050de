package msgstore_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/amarula/amarula/storage/bolt"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// backends lists the real adapters the store tests run against.
var backends = []struct {
	name string
	open func(t *testing.T) backend
}{
	{"bolt", openBolt},
}

func openBolt(t *testing.T) backend {
	st, err := bolt.Open(t.TempDir(), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}
