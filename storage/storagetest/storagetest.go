// Package storagetest is the conformance suite every storage adapter must
// pass. An adapter's tests call Run with a constructor that returns a fresh,
// empty store for each subtest (and closes it in t.Cleanup).
//
// Besides storage.Store, the suite needs two test hooks from the store it
// gets: Corrupter, to damage a stored entry, and CorruptCounter, to see that
// the damage was counted. Adapters implement Corrupter in a _test.go file so
// that it never exists in a production binary. The retention subtests need a
// store with a custom storage.Retention: pass WithRetention.
//
// The package only imports the storage seam; it never knows which adapter it
// is testing.
package storagetest

import (
	"testing"

	"github.com/amarula/amarula/storage"
)

// Corrupter damages the stored bytes of one entry so that it no longer
// decodes. Implemented by adapters in test files only.
type Corrupter interface {
	CorruptForTest(profile, ns, key string) error
}

// CorruptCounter reports how many corrupt entries the store has read.
type CorruptCounter interface {
	CorruptReads() uint64
}

// NewStore returns a fresh, empty store and arranges for it to be closed
// when t ends. Closing twice must be harmless.
type NewStore func(t *testing.T) storage.Store

// NewStoreWithRetention is NewStore with a given event-log retention.
type NewStoreWithRetention func(t *testing.T, r storage.Retention) storage.Store

// Option configures Run.
type Option func(*config)

type config struct {
	withRetention NewStoreWithRetention
}

// WithRetention provides the constructor the retention subtests use. Without
// it those subtests fail: every adapter must honour storage.Retention.
func WithRetention(f NewStoreWithRetention) Option {
	return func(c *config) { c.withRetention = f }
}

// Run runs the whole conformance suite against the stores newStore returns.
// Each subtest gets its own store.
func Run(t *testing.T, newStore NewStore, opts ...Option) {
	var cfg config
	for _, o := range opts {
		o(&cfg)
	}
	s := suite{newStore: newStore, cfg: cfg}
	tests := []struct {
		name string
		fn   func(t *testing.T)
	}{
		{"InvalidProfileRejectedFirst", s.testInvalidProfile},
		{"InvalidArguments", s.testInvalidArguments},
		{"PutGetOverwrite", s.testPutGetOverwrite},
		{"GetMissIsNotFound", s.testGetMiss},
		{"Delete", s.testDelete},
		{"NamespaceAndProfileIsolation", s.testIsolation},
		{"GetManyPartial", s.testGetMany},
		{"PutManyBatch", s.testPutMany},
		{"ScanPrefixSorted", s.testScan},
		{"CorruptEntryIsAMiss", s.testCorrupt},
		{"Clear", s.testClear},
		{"ClearNamespace", s.testClearNamespace},
		{"ListProfiles", s.testListProfiles},
		{"ListProfilesWithMetadata", s.testListProfilesWithMetadata},
		{"ConcurrentWriters", s.testConcurrentWriters},
		{"RaiseFence", s.testRaiseFence},
		{"StaleTokenRefusedAtomically", s.testStaleToken},
		{"TxnRollbackOnError", s.testTxnRollback},
		{"TxnReadYourWrites", s.testTxnReadYourWrites},
		{"TxnAppendsEvents", s.testTxnEvents},
		{"TxnInvalidWriteFailsCommit", s.testTxnInvalidWrite},
		{"EventOrderAndPaging", s.testEventPaging},
		{"EventIsolation", s.testEventIsolation},
		{"TailBlocksUntilAppend", s.testTailBlocks},
		{"TailReturnsExisting", s.testTailExisting},
		{"TailCancel", s.testTailCancel},
		{"ConsumerCursors", s.testConsumerCursors},
		{"RetentionMaxEvents", s.testRetentionMaxEvents},
		{"RetentionMaxAge", s.testRetentionMaxAge},
		{"PingAndClose", s.testPingClose},
	}
	for _, tc := range tests {
		t.Run(tc.name, tc.fn)
	}
}

type suite struct {
	newStore NewStore
	cfg      config
}
