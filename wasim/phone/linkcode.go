package phone

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
)

// Constants of link-code pairing, from whatsmeow pair-code.go.
const (
	// linkCodeAlphabet is the base32 alphabet of pairing codes.
	linkCodeAlphabet = "123456789ABCDEFGHJKLMNPQRSTVWXYZ"
	// linkCodeIterations is PBKDF2's iteration count (2<<16 in whatsmeow).
	linkCodeIterations = 2 << 16
	// WrappedKeyLen is the length of a wrapped ephemeral key:
	// salt(32) | iv(16) | AES-CTR(pub)(32).
	WrappedKeyLen = 80
	keyBundleInfo = "link_code_pairing_key_bundle_encryption_key"
	advSecretInfo = "adv_secret"
)

// ErrBadLinkCode means a pairing code is malformed, or the companion's key
// bundle did not decrypt (which is what a wrong code looks like: both sides
// derive different shared secrets).
var ErrBadLinkCode = errors.New("phone: link code pairing failed")

// LinkCode is the primary phone's half of one phone-code pairing (§3.6,
// pair-code.go), between the user typing the code and the companion's
// companion_finish. Server flow:
//
//  1. companion_hello arrives with link_code_pairing_wrapped_companion_ephemeral_pub;
//     the server keeps it per phone number and answers with a pairing ref.
//  2. The user types the code: StartLinkCode(code, wrapped) returns the
//     LinkCode and link_code_pairing_wrapped_primary_ephemeral_pub; the
//     server sends the link_code_companion_reg notification with it, the ref
//     and primary_identity_pub = PrimaryIdentityPub().
//  3. companion_finish arrives: Finish(link_code_pairing_wrapped_key_bundle,
//     companion_identity_public) returns the ADV secret; the server then
//     calls SignCompanion(companionIdentityPub, advSecret, …) and sends
//     <pair-success> as for a QR.
type LinkCode struct {
	d                  *Device
	ephemeral          *ecdh.PrivateKey
	companionEphemeral *ecdh.PublicKey
}

// NormalizeLinkCode turns what a user typed ("abcd-efgh") into the
// 8-character code the key derivation uses ("ABCDEFGH").
func NormalizeLinkCode(code string) (string, error) {
	c := strings.ToUpper(strings.NewReplacer("-", "", " ", "").Replace(code))
	if len(c) != 8 {
		return "", fmt.Errorf("link code %q: want 8 characters: %w", code, ErrBadLinkCode)
	}
	for _, r := range c {
		if !strings.ContainsRune(linkCodeAlphabet, r) {
			return "", fmt.Errorf("link code %q: character %q: %w", code, r, ErrBadLinkCode)
		}
	}
	return c, nil
}

// linkCodeCipher returns the AES-CTR stream keyed by PBKDF2(code, salt).
func linkCodeCipher(code string, salt, iv []byte) (cipher.Stream, error) {
	key, err := pbkdf2.Key(sha256.New, code, salt, linkCodeIterations, 32)
	if err != nil {
		return nil, fmt.Errorf("link code key: %w", err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("link code cipher: %w", err)
	}
	return cipher.NewCTR(block, iv), nil
}

// WrapLinkCodeKey wraps a 32-byte public key with a pairing code the way
// both sides of link-code pairing do: salt | iv | AES-CTR(PBKDF2(code,
// salt), iv)(pub), 80 bytes.
func WrapLinkCodeKey(code string, pub []byte) ([]byte, error) {
	c, err := NormalizeLinkCode(code)
	if err != nil {
		return nil, err
	}
	if len(pub) != 32 {
		return nil, fmt.Errorf("wrap link code key: %d bytes: %w", len(pub), ErrBadKey)
	}
	out := make([]byte, WrappedKeyLen)
	_, _ = rand.Read(out[:48])
	stream, err := linkCodeCipher(c, out[0:32], out[32:48])
	if err != nil {
		return nil, err
	}
	stream.XORKeyStream(out[48:], pub)
	return out, nil
}

// UnwrapLinkCodeKey reverses WrapLinkCodeKey. A wrong code yields a
// different, well-formed key; only a later step can tell.
func UnwrapLinkCodeKey(code string, wrapped []byte) ([]byte, error) {
	c, err := NormalizeLinkCode(code)
	if err != nil {
		return nil, err
	}
	if len(wrapped) != WrappedKeyLen {
		return nil, fmt.Errorf("unwrap link code key: %d bytes, want %d: %w", len(wrapped), WrappedKeyLen, ErrBadKey)
	}
	stream, err := linkCodeCipher(c, wrapped[0:32], wrapped[32:48])
	if err != nil {
		return nil, err
	}
	pub := make([]byte, 32)
	stream.XORKeyStream(pub, wrapped[48:])
	return pub, nil
}

// StartLinkCode begins a phone-code pairing on the primary device d after
// the user typed code: it unwraps the companion's ephemeral key from
// companion_hello, makes the phone's own ephemeral key and returns it
// wrapped with the same code (the notification's
// link_code_pairing_wrapped_primary_ephemeral_pub). PBKDF2 makes this take
// tens of milliseconds.
func (d *Device) StartLinkCode(code string, wrappedCompanionEphemeralPub []byte) (lc *LinkCode, wrappedPrimaryEphemeralPub []byte, err error) {
	companionPub, err := UnwrapLinkCodeKey(code, wrappedCompanionEphemeralPub)
	if err != nil {
		return nil, nil, fmt.Errorf("start link code: %w", err)
	}
	cpub, err := ecdh.X25519().NewPublicKey(companionPub)
	if err != nil {
		return nil, nil, fmt.Errorf("start link code: companion ephemeral key: %w", err)
	}
	eph, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("start link code: ephemeral key: %w", err)
	}
	wrapped, err := WrapLinkCodeKey(code, eph.PublicKey().Bytes())
	if err != nil {
		return nil, nil, fmt.Errorf("start link code: %w", err)
	}
	return &LinkCode{d: d, ephemeral: eph, companionEphemeral: cpub}, wrapped, nil
}

// PrimaryIdentityPub is the notification's primary_identity_pub: the
// identity key of the primary device that will sign the companion.
func (lc *LinkCode) PrimaryIdentityPub() [32]byte { return lc.d.IdentityPub() }

// Finish completes the key exchange with companion_finish: it decrypts the
// companion's key bundle (AES-GCM under HKDF of the ephemeral shared secret),
// checks that it names companionIdentityPub and this phone's identity, and
// derives the ADV secret the companion now uses as its HMAC key:
// HKDF(ephShared || X25519(primaryIdentity, companionIdentity) || advRandom,
// "adv_secret"). A wrong code fails here with ErrBadLinkCode.
func (lc *LinkCode) Finish(wrappedKeyBundle []byte, companionIdentityPub [32]byte) (advSecret []byte, err error) {
	const saltLen, nonceLen = 32, 12
	if len(wrappedKeyBundle) < saltLen+nonceLen+16 {
		return nil, fmt.Errorf("finish link code: key bundle of %d bytes: %w", len(wrappedKeyBundle), ErrBadLinkCode)
	}
	ephShared, err := lc.ephemeral.ECDH(lc.companionEphemeral)
	if err != nil {
		return nil, fmt.Errorf("finish link code: ephemeral agreement: %w", err)
	}
	salt, nonce, ct := wrappedKeyBundle[:saltLen], wrappedKeyBundle[saltLen:saltLen+nonceLen], wrappedKeyBundle[saltLen+nonceLen:]
	key, err := hkdf.Key(sha256.New, ephShared, salt, keyBundleInfo, 32)
	if err != nil {
		return nil, fmt.Errorf("finish link code: bundle key: %w", err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("finish link code: %w", err)
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("finish link code: %w", err)
	}
	bundle, err := gcm.Open(nil, nonce, ct, nil)
	if err != nil {
		return nil, fmt.Errorf("finish link code: key bundle does not decrypt (wrong code?): %w", ErrBadLinkCode)
	}
	primaryPub := lc.d.IdentityPub()
	if len(bundle) != 96 || !bytes.Equal(bundle[:32], companionIdentityPub[:]) || !bytes.Equal(bundle[32:64], primaryPub[:]) {
		return nil, fmt.Errorf("finish link code: key bundle names other identities: %w", ErrBadLinkCode)
	}
	advRandom := bundle[64:96]
	idPriv := lc.d.identityPriv()
	priv, err := ecdh.X25519().NewPrivateKey(idPriv[:])
	if err != nil {
		return nil, fmt.Errorf("finish link code: identity key: %w", err)
	}
	cid, err := ecdh.X25519().NewPublicKey(companionIdentityPub[:])
	if err != nil {
		return nil, fmt.Errorf("finish link code: companion identity: %w", err)
	}
	idShared, err := priv.ECDH(cid)
	if err != nil {
		return nil, fmt.Errorf("finish link code: identity agreement: %w", err)
	}
	secret, err := hkdf.Key(sha256.New, concat(ephShared, idShared, advRandom), nil, advSecretInfo, 32)
	if err != nil {
		return nil, fmt.Errorf("finish link code: adv secret: %w", err)
	}
	return secret, nil
}
