package webhook_test

// TEMPORARY: a minimal in-memory store with the seam's semantics (fences,
// ordered log, blocking Tail, consumer cursors) used until storage/bolt
// lands; then newStore switches to bolt and this file goes away.

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/amarula/amarula/storage"
)

type memStore struct {
	mu      sync.Mutex
	kv      map[string][]byte // profile\x00ns\x00key
	fence   map[string]storage.Token
	events  map[string][]storage.Event
	cursors map[string]string
	changed chan struct{}
}

func newMemStore() *memStore {
	return &memStore{kv: map[string][]byte{}, fence: map[string]storage.Token{}, events: map[string][]storage.Event{},
		cursors: map[string]string{}, changed: make(chan struct{})}
}

func (m *memStore) check(profile string, tok storage.Token) error {
	if err := storage.ValidateProfile(profile); err != nil {
		return err
	}
	if tok < m.fence[profile] {
		return storage.ErrFenced
	}
	return nil
}

func k(p, ns, key string) string { return p + "\x00" + ns + "\x00" + key }

func (m *memStore) Get(ctx context.Context, profile, ns, key string) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := storage.ValidateProfile(profile); err != nil {
		return nil, err
	}
	v, ok := m.kv[k(profile, ns, key)]
	if !ok {
		return nil, storage.ErrNotFound
	}
	return append([]byte(nil), v...), nil
}

func (m *memStore) Put(ctx context.Context, profile string, tok storage.Token, ns, key string, value []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check(profile, tok); err != nil {
		return err
	}
	if err := storage.ValidateKey(key); err != nil {
		return err
	}
	m.kv[k(profile, ns, key)] = append([]byte(nil), value...)
	return nil
}

func (m *memStore) Delete(ctx context.Context, profile string, tok storage.Token, ns, key string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check(profile, tok); err != nil {
		return err
	}
	delete(m.kv, k(profile, ns, key))
	return nil
}

func (m *memStore) Scan(ctx context.Context, profile, ns, prefix string) ([]storage.KeyValue, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []storage.KeyValue
	pre := k(profile, ns, prefix)
	for key, v := range m.kv {
		if strings.HasPrefix(key, pre) {
			out = append(out, storage.KeyValue{Key: key[len(k(profile, ns, "")):], Value: v})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

func (m *memStore) Fence(ctx context.Context, profile string) (storage.Token, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.fence[profile], nil
}

func (m *memStore) RaiseFence(ctx context.Context, profile string, tok storage.Token) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if tok < m.fence[profile] {
		return storage.ErrFenced
	}
	m.fence[profile] = tok
	return nil
}

func (m *memStore) Append(ctx context.Context, profile string, tok storage.Token, typ string, data []byte) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check(profile, tok); err != nil {
		return "", err
	}
	c := strconv.Itoa(len(m.events[profile]) + 1)
	m.events[profile] = append(m.events[profile], storage.Event{Cursor: c, Type: typ, Time: time.Now(), Data: append([]byte(nil), data...)})
	close(m.changed)
	m.changed = make(chan struct{})
	return c, nil
}

func parseCursor(c string) (int, error) {
	if c == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(c)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%w: cursor %q", storage.ErrInvalidArgument, c)
	}
	return n, nil
}

func (m *memStore) read(profile, after string, limit int) ([]storage.Event, <-chan struct{}, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := storage.ValidateProfile(profile); err != nil {
		return nil, nil, err
	}
	n, err := parseCursor(after)
	if err != nil {
		return nil, nil, err
	}
	evs := m.events[profile]
	if n >= len(evs) {
		return nil, m.changed, nil
	}
	evs = evs[n:]
	if len(evs) > limit {
		evs = evs[:limit]
	}
	return append([]storage.Event(nil), evs...), m.changed, nil
}

func (m *memStore) Read(ctx context.Context, profile, after string, limit int) ([]storage.Event, error) {
	evs, _, err := m.read(profile, after, limit)
	return evs, err
}

func (m *memStore) Tail(ctx context.Context, profile, after string, limit int) ([]storage.Event, error) {
	for {
		evs, ch, err := m.read(profile, after, limit)
		if err != nil || len(evs) > 0 {
			return evs, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-ch:
		}
	}
}

func (m *memStore) LastCursor(ctx context.Context, profile string) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return strconv.Itoa(len(m.events[profile])), nil
}

func (m *memStore) Ack(ctx context.Context, profile string, tok storage.Token, consumer, cursor string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check(profile, tok); err != nil {
		return err
	}
	m.cursors[profile+"\x00"+consumer] = cursor
	return nil
}

func (m *memStore) Cursor(ctx context.Context, profile, consumer string) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if c, ok := m.cursors[profile+"\x00"+consumer]; ok {
		return c, nil
	}
	return "0", nil
}
