package phone_test

import (
	"testing"

	"go.mau.fi/whatsmeow"

	"github.com/amarula/amarula/wasim/phone"
)

// BenchmarkEncryptDecrypt measures one established-session message: the
// phone's share of routing a text (encrypt on one side, decrypt on the
// other).
func BenchmarkEncryptDecrypt(b *testing.B) {
	b.Run("alternating", func(b *testing.B) { benchEncryptDecrypt(b, true) })
	b.Run("one-way", func(b *testing.B) { benchEncryptDecrypt(b, false) })
}

func benchEncryptDecrypt(b *testing.B, alternate bool) {
	t := &testing.T{}
	a, err := phone.NewDevice(mustJID(t, "15550001111@s.whatsapp.net"))
	if err != nil {
		b.Fatal(err)
	}
	c, err := phone.NewDevice(mustJID(t, "15550002222:1@s.whatsapp.net"))
	if err != nil {
		b.Fatal(err)
	}
	bundle, err := c.Bundle()
	if err != nil {
		b.Fatal(err)
	}
	if err := a.ProcessBundle(c.JID(), bundle); err != nil {
		b.Fatal(err)
	}
	pt, _ := phone.EncodeMessage(phone.Text("benchmark message of ordinary length"))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		from, to := a, c
		if alternate && i%2 == 1 {
			from, to = c, a
		}
		typ, ct, err := from.Encrypt(to.JID(), pt)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := to.Decrypt(from.JID(), typ, ct); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkNewDevice measures creating a phone (identity, signed prekey,
// 100 one-time prekeys): the cost of provisioning thousands of accounts.
func BenchmarkNewDevice(b *testing.B) {
	jid := mustJID(&testing.T{}, "15550001111@s.whatsapp.net")
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := phone.NewDevice(jid); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEncryptMedia measures encrypting a 100 KiB image.
func BenchmarkEncryptMedia(b *testing.B) {
	data := make([]byte, 100<<10)
	b.SetBytes(int64(len(data)))
	for i := 0; i < b.N; i++ {
		if _, err := phone.EncryptMedia(data, whatsmeow.MediaImage); err != nil {
			b.Fatal(err)
		}
	}
}
