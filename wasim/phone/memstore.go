package phone

import (
	"context"
	"fmt"
	"sync"

	"go.mau.fi/libsignal/ecc"
	groupRecord "go.mau.fi/libsignal/groups/state/record"
	"go.mau.fi/libsignal/keys/identity"
	"go.mau.fi/libsignal/protocol"
	"go.mau.fi/libsignal/state/record"
	"go.mau.fi/libsignal/state/store"
)

// memStore is an in-memory libsignal store (store.SignalProtocol).
//
// Sessions and sender keys are kept serialized, like whatsmeow's sqlstore:
// libsignal mutates records in place while it tries to decrypt, and a failed
// attempt must not leave a half-advanced ratchet behind.
type memStore struct {
	identity *identity.KeyPair
	regID    uint32
	spk      *record.SignedPreKey

	mu         sync.Mutex
	preKeys    map[uint32]*record.PreKey
	unserved   []uint32 // generated prekey ids not handed out yet, oldest first
	nextPreKey uint32
	sessions   map[string][]byte
	identities map[string][32]byte
	senderKeys map[string][]byte
}

var _ store.SignalProtocol = (*memStore)(nil)

func newMemStore(ikp *identity.KeyPair, regID uint32, spk *record.SignedPreKey) *memStore {
	return &memStore{
		identity:   ikp,
		regID:      regID,
		spk:        spk,
		preKeys:    make(map[uint32]*record.PreKey),
		nextPreKey: 1,
		sessions:   make(map[string][]byte),
		identities: make(map[string][32]byte),
		senderKeys: make(map[string][]byte),
	}
}

func (s *memStore) generatePreKeysLocked(n int) error {
	start := s.nextPreKey
	if int(start)+n-1 > maxPreKeyID {
		// Wrap around like real clients do; ids of long-consumed keys are
		// reused.
		start = 1
	}
	// keyhelper.GeneratePreKeys treats its second argument as the last id,
	// not a count, so generate the pairs directly.
	for id := start; id < start+uint32(n); id++ {
		kp, err := ecc.GenerateKeyPair()
		if err != nil {
			return fmt.Errorf("generate prekey %d: %w", id, err)
		}
		s.preKeys[id] = record.NewPreKey(id, kp, Serializer.PreKeyRecord)
		s.unserved = append(s.unserved, id)
	}
	s.nextPreKey = start + uint32(n)
	return nil
}

func (s *memStore) takePreKey() (uint32, [32]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		if len(s.unserved) == 0 {
			if err := s.generatePreKeysLocked(preKeyBatch); err != nil {
				return 0, [32]byte{}, false
			}
		}
		id := s.unserved[0]
		s.unserved = s.unserved[1:]
		if k, ok := s.preKeys[id]; ok {
			return id, k.KeyPair().PublicKey().PublicKey(), true
		}
	}
}

func (s *memStore) unservedCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.unserved)
}

func (s *memStore) peerIdentity(addr *protocol.SignalAddress) ([32]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k, ok := s.identities[addr.String()]
	return k, ok
}

// GetIdentityKeyPair implements store.IdentityKey.
func (s *memStore) GetIdentityKeyPair() *identity.KeyPair { return s.identity }

// GetLocalRegistrationID implements store.IdentityKey.
func (s *memStore) GetLocalRegistrationID() uint32 { return s.regID }

// SaveIdentity implements store.IdentityKey.
func (s *memStore) SaveIdentity(_ context.Context, addr *protocol.SignalAddress, key *identity.Key) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.identities[addr.String()] = key.PublicKey().PublicKey()
	return nil
}

// IsTrustedIdentity implements store.IdentityKey. The simulated phone trusts
// every identity, which is what whatsmeow does with AutoTrustIdentity after
// it clears a changed identity; SaveIdentity records the latest key.
func (s *memStore) IsTrustedIdentity(context.Context, *protocol.SignalAddress, *identity.Key) (bool, error) {
	return true, nil
}

// LoadPreKey implements store.PreKey.
func (s *memStore) LoadPreKey(_ context.Context, id uint32) (*record.PreKey, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k, ok := s.preKeys[id]
	if !ok {
		return nil, fmt.Errorf("prekey %d not found", id)
	}
	return k, nil
}

// StorePreKey implements store.PreKey.
func (s *memStore) StorePreKey(_ context.Context, id uint32, k *record.PreKey) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.preKeys[id] = k
	return nil
}

// ContainsPreKey implements store.PreKey.
func (s *memStore) ContainsPreKey(_ context.Context, id uint32) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.preKeys[id]
	return ok, nil
}

// RemovePreKey implements store.PreKey.
func (s *memStore) RemovePreKey(_ context.Context, id uint32) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.preKeys, id)
	return nil
}

// LoadSignedPreKey implements store.SignedPreKey.
func (s *memStore) LoadSignedPreKey(_ context.Context, id uint32) (*record.SignedPreKey, error) {
	if id != s.spk.ID() {
		return nil, fmt.Errorf("signed prekey %d not found", id)
	}
	return s.spk, nil
}

// LoadSignedPreKeys implements store.SignedPreKey.
func (s *memStore) LoadSignedPreKeys(context.Context) ([]*record.SignedPreKey, error) {
	return []*record.SignedPreKey{s.spk}, nil
}

// StoreSignedPreKey implements store.SignedPreKey; a Device keeps one signed
// prekey for life, so this is refused.
func (s *memStore) StoreSignedPreKey(context.Context, uint32, *record.SignedPreKey) error {
	return fmt.Errorf("store signed prekey: not supported by the simulated phone")
}

// ContainsSignedPreKey implements store.SignedPreKey.
func (s *memStore) ContainsSignedPreKey(_ context.Context, id uint32) (bool, error) {
	return id == s.spk.ID(), nil
}

// RemoveSignedPreKey implements store.SignedPreKey.
func (s *memStore) RemoveSignedPreKey(context.Context, uint32) error {
	return fmt.Errorf("remove signed prekey: not supported by the simulated phone")
}

// LoadSession implements store.Session. Unknown addresses get a fresh
// record, as libsignal requires.
func (s *memStore) LoadSession(_ context.Context, addr *protocol.SignalAddress) (*record.Session, error) {
	s.mu.Lock()
	raw, ok := s.sessions[addr.String()]
	s.mu.Unlock()
	if !ok {
		return record.NewSession(Serializer.Session, Serializer.State), nil
	}
	rec, err := record.NewSessionFromBytes(raw, Serializer.Session, Serializer.State)
	if err != nil {
		return nil, fmt.Errorf("load session %s: %w", addr, err)
	}
	return rec, nil
}

// GetSubDeviceSessions implements store.Session.
func (s *memStore) GetSubDeviceSessions(_ context.Context, name string) ([]uint32, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []uint32
	for i := uint32(0); i < 100; i++ {
		if _, ok := s.sessions[protocol.NewSignalAddress(name, i).String()]; ok {
			out = append(out, i)
		}
	}
	return out, nil
}

// StoreSession implements store.Session.
func (s *memStore) StoreSession(_ context.Context, addr *protocol.SignalAddress, rec *record.Session) error {
	raw := rec.Serialize()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sessions[addr.String()] = raw
	return nil
}

// ContainsSession implements store.Session.
func (s *memStore) ContainsSession(_ context.Context, addr *protocol.SignalAddress) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.sessions[addr.String()]
	return ok, nil
}

// DeleteSession implements store.Session.
func (s *memStore) DeleteSession(_ context.Context, addr *protocol.SignalAddress) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.sessions, addr.String())
	return nil
}

// DeleteAllSessions implements store.Session.
func (s *memStore) DeleteAllSessions(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sessions = make(map[string][]byte)
	return nil
}

func senderKeyID(name *protocol.SenderKeyName) string {
	return name.GroupID() + "\x00" + name.Sender().String()
}

// StoreSenderKey implements groups/state/store.SenderKey.
func (s *memStore) StoreSenderKey(_ context.Context, name *protocol.SenderKeyName, rec *groupRecord.SenderKey) error {
	raw := rec.Serialize()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.senderKeys[senderKeyID(name)] = raw
	return nil
}

// LoadSenderKey implements groups/state/store.SenderKey. Unknown names get a
// fresh record, as libsignal requires.
func (s *memStore) LoadSenderKey(_ context.Context, name *protocol.SenderKeyName) (*groupRecord.SenderKey, error) {
	s.mu.Lock()
	raw, ok := s.senderKeys[senderKeyID(name)]
	s.mu.Unlock()
	if !ok {
		return groupRecord.NewSenderKey(Serializer.SenderKeyRecord, Serializer.SenderKeyState), nil
	}
	rec, err := groupRecord.NewSenderKeyFromBytes(raw, Serializer.SenderKeyRecord, Serializer.SenderKeyState)
	if err != nil {
		return nil, fmt.Errorf("load sender key %s: %w", senderKeyID(name), err)
	}
	return rec, nil
}
