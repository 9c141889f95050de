package msgstore_test

import (
	"context"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/amarula/amarula/storage"
)

// backends lists the adapters the store tests run against.
var backends = []struct {
	name string
	open func(t *testing.T) backend
}{
	{"mem", func(t *testing.T) backend { return newMem() }},
}

// mem is a stand-in used until the real adapters land.
type mem struct {
	mu     sync.Mutex
	kv     map[string][]byte
	fence  map[string]storage.Token
	events []storage.Event
}

func newMem() *mem { return &mem{kv: map[string][]byte{}, fence: map[string]storage.Token{}} }

func k(p, ns, key string) string { return p + "\x00" + ns + "\x00" + key }

func (m *mem) Get(_ context.Context, p, ns, key string) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.kv[k(p, ns, key)]
	if !ok {
		return nil, storage.ErrNotFound
	}
	return v, nil
}

func (m *mem) GetMany(ctx context.Context, p, ns string, keys []string) (map[string][]byte, error) {
	out := map[string][]byte{}
	for _, key := range keys {
		if v, err := m.Get(ctx, p, ns, key); err == nil {
			out[key] = v
		}
	}
	return out, nil
}

func (m *mem) Scan(_ context.Context, p, ns, prefix string) ([]storage.KeyValue, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []storage.KeyValue
	pre := k(p, ns, prefix)
	for kk, v := range m.kv {
		if strings.HasPrefix(kk, pre) {
			out = append(out, storage.KeyValue{Key: strings.SplitN(kk, "\x00", 3)[2], Value: v})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

type memTx struct {
	m      *mem
	p      string
	writes map[string]*[]byte
	order  []string
	evs    []storage.Event
}

func (t *memTx) Get(ctx context.Context, ns, key string) ([]byte, error) {
	if w, ok := t.writes[k(t.p, ns, key)]; ok {
		if w == nil {
			return nil, storage.ErrNotFound
		}
		return *w, nil
	}
	return t.m.Get(ctx, t.p, ns, key)
}
func (t *memTx) Put(ns, key string, v []byte) { t.writes[k(t.p, ns, key)] = &v }
func (t *memTx) Delete(ns, key string)        { t.writes[k(t.p, ns, key)] = nil }
func (t *memTx) Append(typ string, data []byte) {
	t.evs = append(t.evs, storage.Event{Type: typ, Data: data, Time: time.Now()})
}

func (m *mem) Txn(ctx context.Context, p string, token storage.Token, fn func(tx storage.Tx) error) ([]string, error) {
	tx := &memTx{m: m, p: p, writes: map[string]*[]byte{}}
	if err := fn(tx); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if token < m.fence[p] {
		return nil, storage.ErrFenced
	}
	for kk, v := range tx.writes {
		if v == nil {
			delete(m.kv, kk)
		} else {
			m.kv[kk] = *v
		}
	}
	var cursors []string
	for _, e := range tx.evs {
		e.Cursor = strconv.Itoa(len(m.events) + 1)
		m.events = append(m.events, e)
		cursors = append(cursors, e.Cursor)
	}
	return cursors, nil
}

func (m *mem) Read(_ context.Context, p, after string, limit int) ([]storage.Event, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]storage.Event(nil), m.events...), nil
}

func (m *mem) RaiseFence(_ context.Context, p string, token storage.Token) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if token < m.fence[p] {
		return storage.ErrFenced
	}
	m.fence[p] = token
	return nil
}
