package storage

import (
	"context"
	"fmt"
	"regexp"
)

// DefaultReadLimit is the page size Read and Tail use when limit <= 0.
const DefaultReadLimit = 100

// MaxReadLimit caps the page size of Read and Tail.
const MaxReadLimit = 10_000

// NormalizeLimit maps a caller's Read/Tail limit onto 1..MaxReadLimit:
// limit <= 0 means DefaultReadLimit.
func NormalizeLimit(limit int) int {
	switch {
	case limit <= 0:
		return DefaultReadLimit
	case limit > MaxReadLimit:
		return MaxReadLimit
	}
	return limit
}

// ConsumerPattern is the accepted shape of an event-log consumer name
// (e.g. "webhook:crm" or "ws.1234").
var ConsumerPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$`)

// MaxEventTypeLen bounds the length of an event type.
const MaxEventTypeLen = 128

// ValidateConsumer reports whether name is an acceptable consumer name.
func ValidateConsumer(name string) error {
	if !ConsumerPattern.MatchString(name) {
		return fmt.Errorf("%w: consumer %q must match %s", ErrInvalidArgument, truncate(name, 80), ConsumerPattern)
	}
	return nil
}

// ValidateEventType reports whether typ is an acceptable event type:
// 1..MaxEventTypeLen bytes.
func ValidateEventType(typ string) error {
	if typ == "" || len(typ) > MaxEventTypeLen {
		return fmt.Errorf("%w: event type must be 1..%d bytes, got %d", ErrInvalidArgument, MaxEventTypeLen, len(typ))
	}
	return nil
}

// ValidateNSKey validates a namespace and a key together.
func ValidateNSKey(ns, key string) error {
	if err := ValidateNamespace(ns); err != nil {
		return err
	}
	return ValidateKey(key)
}

// ValidateKeys validates a namespace and every key of a multi-key read.
func ValidateKeys(ns string, keys []string) error {
	if err := ValidateNamespace(ns); err != nil {
		return err
	}
	for _, k := range keys {
		if err := ValidateKey(k); err != nil {
			return err
		}
	}
	return nil
}

// ValidateEntries validates every namespace and key of a batch.
func ValidateEntries(entries []Entry) error {
	for i, e := range entries {
		if err := ValidateNSKey(e.NS, e.Key); err != nil {
			return fmt.Errorf("entry %d: %w", i, err)
		}
	}
	return nil
}

// WithDefaults fills zero fields from DefaultRetention. A negative field
// disables that bound.
func (r Retention) WithDefaults() Retention {
	d := DefaultRetention()
	if r.MaxAge == 0 {
		r.MaxAge = d.MaxAge
	}
	if r.MaxEvents == 0 {
		r.MaxEvents = d.MaxEvents
	}
	return r
}

// PendingEvent is an event appended inside a Txn, not yet committed.
type PendingEvent struct {
	Type string
	Data []byte
}

type nsKey struct{ ns, key string }

// TxBuffer is the Tx adapters hand to a Txn callback: it buffers writes and
// events, serves reads from the buffer first (read-your-writes) and falls
// through to the store otherwise. The adapter commits Entries and Events as
// one fenced batch when the callback succeeds. Not safe for concurrent use,
// like any Tx.
type TxBuffer struct {
	read   func(ctx context.Context, ns, key string) ([]byte, error)
	writes map[nsKey]int // index into entries
	entry  []Entry
	events []PendingEvent
	err    error
}

// NewTxBuffer returns a TxBuffer that reads misses of its buffer with read.
func NewTxBuffer(read func(ctx context.Context, ns, key string) ([]byte, error)) *TxBuffer {
	return &TxBuffer{read: read, writes: make(map[nsKey]int)}
}

// Get returns the buffered value, ErrNotFound for a buffered delete, or the
// stored value.
func (b *TxBuffer) Get(ctx context.Context, ns, key string) ([]byte, error) {
	if err := ValidateNSKey(ns, key); err != nil {
		return nil, err
	}
	if i, ok := b.writes[nsKey{ns, key}]; ok {
		e := b.entry[i]
		if e.Delete {
			return nil, fmt.Errorf("%s/%s deleted in this transaction: %w", ns, key, ErrNotFound)
		}
		return append([]byte{}, e.Value...), nil
	}
	return b.read(ctx, ns, key)
}

// Put buffers a write. An invalid namespace or key fails the commit.
func (b *TxBuffer) Put(ns, key string, value []byte) {
	b.set(Entry{NS: ns, Key: key, Value: append([]byte{}, value...)})
}

// Delete buffers a delete. An invalid namespace or key fails the commit.
func (b *TxBuffer) Delete(ns, key string) {
	b.set(Entry{NS: ns, Key: key, Delete: true})
}

func (b *TxBuffer) set(e Entry) {
	if err := ValidateNSKey(e.NS, e.Key); err != nil {
		b.fail(err)
		return
	}
	k := nsKey{e.NS, e.Key}
	if i, ok := b.writes[k]; ok {
		b.entry[i] = e
		return
	}
	b.writes[k] = len(b.entry)
	b.entry = append(b.entry, e)
}

// Append buffers an event. An invalid type fails the commit.
func (b *TxBuffer) Append(typ string, data []byte) {
	if err := ValidateEventType(typ); err != nil {
		b.fail(err)
		return
	}
	b.events = append(b.events, PendingEvent{Type: typ, Data: append([]byte{}, data...)})
}

func (b *TxBuffer) fail(err error) {
	if b.err == nil {
		b.err = fmt.Errorf("txn: %w", err)
	}
}

// Err returns the first invalid write buffered, if any; the adapter must
// not commit then.
func (b *TxBuffer) Err() error { return b.err }

// Entries returns the buffered writes, one per key (the last write wins), in
// the order keys were first written.
func (b *TxBuffer) Entries() []Entry { return b.entry }

// Events returns the buffered events in append order.
func (b *TxBuffer) Events() []PendingEvent { return b.events }

// RunTxn is the part of Txn every adapter shares: it runs fn over a fresh
// TxBuffer and, if fn and every buffered write are valid, hands the batch to
// commit. fn's error is returned unchanged, so callers can errors.Is it.
func RunTxn(ctx context.Context, read func(ctx context.Context, ns, key string) ([]byte, error), fn func(Tx) error,
	commit func(entries []Entry, events []PendingEvent) ([]string, error)) ([]string, error) {
	if fn == nil {
		return nil, fmt.Errorf("%w: nil txn function", ErrInvalidArgument)
	}
	buf := NewTxBuffer(read)
	if err := fn(buf); err != nil {
		return nil, err
	}
	if err := buf.Err(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return commit(buf.Entries(), buf.Events())
}

// ProfileInfoFromCreds builds the ListProfilesWithMetadata entry of profile
// from its creds/self value (nil when absent or unreadable).
func ProfileInfoFromCreds(profile string, creds []byte) ProfileInfo {
	info := ProfileInfo{Profile: profile}
	if creds == nil {
		return info
	}
	s := ParseCredsSummary(creds)
	info.JID, info.LID, info.PushName = s.JID, s.LID, s.PushName
	return info
}
