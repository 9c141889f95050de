package phone

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"go.mau.fi/libsignal/ecc"
	"go.mau.fi/libsignal/keys/identity"
	"go.mau.fi/libsignal/keys/prekey"
	"go.mau.fi/libsignal/protocol"
	"go.mau.fi/libsignal/serialize"
	"go.mau.fi/libsignal/session"
	"go.mau.fi/libsignal/util/keyhelper"
	"go.mau.fi/libsignal/util/optional"
	"go.mau.fi/whatsmeow/proto/waE2E"
	"go.mau.fi/whatsmeow/types"
)

// Encryption types of an <enc> node, as whatsmeow writes and reads them.
const (
	// EncTypePreKey is a Signal PreKeySignalMessage: the first messages of a
	// session, before the peer answered.
	EncTypePreKey = "pkmsg"
	// EncTypeMsg is a Signal SignalMessage on an established session.
	EncTypeMsg = "msg"
)

// Sentinel errors. Check them with errors.Is.
var (
	// ErrNoSession means Encrypt was called for a peer without a Signal
	// session: the caller must fetch the peer's bundle and ProcessBundle
	// first.
	ErrNoSession = errors.New("phone: no signal session with peer")
	// ErrUnknownEncType means Decrypt got an enc type other than pkmsg/msg.
	ErrUnknownEncType = errors.New("phone: unknown enc type")
	// ErrBadKey means a public key or signature had the wrong length.
	ErrBadKey = errors.New("phone: malformed key")
	// ErrMalformed means libsignal panicked on its input. libsignal v0.2.1
	// indexes into some parsed fields without checking them (an empty pkmsg
	// panics in its deserializer), and ciphertexts come from untrusted
	// clients, so every call into it is guarded.
	ErrMalformed = errors.New("phone: malformed signal message")
)

// guard turns a panic inside libsignal into ErrMalformed. Use it as
// defer guard(&err, "what").
func guard(err *error, what string) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("%s: %w: %v", what, ErrMalformed, r)
	}
}

// Serializer is the libsignal serializer whatsmeow uses
// (store.SignalProtobufSerializer); ciphertexts and records are in its format.
var Serializer = serialize.NewProtoBufSerializer()

const (
	// preKeyBatch is how many one-time prekeys a Device generates when its
	// pool runs dry. Generation is lazy because a key pair costs an X25519
	// base multiplication, and most simulated phones serve few bundles:
	// creating thousands of phones must stay cheap.
	preKeyBatch = 20
	// signedPreKeyID is the id of the only signed prekey a Device has.
	signedPreKeyID = 1
	// maxPreKeyID keeps prekey ids inside the 3 bytes the wire carries (§4.3).
	maxPreKeyID = 1<<24 - 1
)

// Device is one simulated Signal device (a phone's primary device, device id
// 0, or any other simulated device) with in-memory libsignal stores: an
// identity key pair, a registration id, one signed prekey and a pool of
// one-time prekeys that grows on demand.
//
// Sessions are keyed by the libsignal address of the peer JID
// (types.JID.SignalAddress: user for s.whatsapp.net, user_1 for lid, plus the
// device). The PN and the LID form of one device are therefore different
// peers; the caller must use one form consistently per device.
type Device struct {
	jid types.JID

	// opMu serializes libsignal operations: a ratchet step reads and then
	// writes a session record and must not interleave with another one.
	opMu  sync.Mutex
	store *memStore
}

// NewDevice creates a device for jid with a fresh identity key pair,
// registration id and signed prekey. One-time prekeys are generated on
// demand by TakePreKey (and Bundle), in batches, without limit.
func NewDevice(jid types.JID) (*Device, error) {
	ikp, err := keyhelper.GenerateIdentityKeyPair()
	if err != nil {
		return nil, fmt.Errorf("new device %s: identity key: %w", jid, err)
	}
	spk, err := keyhelper.GenerateSignedPreKey(ikp, signedPreKeyID, Serializer.SignedPreKeyRecord)
	if err != nil {
		return nil, fmt.Errorf("new device %s: signed prekey: %w", jid, err)
	}
	st := newMemStore(ikp, keyhelper.GenerateRegistrationID(), spk)
	return &Device{jid: jid, store: st}, nil
}

// JID returns the device's JID as given to NewDevice.
func (d *Device) JID() types.JID { return d.jid }

// IdentityPub returns the raw 32-byte Curve25519 identity public key.
func (d *Device) IdentityPub() [32]byte {
	return d.store.identity.PublicKey().PublicKey().PublicKey()
}

// identityPriv returns the raw identity private key.
func (d *Device) identityPriv() [32]byte {
	return d.store.identity.PrivateKey().Serialize()
}

// RegistrationID returns the Signal registration id (sent as <registration>).
func (d *Device) RegistrationID() uint32 { return d.store.regID }

// SignedPreKey returns the signed prekey id, raw public key and its XEdDSA
// signature by the identity key over 0x05||pub, exactly as a prekey upload
// (§4.1) or a bundle (§4.3) carries them.
func (d *Device) SignedPreKey() (id uint32, pub [32]byte, sig [64]byte) {
	spk := d.store.spk
	return spk.ID(), spk.KeyPair().PublicKey().PublicKey(), spk.Signature()
}

// TakePreKey hands out a one-time prekey that has not been handed out
// before, for a bundle served to another device. The private half stays in
// the store until a pkmsg consumes it. New prekeys are generated when the
// pool runs dry, so ok is false only if generation failed.
func (d *Device) TakePreKey() (id uint32, pub [32]byte, ok bool) {
	return d.store.takePreKey()
}

// PreKeyCount returns how many already generated one-time prekeys have not
// been handed out yet. It is not a limit: TakePreKey generates more.
func (d *Device) PreKeyCount() int { return d.store.unservedCount() }

// Bundle returns this device's prekey bundle as another device would build
// it from a prekey fetch, consuming one one-time prekey. It is the in-process
// shortcut for two simulated devices; over the wire the server serves the
// same values.
func (d *Device) Bundle() (*prekey.Bundle, error) {
	spkID, spkPub, spkSig := d.SignedPreKey()
	pkID, pkPub, ok := d.TakePreKey()
	if !ok {
		return BundleFrom(d.RegistrationID(), uint32(d.jid.Device), d.IdentityPub(), spkID, spkPub, spkSig, nil, nil)
	}
	return BundleFrom(d.RegistrationID(), uint32(d.jid.Device), d.IdentityPub(), spkID, spkPub, spkSig, &pkID, &pkPub)
}

// BundleFrom builds a libsignal prekey bundle from the raw values a prekey
// fetch response (§4.3) or a retry receipt's <keys> (§6.5) carries. pkID and
// pkPub are both nil when the bundle has no one-time prekey.
func BundleFrom(regID uint32, deviceID uint32, identityPub [32]byte, spkID uint32, spkPub [32]byte, spkSig [64]byte, pkID *uint32, pkPub *[32]byte) (*prekey.Bundle, error) {
	if (pkID == nil) != (pkPub == nil) {
		return nil, fmt.Errorf("bundle: one-time prekey id and key must be given together: %w", ErrBadKey)
	}
	// The one-time key stays an untyped nil interface when absent: a typed
	// nil pointer would not compare equal to nil inside libsignal.
	oneTimeID := optional.NewEmptyUint32()
	var oneTime ecc.ECPublicKeyable
	if pkID != nil {
		oneTimeID = optional.NewOptionalUint32(*pkID)
		oneTime = ecc.NewDjbECPublicKey(*pkPub)
	}
	b := prekey.NewBundle(regID, deviceID, oneTimeID, spkID, oneTime, ecc.NewDjbECPublicKey(spkPub), spkSig,
		identity.NewKey(ecc.NewDjbECPublicKey(identityPub)))
	return b, nil
}

// address returns the libsignal address a peer's session is stored under.
func address(peer types.JID) *protocol.SignalAddress {
	return peer.SignalAddress()
}

// HasSession reports whether the device has a Signal session with peer.
func (d *Device) HasSession(peer types.JID) bool {
	ok, _ := d.store.ContainsSession(context.Background(), address(peer))
	return ok
}

// ProcessBundle starts a new Signal session with peer from its bundle,
// replacing (archiving) any existing one. The identity in the bundle is
// trusted on first use and replaced silently when it changes, like whatsmeow
// with AutoTrustIdentity.
func (d *Device) ProcessBundle(peer types.JID, b *prekey.Bundle) (err error) {
	d.opMu.Lock()
	defer d.opMu.Unlock()
	defer guard(&err, "process bundle")
	addr := address(peer)
	builder := session.NewBuilderFromSignal(d.store, addr, Serializer)
	if err := builder.ProcessBundle(context.Background(), b); err != nil {
		return fmt.Errorf("process bundle of %s: %w", peer, err)
	}
	return nil
}

// Encrypt encrypts plaintext (already padded, see EncodeMessage) for peer
// and returns the <enc> type ("pkmsg" until the peer has answered, then
// "msg") and the serialized Signal message that is the <enc> content.
func (d *Device) Encrypt(peer types.JID, plaintext []byte) (encType string, ciphertext []byte, err error) {
	d.opMu.Lock()
	defer d.opMu.Unlock()
	defer guard(&err, "encrypt")
	addr := address(peer)
	ctx := context.Background()
	if ok, _ := d.store.ContainsSession(ctx, addr); !ok {
		return "", nil, fmt.Errorf("encrypt for %s: %w", peer, ErrNoSession)
	}
	builder := session.NewBuilderFromSignal(d.store, addr, Serializer)
	ct, err := session.NewCipher(builder, addr).Encrypt(ctx, plaintext)
	if err != nil {
		return "", nil, fmt.Errorf("encrypt for %s: %w", peer, err)
	}
	switch ct.Type() {
	case protocol.PREKEY_TYPE:
		encType = EncTypePreKey
	case protocol.WHISPER_TYPE:
		encType = EncTypeMsg
	default:
		return "", nil, fmt.Errorf("encrypt for %s: ciphertext type %d: %w", peer, ct.Type(), ErrUnknownEncType)
	}
	return encType, ct.Serialize(), nil
}

// Decrypt decrypts an <enc> content of type encType ("pkmsg" or "msg") sent
// by peer and returns the padded plaintext (see DecodeMessage). A pkmsg
// creates the session (consuming the referenced one-time prekey).
func (d *Device) Decrypt(peer types.JID, encType string, ciphertext []byte) (plaintext []byte, err error) {
	d.opMu.Lock()
	defer d.opMu.Unlock()
	defer guard(&err, "decrypt")
	addr := address(peer)
	ctx := context.Background()
	builder := session.NewBuilderFromSignal(d.store, addr, Serializer)
	cipher := session.NewCipher(builder, addr)
	switch encType {
	case EncTypePreKey:
		msg, err := protocol.NewPreKeySignalMessageFromBytes(ciphertext, Serializer.PreKeySignalMessage, Serializer.SignalMessage)
		if err != nil {
			return nil, fmt.Errorf("decrypt pkmsg from %s: parse: %w", peer, err)
		}
		pt, err := cipher.DecryptMessage(ctx, msg)
		if err != nil {
			return nil, fmt.Errorf("decrypt pkmsg from %s: %w", peer, err)
		}
		return pt, nil
	case EncTypeMsg:
		msg, err := protocol.NewSignalMessageFromBytes(ciphertext, Serializer.SignalMessage)
		if err != nil {
			return nil, fmt.Errorf("decrypt msg from %s: parse: %w", peer, err)
		}
		if ok, _ := d.store.ContainsSession(ctx, addr); !ok {
			return nil, fmt.Errorf("decrypt msg from %s: %w", peer, ErrNoSession)
		}
		pt, err := cipher.Decrypt(ctx, msg)
		if err != nil {
			return nil, fmt.Errorf("decrypt msg from %s: %w", peer, err)
		}
		return pt, nil
	default:
		return nil, fmt.Errorf("decrypt from %s: %q: %w", peer, encType, ErrUnknownEncType)
	}
}

// EncryptMessage pads and encrypts m for peer (EncodeMessage + Encrypt).
func (d *Device) EncryptMessage(peer types.JID, m *waE2E.Message) (encType string, ciphertext []byte, err error) {
	pt, err := EncodeMessage(m)
	if err != nil {
		return "", nil, fmt.Errorf("encrypt message for %s: %w", peer, err)
	}
	return d.Encrypt(peer, pt)
}

// DecryptMessage decrypts an <enc v="2"> content from peer and decodes the
// waE2E.Message inside (Decrypt + DecodeMessage).
func (d *Device) DecryptMessage(peer types.JID, encType string, ciphertext []byte) (*waE2E.Message, error) {
	pt, err := d.Decrypt(peer, encType, ciphertext)
	if err != nil {
		return nil, err
	}
	m, err := DecodeMessage(pt)
	if err != nil {
		return nil, fmt.Errorf("decrypt message from %s: %w", peer, err)
	}
	return m, nil
}

// DeleteSession forgets the Signal session with peer, e.g. to simulate a
// lost session that a retry receipt must repair.
func (d *Device) DeleteSession(peer types.JID) {
	d.opMu.Lock()
	defer d.opMu.Unlock()
	_ = d.store.DeleteSession(context.Background(), address(peer))
}

// PeerIdentity returns the identity key last seen for peer (from a bundle
// or a pkmsg).
func (d *Device) PeerIdentity(peer types.JID) ([32]byte, bool) {
	return d.store.peerIdentity(address(peer))
}

// PreKeyMessageIdentity returns the sender's identity public key carried in
// a pkmsg, without decrypting it. The server uses it to check a companion's
// <device-identity> (VerifyDeviceIdentity) against the key that really
// encrypted the message.
func PreKeyMessageIdentity(ciphertext []byte) (pub [32]byte, err error) {
	defer guard(&err, "pkmsg identity")
	msg, err := protocol.NewPreKeySignalMessageFromBytes(ciphertext, Serializer.PreKeySignalMessage, Serializer.SignalMessage)
	if err != nil {
		return [32]byte{}, fmt.Errorf("parse pkmsg: %w", err)
	}
	return msg.IdentityKey().PublicKey().PublicKey(), nil
}
