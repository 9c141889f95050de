// Package catalog keeps the desired set of profiles: which profiles exist,
// their webhook configuration, and whether an operator stopped them. Every
// node watches it; the cluster reconciler turns it into running sessions.
//
// Two implementations: Etcd (cluster mode; one JSON key per profile under
// /amarula/<cluster>/profiles/) and Local (single-node mode; entries kept in
// the embedded store, see NewLocal for the layout).
//
// The catalog says what should exist; it never starts, stops or owns
// anything.
package catalog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/amarula/amarula/storage"
)

// Sentinel errors. Check them with errors.Is.
var (
	ErrExists   = errors.New("catalog: profile exists")
	ErrNotFound = errors.New("catalog: profile not found")
	// ErrInvalid wraps every validation failure (bad id, bad webhook URL).
	ErrInvalid = errors.New("catalog: invalid profile")
)

// ReservedID is a profile id the catalog refuses to create: the local
// implementation keeps its entries in the storage scope of this id.
const ReservedID = "amarula-catalog"

// Webhook is where a profile's events are delivered.
type Webhook struct {
	URL    string   `json:"url"`
	Secret string   `json:"secret,omitempty"`
	Events []string `json:"events,omitempty"` // empty: all events
}

// Profile is one entry of the catalog.
type Profile struct {
	ID        string    `json:"id"`
	Webhook   *Webhook  `json:"webhook,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	// Stopped is set by an operator: the profile exists but no node may run
	// its session.
	Stopped bool `json:"stopped,omitempty"`
	// Pin names the node an operator moved the profile to (POST
	// /v1/profiles/{id}/move): placement ranks it first while it is
	// eligible, and falls back to normal placement while it is not.
	Pin string `json:"pin,omitempty"`
}

// Validate checks the id (storage.ValidateProfile, not ReservedID) and
// the webhook URL (absolute http or https).
func (p *Profile) Validate() error {
	if err := ValidateID(p.ID); err != nil {
		return err
	}
	if strings.ContainsAny(p.Pin, "/ ") || len(p.Pin) > 253 {
		return fmt.Errorf("%w: pin %q is not a node name", ErrInvalid, p.Pin)
	}
	if p.Webhook != nil {
		u, err := url.Parse(p.Webhook.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("%w: webhook url %q must be an absolute http(s) URL", ErrInvalid, p.Webhook.URL)
		}
	}
	return nil
}

// ValidateID checks a profile id for use in the catalog.
func ValidateID(id string) error {
	if err := storage.ValidateProfile(id); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if id == ReservedID {
		return fmt.Errorf("%w: %q is reserved", ErrInvalid, id)
	}
	return nil
}

// ChangeType says what a Change is.
type ChangeType uint8

const (
	// Put: a profile was created or updated; Change.Profile is set.
	Put ChangeType = iota + 1
	// Delete: a profile was deleted; only Change.ID is set.
	Delete
	// Reset: the watcher may have missed changes (history compacted, queue
	// overflow); re-read the whole catalog with List.
	Reset
)

func (t ChangeType) String() string {
	switch t {
	case Put:
		return "put"
	case Delete:
		return "delete"
	case Reset:
		return "reset"
	}
	return fmt.Sprintf("ChangeType(%d)", uint8(t))
}

// Change is one event of Watch.
type Change struct {
	Type    ChangeType
	ID      string
	Profile *Profile // Put only
}

// Catalog is the desired set of profiles.
type Catalog interface {
	// Create adds p (CreatedAt is set if zero); ErrExists if the id is taken.
	Create(ctx context.Context, p Profile) error
	// Get returns the profile or ErrNotFound.
	Get(ctx context.Context, id string) (Profile, error)
	// List returns every profile, sorted by id.
	List(ctx context.Context) ([]Profile, error)
	// Update applies fn to the stored profile and writes the result
	// atomically (fn may run more than once under contention). fn must not
	// change the id. An error from fn aborts the update and is returned.
	Update(ctx context.Context, id string, fn func(*Profile) error) error
	// Delete removes the profile; ErrNotFound if absent.
	Delete(ctx context.Context, id string) error
	// Watch streams every change made after it is called until ctx is
	// done, then closes the channel. A Reset means "re-read with List".
	Watch(ctx context.Context) <-chan Change
}

func encode(p Profile) ([]byte, error) {
	b, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("encode profile %s: %w", p.ID, err)
	}
	return b, nil
}

func decode(b []byte) (Profile, error) {
	var p Profile
	if err := json.Unmarshal(b, &p); err != nil {
		return Profile{}, fmt.Errorf("decode profile: %w", err)
	}
	return p, nil
}

// prepareCreate validates p and stamps CreatedAt.
func prepareCreate(p Profile) (Profile, []byte, error) {
	if err := p.Validate(); err != nil {
		return p, nil, err
	}
	if p.CreatedAt.IsZero() {
		p.CreatedAt = time.Now().UTC().Truncate(time.Millisecond)
	}
	b, err := encode(p)
	return p, b, err
}

// applyUpdate runs fn on a decoded copy and re-validates.
func applyUpdate(id string, cur []byte, fn func(*Profile) error) (Profile, []byte, error) {
	p, err := decode(cur)
	if err != nil {
		return p, nil, err
	}
	if err := fn(&p); err != nil {
		return p, nil, err
	}
	if p.ID != id {
		return p, nil, fmt.Errorf("%w: update must not change the id (%s → %s)", ErrInvalid, id, p.ID)
	}
	if err := p.Validate(); err != nil {
		return p, nil, err
	}
	b, err := encode(p)
	return p, b, err
}
