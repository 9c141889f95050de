// Package media is the download-on-receipt pipeline: every received media
// message gets a durable job in the profile's storage (namespace
// "media_job"), and a node-wide, bounded Worker downloads and decrypts the
// file once, verifies it, streams it to the object store under
// media/<profile>/<message-id>, and records the result on the message
// together with a media.stored (or media.failed) event and the job's
// removal, in one fenced transaction.
//
// Guarantees:
//   - Durable: a job is written in the same transaction as its message
//     (Enqueue), survives crashes and restarts, and moves with the profile
//     on failover: whichever node attaches the profile loads its jobs.
//   - Exactly once: the object key is fixed per message and every Put is
//     atomic and verified, so a retried attempt overwrites or reuses the
//     same object; the message update, the event and the job's deletion
//     commit together, and a commit that finds the job gone writes nothing.
//   - Never stored as good when wrong: the plaintext must match the
//     message's FileSHA256 and FileLength (and the CDN file its MAC and
//     FileEncSHA256); a mismatch is retried, then reported as media.failed.
//   - Media retry: a 404/410 from the CDN (ErrExpired) makes the worker ask
//     the phone to re-upload (Rerequester) and download again.
//   - Bounded memory: bytes stream from the CDN through decryption into
//     the object store; a job holds a few fixed buffers (the object store's
//     part buffer dominates), never a whole file.
//
// The package never talks to WhatsApp itself: the session supplies a
// Downloader and a Rerequester. It never decides who owns a profile: the
// caller attaches the profiles it owns, with their fencing tokens.
package media

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/amarula/amarula/msgstore"
	"github.com/amarula/amarula/storage"
	"github.com/amarula/amarula/storage/s3"
)

// NSJobs is the storage namespace of pending media jobs; key = message id.
const NSJobs = "media_job"

// Sentinel errors. Check them with errors.Is.
var (
	// ErrExpired is returned (wrapped) by a Downloader when the CDN no
	// longer has the file (HTTP 404 or 410): the worker then asks the phone
	// to re-upload it.
	ErrExpired = errors.New("media: expired on the CDN")
	// ErrCorrupt is returned (wrapped) when downloaded bytes fail
	// verification (MAC, encrypted or plain SHA-256, length, padding).
	// Such a download is retried, then reported as failed.
	ErrCorrupt = errors.New("media: corrupt download")
	// ErrPermanent marks an error that retrying cannot fix (no media key,
	// unknown kind, the phone no longer has the file). Downloader and
	// Rerequester wrap it; the job fails at once.
	ErrPermanent = errors.New("media: permanent failure")
	// ErrTooLarge is returned when a file exceeds Config.MaxSize.
	ErrTooLarge = errors.New("media: file too large")
)

// Downloader fetches a media file and returns its decrypted plaintext as a
// stream. Verification of what it decrypts (MAC, FileEncSHA256) belongs to
// it: a failure must surface as a Read error wrapping ErrCorrupt, at the
// latest from the Read that would return io.EOF. The worker verifies the
// plaintext's length and SHA-256 itself. A CDN answer of 404/410 is an
// error wrapping ErrExpired; an unfixable one wraps ErrPermanent.
//
// CDN implements it with streaming decryption; the session may adapt
// whatsmeow instead (e.g. DownloadToFile into a temporary file).
type Downloader interface {
	Download(ctx context.Context, m msgstore.Media) (io.ReadCloser, error)
}

// Rerequester asks the sender's phone to re-upload an expired file (a
// whatsmeow media retry receipt, answered by events.MediaRetry) and
// returns the new direct path. It blocks until the phone answers or ctx
// ends. An answer meaning the phone no longer has the file wraps
// ErrPermanent.
type Rerequester interface {
	RequestReupload(ctx context.Context, profile, msgID string, m msgstore.Media) (newDirectPath string, err error)
}

// Messages is the message store as the worker needs it.
type Messages interface {
	// UpdateMessage runs one fenced transaction of profile in which fn may
	// change the stored message msgID (m is nil when no such message is
	// stored) and add writes and events of its own to tx; the
	// implementation then stores *m. Everything commits together or not
	// at all, and the implementation serialises the transaction with its
	// own read-modify-writes of the profile's messages (a reaction landing
	// at the same moment must not be lost). An error from fn aborts the
	// transaction and is returned (wrapped).
	UpdateMessage(ctx context.Context, profile string, token storage.Token, msgID string,
		fn func(tx storage.Tx, m *msgstore.Message) error) error
}

// Store is what the worker needs from the storage seam (storage.Store
// satisfies it): it reads and rewrites jobs between attempts.
type Store interface {
	Get(ctx context.Context, profile, ns, key string) ([]byte, error)
	Put(ctx context.Context, profile string, token storage.Token, ns, key string, value []byte) error
	Scan(ctx context.Context, profile, ns, prefix string) ([]storage.KeyValue, error)
}

// Objects is what the worker needs from the object store (s3.Objects
// satisfies it).
type Objects interface {
	Put(ctx context.Context, key string, r io.Reader, size int64, contentType, sha256hex string) (s3.Info, error)
	Stat(ctx context.Context, key string) (s3.Info, error)
}

// Job states.
const (
	// JobPending: waiting for a worker, at or after NextAt.
	JobPending = "pending"
	// JobRunning: an attempt was started (and may have died with its node).
	JobRunning = "running"
	// JobRetry: the last attempt failed; the next one runs at NextAt.
	JobRetry = "retry"
)

// Job is one pending download, stored as JSON under NSJobs/<message id>.
// It disappears in the transaction that records the outcome.
type Job struct {
	Profile   string         `json:"profile"`
	MessageID string         `json:"message_id"`
	Media     msgstore.Media `json:"media"`
	State     string         `json:"state"`
	Attempts  int            `json:"attempts"`  // attempts started, including ones that died
	Reuploads int            `json:"reuploads"` // media retry requests sent
	NextAt    time.Time      `json:"next_at"`
	LastError string         `json:"last_error,omitempty"`
	CreatedAt time.Time      `json:"created_at"`
}

// Enqueue adds the download job of message msgID to tx. Call it in the
// transaction that stores the message, and only for a message that was not
// a duplicate, then Worker.Notify(profile) after the commit. The
// descriptor must carry what a download needs (DirectPath or URL,
// MediaKey, Kind).
func Enqueue(tx storage.Tx, profile, msgID string, m msgstore.Media) error {
	if err := storage.ValidateProfile(profile); err != nil {
		return fmt.Errorf("media: enqueue: %w", err)
	}
	if err := storage.ValidateKey(msgID); err != nil {
		return fmt.Errorf("media: enqueue %s: %w", profile, err)
	}
	if m.DirectPath == "" && m.URL == "" {
		return fmt.Errorf("media: enqueue %s/%s: %w: descriptor has no direct path or URL", profile, msgID, storage.ErrInvalidArgument)
	}
	now := time.Now().UTC()
	m.State = msgstore.MediaPending
	raw, err := json.Marshal(Job{Profile: profile, MessageID: msgID, Media: m, State: JobPending, NextAt: now, CreatedAt: now})
	if err != nil {
		return fmt.Errorf("media: enqueue %s/%s: %w", profile, msgID, err)
	}
	tx.Put(NSJobs, msgID, raw)
	return nil
}

// ObjectKey is where the file of message msgID of profile is stored:
// media/<profile>/<message-id>. A message id that is not a valid object key
// segment (WhatsApp ids are upper-case hex, so only foreign ids) is
// replaced by "h=" and the hex SHA-256 of the id, which cannot collide
// with a real id ('=' never occurs in one).
func ObjectKey(profile, msgID string) string {
	key := "media/" + profile + "/" + msgID
	if s3.ValidateKey(key) == nil {
		return key
	}
	sum := sha256.Sum256([]byte(msgID))
	return "media/" + profile + "/h=" + hex.EncodeToString(sum[:])
}

// ListJobs returns the pending jobs of profile (for the API and tests).
func ListJobs(ctx context.Context, st Store, profile string) ([]Job, error) {
	kvs, err := st.Scan(ctx, profile, NSJobs, "")
	if err != nil {
		return nil, fmt.Errorf("media: list jobs %s: %w", profile, err)
	}
	jobs := make([]Job, 0, len(kvs))
	for _, kv := range kvs {
		var j Job
		if err := json.Unmarshal(kv.Value, &j); err != nil {
			continue
		}
		jobs = append(jobs, j)
	}
	return jobs, nil
}

// EventData is the payload of media.stored and media.failed events. It
// never carries the descriptor's keys.
type EventData struct {
	ID       string          `json:"id"` // message id
	Chat     string          `json:"chat,omitempty"`
	From     string          `json:"from,omitempty"`
	Media    *msgstore.Media `json:"media"`
	Reason   string          `json:"reason,omitempty"` // media.failed: too_large, expired, corrupt, permanent, attempts_exhausted
	Error    string          `json:"error,omitempty"`
	Attempts int             `json:"attempts"`
}

// publicMedia is m without the download descriptor (keys, paths).
func publicMedia(m msgstore.Media) *msgstore.Media {
	m.URL, m.DirectPath, m.MediaKey, m.FileEncSHA256, m.FileSHA256 = "", "", nil, nil, nil
	return &m
}
