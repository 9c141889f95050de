package phone

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"go.mau.fi/libsignal/ecc"
	"go.mau.fi/whatsmeow/proto/waAdv"
	"google.golang.org/protobuf/proto"
)

// ADV signature prefixes, copied from whatsmeow pair.go
// (AdvAccountSignaturePrefix, AdvDeviceSignaturePrefix). Copies, so that a
// test that tampers with whatsmeow's exported variables cannot change what
// the phone signs.
var (
	advAccountSignaturePrefix = []byte{6, 0}
	advDeviceSignaturePrefix  = []byte{6, 1}
)

// Sentinel errors of pairing. Check them with errors.Is.
var (
	// ErrBadQR means a QR string is not ref,noise,identity,adv.
	ErrBadQR = errors.New("phone: malformed QR code")
	// ErrBadDeviceIdentity means a device identity failed to parse or one of
	// its signatures does not verify.
	ErrBadDeviceIdentity = errors.New("phone: invalid device identity")
)

// QR is what a companion displays as its pairing QR code (§3.2,
// pair.go: makeQRData).
type QR struct {
	// Ref is the pairing ref the server sent in <pair-device>.
	Ref string
	// NoisePub is the companion's Noise static public key.
	NoisePub [32]byte
	// IdentityPub is the companion's Signal identity public key; the phone
	// signs it into the ADV device identity.
	IdentityPub [32]byte
	// AdvSecret is the HMAC key of the pair-success container (32 bytes).
	AdvSecret []byte
}

// ParseQR parses ref,base64(noise pub),base64(identity pub),base64(adv
// secret). The ref is everything before the last three commas, so a ref
// containing commas still parses.
func ParseQR(s string) (QR, error) {
	parts := strings.Split(strings.TrimSpace(s), ",")
	if len(parts) < 4 {
		return QR{}, fmt.Errorf("parse qr: %d fields: %w", len(parts), ErrBadQR)
	}
	n := len(parts)
	q := QR{Ref: strings.Join(parts[:n-3], ",")}
	if q.Ref == "" {
		return QR{}, fmt.Errorf("parse qr: empty ref: %w", ErrBadQR)
	}
	for i, dst := range []*[32]byte{&q.NoisePub, &q.IdentityPub} {
		b, err := base64.StdEncoding.DecodeString(parts[n-3+i])
		if err != nil {
			return QR{}, fmt.Errorf("parse qr field %d: %w: %w", n-2+i, ErrBadQR, err)
		}
		if len(b) != 32 {
			return QR{}, fmt.Errorf("parse qr field %d: %d bytes: %w", n-2+i, len(b), ErrBadQR)
		}
		copy(dst[:], b)
	}
	adv, err := base64.StdEncoding.DecodeString(parts[n-1])
	if err != nil {
		return QR{}, fmt.Errorf("parse qr adv secret: %w: %w", ErrBadQR, err)
	}
	if len(adv) != 32 {
		return QR{}, fmt.Errorf("parse qr adv secret: %d bytes: %w", len(adv), ErrBadQR)
	}
	q.AdvSecret = adv
	return q, nil
}

// String formats q the way whatsmeow's makeQRData does.
func (q QR) String() string {
	enc := base64.StdEncoding.EncodeToString
	return strings.Join([]string{q.Ref, enc(q.NoisePub[:]), enc(q.IdentityPub[:]), enc(q.AdvSecret)}, ",")
}

// SignCompanion is what the primary phone does when it links a companion
// (§3.3): it builds the ADVDeviceIdentity {rawID, ts, keyIndex, E2EE, E2EE},
// signs details||companionIdentityPub with its identity key (prefix 6,0),
// and wraps the signed identity in an ADVSignedDeviceIdentityHMAC keyed
// with advSecret. The returned bytes are the <device-identity> content of
// <pair-success>; whatsmeow's handlePair verifies exactly this.
//
// d must be the account's primary device: its identity key is the account
// key the companion later trusts for the primary device. keyIndex is what
// the companion echoes as key-index in <pair-device-sign>; rawID is an
// account-level id (any stable value); ts is unix seconds.
func (d *Device) SignCompanion(companionIdentityPub [32]byte, advSecret []byte, rawID uint32, keyIndex uint32, ts int64) (deviceIdentityContainer []byte, err error) {
	if len(advSecret) == 0 {
		return nil, fmt.Errorf("sign companion: empty adv secret: %w", ErrBadKey)
	}
	e2ee := waAdv.ADVEncryptionType_E2EE
	details, err := proto.Marshal(&waAdv.ADVDeviceIdentity{
		RawID:       proto.Uint32(rawID),
		Timestamp:   proto.Uint64(uint64(ts)),
		KeyIndex:    proto.Uint32(keyIndex),
		AccountType: e2ee.Enum(),
		DeviceType:  e2ee.Enum(),
	})
	if err != nil {
		return nil, fmt.Errorf("sign companion: marshal details: %w", err)
	}
	accountPub := d.IdentityPub()
	sig := ecc.CalculateSignature(ecc.NewDjbECPrivateKey(d.identityPriv()), concat(advAccountSignaturePrefix, details, companionIdentityPub[:]))
	signed, err := proto.Marshal(&waAdv.ADVSignedDeviceIdentity{
		Details:             details,
		AccountSignatureKey: accountPub[:],
		AccountSignature:    sig[:],
	})
	if err != nil {
		return nil, fmt.Errorf("sign companion: marshal signed identity: %w", err)
	}
	mac := hmac.New(sha256.New, advSecret)
	mac.Write(signed)
	out, err := proto.Marshal(&waAdv.ADVSignedDeviceIdentityHMAC{
		Details:     signed,
		HMAC:        mac.Sum(nil),
		AccountType: e2ee.Enum(),
	})
	if err != nil {
		return nil, fmt.Errorf("sign companion: marshal container: %w", err)
	}
	return out, nil
}

// DeviceIdentity is a verified ADV device identity of a companion.
type DeviceIdentity struct {
	RawID      uint32
	Timestamp  uint64
	KeyIndex   uint32
	AccountPub [32]byte
	// Signed is the parsed message, device signature included.
	Signed *waAdv.ADVSignedDeviceIdentity
}

// VerifyDeviceIdentity parses a marshalled ADVSignedDeviceIdentity as a
// companion sends it and verifies both signatures: the account signature
// (prefix 6,0 over details||devicePub by the account key) and the device
// signature (prefix 6,1 over details||devicePub||accountPub by devicePub).
//
// It serves two places: the <device-identity> of <pair-device-sign> (§3.3),
// which omits the account key, and the <device-identity> next to a pkmsg
// (§7.3), which includes it. accountPub is the expected account key; when
// nil the embedded one is used (and required). devicePub is the
// companion's identity key: from the QR or companion_finish during pairing,
// from PreKeyMessageIdentity for a pkmsg.
func VerifyDeviceIdentity(raw []byte, accountPub *[32]byte, devicePub [32]byte) (DeviceIdentity, error) {
	var signed waAdv.ADVSignedDeviceIdentity
	if err := proto.Unmarshal(raw, &signed); err != nil {
		return DeviceIdentity{}, fmt.Errorf("verify device identity: %w: %w", ErrBadDeviceIdentity, err)
	}
	var details waAdv.ADVDeviceIdentity
	if err := proto.Unmarshal(signed.GetDetails(), &details); err != nil {
		return DeviceIdentity{}, fmt.Errorf("verify device identity details: %w: %w", ErrBadDeviceIdentity, err)
	}
	var acc [32]byte
	switch embedded := signed.GetAccountSignatureKey(); {
	case len(embedded) == 32 && accountPub != nil && [32]byte(embedded) != *accountPub:
		return DeviceIdentity{}, fmt.Errorf("verify device identity: account key is not the expected one: %w", ErrBadDeviceIdentity)
	case accountPub != nil:
		acc = *accountPub
	case len(embedded) == 32:
		acc = [32]byte(embedded)
	default:
		return DeviceIdentity{}, fmt.Errorf("verify device identity: no account key: %w", ErrBadDeviceIdentity)
	}
	if len(signed.GetAccountSignature()) != 64 || len(signed.GetDeviceSignature()) != 64 {
		return DeviceIdentity{}, fmt.Errorf("verify device identity: signature length: %w", ErrBadDeviceIdentity)
	}
	if !ecc.VerifySignature(ecc.NewDjbECPublicKey(acc), concat(advAccountSignaturePrefix, signed.Details, devicePub[:]), [64]byte(signed.AccountSignature)) {
		return DeviceIdentity{}, fmt.Errorf("verify device identity: account signature: %w", ErrBadDeviceIdentity)
	}
	if !ecc.VerifySignature(ecc.NewDjbECPublicKey(devicePub), concat(advDeviceSignaturePrefix, signed.Details, devicePub[:], acc[:]), [64]byte(signed.DeviceSignature)) {
		return DeviceIdentity{}, fmt.Errorf("verify device identity: device signature: %w", ErrBadDeviceIdentity)
	}
	return DeviceIdentity{
		RawID:      details.GetRawID(),
		Timestamp:  details.GetTimestamp(),
		KeyIndex:   details.GetKeyIndex(),
		AccountPub: acc,
		Signed:     &signed,
	}, nil
}

func concat(parts ...[]byte) []byte {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	out := make([]byte, 0, n)
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}
