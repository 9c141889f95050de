package catalog

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"

	"github.com/amarula/amarula/storage"
)

// Store is the part of the storage seam the local catalog needs.
// storage.Store satisfies it.
type Store interface {
	Get(ctx context.Context, profile, ns, key string) ([]byte, error)
	Put(ctx context.Context, profile string, token storage.Token, ns, key string, value []byte) error
	Delete(ctx context.Context, profile string, token storage.Token, ns, key string) error
	Scan(ctx context.Context, profile, ns, prefix string) ([]storage.KeyValue, error)
	Fence(ctx context.Context, profile string) (storage.Token, error)
}

// Namespace is the storage namespace (inside ReservedID's scope) that holds
// the local catalog: key = profile id, value = the profile's JSON.
const Namespace = "profiles"

// maxFenceRetries bounds how often a local write re-reads the fence.
const maxFenceRetries = 8

// watchQueueLimit bounds a slow watcher's backlog; past it the backlog
// collapses into one Reset.
const watchQueueLimit = 1024

// Local is the single-node catalog, kept in the embedded store.
//
// Layout: every entry lives in the storage scope of the reserved profile id
// ReservedID ("amarula-catalog"), namespace "profiles", key = profile id.
// Keeping the catalog out of each profile's own scope means that wiping a
// profile's data (storage Clear on logout) never deletes its catalog entry,
// and List is one Scan. Nobody ever acquires ReservedID (Create refuses it),
// so its fence stays where it is; writes carry the scope's current fence,
// read just before, and are retried if it moved. Exclusion between writers
// comes from the process (one mutex) and the data directory's flock.
// Note that storage ListProfiles reports ReservedID among the profiles.
type Local struct {
	st Store

	mu       sync.Mutex // serialises writes (Create's check-then-put)
	wmu      sync.Mutex
	watchers map[*watcher]struct{}
}

var _ Catalog = (*Local)(nil)

// NewLocal returns the single-node catalog over st.
func NewLocal(st Store) *Local {
	return &Local{st: st, watchers: make(map[*watcher]struct{})}
}

// write runs one fenced write with the scope's current fence.
func (l *Local) write(ctx context.Context, do func(token storage.Token) error) error {
	var err error
	for i := 0; i < maxFenceRetries; i++ {
		var tok storage.Token
		if tok, err = l.st.Fence(ctx, ReservedID); err != nil {
			return fmt.Errorf("read catalog fence: %w", err)
		}
		if err = do(tok); !errors.Is(err, storage.ErrFenced) {
			return err
		}
	}
	return err
}

// Create implements Catalog.
func (l *Local) Create(ctx context.Context, p Profile) error {
	p, b, err := prepareCreate(p)
	if err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, err := l.st.Get(ctx, ReservedID, Namespace, p.ID); err == nil {
		return fmt.Errorf("catalog create %s: %w", p.ID, ErrExists)
	} else if !errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("catalog create %s: %w", p.ID, err)
	}
	if err := l.write(ctx, func(tok storage.Token) error {
		return l.st.Put(ctx, ReservedID, tok, Namespace, p.ID, b)
	}); err != nil {
		return fmt.Errorf("catalog create %s: %w", p.ID, err)
	}
	l.notify(Change{Type: Put, ID: p.ID, Profile: &p})
	return nil
}

// Get implements Catalog.
func (l *Local) Get(ctx context.Context, id string) (Profile, error) {
	if err := ValidateID(id); err != nil {
		return Profile{}, err
	}
	b, err := l.st.Get(ctx, ReservedID, Namespace, id)
	if errors.Is(err, storage.ErrNotFound) {
		return Profile{}, fmt.Errorf("catalog get %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return Profile{}, fmt.Errorf("catalog get %s: %w", id, err)
	}
	p, err := decode(b)
	if err != nil {
		return Profile{}, fmt.Errorf("catalog get %s: %w", id, err)
	}
	return p, nil
}

// List implements Catalog. Undecodable entries are skipped.
func (l *Local) List(ctx context.Context) ([]Profile, error) {
	kvs, err := l.st.Scan(ctx, ReservedID, Namespace, "")
	if err != nil {
		return nil, fmt.Errorf("catalog list: %w", err)
	}
	out := make([]Profile, 0, len(kvs))
	for _, kv := range kvs {
		if p, err := decode(kv.Value); err == nil {
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// Update implements Catalog.
func (l *Local) Update(ctx context.Context, id string, fn func(*Profile) error) error {
	if err := ValidateID(id); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	cur, err := l.st.Get(ctx, ReservedID, Namespace, id)
	if errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("catalog update %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("catalog update %s: %w", id, err)
	}
	p, b, err := applyUpdate(id, cur, fn)
	if err != nil {
		return fmt.Errorf("catalog update %s: %w", id, err)
	}
	if err := l.write(ctx, func(tok storage.Token) error {
		return l.st.Put(ctx, ReservedID, tok, Namespace, id, b)
	}); err != nil {
		return fmt.Errorf("catalog update %s: %w", id, err)
	}
	l.notify(Change{Type: Put, ID: id, Profile: &p})
	return nil
}

// Delete implements Catalog.
func (l *Local) Delete(ctx context.Context, id string) error {
	if err := ValidateID(id); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, err := l.st.Get(ctx, ReservedID, Namespace, id); errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("catalog delete %s: %w", id, ErrNotFound)
	} else if err != nil {
		return fmt.Errorf("catalog delete %s: %w", id, err)
	}
	if err := l.write(ctx, func(tok storage.Token) error {
		return l.st.Delete(ctx, ReservedID, tok, Namespace, id)
	}); err != nil {
		return fmt.Errorf("catalog delete %s: %w", id, err)
	}
	l.notify(Change{Type: Delete, ID: id})
	return nil
}

// watcher is one Watch call: an unbounded-but-capped queue drained by a
// goroutine owned by the Watch context, so writers never block on readers.
type watcher struct {
	mu    sync.Mutex
	queue []Change
	wake  chan struct{}
}

func (w *watcher) push(ch Change) {
	w.mu.Lock()
	if len(w.queue) >= watchQueueLimit {
		w.queue = append(w.queue[:0], Change{Type: Reset})
	} else {
		w.queue = append(w.queue, ch)
	}
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (l *Local) notify(ch Change) {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	for w := range l.watchers {
		w.push(ch)
	}
}

// Watch implements Catalog for changes made through this Local (the only
// writer in single-node mode).
func (l *Local) Watch(ctx context.Context) <-chan Change {
	w := &watcher{wake: make(chan struct{}, 1)}
	l.wmu.Lock()
	l.watchers[w] = struct{}{}
	l.wmu.Unlock()
	out := make(chan Change)
	go func() {
		defer close(out)
		defer func() {
			l.wmu.Lock()
			delete(l.watchers, w)
			l.wmu.Unlock()
		}()
		for {
			w.mu.Lock()
			batch := w.queue
			w.queue = nil
			w.mu.Unlock()
			for _, ch := range batch {
				select {
				case out <- ch:
				case <-ctx.Done():
					return
				}
			}
			select {
			case <-w.wake:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}
