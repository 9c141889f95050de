package signal

import (
	"testing"

	"github.com/amarula/amarula/storage"
)

// backendMakers lists the adapters the tests run against.
var backendMakers = []backendMaker{
	{name: "mem", make: func(t *testing.T) backend {
		m := newMemStore()
		return backend{name: "mem", open: func(testing.TB) storage.Store { return m }}
	}},
}
