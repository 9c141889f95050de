// Package mediastore is wasim's media server: an in-memory store of
// encrypted media blobs and the http.Handler for the upload and download
// URLs whatsmeow uses (protocol notes §8.3, §8.4), plus the values the
// server needs to answer media_conn (§8.1).
//
// Blobs are opaque: the store never sees a media key. It checks what the
// real server can check (the auth token and that the upload token is the
// SHA-256 of the body) and serves bytes back by id. Expire makes a blob
// answer 404 until it is uploaded again (Put or Reupload), which is what a
// media retry request (§8.5) needs.
//
// A Store is safe for concurrent use. It starts no goroutines.
package mediastore

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Sentinel errors. Check them with errors.Is.
var (
	// ErrNotFound means no blob has that id (never uploaded or evicted).
	ErrNotFound = errors.New("mediastore: blob not found")
	// ErrExpired means the blob exists but was expired and not re-uploaded.
	ErrExpired = errors.New("mediastore: blob expired")
	// ErrTooLarge means a blob exceeds Config.MaxBlobBytes.
	ErrTooLarge = errors.New("mediastore: blob too large")
	// ErrBadToken means an upload's token is not base64url(SHA-256(body)).
	ErrBadToken = errors.New("mediastore: upload token does not match body")
)

// Config holds every tunable of a Store. Zero fields take the defaults of
// DefaultConfig.
type Config struct {
	// Host is the media hostname sent in media_conn and used in the url of
	// upload responses. Keep the fake real-looking name: the client caches
	// media_conn, and a host that includes a port would strand it when wasim
	// restarts on another port (§8.1). Default "mmg.whatsapp.net".
	Host string
	// Auth is the media_conn auth token uploads must carry. Default: random.
	Auth string
	// TTL is media_conn's ttl and auth_ttl. Default 1h.
	TTL time.Duration
	// MaxBuckets is media_conn's max_buckets. Default 12.
	MaxBuckets int
	// MaxBlobBytes bounds one upload. Default 64 MiB.
	MaxBlobBytes int64
	// MaxTotalBytes bounds all blobs; the oldest uploads are evicted (and
	// then answer 404) to make room. Default 1 GiB.
	MaxTotalBytes int64
}

// DefaultConfig returns the defaults: host mmg.whatsapp.net, a random auth
// token, ttl 1h, 12 buckets, 64 MiB per blob, 1 GiB in total.
func DefaultConfig() Config {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return Config{
		Host:          "mmg.whatsapp.net",
		Auth:          hex.EncodeToString(b[:]),
		TTL:           time.Hour,
		MaxBuckets:    12,
		MaxBlobBytes:  64 << 20,
		MaxTotalBytes: 1 << 30,
	}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Host == "" {
		c.Host = d.Host
	}
	if c.Auth == "" {
		c.Auth = d.Auth
	}
	if c.TTL <= 0 {
		c.TTL = d.TTL
	}
	if c.MaxBuckets <= 0 {
		c.MaxBuckets = d.MaxBuckets
	}
	if c.MaxBlobBytes <= 0 {
		c.MaxBlobBytes = d.MaxBlobBytes
	}
	if c.MaxTotalBytes <= 0 {
		c.MaxTotalBytes = d.MaxTotalBytes
	}
	if c.MaxTotalBytes < c.MaxBlobBytes {
		c.MaxTotalBytes = c.MaxBlobBytes
	}
	return c
}

// MediaConn is what the server puts into <media_conn>: auth, ttl, auth_ttl
// (seconds), max_buckets and one <host hostname> per entry of Hosts.
type MediaConn struct {
	Auth       string
	TTL        time.Duration
	AuthTTL    time.Duration
	MaxBuckets int
	Hosts      []string
}

// Upload describes a stored blob: its id and where clients fetch it. URL
// and DirectPath are what the upload response JSON carries as url and
// direct_path, and what a media message carries.
type Upload struct {
	// ID identifies the blob for Get, Expire and Reupload: base64url
	// (unpadded) of the SHA-256 of the encrypted body.
	ID         string
	URL        string
	DirectPath string
	// Handle and ObjectID fill the rest of the upload response.
	Handle   string
	ObjectID string
	// Size is the blob length in bytes.
	Size int
}

// Stats are counters of a Store.
type Stats struct {
	Blobs     int
	Bytes     int64
	Uploads   uint64
	Downloads uint64
	NotFound  uint64
	Expired   uint64
	Evicted   uint64
}

type blob struct {
	data    []byte
	mmsType string
	expired bool
}

// Store is the in-memory blob store.
type Store struct {
	cfg Config

	mu    sync.Mutex
	blobs map[string]*blob
	order []string // ids by upload order, oldest first
	bytes int64
	stats Stats
}

// New returns an empty store.
func New(cfg Config) *Store {
	return &Store{cfg: cfg.withDefaults(), blobs: make(map[string]*blob)}
}

// Config returns the effective configuration (defaults applied).
func (s *Store) Config() Config { return s.cfg }

// MediaConn returns the values for a media_conn answer.
func (s *Store) MediaConn() MediaConn {
	return MediaConn{
		Auth:       s.cfg.Auth,
		TTL:        s.cfg.TTL,
		AuthTTL:    s.cfg.TTL,
		MaxBuckets: s.cfg.MaxBuckets,
		Hosts:      []string{s.cfg.Host},
	}
}

// ID returns the id a blob with this encrypted body gets.
func ID(encrypted []byte) string {
	sum := sha256.Sum256(encrypted)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// DirectPath returns the direct_path of blob id. It contains a '?' query,
// because whatsmeow appends "&hash=…" to it (§8.4).
func DirectPath(id string) string {
	return "/v/t62.7118-24/" + id + ".enc?ccb=11-4"
}

func (s *Store) describe(id string, size int) Upload {
	dp := DirectPath(id)
	return Upload{
		ID:         id,
		URL:        "https://" + s.cfg.Host + dp,
		DirectPath: dp,
		Handle:     id,
		ObjectID:   id,
		Size:       size,
	}
}

// Put stores an encrypted blob (ciphertext || mac) for mmsType ("image",
// "document", …) as if it had been uploaded, and returns where it can be
// downloaded. Putting the same bytes again is a re-upload: the id and paths
// stay the same and an expired blob becomes downloadable again. data is
// copied.
func (s *Store) Put(mmsType string, data []byte) (Upload, error) {
	if int64(len(data)) > s.cfg.MaxBlobBytes {
		return Upload{}, fmt.Errorf("put %s blob of %d bytes (max %d): %w", mmsType, len(data), s.cfg.MaxBlobBytes, ErrTooLarge)
	}
	id := ID(data)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats.Uploads++
	if b, ok := s.blobs[id]; ok {
		b.expired = false
		return s.describe(id, len(b.data)), nil
	}
	b := &blob{data: append([]byte(nil), data...), mmsType: mmsType}
	s.blobs[id] = b
	s.order = append(s.order, id)
	s.bytes += int64(len(data))
	s.evictLocked(id)
	return s.describe(id, len(data)), nil
}

// evictLocked drops the oldest blobs until the total fits, never keep.
func (s *Store) evictLocked(keep string) {
	for s.bytes > s.cfg.MaxTotalBytes && len(s.order) > 0 {
		id := s.order[0]
		s.order = s.order[1:]
		if id == keep {
			s.order = append(s.order, id)
			if len(s.order) == 1 {
				return
			}
			continue
		}
		if b, ok := s.blobs[id]; ok {
			s.bytes -= int64(len(b.data))
			delete(s.blobs, id)
			s.stats.Evicted++
		}
	}
}

// Get returns the blob with id. It fails with ErrNotFound or ErrExpired.
// The returned slice must not be modified.
func (s *Store) Get(id string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.blobs[id]
	switch {
	case !ok:
		s.stats.NotFound++
		return nil, fmt.Errorf("get %s: %w", id, ErrNotFound)
	case b.expired:
		s.stats.Expired++
		return nil, fmt.Errorf("get %s: %w", id, ErrExpired)
	}
	s.stats.Downloads++
	return b.data, nil
}

// Expire makes blob id answer 404 until it is re-uploaded. The bytes are
// kept so that Reupload can restore them.
func (s *Store) Expire(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.blobs[id]
	if !ok {
		return fmt.Errorf("expire %s: %w", id, ErrNotFound)
	}
	b.expired = true
	return nil
}

// ExpireAll expires every blob and returns how many were live.
func (s *Store) ExpireAll() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, b := range s.blobs {
		if !b.expired {
			b.expired = true
			n++
		}
	}
	return n
}

// Reupload makes an expired blob downloadable again, as the phone's
// re-upload after a media retry request does; the paths do not change.
func (s *Store) Reupload(id string) (Upload, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.blobs[id]
	if !ok {
		return Upload{}, fmt.Errorf("reupload %s: %w", id, ErrNotFound)
	}
	b.expired = false
	s.stats.Uploads++
	return s.describe(id, len(b.data)), nil
}

// Expired reports whether blob id exists and is expired.
func (s *Store) Expired(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.blobs[id]
	return ok && b.expired
}

// Stats returns a snapshot of the counters.
func (s *Store) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Blobs = len(s.blobs)
	st.Bytes = s.bytes
	return st
}
