package signal

import (
	"bytes"
	"testing"

	"go.mau.fi/whatsmeow/store"
	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/util/keys"
)

// Stored values are untrusted bytes (a torn write, a foreign writer, a bug
// in an older version): every decoder must reject garbage with an error,
// never panic, and whatever it accepts must survive a re-encode.

func FuzzDecodeCreds(f *testing.F) {
	d := &store.Device{NoiseKey: keys.NewKeyPair(), IdentityKey: keys.NewKeyPair(), RegistrationID: 7, AdvSecretKey: []byte("adv")}
	d.SignedPreKey = d.IdentityKey.CreateSignedPreKey(1)
	jid := types.JID{User: "111", Device: 2, Server: types.DefaultUserServer}
	d.ID = &jid
	d.LID = types.JID{User: "9", Server: types.HiddenUserServer}
	valid, err := encodeCreds(d)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(valid)
	f.Add([]byte(`{"version":1}`))
	f.Add([]byte(`{"jid":"x@s.whatsapp.net","version":1,"noise_key":"AAAA"}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, v []byte) {
		d, err := decodeCreds(v)
		if err != nil {
			return
		}
		again, err := encodeCreds(d)
		if err != nil {
			t.Fatalf("decoded creds do not re-encode: %v", err)
		}
		d2, err := decodeCreds(again)
		if err != nil {
			t.Fatalf("re-encoded creds do not decode: %v", err)
		}
		if *d2.ID != *d.ID || *d2.NoiseKey.Priv != *d.NoiseKey.Priv || *d2.IdentityKey.Priv != *d.IdentityKey.Priv ||
			*d2.SignedPreKey.Signature != *d.SignedPreKey.Signature || d2.RegistrationID != d.RegistrationID || d2.LID != d.LID {
			t.Fatal("creds changed across a re-encode")
		}
	})
}

func FuzzDecodeBufferedEvent(f *testing.F) {
	f.Add(encodeBufferedEvent([]byte("plain"), true, 1700000000, 1700000000123))
	f.Add(encodeBufferedEvent(nil, false, 1, 2))
	f.Add([]byte{1, 0})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, v []byte) {
		ev, err := decodeBufferedEvent(v)
		if err != nil {
			return
		}
		again := encodeBufferedEvent(ev.Plaintext, ev.Plaintext != nil, ev.ServerTime.Unix(), ev.InsertTime.UnixMilli())
		if !bytes.Equal(again, v) {
			t.Fatalf("re-encode = %x, want %x", again, v)
		}
	})
}

func FuzzDecodePreKey(f *testing.F) {
	k := keys.NewPreKey(42)
	f.Add(preKeyKey(42), encodePreKey(k, true))
	f.Add(preKeyKey(1), encodePreKey(k, false))
	f.Add("id:99999999", []byte{2})
	f.Add("next_id", []byte("12"))
	f.Fuzz(func(t *testing.T, key string, v []byte) {
		pk, uploaded, err := decodePreKey(key, v)
		if err != nil {
			return
		}
		if pk.KeyID > maxPreKeyID {
			t.Fatalf("accepted id %d beyond 24 bits", pk.KeyID)
		}
		if !bytes.Equal(encodePreKey(pk, uploaded), v) {
			t.Fatal("prekey changed across a re-encode")
		}
	})
}

func FuzzDecodeContact(f *testing.F) {
	f.Add([]byte(`{"push_name":"Bob","first_name":"B"}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`[`))
	f.Fuzz(func(t *testing.T, v []byte) {
		info, err := decodeContact(v)
		if err == nil && !info.Found {
			t.Fatal("decoded contact not marked found")
		}
	})
}
