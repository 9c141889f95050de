package phone_test

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"go.mau.fi/libsignal/keys/prekey"
	"go.mau.fi/whatsmeow/proto/waE2E"
	"go.mau.fi/whatsmeow/types"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	"github.com/amarula/amarula/wasim/phone"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func newDevice(t *testing.T, jid string) *phone.Device {
	t.Helper()
	d, err := phone.NewDevice(mustJID(t, jid))
	if err != nil {
		t.Fatalf("new device: %v", err)
	}
	return d
}

// script is a sequence of bursts: positive n means a→b n messages,
// negative n means b→a -n messages.
func TestDeviceSession(t *testing.T) {
	tests := []struct {
		name       string
		oneTimeKey bool
		script     []int
	}{
		{"one-time prekey, ping-pong", true, []int{1, -1, 1, -1, 1, -1}},
		{"one-time prekey, bursts", true, []int{5, -3, 7, -10, 1, -1, 20, -20}},
		{"no one-time prekey, bursts", false, []int{3, -2, 4, -4}},
		{"initiator keeps sending before reply", true, []int{50, -1, 50}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := newDevice(t, "15550001111@s.whatsapp.net")
			b := newDevice(t, "15550002222:3@s.whatsapp.net")
			bundle := b.Bundle
			if !tc.oneTimeKey {
				bundle = func() (*preKeyBundle, error) {
					id, pub, sig := b.SignedPreKey()
					return phone.BundleFrom(b.RegistrationID(), 3, b.IdentityPub(), id, pub, sig, nil, nil)
				}
			}
			bb, err := bundle()
			if err != nil {
				t.Fatal(err)
			}
			if a.HasSession(b.JID()) {
				t.Fatal("session before bundle")
			}
			if err := a.ProcessBundle(b.JID(), bb); err != nil {
				t.Fatalf("process bundle: %v", err)
			}
			if !a.HasSession(b.JID()) {
				t.Fatal("no session after bundle")
			}
			aHeardFromB := false
			n := 0
			for _, burst := range tc.script {
				from, to, count := a, b, burst
				if burst < 0 {
					from, to, count = b, a, -burst
				}
				for i := 0; i < count; i++ {
					n++
					text := fmt.Sprintf("message %d from %s", n, from.JID())
					typ, ct, err := from.EncryptMessage(to.JID(), phone.Text(text))
					if err != nil {
						t.Fatalf("encrypt %d: %v", n, err)
					}
					wantType := phone.EncTypeMsg
					if from == a && !aHeardFromB {
						wantType = phone.EncTypePreKey
					}
					if typ != wantType {
						t.Fatalf("message %d: enc type %q, want %q", n, typ, wantType)
					}
					m, err := to.DecryptMessage(from.JID(), typ, ct)
					if err != nil {
						t.Fatalf("decrypt %d: %v", n, err)
					}
					if got := m.GetConversation(); got != text {
						t.Fatalf("message %d: got %q, want %q", n, got, text)
					}
					if from == b {
						aHeardFromB = true
					}
				}
			}
			if got, ok := b.PeerIdentity(a.JID()); !ok || got != a.IdentityPub() {
				t.Fatalf("b does not know a's identity")
			}
		})
	}
}

// preKeyBundle is libsignal's bundle type.
type preKeyBundle = prekey.Bundle

func TestDecryptFailureLeavesSessionIntact(t *testing.T) {
	a := newDevice(t, "15550001111@s.whatsapp.net")
	b := newDevice(t, "15550002222@s.whatsapp.net")
	establish(t, a, b)

	typ, ct, err := a.Encrypt(b.JID(), phone.Pad([]byte("hello")))
	if err != nil {
		t.Fatal(err)
	}
	bad := bytes.Clone(ct)
	bad[len(bad)/2] ^= 0x40
	tests := []struct {
		name    string
		encType string
		ct      []byte
	}{
		{"flipped byte", typ, bad},
		{"truncated", typ, ct[:len(ct)/2]},
		{"empty", typ, nil},
		{"empty pkmsg (panics inside libsignal)", phone.EncTypePreKey, nil},
		{"wrong type", phone.EncTypePreKey, ct},
		{"unknown type", "skmsg", ct},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := b.Decrypt(a.JID(), tc.encType, tc.ct); err == nil {
				t.Fatal("decrypt of damaged ciphertext succeeded")
			}
		})
	}
	pt, err := b.Decrypt(a.JID(), typ, ct)
	if err != nil {
		t.Fatalf("good ciphertext after failures: %v", err)
	}
	if got, _ := phone.Unpad(pt); string(got) != "hello" {
		t.Fatalf("got %q", got)
	}
	if _, err := b.Decrypt(a.JID(), phone.EncTypePreKey, nil); !errors.Is(err, phone.ErrMalformed) {
		t.Fatalf("empty pkmsg: %v, want ErrMalformed", err)
	}
	if _, err := b.Decrypt(a.JID(), "skmsg", ct); !errors.Is(err, phone.ErrUnknownEncType) {
		t.Fatalf("unknown type error %v", err)
	}
}

// establish runs one round trip so both sides send "msg" afterwards.
func establish(t *testing.T, a, b *phone.Device) {
	t.Helper()
	bb, err := b.Bundle()
	if err != nil {
		t.Fatal(err)
	}
	if err := a.ProcessBundle(b.JID(), bb); err != nil {
		t.Fatal(err)
	}
	for _, pair := range [][2]*phone.Device{{a, b}, {b, a}} {
		typ, ct, err := pair[0].EncryptMessage(pair[1].JID(), phone.Text("hi"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pair[1].DecryptMessage(pair[0].JID(), typ, ct); err != nil {
			t.Fatal(err)
		}
	}
}

// TestLostSessionRecovery is the retry-receipt repair: one side loses its
// session, the other cannot decrypt, a fresh bundle restarts the session.
func TestLostSessionRecovery(t *testing.T) {
	a := newDevice(t, "15550001111@s.whatsapp.net")
	b := newDevice(t, "15550002222@s.whatsapp.net")
	establish(t, a, b)

	b.DeleteSession(a.JID())
	if b.HasSession(a.JID()) {
		t.Fatal("session survived DeleteSession")
	}
	if _, _, err := b.Encrypt(a.JID(), []byte("x")); !errors.Is(err, phone.ErrNoSession) {
		t.Fatalf("encrypt without session: %v, want ErrNoSession", err)
	}
	typ, ct, err := a.EncryptMessage(b.JID(), phone.Text("lost"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.DecryptMessage(a.JID(), typ, ct); err == nil {
		t.Fatal("decrypt without session succeeded")
	}
	// The retry receipt carries b's keys; a rebuilds and resends.
	bb, err := b.Bundle()
	if err != nil {
		t.Fatal(err)
	}
	if err := a.ProcessBundle(b.JID(), bb); err != nil {
		t.Fatal(err)
	}
	typ, ct, err = a.EncryptMessage(b.JID(), phone.Text("lost"))
	if err != nil {
		t.Fatal(err)
	}
	if typ != phone.EncTypePreKey {
		t.Fatalf("resend type %q, want pkmsg", typ)
	}
	m, err := b.DecryptMessage(a.JID(), typ, ct)
	if err != nil {
		t.Fatalf("resend: %v", err)
	}
	if m.GetConversation() != "lost" {
		t.Fatalf("got %q", m.GetConversation())
	}
}

func TestTakePreKeyNeverRepeats(t *testing.T) {
	d := newDevice(t, "15550001111@s.whatsapp.net")
	if got := d.PreKeyCount(); got != 0 {
		t.Fatalf("prekeys generated before any was taken: %d", got)
	}
	seen := map[uint32]bool{}
	for i := 0; i < 250; i++ {
		id, pub, ok := d.TakePreKey()
		if !ok {
			t.Fatalf("take %d failed", i)
		}
		if seen[id] || id == 0 || id >= 1<<24 {
			t.Fatalf("prekey id %d repeated or out of range", id)
		}
		if pub == ([32]byte{}) {
			t.Fatal("zero prekey")
		}
		seen[id] = true
	}
	if got := d.PreKeyCount(); got < 0 || got >= 20 {
		t.Fatalf("pool %d after 250 takes", got)
	}
}

func TestWhatsmeowInterop(t *testing.T) {
	tests := []struct {
		name string
		// own: the companion is linked to the phone it talks to, and the
		// phone's messages are decrypted under the primary's LID address,
		// where whatsmeow checks the identity stored at pairing.
		own    bool
		script []int // positive: phone→companion, negative: companion→phone
	}{
		{"other account, phone starts", false, []int{3, -3, 10, -10, 1, -1}},
		{"other account, companion starts", false, []int{-4, 4, -20, 20}},
		{"own primary via lid", true, []int{2, -2, 15, -15}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := newDevice(t, "15550001111@s.whatsapp.net")
			owner := p
			if !tc.own {
				owner = newDevice(t, "15550002222@s.whatsapp.net")
			}
			c := newCompanion(t)
			cJID, _ := c.pairWith(owner, "99990002222", 7)
			// The address whatsmeow decrypts the phone's messages under.
			pFrom := p.JID()
			if tc.own {
				pFrom = types.NewJID("99990002222", types.HiddenUserServer)
			}

			started := map[bool]bool{} // by sender: true once it has a session
			heard := map[bool]bool{}   // phone=true side heard from the other
			n := 0
			for _, burst := range tc.script {
				fromPhone, count := burst > 0, burst
				if !fromPhone {
					count = -burst
				}
				for i := 0; i < count; i++ {
					n++
					text := fmt.Sprintf("interop %d", n)
					pt, err := phone.EncodeMessage(phone.Text(text))
					if err != nil {
						t.Fatal(err)
					}
					var typ string
					var got []byte
					if fromPhone {
						if !started[true] && !p.HasSession(cJID) {
							if err := p.ProcessBundle(cJID, c.bundle()); err != nil {
								t.Fatalf("phone processes whatsmeow bundle: %v", err)
							}
						}
						started[true] = true
						var ct []byte
						typ, ct, err = p.Encrypt(cJID, pt)
						if err != nil {
							t.Fatal(err)
						}
						got, err = c.decrypt(pFrom, typ, ct)
						if err != nil {
							t.Fatalf("whatsmeow decryptDM of phone message %d (%s): %v", n, typ, err)
						}
					} else {
						raw, _ := proto.Marshal(phone.Text(text))
						var bundle *preKeyBundle
						if !started[false] && !p.HasSession(cJID) {
							if bundle, err = p.Bundle(); err != nil {
								t.Fatal(err)
							}
						}
						started[false] = true
						var ct []byte
						var withIdentity bool
						typ, ct, withIdentity, err = c.encrypt(pFrom, bundle, raw)
						if err != nil {
							t.Fatalf("whatsmeow encryptMessageForDevice: %v", err)
						}
						if withIdentity != (typ == phone.EncTypePreKey) {
							t.Fatalf("device identity %v for %s", withIdentity, typ)
						}
						if typ == phone.EncTypePreKey {
							checkCompanionIdentity(t, c, owner, ct)
						}
						m, err := p.DecryptMessage(cJID, typ, ct)
						if err != nil {
							t.Fatalf("phone decrypts whatsmeow message %d (%s): %v", n, typ, err)
						}
						got, _ = proto.Marshal(m)
					}
					wantType := phone.EncTypeMsg
					if !heard[fromPhone] {
						wantType = phone.EncTypePreKey
					}
					if typ != wantType {
						t.Fatalf("message %d from phone=%v: type %s, want %s", n, fromPhone, typ, wantType)
					}
					var m waE2E.Message
					if err := proto.Unmarshal(got, &m); err != nil || m.GetConversation() != text {
						t.Fatalf("message %d: got %q (%v), want %q", n, m.GetConversation(), err, text)
					}
					heard[!fromPhone] = true
				}
			}
		})
	}
}

// checkCompanionIdentity verifies the <device-identity> whatsmeow attaches
// to a pkmsg the way the server or a receiving phone would.
func checkCompanionIdentity(t *testing.T, c *companion, owner *phone.Device, pkmsg []byte) {
	t.Helper()
	sender, err := phone.PreKeyMessageIdentity(pkmsg)
	if err != nil {
		t.Fatalf("pkmsg identity: %v", err)
	}
	if sender != c.identityPub() {
		t.Fatal("pkmsg identity is not the companion's identity key")
	}
	acc := owner.IdentityPub()
	for _, accountPub := range []*[32]byte{&acc, nil} {
		di, err := phone.VerifyDeviceIdentity(c.deviceIdentity(), accountPub, sender)
		if err != nil {
			t.Fatalf("verify whatsmeow device identity: %v", err)
		}
		if di.AccountPub != acc || di.KeyIndex != 7 {
			t.Fatalf("device identity %+v", di)
		}
	}
	other := newDevice(t, "15550009999@s.whatsapp.net").IdentityPub()
	if _, err := phone.VerifyDeviceIdentity(c.deviceIdentity(), &other, sender); !errors.Is(err, phone.ErrBadDeviceIdentity) {
		t.Fatalf("foreign account key accepted: %v", err)
	}
	if _, err := phone.VerifyDeviceIdentity(c.deviceIdentity(), nil, other); !errors.Is(err, phone.ErrBadDeviceIdentity) {
		t.Fatalf("foreign device key accepted: %v", err)
	}
}
