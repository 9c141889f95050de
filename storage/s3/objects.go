// Package s3 is Amarula's object store for media: an S3 implementation over
// aws-sdk-go-v2 (any S3-compatible service, path-style for versitygw/MinIO)
// and a local-directory fallback used when no S3 is configured.
//
// Both implementations satisfy Objects and are proved by the same
// conformance tests. They stream: a Put holds at most one part buffer in
// memory (S3) or none (local), a Get returns the body as a reader.
//
// Every object carries its content type and the hex SHA-256 of its bytes as
// metadata. A Put that announces a checksum or size and delivers other bytes
// fails with ErrChecksum/ErrSizeMismatch and leaves nothing behind, so an
// object that exists under a key is always complete and verified. A full
// (unranged) Get re-verifies the checksum while streaming and fails the
// final Read with ErrChecksum on mismatch.
//
// This package owns bytes under keys. It knows nothing of messages, profiles
// or jobs, and must never import the storage seam.
package s3

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"strings"
	"time"
)

// Sentinel errors. Check them with errors.Is.
var (
	// ErrNotFound is returned by Get and Stat for a missing key.
	ErrNotFound = errors.New("objects: not found")
	// ErrInvalidKey is returned for a key (or prefix) that ValidateKey rejects.
	ErrInvalidKey = errors.New("objects: invalid key")
	// ErrChecksum is returned when the bytes do not match the SHA-256 the
	// caller announced (Put) or the one stored with the object (Get).
	ErrChecksum = errors.New("objects: sha256 mismatch")
	// ErrSizeMismatch is returned by Put when the reader delivers a number
	// of bytes other than the announced size.
	ErrSizeMismatch = errors.New("objects: size mismatch")
	// ErrInvalidRange is returned by Get for a range outside the object.
	ErrInvalidRange = errors.New("objects: invalid range")
	// ErrNotSupported is returned by operations an implementation cannot
	// offer (PresignGet on the local store).
	ErrNotSupported = errors.New("objects: not supported")
)

// Info describes a stored object.
type Info struct {
	Key         string
	Size        int64     // size of the whole object in bytes
	ContentType string    // as given to Put ("application/octet-stream" if empty)
	SHA256      string    // lowercase hex SHA-256 of the whole object; "" if unknown (foreign object)
	ModTime     time.Time // last modification
}

// Range selects part of an object: Length bytes from Offset. A negative
// Length reads to the end; a Length past the end is truncated, as in HTTP.
// An Offset at or beyond the object's size is ErrInvalidRange.
type Range struct {
	Offset int64
	Length int64
}

// Objects is the object store. Implementations are safe for concurrent use.
type Objects interface {
	// Put stores the bytes of r under key, replacing any previous object.
	// size is the announced length (-1 if unknown); sha256hex the announced
	// lowercase hex SHA-256 ("" if unknown). On mismatch nothing is stored
	// and ErrSizeMismatch/ErrChecksum is returned. The object becomes
	// visible atomically, only after every byte was read and verified.
	Put(ctx context.Context, key string, r io.Reader, size int64, contentType, sha256hex string) (Info, error)
	// Get returns a reader over the object (or the part selected by rng,
	// nil for all of it) and the Info of the whole object. The caller
	// closes the reader.
	Get(ctx context.Context, key string, rng *Range) (io.ReadCloser, Info, error)
	// Stat returns the object's Info or ErrNotFound.
	Stat(ctx context.Context, key string) (Info, error)
	// Delete removes the object; a missing key is not an error.
	Delete(ctx context.Context, key string) error
	// DeletePrefix removes every object whose key starts with prefix
	// (non-empty) and returns how many it removed.
	DeletePrefix(ctx context.Context, prefix string) (int, error)
	// PresignGet returns a URL that fetches the object with a plain HTTP
	// GET for ttl, or ErrNotSupported.
	PresignGet(ctx context.Context, key string, ttl time.Duration) (string, error)
	// Close releases idle connections; calls in flight are not interrupted.
	Close() error
}

// MaxKeyLen bounds a key's length in bytes.
const MaxKeyLen = 1024

// maxSegmentLen bounds one '/'-separated segment (a file name locally).
const maxSegmentLen = 200

// DefaultContentType is stored when Put is given none.
const DefaultContentType = "application/octet-stream"

// ValidateKey reports whether key is acceptable: 1..MaxKeyLen bytes of
// '/'-separated segments, each 1..200 characters of [A-Za-z0-9._=+@:,-] not
// starting with '.'. So no empty segment, no leading or trailing '/', no
// "." or "..": a key can never escape the local store's directory, and
// keys mean the same on S3 and on disk.
func ValidateKey(key string) error {
	if key == "" || len(key) > MaxKeyLen {
		return fmt.Errorf("%w: key must be 1..%d bytes, got %d", ErrInvalidKey, MaxKeyLen, len(key))
	}
	for _, seg := range strings.Split(key, "/") {
		if err := validateSegment(seg); err != nil {
			return fmt.Errorf("%w: %q: %s", ErrInvalidKey, truncate(key, 80), err)
		}
	}
	return nil
}

// validatePrefix accepts what DeletePrefix may take: a non-empty prefix
// whose complete segments are valid; the last segment may be partial or
// empty (a trailing '/').
func validatePrefix(prefix string) error {
	if prefix == "" || len(prefix) > MaxKeyLen {
		return fmt.Errorf("%w: prefix must be 1..%d bytes", ErrInvalidKey, MaxKeyLen)
	}
	segs := strings.Split(prefix, "/")
	for i, seg := range segs {
		if i == len(segs)-1 && seg == "" && i > 0 {
			break
		}
		if err := validateSegment(seg); err != nil {
			return fmt.Errorf("%w: prefix %q: %s", ErrInvalidKey, truncate(prefix, 80), err)
		}
	}
	return nil
}

func validateSegment(seg string) error {
	if seg == "" {
		return errors.New("empty segment")
	}
	if len(seg) > maxSegmentLen {
		return fmt.Errorf("segment longer than %d", maxSegmentLen)
	}
	if seg[0] == '.' {
		return errors.New("segment starts with '.'")
	}
	for i := 0; i < len(seg); i++ {
		c := seg[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("._=+@:,-", c) >= 0:
		default:
			return fmt.Errorf("character %q not allowed", c)
		}
	}
	return nil
}

func validateSHA(sha256hex string) error {
	if sha256hex == "" {
		return nil
	}
	if len(sha256hex) != 64 || strings.ToLower(sha256hex) != sha256hex {
		return fmt.Errorf("objects: sha256 must be 64 lowercase hex characters")
	}
	if _, err := hex.DecodeString(sha256hex); err != nil {
		return fmt.Errorf("objects: sha256: %w", err)
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// checkPutArgs validates Put's arguments and returns the content type to
// store.
func checkPutArgs(key, contentType, sha256hex string) (string, error) {
	if err := ValidateKey(key); err != nil {
		return "", err
	}
	if err := validateSHA(sha256hex); err != nil {
		return "", err
	}
	if contentType == "" {
		contentType = DefaultContentType
	}
	return contentType, nil
}

// checkPut compares what a Put read with what its caller announced.
func checkPut(key string, n, size int64, got, want string) error {
	if size >= 0 && n != size {
		return fmt.Errorf("put %s: %w: announced %d bytes, read %d", key, ErrSizeMismatch, size, n)
	}
	if want != "" && got != want {
		return fmt.Errorf("put %s: %w: announced %s, read %s", key, ErrChecksum, want, got)
	}
	return nil
}

// ctxReader makes a blocking copy loop notice cancellation between reads.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// verifyReader hashes a full-object body and fails the read that would
// return io.EOF when the hash differs from the stored one.
type verifyReader struct {
	rc   io.ReadCloser
	h    hash.Hash
	want string
	key  string
	n    int64
	size int64
}

func newVerifyReader(rc io.ReadCloser, key string, info Info) io.ReadCloser {
	if info.SHA256 == "" {
		return rc
	}
	return &verifyReader{rc: rc, h: sha256.New(), want: info.SHA256, key: key, size: info.Size}
}

func (v *verifyReader) Read(p []byte) (int, error) {
	n, err := v.rc.Read(p)
	v.h.Write(p[:n])
	v.n += int64(n)
	if errors.Is(err, io.EOF) {
		if v.n != v.size {
			return n, fmt.Errorf("get %s: %w: stored size %d, read %d", v.key, ErrSizeMismatch, v.size, v.n)
		}
		if got := hex.EncodeToString(v.h.Sum(nil)); got != v.want {
			return n, fmt.Errorf("get %s: %w: stored %s, read %s", v.key, ErrChecksum, v.want, got)
		}
	}
	return n, err
}

func (v *verifyReader) Close() error { return v.rc.Close() }

// Config selects and configures the object store. With Bucket empty the
// local store under LocalDir is used (see Open).
type Config struct {
	// Endpoint is the S3 base URL (e.g. http://127.0.0.1:7070); empty uses
	// AWS's regional endpoint.
	Endpoint string
	Bucket   string
	// Region defaults to "us-east-1".
	Region string
	// AccessKey and SecretKey are static credentials; when both are empty
	// the SDK's default chain (env, shared config, IAM role) is used.
	AccessKey string
	SecretKey string
	// PathStyle addresses buckets as endpoint/bucket/key (versitygw, MinIO)
	// instead of bucket.endpoint/key.
	PathStyle bool
	// CreateBucket creates the bucket at start when it does not exist.
	CreateBucket bool
	// PartSize is the multipart part size and the largest object sent in
	// one PutObject; it is also the memory one Put holds. Default 8 MiB,
	// minimum 5 MiB (the S3 limit).
	PartSize int64
	// LocalDir is the directory of the local store (Bucket empty).
	LocalDir string
}

// Open returns the S3 store when cfg.Bucket is set and the local store under
// cfg.LocalDir otherwise.
func Open(ctx context.Context, cfg Config) (Objects, error) {
	if cfg.Bucket == "" {
		if cfg.Endpoint != "" {
			return nil, errors.New("objects: S3 endpoint set without a bucket")
		}
		return NewLocal(cfg.LocalDir)
	}
	return New(ctx, cfg)
}
