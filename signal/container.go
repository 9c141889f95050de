// Package signal implements whatsmeow's store interfaces (identity keys,
// Signal sessions, prekeys, sender keys, app state, contacts, chat settings,
// message secrets, privacy tokens, the decrypted-event buffer, the LID map
// and the device itself) over the profile-scoped storage seam.
//
// A Container serves exactly one profile and writes with exactly one fencing
// token: once a newer owner raised the profile's fence, every write fails
// with an error wrapping storage.ErrFenced and the session must stop.
//
// The package owns the layout of the credential and Signal namespaces (see
// docs/signal.md); it never touches the messages namespace or the event log,
// and it starts no goroutines.
package signal

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	mathRand "math/rand/v2"
	"sync"

	"go.mau.fi/whatsmeow/store"
	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/util/keys"
	waLog "go.mau.fi/whatsmeow/util/log"

	"github.com/amarula/amarula/storage"
)

var (
	// ErrDeviceIDMustBeSet is returned by PutDevice and DeleteDevice for a
	// device whose JID is not known yet (before pairing), as in sqlstore.
	ErrDeviceIDMustBeSet = errors.New("signal: device JID must be known before saving")
	// ErrInvalidValue is returned when a stored value cannot be decoded.
	ErrInvalidValue = errors.New("signal: invalid stored value")
)

// credentialNamespaces are the namespaces Wipe clears: creds last, so an
// interrupted wipe leaves a device that still looks paired and is wiped
// again on its next 401, never Signal state under fresh credentials.
var credentialNamespaces = []string{
	storage.NSSession,
	storage.NSIdentity,
	storage.NSPrekey,
	storage.NSSenderKey,
	storage.NSLIDMapping,
	storage.NSDeviceList,
	storage.NSAppStateSyncKey,
	storage.NSAppStateVersion,
	storage.NSAppStateMutationMAC,
	storage.NSContacts,
	storage.NSChatSettings,
	storage.NSMsgSecret,
	storage.NSPrivacyToken,
	storage.NSEventBuffer,
	storage.NSCreds,
}

// Container is the whatsmeow device container of one profile, writing with
// one fencing token. It implements store.DeviceContainer. It is safe for
// concurrent use; every device it returns shares its stores and caches.
type Container struct {
	b      *kv
	log    waLog.Logger
	stores *profileStore
	lids   *lidMap
}

var _ store.DeviceContainer = (*Container)(nil)

// New returns the Container of profile on st, writing with token. log may be
// nil. It fails with storage.ErrInvalidProfile for a malformed profile id.
func New(st storage.Store, profile string, token storage.Token, log waLog.Logger) (*Container, error) {
	if err := storage.ValidateProfile(profile); err != nil {
		return nil, fmt.Errorf("signal: new container: %w", err)
	}
	if st == nil {
		return nil, errors.New("signal: new container: nil store")
	}
	if log == nil {
		log = waLog.Noop
	}
	b := newKV(st, profile, token)
	lids := newLIDMap(b)
	return &Container{
		b:    b,
		log:  log,
		lids: lids,
		stores: &profileStore{
			b:        b,
			log:      log,
			lids:     lids,
			contacts: make(map[types.JID]types.ContactInfo),
			migrated: make(map[string]struct{}),
		},
	}, nil
}

// Token returns the fencing token this Container writes with.
func (c *Container) Token() storage.Token { return c.b.token }

// Fenced returns a channel that is closed once any write of this Container
// was refused with storage.ErrFenced: a newer owner holds the profile. The
// error is also returned (wrapped) by the failing call, but whatsmeow logs
// and drops most store errors, so the session should watch this channel and
// stop as soon as it is closed.
func (c *Container) Fenced() <-chan struct{} { return c.b.fenced }

// Profile returns the profile this Container serves.
func (c *Container) Profile() string { return c.b.profile }

// GetDevice returns the profile's saved device with every store wired to
// this Container, or, when none is saved, a fresh unpaired device with new
// noise, identity and signed prekeys, registration id and ADV secret (as
// sqlstore's NewDevice), also wired. A fresh device is persisted by the
// first Save after pairing.
func (c *Container) GetDevice(ctx context.Context) (*store.Device, error) {
	v, ok, err := c.b.get(ctx, storage.NSCreds, storage.CredsKey)
	if err != nil {
		return nil, fmt.Errorf("signal: load device of %s: %w", c.b.profile, err)
	}
	if !ok {
		return c.newDevice(), nil
	}
	d, err := decodeCreds(v)
	if err != nil {
		return nil, fmt.Errorf("signal: load device of %s: %w", c.b.profile, err)
	}
	c.wire(d)
	return d, nil
}

func (c *Container) newDevice() *store.Device {
	adv := make([]byte, 32)
	_, _ = rand.Read(adv) // crypto/rand.Read never fails (Go ≥ 1.24)
	d := &store.Device{
		NoiseKey:       keys.NewKeyPair(),
		IdentityKey:    keys.NewKeyPair(),
		RegistrationID: mathRand.Uint32(),
		AdvSecretKey:   adv,
	}
	d.SignedPreKey = d.IdentityKey.CreateSignedPreKey(1)
	c.wire(d)
	return d
}

// wire points every store of d at this Container.
func (c *Container) wire(d *store.Device) {
	d.Log = c.log
	d.Identities = c.stores
	d.Sessions = c.stores
	d.PreKeys = c.stores
	d.SenderKeys = c.stores
	d.AppStateKeys = c.stores
	d.AppState = c.stores
	d.Contacts = c.stores
	d.ChatSettings = c.stores
	d.MsgSecrets = c.stores
	d.PrivacyTokens = c.stores
	d.EventBuffer = c.stores
	d.LIDs = c.lids
	d.Container = c
	d.Initialized = true
}

// PutDevice saves device as the profile's credentials (creds/self). whatsmeow
// calls it through Device.Save after pairing and whenever its identity
// details change.
func (c *Container) PutDevice(ctx context.Context, device *store.Device) error {
	v, err := encodeCreds(device)
	if err != nil {
		return err
	}
	if err := c.b.put(ctx, storage.NSCreds, storage.CredsKey, v); err != nil {
		return fmt.Errorf("signal: save device: %w", err)
	}
	if !device.Initialized {
		c.wire(device)
	}
	return nil
}

// DeleteDevice forgets the device and, as sqlstore's cascading delete does,
// all Signal state that belongs to it: it is Wipe.
func (c *Container) DeleteDevice(ctx context.Context, device *store.Device) error {
	if device.ID == nil {
		return ErrDeviceIDMustBeSet
	}
	return c.Wipe(ctx)
}

// Wipe clears the profile's credentials and every Signal namespace (used on
// 401 logout), leaving messages, the event log and consumer cursors alone,
// and drops the in-memory caches.
func (c *Container) Wipe(ctx context.Context) error {
	for _, ns := range credentialNamespaces {
		if err := c.b.st.ClearNamespace(ctx, c.b.profile, c.b.token, ns); err != nil {
			return c.b.checkFenced(fmt.Errorf("signal: wipe %s of %s: %w", ns, c.b.profile, err))
		}
	}
	c.lids.reset()
	c.stores.reset()
	return nil
}

// profileStore implements store.AllSessionSpecificStores for one profile.
type profileStore struct {
	b    *kv
	log  waLog.Logger
	lids *lidMap

	preKeyMu   sync.Mutex // GetOrGenPreKeys/GenOnePreKey/Mark… are read-modify-write
	appStateMu sync.Mutex
	chatMu     sync.Mutex

	contactMu sync.Mutex
	contacts  map[types.JID]types.ContactInfo

	migratedMu sync.Mutex
	migrated   map[string]struct{}
}

var _ store.AllSessionSpecificStores = (*profileStore)(nil)

// reset drops the in-memory caches (after a wipe).
func (s *profileStore) reset() {
	s.contactMu.Lock()
	s.contacts = make(map[types.JID]types.ContactInfo)
	s.contactMu.Unlock()
	s.migratedMu.Lock()
	s.migrated = make(map[string]struct{})
	s.migratedMu.Unlock()
}
