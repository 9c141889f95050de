package signal

import (
	"context"
	"sort"
	"strings"
	"sync"

	"github.com/amarula/amarula/storage"
)

// memStore is a minimal in-memory storage.Store used only to develop this
// package before the real adapters existed and to share data between
// "processes" in unit tests. The tests that matter run on bolt and Redis.
type memStore struct {
	mu     sync.Mutex
	data   map[string]map[string][]byte // profile\x00ns -> key -> value
	fences map[string]storage.Token
}

func newMemStore() *memStore {
	return &memStore{data: map[string]map[string][]byte{}, fences: map[string]storage.Token{}}
}

func (m *memStore) nsMap(profile, ns string) map[string][]byte {
	k := profile + "\x00" + ns
	if m.data[k] == nil {
		m.data[k] = map[string][]byte{}
	}
	return m.data[k]
}

func (m *memStore) Get(_ context.Context, profile, ns, key string) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.nsMap(profile, ns)[key]
	if !ok {
		return nil, storage.ErrNotFound
	}
	return append([]byte(nil), v...), nil
}

func (m *memStore) GetMany(_ context.Context, profile, ns string, keys []string) (map[string][]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string][]byte{}
	for _, k := range keys {
		if v, ok := m.nsMap(profile, ns)[k]; ok {
			out[k] = append([]byte(nil), v...)
		}
	}
	return out, nil
}

func (m *memStore) Put(ctx context.Context, profile string, token storage.Token, ns, key string, value []byte) error {
	return m.PutMany(ctx, profile, token, []storage.Entry{{NS: ns, Key: key, Value: value}})
}

func (m *memStore) PutMany(_ context.Context, profile string, token storage.Token, entries []storage.Entry) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if token < m.fences[profile] {
		return storage.ErrFenced
	}
	for _, e := range entries {
		if err := storage.ValidateKey(e.Key); err != nil {
			return err
		}
	}
	for _, e := range entries {
		if e.Delete {
			delete(m.nsMap(profile, e.NS), e.Key)
		} else {
			m.nsMap(profile, e.NS)[e.Key] = append([]byte(nil), e.Value...)
		}
	}
	return nil
}

func (m *memStore) Delete(ctx context.Context, profile string, token storage.Token, ns, key string) error {
	return m.PutMany(ctx, profile, token, []storage.Entry{{NS: ns, Key: key, Delete: true}})
}

func (m *memStore) Scan(_ context.Context, profile, ns, prefix string) ([]storage.KeyValue, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []storage.KeyValue
	for k, v := range m.nsMap(profile, ns) {
		if strings.HasPrefix(k, prefix) {
			out = append(out, storage.KeyValue{Key: k, Value: append([]byte(nil), v...)})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

func (m *memStore) ClearNamespace(_ context.Context, profile string, token storage.Token, ns string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if token < m.fences[profile] {
		return storage.ErrFenced
	}
	delete(m.data, profile+"\x00"+ns)
	return nil
}

func (m *memStore) Clear(_ context.Context, profile string, token storage.Token) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if token < m.fences[profile] {
		return storage.ErrFenced
	}
	for k := range m.data {
		if strings.HasPrefix(k, profile+"\x00") {
			delete(m.data, k)
		}
	}
	return nil
}

func (m *memStore) ListProfiles(context.Context) ([]string, error) { return nil, nil }
func (m *memStore) ListProfilesWithMetadata(context.Context) ([]storage.ProfileInfo, error) {
	return nil, nil
}

func (m *memStore) RaiseFence(_ context.Context, profile string, token storage.Token) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if token < m.fences[profile] {
		return storage.ErrFenced
	}
	m.fences[profile] = token
	return nil
}

func (m *memStore) Fence(_ context.Context, profile string) (storage.Token, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.fences[profile], nil
}

type memTx struct {
	m       *memStore
	profile string
	writes  []storage.Entry
	last    map[string]storage.Entry
}

func (t *memTx) Get(ctx context.Context, ns, key string) ([]byte, error) {
	if e, ok := t.last[ns+"\x00"+key]; ok {
		if e.Delete {
			return nil, storage.ErrNotFound
		}
		return e.Value, nil
	}
	return t.m.Get(ctx, t.profile, ns, key)
}

func (t *memTx) put(e storage.Entry) {
	t.writes = append(t.writes, e)
	t.last[e.NS+"\x00"+e.Key] = e
}

func (t *memTx) Put(ns, key string, value []byte) {
	t.put(storage.Entry{NS: ns, Key: key, Value: value})
}
func (t *memTx) Delete(ns, key string)          { t.put(storage.Entry{NS: ns, Key: key, Delete: true}) }
func (t *memTx) Append(typ string, data []byte) {}

func (m *memStore) Txn(ctx context.Context, profile string, token storage.Token, fn func(tx storage.Tx) error) ([]string, error) {
	tx := &memTx{m: m, profile: profile, last: map[string]storage.Entry{}}
	if err := fn(tx); err != nil {
		return nil, err
	}
	return nil, m.PutMany(ctx, profile, token, tx.writes)
}

func (m *memStore) Append(context.Context, string, storage.Token, string, []byte) (string, error) {
	return "", nil
}
func (m *memStore) Read(context.Context, string, string, int) ([]storage.Event, error) {
	return nil, nil
}
func (m *memStore) Tail(context.Context, string, string, int) ([]storage.Event, error) {
	return nil, nil
}
func (m *memStore) LastCursor(context.Context, string) (string, error) { return "0", nil }
func (m *memStore) Ack(context.Context, string, storage.Token, string, string) error {
	return nil
}
func (m *memStore) Cursor(context.Context, string, string) (string, error) { return "0", nil }
func (m *memStore) Ping(context.Context) error                             { return nil }
func (m *memStore) Close() error                                           { return nil }

var _ storage.Store = (*memStore)(nil)
