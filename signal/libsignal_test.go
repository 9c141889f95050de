package signal

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"testing"
	"time"

	"go.mau.fi/libsignal/ecc"
	"go.mau.fi/libsignal/groups"
	"go.mau.fi/libsignal/keys/identity"
	"go.mau.fi/libsignal/keys/prekey"
	"go.mau.fi/libsignal/protocol"
	"go.mau.fi/libsignal/session"
	"go.mau.fi/libsignal/util/optional"
	"go.mau.fi/whatsmeow/store"

	"github.com/amarula/amarula/storage"
)

var ser = store.SignalProtobufSerializer

// peer is one whatsmeow device on our store.
type peer struct {
	user string
	dev  *store.Device
}

func (p *peer) addr() *protocol.SignalAddress { return pn(p.user, 1).SignalAddress() }

type wire struct {
	body []byte
	typ  uint32
}

// send encrypts plaintext from p to q the way whatsmeow does: a session
// builder and cipher over p's store.Device.
func (p *peer) send(ctx context.Context, t *testing.T, q *peer, plaintext string) wire {
	t.Helper()
	cipher := session.NewCipher(session.NewBuilderFromSignal(p.dev, q.addr(), ser), q.addr())
	msg, err := cipher.Encrypt(ctx, []byte(plaintext))
	if err != nil {
		t.Fatalf("%s encrypt to %s: %v", p.user, q.user, err)
	}
	return wire{msg.Serialize(), msg.Type()}
}

// receive decrypts w from q inside DoDecryptionTxn, buffering the plaintext
// as whatsmeow's bufferedDecrypt does. fail, if set, is returned from inside
// the transaction after a successful decryption.
func (p *peer) receive(ctx context.Context, q *peer, w wire, fail error) (string, error) {
	cipher := session.NewCipher(session.NewBuilderFromSignal(p.dev, q.addr(), ser), q.addr())
	var pt []byte
	err := p.dev.EventBuffer.DoDecryptionTxn(ctx, func(ctx context.Context) error {
		var err error
		switch w.typ {
		case protocol.PREKEY_TYPE:
			m, perr := protocol.NewPreKeySignalMessageFromBytes(w.body, ser.PreKeySignalMessage, ser.SignalMessage)
			if perr != nil {
				return perr
			}
			pt, err = cipher.DecryptMessage(ctx, m)
		default:
			m, perr := protocol.NewSignalMessageFromBytes(w.body, ser.SignalMessage)
			if perr != nil {
				return perr
			}
			pt, err = cipher.Decrypt(ctx, m)
		}
		if err != nil {
			return err
		}
		if err := p.dev.EventBuffer.PutBufferedEvent(ctx, sha256.Sum256(w.body), pt, time.Now()); err != nil {
			return err
		}
		return fail
	})
	return string(pt), err
}

func (p *peer) mustReceive(ctx context.Context, t *testing.T, q *peer, w wire, want string) {
	t.Helper()
	got, err := p.receive(ctx, q, w, nil)
	if err != nil || got != want {
		t.Fatalf("%s received %q, %v from %s; want %q", p.user, got, err, q.user, want)
	}
}

// TestLibsignalRoundTrip establishes a real Signal session between two
// devices stored through this package (one profile each), exchanges
// messages both ways — prekey messages, normal messages, out-of-order
// delivery, a rolled-back decryption — then reloads both devices from
// storage with new store objects and keeps going, including decrypting a
// message sent before the reload. Only a ratchet that is fully persisted
// (sessions, identities, prekeys, skipped message keys) passes.
func TestLibsignalRoundTrip(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		ctx := ctxT(t)
		st := openStore(t, be)
		alice := &peer{user: "111", dev: pairedDevice(t, newContainer(t, st, "alice"), "111")}
		bob := &peer{user: "222", dev: pairedDevice(t, newContainer(t, st, "bob"), "222")}

		// Bob publishes one prekey; Alice builds a session from his bundle.
		pks, err := bob.dev.PreKeys.GetOrGenPreKeys(ctx, 1)
		must(t, err)
		must(t, bob.dev.PreKeys.MarkPreKeysAsUploaded(ctx, pks[0].KeyID))
		bundle := prekey.NewBundle(bob.dev.RegistrationID, 1,
			optional.NewOptionalUint32(pks[0].KeyID), bob.dev.SignedPreKey.KeyID,
			ecc.NewDjbECPublicKey(*pks[0].Pub), ecc.NewDjbECPublicKey(*bob.dev.SignedPreKey.Pub),
			*bob.dev.SignedPreKey.Signature, identity.NewKey(ecc.NewDjbECPublicKey(*bob.dev.IdentityKey.Pub)))
		must(t, session.NewBuilderFromSignal(alice.dev, bob.addr(), ser).ProcessBundle(ctx, bundle))
		if has, _ := alice.dev.Sessions.HasSession(ctx, bob.addr().String()); !has {
			t.Fatal("ProcessBundle stored no session")
		}

		// First message: a prekey message. A decryption whose transaction
		// fails leaves no trace: the prekey survives, Bob has no session,
		// and the same ciphertext decrypts afterwards.
		m1 := alice.send(ctx, t, bob, "hello bob")
		if m1.typ != protocol.PREKEY_TYPE {
			t.Fatalf("first message type %d, want prekey message", m1.typ)
		}
		if _, err := bob.receive(ctx, alice, m1, errBoom); !errors.Is(err, errBoom) {
			t.Fatalf("failing receive = %v", err)
		}
		if k, _ := bob.dev.PreKeys.GetPreKey(ctx, pks[0].KeyID); k == nil {
			t.Fatal("rolled-back decryption consumed the prekey")
		}
		if has, _ := bob.dev.Sessions.HasSession(ctx, alice.addr().String()); has {
			t.Fatal("rolled-back decryption stored a session")
		}
		bob.mustReceive(ctx, t, alice, m1, "hello bob")
		if k, _ := bob.dev.PreKeys.GetPreKey(ctx, pks[0].KeyID); k != nil {
			t.Fatal("used prekey was not removed")
		}
		if ev, _ := bob.dev.EventBuffer.GetBufferedEvent(ctx, sha256.Sum256(m1.body)); ev == nil || string(ev.Plaintext) != "hello bob" {
			t.Fatalf("buffered plaintext = %+v", ev)
		}
		if _, err := bob.receive(ctx, alice, m1, nil); err == nil || errors.Is(err, ErrBufferedEventExists) {
			t.Fatalf("replayed ciphertext: %v; want the ratchet to refuse it (advance persisted)", err)
		}

		// More traffic both ways.
		bob.mustReceive(ctx, t, alice, alice.send(ctx, t, bob, "still prekey"), "still prekey")
		for i := 0; i < 3; i++ {
			w := bob.send(ctx, t, alice, fmt.Sprintf("reply %d", i))
			if w.typ != protocol.WHISPER_TYPE {
				t.Fatalf("bob's reply type %d, want normal message", w.typ)
			}
			alice.mustReceive(ctx, t, bob, w, fmt.Sprintf("reply %d", i))
		}
		for i := 0; i < 3; i++ {
			w := alice.send(ctx, t, bob, fmt.Sprintf("msg %d", i))
			if w.typ != protocol.WHISPER_TYPE {
				t.Fatalf("alice's message after a reply has type %d, want normal", w.typ)
			}
			bob.mustReceive(ctx, t, alice, w, fmt.Sprintf("msg %d", i))
		}
		// Out of order: x2 arrives now, x1 only after the restart.
		x1 := alice.send(ctx, t, bob, "x1")
		x2 := alice.send(ctx, t, bob, "x2")
		bob.mustReceive(ctx, t, alice, x2, "x2")
		y1 := bob.send(ctx, t, alice, "y1") // in flight across the restart

		// Restart: new store object on the same data, new Containers.
		must(t, st.Close())
		st2 := openStore(t, be)
		alice2 := &peer{user: "111", dev: mustGetDevice(t, st2, "alice")}
		bob2 := &peer{user: "222", dev: mustGetDevice(t, st2, "bob")}
		if *alice2.dev.IdentityKey.Priv != *alice.dev.IdentityKey.Priv || *bob2.dev.IdentityKey.Priv != *bob.dev.IdentityKey.Priv {
			t.Fatal("identity keys changed across reload")
		}

		bob2.mustReceive(ctx, t, alice2, x1, "x1") // skipped message key survived
		alice2.mustReceive(ctx, t, bob2, y1, "y1")
		for i := 0; i < 4; i++ {
			bob2.mustReceive(ctx, t, alice2, alice2.send(ctx, t, bob2, fmt.Sprintf("after %d", i)), fmt.Sprintf("after %d", i))
			alice2.mustReceive(ctx, t, bob2, bob2.send(ctx, t, alice2, fmt.Sprintf("back %d", i)), fmt.Sprintf("back %d", i))
		}

		// Both profiles hold exactly one session, under the peer's address.
		for _, c := range []struct{ profile, addr string }{{"alice", bob.addr().String()}, {"bob", alice.addr().String()}} {
			kvs, err := st2.Scan(ctx, c.profile, storage.NSSession, "")
			must(t, err)
			if len(kvs) != 1 || kvs[0].Key != c.addr {
				t.Errorf("%s sessions = %v, want one for %s", c.profile, kvs, c.addr)
			}
		}
	})
}

func mustGetDevice(t *testing.T, st storage.Store, profile string) *store.Device {
	t.Helper()
	d, err := newContainer(t, st, profile).GetDevice(ctxT(t))
	must(t, err)
	if d.ID == nil {
		t.Fatalf("%s: reloaded device is not paired", profile)
	}
	return d
}

// TestLibsignalGroupRoundTrip: group (sender key) messaging through our
// store. Alice distributes her sender key, Bob processes it and decrypts
// her group messages inside DoDecryptionTxn (including out of order and a
// rolled-back decryption), then both reload from storage and continue.
func TestLibsignalGroupRoundTrip(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		ctx := ctxT(t)
		st := openStore(t, be)
		alice := &peer{user: "111", dev: pairedDevice(t, newContainer(t, st, "alice"), "111")}
		bob := &peer{user: "222", dev: pairedDevice(t, newContainer(t, st, "bob"), "222")}
		const group = "120363000000000001@g.us"
		name := protocol.NewSenderKeyName(group, alice.addr())

		skdm, err := groups.NewGroupSessionBuilder(alice.dev, ser).Create(ctx, name)
		must(t, err)
		received, err := protocol.NewSenderKeyDistributionMessageFromBytes(skdm.Serialize(), ser.SenderKeyDistributionMessage)
		must(t, err)
		must(t, groups.NewGroupSessionBuilder(bob.dev, ser).Process(ctx, name, received))

		send := func(p *peer, text string) []byte {
			t.Helper()
			msg, err := groups.NewGroupCipher(groups.NewGroupSessionBuilder(p.dev, ser), name, p.dev).Encrypt(ctx, []byte(text))
			must(t, err)
			return msg.SignedSerialize()
		}
		receive := func(p *peer, body []byte, fail error) (string, error) {
			var pt []byte
			err := p.dev.EventBuffer.DoDecryptionTxn(ctx, func(ctx context.Context) error {
				m, err := protocol.NewSenderKeyMessageFromBytes(body, ser.SenderKeyMessage)
				if err != nil {
					return err
				}
				if pt, err = groups.NewGroupCipher(groups.NewGroupSessionBuilder(p.dev, ser), name, p.dev).Decrypt(ctx, m); err != nil {
					return err
				}
				if err := p.dev.EventBuffer.PutBufferedEvent(ctx, sha256.Sum256(body), pt, time.Now()); err != nil {
					return err
				}
				return fail
			})
			return string(pt), err
		}
		mustReceive := func(p *peer, body []byte, want string) {
			t.Helper()
			if got, err := receive(p, body, nil); err != nil || got != want {
				t.Fatalf("group receive = %q, %v; want %q", got, err, want)
			}
		}

		g1 := send(alice, "g1")
		if _, err := receive(bob, g1, errBoom); !errors.Is(err, errBoom) {
			t.Fatalf("failing group receive = %v", err)
		}
		mustReceive(bob, g1, "g1") // the rolled-back attempt left the chain untouched
		if _, err := receive(bob, g1, nil); err == nil || errors.Is(err, ErrBufferedEventExists) {
			t.Fatalf("replayed group message: %v; want the chain to refuse it (advance persisted)", err)
		}
		g2, g3 := send(alice, "g2"), send(alice, "g3")
		mustReceive(bob, g3, "g3")
		g4 := send(alice, "g4") // in flight across the restart

		must(t, st.Close())
		st2 := openStore(t, be)
		alice = &peer{user: "111", dev: mustGetDevice(t, st2, "alice")}
		bob = &peer{user: "222", dev: mustGetDevice(t, st2, "bob")}
		mustReceive(bob, g2, "g2") // skipped key of g2 survived the reload
		mustReceive(bob, g4, "g4")
		for i := 0; i < 3; i++ {
			text := fmt.Sprintf("after %d", i)
			mustReceive(bob, send(alice, text), text)
		}
		for _, profile := range []string{"alice", "bob"} {
			kvs, err := st2.Scan(ctx, profile, storage.NSSenderKey, "")
			must(t, err)
			if want := alice.addr().String() + "|" + group; len(kvs) != 1 || kvs[0].Key != want {
				t.Errorf("%s sender keys = %v, want one under %s", profile, kvs, want)
			}
		}
	})
}
