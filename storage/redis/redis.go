// Package redis is the Redis storage adapter (go-redis v9), safe for Redis
// Cluster.
//
// Every key of a profile carries the hash tag {p:<profile>}, so all of a
// profile's keys live in one cluster slot:
//
//	amarula:{p:alice}:kv:<ns>   hash  key -> storage.Seal(value)
//	amarula:{p:alice}:nss       set   namespaces that hold keys (for Clear/ListProfiles)
//	amarula:{p:alice}:fence     string, the fence (decimal token); survives Clear
//	amarula:{p:alice}:events    stream, fields t (type) and d (storage.Seal(data))
//	amarula:{p:alice}:cursors   hash  consumer -> cursor (stream id)
//	amarula:profiles            set   profile index (NOT hash-tagged, see below)
//
// With a cluster name other than "default" the prefix is
// amarula:<cluster>: instead of amarula:.
//
// Every fenced write or batch is one Lua script (EVALSHA, falling back to
// EVAL) that reads the fence and applies the writes atomically; all its keys
// are passed in KEYS and share the profile's slot. The profile index lives
// outside any profile's slot, so it cannot take part in those scripts: a
// profile is added to it (idempotently, once per process) before its first
// write, is never removed, and ListProfiles filters out members that no
// longer hold data. See docs/storage.md.
//
// This package owns the Redis keyspace under its prefix and nothing else.
package redis

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/amarula/amarula/storage"
)

// DefaultTailBlock is how often a waiting Tail polls Redis for events
// appended by other processes (appends through the same Store wake it at
// once).
const DefaultTailBlock = time.Second

// Options configures a Store. The zero value is valid.
type Options struct {
	// Cluster is the Amarula cluster name (AMARULA_CLUSTER). "" and
	// "default" use the prefix "amarula:"; any other name uses
	// "amarula:<cluster>:" so several clusters can share one Redis.
	Cluster string
	// RedisCluster makes New treat the URL as a Redis Cluster seed
	// (go-redis ParseClusterURL; extra nodes with ?addr=host:port).
	RedisCluster bool
	// Retention bounds every profile's event log. Zero fields take
	// storage.DefaultRetention; a negative field disables that bound.
	Retention storage.Retention
	// TailBlock is how often a waiting Tail polls for events appended by
	// other processes (a reader on a node that is not the owner). Appends
	// through this Store wake it at once. Default DefaultTailBlock.
	TailBlock time.Duration
	// OnCorrupt, if set, is called once for every corrupt entry read (for a
	// metric or a log line). It must not block.
	OnCorrupt func(profile, ns, key string)
}

// Store is the Redis adapter. It implements storage.Store and is safe for
// concurrent use.
type Store struct {
	notify    storage.Notifier // wakes Tail on appends through this Store
	c         goredis.UniversalClient
	prefix    string
	ret       storage.Retention
	tailBlock time.Duration
	onCorrupt func(profile, ns, key string)
	corrupt   atomic.Uint64
	closed    atomic.Bool
	indexed   sync.Map // profile -> struct{}: already in the profile index
}

var _ storage.Store = (*Store)(nil)

// New connects to the Redis at url (redis:// or rediss://), checks it
// answers PING within ctx, and returns the Store.
func New(ctx context.Context, url string, opt Options) (*Store, error) {
	prefix, err := keyPrefix(opt.Cluster)
	if err != nil {
		return nil, err
	}
	var c goredis.UniversalClient
	if opt.RedisCluster {
		o, err := goredis.ParseClusterURL(url)
		if err != nil {
			return nil, fmt.Errorf("redis: parse cluster url: %w", err)
		}
		c = goredis.NewClusterClient(o)
	} else {
		o, err := goredis.ParseURL(url)
		if err != nil {
			return nil, fmt.Errorf("redis: parse url: %w", err)
		}
		c = goredis.NewClient(o)
	}
	s := &Store{
		c:         c,
		prefix:    prefix,
		ret:       opt.Retention.WithDefaults(),
		tailBlock: opt.TailBlock,
		onCorrupt: opt.OnCorrupt,
	}
	if s.tailBlock <= 0 {
		s.tailBlock = DefaultTailBlock
	}
	if err := c.Ping(ctx).Err(); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("redis: ping %s: %w", redactURL(url), err)
	}
	return s, nil
}

func keyPrefix(cluster string) (string, error) {
	if cluster == "" || cluster == "default" {
		return "amarula:", nil
	}
	if !storage.ProfileIDPattern.MatchString(cluster) {
		return "", fmt.Errorf("redis: %w: cluster name %q must match %s", storage.ErrInvalidArgument, cluster, storage.ProfileIDPattern)
	}
	return "amarula:" + cluster + ":", nil
}

// redactURL drops credentials from a Redis URL for error messages.
func redactURL(u string) string {
	if i := strings.Index(u, "@"); i >= 0 {
		if j := strings.Index(u, "://"); j >= 0 && j < i {
			return u[:j+3] + "…@" + u[i+1:]
		}
	}
	return u
}

// Keys of one profile. All share the hash tag {p:<profile>}.
func (s *Store) key(profile, suffix string) string {
	return s.prefix + "{p:" + profile + "}:" + suffix
}
func (s *Store) kvKey(profile, ns string) string { return s.key(profile, "kv:"+ns) }
func (s *Store) nssKey(profile string) string    { return s.key(profile, "nss") }
func (s *Store) fenceKey(profile string) string  { return s.key(profile, "fence") }
func (s *Store) eventsKey(profile string) string { return s.key(profile, "events") }
func (s *Store) cursorsKey(profile string) string {
	return s.key(profile, "cursors")
}

// indexKey is the profile index; deliberately without a hash tag.
func (s *Store) indexKey() string { return s.prefix + "profiles" }

// CorruptReads returns how many corrupt entries have been read (and
// reported as misses) since New.
func (s *Store) CorruptReads() uint64 { return s.corrupt.Load() }

func (s *Store) reportCorrupt(profile, ns, key string) {
	s.corrupt.Add(1)
	if s.onCorrupt != nil {
		s.onCorrupt(profile, ns, key)
	}
}

// Ping checks that Redis answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.usable(); err != nil {
		return err
	}
	if err := s.c.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis: ping: %w", s.mapErr(err))
	}
	return nil
}

// Close closes the client; blocked Tails return. Closing twice is harmless.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	s.notify.Close()
	if err := s.c.Close(); err != nil {
		return fmt.Errorf("redis: close: %w", err)
	}
	return nil
}

func (s *Store) usable() error {
	if s.closed.Load() {
		return storage.ErrClosed
	}
	return nil
}

// mapErr turns client-closed errors into storage.ErrClosed.
func (s *Store) mapErr(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, goredis.ErrClosed) || s.closed.Load() && isConnErr(err) {
		return fmt.Errorf("%w: %v", storage.ErrClosed, err)
	}
	return err
}

func isConnErr(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, net.ErrClosed) || strings.Contains(err.Error(), "closed")
}

// ensureIndexed adds profile to the profile index before its first write
// from this process. SADD is idempotent; the index is never shrunk, so the
// cache stays true.
func (s *Store) ensureIndexed(ctx context.Context, profile string) error {
	if _, ok := s.indexed.Load(profile); ok {
		return nil
	}
	if err := s.c.SAdd(ctx, s.indexKey(), profile).Err(); err != nil {
		return fmt.Errorf("index profile: %w", s.mapErr(err))
	}
	s.indexed.Store(profile, struct{}{})
	return nil
}

// RaiseFence sets the profile's fence to token; lower is ErrFenced, equal
// is a no-op. One script: read, compare and set are atomic.
func (s *Store) RaiseFence(ctx context.Context, profile string, token storage.Token) error {
	if err := storage.ValidateProfile(profile); err != nil {
		return err
	}
	if err := s.usable(); err != nil {
		return err
	}
	res, err := raiseFenceScript.Run(ctx, s.c, []string{s.fenceKey(profile)}, formatToken(token)).Slice()
	if err == nil {
		err = fencedResult(profile, token, res)
	}
	if err != nil {
		return fmt.Errorf("redis: raise fence of %s to %d: %w", profile, token, s.mapErr(err))
	}
	return nil
}

// Fence returns the profile's current fence, 0 if never raised.
func (s *Store) Fence(ctx context.Context, profile string) (storage.Token, error) {
	if err := storage.ValidateProfile(profile); err != nil {
		return 0, err
	}
	if err := s.usable(); err != nil {
		return 0, err
	}
	v, err := s.c.Get(ctx, s.fenceKey(profile)).Result()
	if errors.Is(err, goredis.Nil) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("redis: fence of %s: %w", profile, s.mapErr(err))
	}
	f, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("redis: fence of %s: stored value %q is not a token: %w", profile, v, err)
	}
	return f, nil
}

func formatToken(t storage.Token) string { return strconv.FormatUint(t, 10) }

// fencedResult interprets the {status, ...} reply of the scripts.
func fencedResult(profile string, token storage.Token, res []interface{}) error {
	if len(res) == 0 {
		return fmt.Errorf("empty script reply")
	}
	switch st, _ := res[0].(int64); st {
	case statusOK:
		return nil
	case statusFenced:
		fence := "?"
		if len(res) > 1 {
			fence = fmt.Sprint(res[1])
		}
		return fmt.Errorf("%w: profile %s: token %d is below fence %s", storage.ErrFenced, profile, token, fence)
	case statusRetry:
		return errRetry
	default:
		return fmt.Errorf("unexpected script reply %v", res)
	}
}

var errRetry = errors.New("redis: namespace set changed during clear")

// sortedUnique sorts ss and drops duplicates in place.
func sortedUnique(ss []string) []string {
	sort.Strings(ss)
	out := ss[:0]
	for i, s := range ss {
		if i == 0 || s != ss[i-1] {
			out = append(out, s)
		}
	}
	return out
}
