package phone_test

import (
	"bytes"
	"errors"
	"testing"

	"go.mau.fi/whatsmeow"
	"go.mau.fi/whatsmeow/proto/waE2E"
	"go.mau.fi/whatsmeow/types"
	"google.golang.org/protobuf/proto"

	"github.com/amarula/amarula/wasim/phone"
)

func TestUnpad(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want []byte
		err  bool
	}{
		{"one byte pad", []byte{'a', 'b', 1}, []byte("ab"), false},
		{"fifteen byte pad", append([]byte("x"), bytes.Repeat([]byte{15}, 15)...), []byte("x"), false},
		{"only padding", []byte{2, 2}, []byte{}, false},
		{"empty", nil, nil, true},
		{"zero pad byte", []byte{'a', 0}, nil, true},
		{"pad longer than input", []byte{3, 3}, nil, true},
		{"inconsistent", []byte{'a', 1, 2, 2, 3}, nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := phone.Unpad(tc.in)
			if tc.err {
				if !errors.Is(err, phone.ErrBadPadding) {
					t.Fatalf("err %v, want ErrBadPadding", err)
				}
				return
			}
			if err != nil || !bytes.Equal(got, tc.want) {
				t.Fatalf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestPadRoundTripAndRange(t *testing.T) {
	in := []byte("payload")
	seen := map[int]bool{}
	for i := 0; i < 2000; i++ {
		p := phone.Pad(in)
		n := len(p) - len(in)
		if n < 1 || n > 15 {
			t.Fatalf("pad length %d", n)
		}
		seen[n] = true
		got, err := phone.Unpad(p)
		if err != nil || !bytes.Equal(got, in) {
			t.Fatalf("round trip: %q %v", got, err)
		}
	}
	if len(seen) < 15 {
		t.Fatalf("only %d distinct pad lengths in 2000 pads", len(seen))
	}
	if string(in) != "payload" {
		t.Fatal("Pad modified its input")
	}
}

func TestDescribe(t *testing.T) {
	alice := types.NewJID("15550001111", types.DefaultUserServer)
	blob := phone.MediaBlob{MediaKey: make([]byte, 32), FileSHA256: []byte{1}, FileEncSHA256: []byte{2}, FileLength: 42}
	up := phone.Uploaded{URL: "https://mmg.whatsapp.net/v/x.enc?ccb=11-4", DirectPath: "/v/x.enc?ccb=11-4"}
	ext := &waE2E.Message{ExtendedTextMessage: &waE2E.ExtendedTextMessage{Text: proto.String("formatted")}}
	tests := []struct {
		name string
		msg  *waE2E.Message
		want phone.Summary
	}{
		{"text", phone.Text("hi"), phone.Summary{Type: phone.TypeText, Text: "hi", StanzaType: "text"}},
		{"extended text", ext, phone.Summary{Type: phone.TypeText, Text: "formatted", StanzaType: "text"}},
		{"image", phone.Image(blob, up, "image/jpeg", "cap"), phone.Summary{Type: phone.TypeMedia, Text: "cap", StanzaType: "media", EncMediaType: "image"}},
		{"document", phone.Document(blob, up, "application/pdf", "a.pdf", ""), phone.Summary{Type: phone.TypeMedia, StanzaType: "media", EncMediaType: "document"}},
		{"reaction", phone.Reaction(phone.MessageKey{Chat: alice, ID: "3EB0AA"}, "👍"), phone.Summary{Type: phone.TypeReaction, Text: "👍", TargetID: "3EB0AA", StanzaType: "reaction", HideFail: true}},
		{"reaction removal", phone.Reaction(phone.MessageKey{Chat: alice, ID: "3EB0AA"}, ""), phone.Summary{Type: phone.TypeReaction, TargetID: "3EB0AA", StanzaType: "reaction", Edit: "7", HideFail: true}},
		{"edit", phone.Edit(alice, "3EB0BB", "fixed"), phone.Summary{Type: phone.TypeEdit, Text: "fixed", TargetID: "3EB0BB", StanzaType: "text", Edit: "1", HideFail: true}},
		{"revoke own", phone.Revoke(phone.MessageKey{Chat: alice, ID: "3EB0CC", FromMe: true}), phone.Summary{Type: phone.TypeRevoke, TargetID: "3EB0CC", StanzaType: "text", Edit: "7", HideFail: true}},
		{"revoke other's", phone.Revoke(phone.MessageKey{Chat: alice, ID: "3EB0CC"}), phone.Summary{Type: phone.TypeRevoke, TargetID: "3EB0CC", StanzaType: "text", Edit: "8", HideFail: true}},
		{"device sent text", phone.WrapDeviceSent(alice, phone.Text("mine")), phone.Summary{Type: phone.TypeText, Text: "mine", StanzaType: "text", DeviceSentTo: alice}},
		{"ephemeral image", &waE2E.Message{EphemeralMessage: &waE2E.FutureProofMessage{Message: phone.Image(blob, up, "image/png", "")}}, phone.Summary{Type: phone.TypeMedia, StanzaType: "media", EncMediaType: "image"}},
		{"ptt", &waE2E.Message{AudioMessage: &waE2E.AudioMessage{PTT: proto.Bool(true)}}, phone.Summary{Type: phone.TypeMedia, StanzaType: "media", EncMediaType: "ptt"}},
		{"protocol", &waE2E.Message{ProtocolMessage: &waE2E.ProtocolMessage{Type: waE2E.ProtocolMessage_HISTORY_SYNC_NOTIFICATION.Enum()}}, phone.Summary{Type: phone.TypeProtocol, StanzaType: "text"}},
		{"location", &waE2E.Message{LocationMessage: &waE2E.LocationMessage{}}, phone.Summary{Type: phone.TypeOther, StanzaType: "text"}},
		{"empty", &waE2E.Message{}, phone.Summary{Type: phone.TypeOther, StanzaType: "text"}},
		{"nil", nil, phone.Summary{Type: phone.TypeOther, StanzaType: "text"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := phone.Describe(tc.msg)
			media := got.Media
			got.Media = nil
			if got != tc.want {
				t.Fatalf("got %+v\nwant %+v", got, tc.want)
			}
			if (tc.want.Type == phone.TypeMedia) != (media != nil) {
				t.Fatalf("media %+v", media)
			}
		})
	}
}

func TestDescribeMediaRef(t *testing.T) {
	blob, err := phone.EncryptMedia([]byte("a document"), whatsmeow.MediaDocument)
	if err != nil {
		t.Fatal(err)
	}
	up := phone.Uploaded{URL: "https://mmg.whatsapp.net/v/t62.7118-24/x.enc?ccb=11-4", DirectPath: "/v/t62.7118-24/x.enc?ccb=11-4"}
	// Through the wire: encode, decode, describe.
	pt, err := phone.EncodeMessage(phone.Document(blob, up, "text/plain", "a.txt", "see"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := phone.DecodeMessage(pt)
	if err != nil {
		t.Fatal(err)
	}
	ref := phone.Describe(m).Media
	if ref == nil || ref.Kind != phone.KindDocument || ref.Mime != "text/plain" || ref.FileName != "a.txt" || ref.Caption != "see" ||
		ref.URL != up.URL || ref.DirectPath != up.DirectPath || ref.FileLength != blob.FileLength ||
		!bytes.Equal(ref.MediaKey, blob.MediaKey) || !bytes.Equal(ref.FileSHA256, blob.FileSHA256) || !bytes.Equal(ref.FileEncSHA256, blob.FileEncSHA256) {
		t.Fatalf("media ref %+v", ref)
	}
	got, err := phone.DecryptMedia(blob.Encrypted, ref.MediaKey, ref.MediaType(), ref.FileEncSHA256, ref.FileSHA256)
	if err != nil || string(got) != "a document" {
		t.Fatalf("decrypt via ref: %q %v", got, err)
	}
}

func TestDecodeMessageRejects(t *testing.T) {
	for name, in := range map[string][]byte{
		"empty":          nil,
		"bad padding":    {0x0a, 0x01, 'x', 5},
		"bad protobuf":   {0xff, 0xff, 0xff, 1},
		"truncated utf8": phone.Pad([]byte{0x0a, 0x02, 0xc3}),
	} {
		t.Run(name, func(t *testing.T) {
			if m, err := phone.DecodeMessage(in); err == nil {
				t.Fatalf("decoded %v", m)
			}
		})
	}
}

func FuzzUnpad(f *testing.F) {
	f.Add([]byte{1})
	f.Add([]byte("hello\x03\x03\x03"))
	f.Fuzz(func(t *testing.T, b []byte) {
		out, err := phone.Unpad(b)
		if err != nil {
			if !errors.Is(err, phone.ErrBadPadding) {
				t.Fatalf("unexpected error type %v", err)
			}
		} else {
			n := len(b) - len(out)
			if n < 1 || !bytes.Equal(out, b[:len(out)]) || !bytes.Equal(b[len(out):], bytes.Repeat([]byte{byte(n)}, n)) {
				t.Fatalf("Unpad(%x) = %x", b, out)
			}
		}
		again, err := phone.Unpad(phone.Pad(b))
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("Unpad(Pad(%x)) = %x, %v", b, again, err)
		}
	})
}

func FuzzDecodeMessage(f *testing.F) {
	for _, m := range []*waE2E.Message{
		phone.Text("hi"),
		phone.Edit(types.NewJID("1", types.DefaultUserServer), "X", "y"),
		phone.WrapDeviceSent(types.NewJID("2", types.DefaultUserServer), phone.Text("z")),
	} {
		pt, err := phone.EncodeMessage(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(pt)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := phone.DecodeMessage(b)
		if err != nil {
			return
		}
		_ = phone.Describe(m)
		pt, err := phone.EncodeMessage(m)
		if err != nil {
			t.Fatalf("re-encode of a decoded message: %v", err)
		}
		m2, err := phone.DecodeMessage(pt)
		if err != nil || !proto.Equal(m, m2) {
			t.Fatalf("round trip changed the message: %v", err)
		}
	})
}

// FuzzDecrypt feeds arbitrary <enc> contents, as a hostile companion could
// send them, to a device with an established session. Decrypt must return
// an error, never panic, and the session must survive.
func FuzzDecrypt(f *testing.F) {
	t := &testing.T{}
	a := newDevice(t, "15550001111@s.whatsapp.net")
	b := newDevice(t, "15550002222:1@s.whatsapp.net")
	bb, err := b.Bundle()
	if err != nil {
		f.Fatal(err)
	}
	if err := a.ProcessBundle(b.JID(), bb); err != nil {
		f.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		typ, ct, err := a.Encrypt(b.JID(), phone.Pad([]byte("seed")))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(typ == phone.EncTypePreKey, ct)
	}
	f.Add(false, []byte{0x33, 0x0a, 0x21, 0x05})
	f.Fuzz(func(t *testing.T, preKey bool, ct []byte) {
		typ := phone.EncTypeMsg
		if preKey {
			typ = phone.EncTypePreKey
		}
		_, _ = b.Decrypt(a.JID(), typ, ct)
		_, _ = phone.PreKeyMessageIdentity(ct)
	})
}
