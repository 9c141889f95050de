package phone_test

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"go.mau.fi/whatsmeow/proto/waAdv"
	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/util/hkdfutil"
	"go.mau.fi/whatsmeow/util/keys"
	"golang.org/x/crypto/curve25519"
	"golang.org/x/crypto/pbkdf2"
	"google.golang.org/protobuf/proto"

	"github.com/amarula/amarula/wasim/phone"
)

func TestParseQR(t *testing.T) {
	k := base64.StdEncoding.EncodeToString(make([]byte, 32))
	short := base64.StdEncoding.EncodeToString(make([]byte, 31))
	tests := []struct {
		name    string
		in      string
		wantRef string
		wantErr bool
	}{
		{"plain", "2@abc," + k + "," + k + "," + k, "2@abc", false},
		{"ref with commas", "a,b,c," + k + "," + k + "," + k, "a,b,c", false},
		{"trailing newline", "ref," + k + "," + k + "," + k + "\n", "ref", false},
		{"three fields", k + "," + k + "," + k, "", true},
		{"empty ref", "," + k + "," + k + "," + k, "", true},
		{"bad base64", "ref,!!!," + k + "," + k, "", true},
		{"short noise key", "ref," + short + "," + k + "," + k, "", true},
		{"short identity", "ref," + k + "," + short + "," + k, "", true},
		{"short adv secret", "ref," + k + "," + k + "," + short, "", true},
		{"empty", "", "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q, err := phone.ParseQR(tc.in)
			if tc.wantErr {
				if !errors.Is(err, phone.ErrBadQR) {
					t.Fatalf("err %v, want ErrBadQR", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if q.Ref != tc.wantRef {
				t.Fatalf("ref %q, want %q", q.Ref, tc.wantRef)
			}
			if again, err := phone.ParseQR(q.String()); err != nil || again.Ref != q.Ref {
				t.Fatalf("round trip: %v %q", err, again.Ref)
			}
		})
	}
}

func TestParseQRFromWhatsmeow(t *testing.T) {
	c := newCompanion(t)
	q, err := phone.ParseQR(c.qr("2@ref,with,commas"))
	if err != nil {
		t.Fatal(err)
	}
	if q.Ref != "2@ref,with,commas" || q.IdentityPub != c.identityPub() || q.NoisePub != *c.dev.NoiseKey.Pub || string(q.AdvSecret) != string(c.dev.AdvSecretKey) {
		t.Fatalf("parsed QR does not match the whatsmeow store: %+v", q)
	}
}

// TestSignCompanion checks the container against whatsmeow's handlePair
// checks, and that each kind of corruption is refused with the answer
// handlePair gives.
func TestSignCompanion(t *testing.T) {
	tests := []struct {
		name     string
		mutate   func(t *testing.T, p *phone.Device, q *phone.QR) []byte
		wantCode int // 0: accepted
		wantText string
	}{
		{"valid", func(t *testing.T, p *phone.Device, q *phone.QR) []byte {
			return sign(t, p, &q.IdentityPub, q.AdvSecret)
		}, 0, ""},
		{"wrong adv secret", func(t *testing.T, p *phone.Device, q *phone.QR) []byte {
			other := append([]byte(nil), q.AdvSecret...)
			other[0] ^= 1
			return sign(t, p, &q.IdentityPub, other)
		}, 401, "hmac-mismatch"},
		{"signed for another companion key", func(t *testing.T, p *phone.Device, q *phone.QR) []byte {
			return sign(t, p, keys.NewKeyPair().Pub, q.AdvSecret)
		}, 401, "signature-mismatch"},
		{"account key swapped, hmac recomputed", tamper(func(s *waAdv.ADVSignedDeviceIdentity) {
			s.AccountSignatureKey = keys.NewKeyPair().Pub[:]
		}), 401, "signature-mismatch"},
		{"truncated signature, hmac recomputed", tamper(func(s *waAdv.ADVSignedDeviceIdentity) {
			s.AccountSignature = s.AccountSignature[:63]
		}), 401, "signature-mismatch"},
		{"garbage", func(*testing.T, *phone.Device, *phone.QR) []byte {
			return []byte{0xff, 0xff, 0xff}
		}, 500, "internal-error"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := newDevice(t, "15550001111@s.whatsapp.net")
			c := newCompanion(t)
			q, err := phone.ParseQR(c.qr("ref"))
			must(t, err)
			container := tc.mutate(t, p, &q)
			jid := types.NewADJID("15550001111", 0, 5)
			lid := types.NewADJID("99990001111", 0, 5)
			lid.Server = types.HiddenUserServer
			selfSigned, _, err := c.handlePair(container, jid, lid)
			if tc.wantCode == 0 {
				if err != nil {
					t.Fatalf("handlePair checks: %v", err)
				}
				acc := p.IdentityPub()
				if _, err := phone.VerifyDeviceIdentity(selfSigned, &acc, c.identityPub()); err != nil {
					t.Fatalf("pair-device-sign identity: %v", err)
				}
				if _, err := phone.VerifyDeviceIdentity(selfSigned, nil, c.identityPub()); !errors.Is(err, phone.ErrBadDeviceIdentity) {
					t.Fatalf("identity without account key and no expected key: %v", err)
				}
				return
			}
			var pe *pairError
			if !errors.As(err, &pe) || pe.code != tc.wantCode || pe.text != tc.wantText {
				t.Fatalf("handlePair error %v, want %d %s", err, tc.wantCode, tc.wantText)
			}
		})
	}
}

func sign(t *testing.T, p *phone.Device, companion *[32]byte, adv []byte) []byte {
	t.Helper()
	c, err := p.SignCompanion(*companion, adv, 1, 5, time.Now().Unix())
	must(t, err)
	return c
}

// tamper signs a valid container, applies change to the signed identity
// inside and re-wraps it with a valid HMAC, so that the check under test is
// the signature check.
func tamper(change func(*waAdv.ADVSignedDeviceIdentity)) func(*testing.T, *phone.Device, *phone.QR) []byte {
	return func(t *testing.T, p *phone.Device, q *phone.QR) []byte {
		var hm waAdv.ADVSignedDeviceIdentityHMAC
		must(t, proto.Unmarshal(sign(t, p, &q.IdentityPub, q.AdvSecret), &hm))
		var s waAdv.ADVSignedDeviceIdentity
		must(t, proto.Unmarshal(hm.Details, &s))
		change(&s)
		return rehmac(t, &s, q.AdvSecret)
	}
}

// rehmac wraps a signed identity with a valid HMAC.
func rehmac(t *testing.T, s *waAdv.ADVSignedDeviceIdentity, adv []byte) []byte {
	t.Helper()
	signed, err := proto.Marshal(s)
	must(t, err)
	h := hmac.New(sha256.New, adv)
	h.Write(signed)
	out, err := proto.Marshal(&waAdv.ADVSignedDeviceIdentityHMAC{Details: signed, HMAC: h.Sum(nil), AccountType: waAdv.ADVEncryptionType_E2EE.Enum()})
	must(t, err)
	return out
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// linkCompanion is whatsmeow's side of phone-code pairing, copied from
// pair-code.go (generateCompanionEphemeralKey, handleCodePairNotification)
// with the same primitives, because those functions are unexported.
type linkCompanion struct {
	eph     *keys.KeyPair
	code    string // 8 characters, no dash
	wrapped []byte
}

var linkingBase32 = base32.NewEncoding("123456789ABCDEFGHJKLMNPQRSTVWXYZ")

func newLinkCompanion(t *testing.T) *linkCompanion {
	t.Helper()
	eph := keys.NewKeyPair()
	salt, iv, raw := randBytes(32), randBytes(16), randBytes(5)
	code := linkingBase32.EncodeToString(raw)
	key := pbkdf2.Key([]byte(code), salt, 2<<16, 32, sha256.New)
	block, _ := aes.NewCipher(key)
	enc := make([]byte, 32)
	cipher.NewCTR(block, iv).XORKeyStream(enc, eph.Pub[:])
	return &linkCompanion{eph: eph, code: code, wrapped: concat(salt, iv, enc)}
}

// finish handles the phone's notification and returns companion_finish's
// wrapped key bundle and the new adv secret.
func (lc *linkCompanion) finish(t *testing.T, identity *keys.KeyPair, wrappedPrimary, primaryIdentityPub []byte) (bundle, advSecret []byte) {
	t.Helper()
	advRandom, bundleSalt, nonce := randBytes(32), randBytes(32), randBytes(12)
	key := pbkdf2.Key([]byte(lc.code), wrappedPrimary[0:32], 2<<16, 32, sha256.New)
	block, err := aes.NewCipher(key)
	must(t, err)
	primaryEph := make([]byte, 32)
	cipher.NewCTR(block, wrappedPrimary[32:48]).XORKeyStream(primaryEph, wrappedPrimary[48:80])
	ephShared, err := curve25519.X25519(lc.eph.Priv[:], primaryEph)
	must(t, err)
	bundleKey := hkdfutil.SHA256(ephShared, bundleSalt, []byte("link_code_pairing_key_bundle_encryption_key"), 32)
	block, err = aes.NewCipher(bundleKey)
	must(t, err)
	gcm, err := cipher.NewGCM(block)
	must(t, err)
	sealed := gcm.Seal(nil, nonce, concat(identity.Pub[:], primaryIdentityPub, advRandom), nil)
	idShared, err := curve25519.X25519(identity.Priv[:], primaryIdentityPub)
	must(t, err)
	advSecret = hkdfutil.SHA256(concat(ephShared, idShared, advRandom), nil, []byte("adv_secret"), 32)
	return concat(bundleSalt, nonce, sealed), advSecret
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

func TestLinkCodePairing(t *testing.T) {
	tests := []struct {
		name    string
		typed   func(code string) string
		wantErr error
	}{
		{"as displayed", func(c string) string { return c[:4] + "-" + c[4:] }, nil},
		{"lowercase, no dash", func(c string) string { return lower(c) }, nil},
		{"wrong code", func(c string) string {
			r := []byte(c)
			if r[0] == 'A' {
				r[0] = 'B'
			} else {
				r[0] = 'A'
			}
			return string(r)
		}, phone.ErrBadLinkCode},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := newDevice(t, "15550001111@s.whatsapp.net")
			c := newCompanion(t)
			lc := newLinkCompanion(t)

			session, wrappedPrimary, err := p.StartLinkCode(tc.typed(lc.code), lc.wrapped)
			must(t, err)
			if len(wrappedPrimary) != phone.WrappedKeyLen {
				t.Fatalf("wrapped primary key %d bytes", len(wrappedPrimary))
			}
			primaryPub := session.PrimaryIdentityPub()
			if primaryPub != p.IdentityPub() {
				t.Fatal("primary identity is not the phone's identity")
			}
			bundle, companionSecret := lc.finish(t, c.dev.IdentityKey, wrappedPrimary, primaryPub[:])
			adv, err := session.Finish(bundle, c.identityPub())
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("finish err %v, want %v", err, tc.wantErr)
				}
				return
			}
			must(t, err)
			if string(adv) != string(companionSecret) {
				t.Fatal("phone and companion derived different adv secrets")
			}
			// The companion now HMACs pair-success with the derived secret.
			c.dev.AdvSecretKey = companionSecret
			container, err := p.SignCompanion(c.identityPub(), adv, 9, 3, time.Now().Unix())
			must(t, err)
			jid := types.NewADJID("15550001111", 0, 3)
			lid := types.NewADJID("99990001111", 0, 3)
			lid.Server = types.HiddenUserServer
			if _, _, err := c.handlePair(container, jid, lid); err != nil {
				t.Fatalf("pair-success after link code refused: %v", err)
			}
		})
	}
}

func TestLinkCodeRejects(t *testing.T) {
	p := newDevice(t, "15550001111@s.whatsapp.net")
	lc := newLinkCompanion(t)
	tests := []struct {
		name    string
		code    string
		wrapped []byte
	}{
		{"short code", "ABC-DEF", lc.wrapped},
		{"bad alphabet", "ABCD-EFG0", lc.wrapped},
		{"short wrapped key", lc.code, lc.wrapped[:79]},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := p.StartLinkCode(tc.code, tc.wrapped); err == nil {
				t.Fatal("accepted")
			}
		})
	}
	s, _, err := p.StartLinkCode(lc.code, lc.wrapped)
	must(t, err)
	for _, b := range [][]byte{nil, make([]byte, 59), make([]byte, 140)} {
		if _, err := s.Finish(b, [32]byte{1}); !errors.Is(err, phone.ErrBadLinkCode) {
			t.Fatalf("bundle of %d bytes: %v", len(b), err)
		}
	}
	if n, err := phone.NormalizeLinkCode(" abcd-efgh "); err != nil || n != "ABCDEFGH" || strings.Contains(n, "-") {
		t.Fatalf("normalize: %q %v", n, err)
	}
}

// FuzzParseQR: QR strings come from the admin API.
func FuzzParseQR(f *testing.F) {
	k := base64.StdEncoding.EncodeToString(make([]byte, 32))
	f.Add("ref," + k + "," + k + "," + k)
	f.Add("a,b,c,d")
	f.Fuzz(func(t *testing.T, s string) {
		q, err := phone.ParseQR(s)
		if err != nil {
			return
		}
		again, err := phone.ParseQR(q.String())
		if err != nil || again.Ref != q.Ref || again.IdentityPub != q.IdentityPub || again.NoisePub != q.NoisePub || string(again.AdvSecret) != string(q.AdvSecret) {
			t.Fatalf("round trip of %q: %+v %v", s, again, err)
		}
	})
}

// FuzzVerifyDeviceIdentity: device identities come from companions.
func FuzzVerifyDeviceIdentity(f *testing.F) {
	t := &testing.T{}
	p := newDevice(t, "15550001111@s.whatsapp.net")
	companion := keys.NewKeyPair()
	c, err := p.SignCompanion(*companion.Pub, make([]byte, 32), 1, 2, 3)
	if err != nil {
		f.Fatal(err)
	}
	var hm waAdv.ADVSignedDeviceIdentityHMAC
	if err := proto.Unmarshal(c, &hm); err != nil {
		f.Fatal(err)
	}
	f.Add(hm.Details)
	f.Add([]byte{0x0a, 0x00})
	acc := p.IdentityPub()
	f.Fuzz(func(t *testing.T, raw []byte) {
		// No device signature can be forged by the fuzzer, so nothing may
		// verify.
		if _, err := phone.VerifyDeviceIdentity(raw, &acc, *companion.Pub); err == nil {
			t.Fatalf("verified %x", raw)
		}
		_, _ = phone.VerifyDeviceIdentity(raw, nil, *companion.Pub)
	})
}
