// Package bolt is the embedded default storage adapter: every profile's
// key/value data, event log, consumer cursors and fence live in one bbolt
// file under the data directory (dir/amarula.db).
//
// The directory is locked with flock on dir/LOCK for the lifetime of the
// Store, so a second amarula process (or a second Open in the same process)
// cannot share it. Every fenced write runs the fence check and the write in
// the same bbolt read-write transaction, which bbolt serialises, so a write
// with a stale token can never land. Tail waits on an in-process broadcast
// channel per profile; it starts no goroutine.
//
// Bucket layout (see docs/storage.md):
//
//	meta/<profile>/fence         uint64 big-endian; survives Clear
//	meta/<profile>/seq           last event sequence; survives Clear
//	profiles/<profile>/kv/<ns>/<key>      storage.Seal(value)
//	profiles/<profile>/events/<seq>       storage.Seal(event record), seq uint64 big-endian
//	profiles/<profile>/cursors/<consumer> cursor (decimal sequence)
//
// This package owns the file and nothing else; it never decides who may
// write (that is the fence raised by package lease).
package bolt

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/amarula/amarula/storage"
)

// FileName is the name of the bbolt file inside the data directory.
const FileName = "amarula.db"

// LockName is the name of the lock file inside the data directory.
const LockName = "LOCK"

// Options configures a Store. The zero value is valid.
type Options struct {
	// Retention bounds every profile's event log. Zero fields take
	// storage.DefaultRetention; a negative field disables that bound.
	Retention storage.Retention
	// OnCorrupt, if set, is called once for every corrupt entry read (for a
	// metric or a log line). It must not block.
	OnCorrupt func(profile, ns, key string)
	// Now returns the current time; tests may replace it. Default time.Now.
	Now func() time.Time
}

// Store is the bbolt adapter. It implements storage.Store and is safe for
// concurrent use.
type Store struct {
	dir       string
	db        *bbolt.DB
	lock      *os.File
	ret       storage.Retention
	onCorrupt func(profile, ns, key string)
	now       func() time.Time
	corrupt   atomic.Uint64

	mu     sync.Mutex
	closed bool
	done   chan struct{}    // closed by Close
	notify storage.Notifier // wakes Tail on appends; closed by Close
}

var _ storage.Store = (*Store)(nil)

var (
	bucketMeta     = []byte("meta")
	bucketProfiles = []byte("profiles")
	bucketKV       = []byte("kv")
	bucketEvents   = []byte("events")
	bucketCursors  = []byte("cursors")
	keyFence       = []byte("fence")
	keySeq         = []byte("seq")
)

// Open creates dir if needed, takes the exclusive lock on dir/LOCK and opens
// (or creates) dir/amarula.db. It fails at once if another process or Store
// holds the lock.
func Open(dir string, opt Options) (*Store, error) {
	if dir == "" {
		return nil, fmt.Errorf("bolt: open: %w: empty data directory", storage.ErrInvalidArgument)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("bolt: create data directory %s: %w", dir, err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, FileName)
	// The directory lock already excludes other processes; bbolt's own
	// flock on the file is a second line of defence and must not block.
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: time.Second, FreelistType: bbolt.FreelistMapType})
	if err != nil {
		_ = unlockDir(lock)
		return nil, fmt.Errorf("bolt: open %s: %w", path, err)
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		for _, b := range [][]byte{bucketMeta, bucketProfiles} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		_ = db.Close()
		_ = unlockDir(lock)
		return nil, fmt.Errorf("bolt: init %s: %w", path, err)
	}
	s := &Store{
		dir:       dir,
		db:        db,
		lock:      lock,
		ret:       opt.Retention.WithDefaults(),
		onCorrupt: opt.OnCorrupt,
		now:       opt.Now,
		done:      make(chan struct{}),
	}
	if s.now == nil {
		s.now = time.Now
	}
	return s, nil
}

// lockDir takes a non-blocking exclusive flock on dir/LOCK and writes the
// holder's pid into it for the operator's benefit.
func lockDir(dir string) (*os.File, error) {
	path := filepath.Join(dir, LockName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("bolt: open lock file %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		holder, _ := os.ReadFile(path)
		_ = f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("bolt: data directory %s is locked: another amarula process holds %s (pid %s); "+
				"two processes must never share a data directory", dir, path, trimPID(holder))
		}
		return nil, fmt.Errorf("bolt: lock %s: %w", path, err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return f, nil
}

func trimPID(b []byte) string {
	s := string(b)
	for len(s) > 0 && (s[len(s)-1] == '\n' || s[len(s)-1] == ' ') {
		s = s[:len(s)-1]
	}
	if s == "" || len(s) > 20 {
		return "unknown"
	}
	return s
}

func unlockDir(f *os.File) error {
	// Closing the descriptor releases the flock.
	return f.Close()
}

// Dir returns the data directory.
func (s *Store) Dir() string { return s.dir }

// CorruptReads returns how many corrupt entries have been read (and
// reported as misses) since Open.
func (s *Store) CorruptReads() uint64 { return s.corrupt.Load() }

// Close wakes every blocked Tail, closes the database and releases the
// directory lock. Closing twice is harmless.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.done)
	s.mu.Unlock()
	s.notify.Close()
	err := s.db.Close()
	if uerr := unlockDir(s.lock); err == nil && uerr != nil {
		err = uerr
	}
	if err != nil {
		return fmt.Errorf("bolt: close %s: %w", s.dir, err)
	}
	return nil
}

// Ping reports whether the store is open.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.usable(ctx); err != nil {
		return err
	}
	return s.db.View(func(tx *bbolt.Tx) error { return nil })
}

// usable returns ErrClosed after Close and the context's error when done.
func (s *Store) usable(ctx context.Context) error {
	select {
	case <-s.done:
		return storage.ErrClosed
	default:
	}
	return ctx.Err()
}

func (s *Store) reportCorrupt(profile, ns, key string) {
	s.corrupt.Add(1)
	if s.onCorrupt != nil {
		s.onCorrupt(profile, ns, key)
	}
}

// view runs fn in a read-only transaction.
func (s *Store) view(ctx context.Context, fn func(tx *bbolt.Tx) error) error {
	if err := s.usable(ctx); err != nil {
		return err
	}
	return s.mapErr(s.db.View(fn))
}

// update runs fn in a read-write transaction after checking the fence of
// profile in that same transaction, so a stale token can never write.
func (s *Store) update(ctx context.Context, profile string, token storage.Token, fn func(tx *bbolt.Tx) error) error {
	if err := s.usable(ctx); err != nil {
		return err
	}
	return s.mapErr(s.db.Update(func(tx *bbolt.Tx) error {
		if fence := readFence(tx, profile); token < fence {
			return fmt.Errorf("%w: profile %s: token %d is below fence %d", storage.ErrFenced, profile, token, fence)
		}
		return fn(tx)
	}))
}

func (s *Store) mapErr(err error) error {
	if errors.Is(err, bbolt.ErrDatabaseNotOpen) {
		return storage.ErrClosed
	}
	return err
}

func u64(b []byte) uint64 {
	if len(b) != 8 {
		return 0
	}
	return uint64(b[0])<<56 | uint64(b[1])<<48 | uint64(b[2])<<40 | uint64(b[3])<<32 |
		uint64(b[4])<<24 | uint64(b[5])<<16 | uint64(b[6])<<8 | uint64(b[7])
}

func be64(v uint64) []byte {
	return []byte{byte(v >> 56), byte(v >> 48), byte(v >> 40), byte(v >> 32), byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}
}

func metaBucket(tx *bbolt.Tx, profile string) *bbolt.Bucket {
	return tx.Bucket(bucketMeta).Bucket([]byte(profile))
}

func readFence(tx *bbolt.Tx, profile string) storage.Token {
	if m := metaBucket(tx, profile); m != nil {
		return u64(m.Get(keyFence))
	}
	return 0
}

// profileBucket returns the profile's data bucket, or nil.
func profileBucket(tx *bbolt.Tx, profile string) *bbolt.Bucket {
	return tx.Bucket(bucketProfiles).Bucket([]byte(profile))
}

// sub returns profiles/<profile>/<name>, or nil.
func sub(tx *bbolt.Tx, profile string, name []byte) *bbolt.Bucket {
	if p := profileBucket(tx, profile); p != nil {
		return p.Bucket(name)
	}
	return nil
}

// createSub returns profiles/<profile>/<name>, creating both.
func createSub(tx *bbolt.Tx, profile string, name []byte) (*bbolt.Bucket, error) {
	p, err := tx.Bucket(bucketProfiles).CreateBucketIfNotExists([]byte(profile))
	if err != nil {
		return nil, err
	}
	return p.CreateBucketIfNotExists(name)
}

// RaiseFence sets the profile's fence to token; lower is ErrFenced, equal
// is a no-op.
func (s *Store) RaiseFence(ctx context.Context, profile string, token storage.Token) error {
	if err := storage.ValidateProfile(profile); err != nil {
		return err
	}
	err := s.update(ctx, profile, token, func(tx *bbolt.Tx) error {
		if readFence(tx, profile) == token {
			return nil
		}
		m, err := tx.Bucket(bucketMeta).CreateBucketIfNotExists([]byte(profile))
		if err != nil {
			return err
		}
		return m.Put(keyFence, be64(token))
	})
	if err != nil {
		return fmt.Errorf("bolt: raise fence of %s to %d: %w", profile, token, err)
	}
	return nil
}

// Fence returns the profile's current fence, 0 if never raised.
func (s *Store) Fence(ctx context.Context, profile string) (storage.Token, error) {
	if err := storage.ValidateProfile(profile); err != nil {
		return 0, err
	}
	var f storage.Token
	err := s.view(ctx, func(tx *bbolt.Tx) error { f = readFence(tx, profile); return nil })
	if err != nil {
		return 0, fmt.Errorf("bolt: fence of %s: %w", profile, err)
	}
	return f, nil
}
