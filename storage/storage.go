// Package storage is the profile-scoped persistence seam of Amarula.
//
// Every piece of state the gateway keeps — WhatsApp credentials, Signal
// ratchets, sender keys, messages, the per-profile event log and webhook
// cursors — goes through the interfaces declared here, scoped by profile id.
// Adapters (storage/bolt, storage/redis) implement them and prove it by
// running the conformance suite in storage/storagetest.
//
// Two rules hold for every adapter:
//
//   - Fencing: every mutating call carries the caller's fencing token (see
//     package lease). A write whose token is lower than the profile's current
//     fence is refused with ErrFenced atomically with the write: nothing of a
//     refused batch lands.
//   - Values are opaque bytes. The only place the seam looks inside a value is
//     ListProfilesWithMetadata, which reads the JSON summary kept in creds/self.
//
// This package imports nothing of ours and must never do so.
package storage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"time"
)

// Sentinel errors returned by adapters. Check them with errors.Is.
var (
	// ErrNotFound is returned by Get on a miss. A corrupt or undecodable
	// entry is reported as ErrNotFound too.
	ErrNotFound = errors.New("storage: not found")
	// ErrFenced is returned when a write carries a fencing token lower than
	// the profile's current fence: another owner has taken the profile.
	ErrFenced = errors.New("storage: write fenced by a newer owner")
	// ErrInvalidProfile is returned for a profile id that does not match
	// ProfileIDPattern. No storage is touched.
	ErrInvalidProfile = errors.New("storage: invalid profile id")
	// ErrInvalidArgument is returned for an empty or malformed namespace,
	// key, cursor or consumer name.
	ErrInvalidArgument = errors.New("storage: invalid argument")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("storage: closed")
)

// Token is a fencing token: the etcd create revision of the owner key (or
// the local lease's counter in single-node mode). Strictly increasing across
// successive owners of a profile. Zero means "no fence has been raised".
// It is an alias so that package lease, which imports nothing of ours, can
// declare the same method signatures with plain uint64.
type Token = uint64

// Namespaces used by the gateway. Adapters accept any namespace that matches
// NamespacePattern; these are the ones with a fixed meaning.
const (
	NSCreds               = "creds" // key "self": device credentials (JSON, see CredsSummary)
	NSSession             = "session"
	NSIdentity            = "identity"
	NSPrekey              = "prekey"
	NSSenderKey           = "sender_key"
	NSLIDMapping          = "lid_mapping"
	NSDeviceList          = "device_list"
	NSAppStateSyncKey     = "app_state_sync_key"
	NSAppStateVersion     = "app_state_version"
	NSAppStateMutationMAC = "app_state_mutation_mac"
	NSContacts            = "contacts"
	NSChatSettings        = "chat_settings"
	NSMsgSecret           = "msg_secret"
	NSPrivacyToken        = "privacy_token"
	NSEventBuffer         = "event_buffer"
)

// CredsKey is the key of the credentials singleton in NSCreds.
const CredsKey = "self"

// ProfileIDPattern is the only accepted shape of a profile id.
var ProfileIDPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// NamespacePattern is the accepted shape of a namespace name.
var NamespacePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_]{0,62}$`)

// MaxKeyLen bounds the length of a key inside a namespace.
const MaxKeyLen = 1024

// ValidateProfile reports whether id is an acceptable profile id. It is
// called at every entry point before anything else.
func ValidateProfile(id string) error {
	if !ProfileIDPattern.MatchString(id) {
		return fmt.Errorf("%w: %q must match %s", ErrInvalidProfile, truncate(id, 80), ProfileIDPattern)
	}
	return nil
}

// ValidateNamespace reports whether ns is an acceptable namespace name.
func ValidateNamespace(ns string) error {
	if !NamespacePattern.MatchString(ns) {
		return fmt.Errorf("%w: namespace %q must match %s", ErrInvalidArgument, truncate(ns, 80), NamespacePattern)
	}
	return nil
}

// ValidateKey reports whether key is an acceptable key: non-empty, at most
// MaxKeyLen bytes. Keys are otherwise opaque (they may contain ':' or '@').
func ValidateKey(key string) error {
	if key == "" || len(key) > MaxKeyLen {
		return fmt.Errorf("%w: key must be 1..%d bytes, got %d", ErrInvalidArgument, MaxKeyLen, len(key))
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// Entry is one write of a batch: a put, or a delete when Delete is set.
type Entry struct {
	NS     string
	Key    string
	Value  []byte
	Delete bool
}

// KeyValue is one result of Scan.
type KeyValue struct {
	Key   string
	Value []byte
}

// ProfileInfo is a profile plus the identity summary read from creds/self.
// Fields are empty while the profile has no usable credentials (mid-pairing).
type ProfileInfo struct {
	Profile  string `json:"profile"`
	JID      string `json:"jid,omitempty"`
	LID      string `json:"lid,omitempty"`
	PushName string `json:"push_name,omitempty"`
}

// CredsSummary is the part of the creds/self value that the seam may read.
// Whoever writes creds/self (package signal) stores a JSON object that
// carries at least these fields at top level.
type CredsSummary struct {
	JID      string `json:"jid,omitempty"`
	LID      string `json:"lid,omitempty"`
	PushName string `json:"push_name,omitempty"`
}

// ParseCredsSummary extracts the summary from a creds/self value. A value
// that is not a JSON object yields an empty summary, never an error: the
// seam treats undecodable values as a miss.
func ParseCredsSummary(value []byte) CredsSummary {
	var s CredsSummary
	if err := json.Unmarshal(value, &s); err != nil {
		return CredsSummary{}
	}
	return s
}

// KV is the profile-scoped key/value store.
type KV interface {
	// Get returns the value or ErrNotFound (also for a corrupt entry).
	Get(ctx context.Context, profile, ns, key string) ([]byte, error)
	// GetMany returns the values that exist among keys; misses are absent.
	GetMany(ctx context.Context, profile, ns string, keys []string) (map[string][]byte, error)
	// Put stores value, overwriting any prior value.
	Put(ctx context.Context, profile string, token Token, ns, key string, value []byte) error
	// PutMany applies every entry atomically: all land or none does.
	PutMany(ctx context.Context, profile string, token Token, entries []Entry) error
	// Delete removes a key; a missing key is not an error.
	Delete(ctx context.Context, profile string, token Token, ns, key string) error
	// Scan returns every entry of ns whose key starts with prefix, sorted by key.
	Scan(ctx context.Context, profile, ns, prefix string) ([]KeyValue, error)
	// ClearNamespace removes every key of one namespace of the profile.
	ClearNamespace(ctx context.Context, profile string, token Token, ns string) error
	// Clear wipes every namespace, the event log and the consumer cursors of
	// the profile. The fence survives, so a zombie cannot write afterwards.
	Clear(ctx context.Context, profile string, token Token) error
	// ListProfiles lists every profile that has data — at least one key/value
	// entry, or an event log since its last Clear — in unspecified order. A
	// fence or consumer cursors alone do not list a profile.
	ListProfiles(ctx context.Context) ([]string, error)
	// ListProfilesWithMetadata is ListProfiles plus the creds/self summary.
	ListProfilesWithMetadata(ctx context.Context) ([]ProfileInfo, error)
}

// Fencer keeps each profile's fence: the lowest token still allowed to write.
type Fencer interface {
	// RaiseFence sets the profile's fence to token. It fails with ErrFenced
	// if the fence is already higher; raising to the current value is a no-op.
	RaiseFence(ctx context.Context, profile string, token Token) error
	// Fence returns the profile's current fence (0 if never raised).
	Fence(ctx context.Context, profile string) (Token, error)
}

// Tx is the view a Txn callback gets. Writes are buffered and committed as
// one fenced batch when the callback returns nil; reads see the buffered
// writes first (read-your-writes) and fall through to the store otherwise.
// A Tx gives atomic commit, not serializable isolation: callers that need
// exclusion between concurrent transactions on the same keys must provide
// it (whatsmeow serialises decryption per client).
type Tx interface {
	Get(ctx context.Context, ns, key string) ([]byte, error)
	Put(ns, key string, value []byte)
	Delete(ns, key string)
	// Append adds an event to the profile's log as part of the commit.
	Append(typ string, data []byte)
}

// Txner runs atomic transactions.
type Txner interface {
	// Txn runs fn and commits its writes (and appended events) atomically
	// with the fence check. If fn returns an error nothing is written and
	// that error is returned. The cursors of appended events are returned in
	// append order.
	Txn(ctx context.Context, profile string, token Token, fn func(tx Tx) error) ([]string, error)
}

// Event is one record of a profile's event log.
type Event struct {
	// Cursor identifies the event; it is opaque to callers and orders events
	// of one profile.
	Cursor string
	Type   string
	Time   time.Time
	Data   []byte
}

// EventLog is the durable, ordered, per-profile event log with consumer
// cursors (used by webhooks and WebSocket replay).
type EventLog interface {
	// Append adds an event and returns its cursor.
	Append(ctx context.Context, profile string, token Token, typ string, data []byte) (string, error)
	// Read returns up to limit events strictly after the cursor ("" or "0"
	// reads from the start of the retained log). limit <= 0 means
	// DefaultReadLimit; larger limits are capped at MaxReadLimit. A cursor
	// that was trimmed by retention reads from the oldest retained event.
	Read(ctx context.Context, profile, after string, limit int) ([]Event, error)
	// Tail is Read that blocks until at least one event exists after the
	// cursor or ctx is done (then it returns ctx.Err()).
	Tail(ctx context.Context, profile, after string, limit int) ([]Event, error)
	// LastCursor returns the cursor of the newest event, or "0" when empty.
	LastCursor(ctx context.Context, profile string) (string, error)
	// Ack records that consumer has processed everything up to cursor.
	Ack(ctx context.Context, profile string, token Token, consumer, cursor string) error
	// Cursor returns the consumer's last acknowledged cursor, "0" if none.
	Cursor(ctx context.Context, profile, consumer string) (string, error)
}

// Store is everything an adapter provides.
type Store interface {
	KV
	Fencer
	Txner
	EventLog
	// Ping checks that the backend is reachable (used by /readyz).
	Ping(ctx context.Context) error
	Close() error
}

// Retention bounds the event log of each profile. Adapters apply it on
// every append; zero fields mean the DefaultRetention value (see
// WithDefaults) and a negative field disables that bound.
type Retention struct {
	MaxAge    time.Duration // default 7 days
	MaxEvents int           // default 100,000
}

// DefaultRetention is the retention used when none is configured.
func DefaultRetention() Retention {
	return Retention{MaxAge: 7 * 24 * time.Hour, MaxEvents: 100_000}
}
