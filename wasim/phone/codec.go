package phone

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"

	"go.mau.fi/whatsmeow/proto/waE2E"
	"go.mau.fi/whatsmeow/types"
	"google.golang.org/protobuf/proto"
)

// ErrBadPadding means a plaintext does not end in the n copies of byte n
// that whatsmeow's padMessage appends (message.go: unpadMessage).
var ErrBadPadding = errors.New("phone: bad message padding")

// Pad appends whatsmeow's random padding to b: n copies of byte n, with n
// in 1..15 (message.go: padMessage). b is not modified.
func Pad(b []byte) []byte {
	var r [1]byte
	_, _ = rand.Read(r[:]) // crypto/rand.Read never fails (Go ≥ 1.24)
	n := r[0] & 0xf
	if n == 0 {
		n = 0xf
	}
	out := make([]byte, len(b), len(b)+int(n))
	copy(out, b)
	return append(out, bytes.Repeat([]byte{n}, int(n))...)
}

// Unpad strips the padding Pad added. It rejects an empty plaintext and a
// last byte n that is 0 or not repeated n times, like whatsmeow does. The
// result aliases b.
func Unpad(b []byte) ([]byte, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("unpad: empty plaintext: %w", ErrBadPadding)
	}
	n := int(b[len(b)-1])
	if n == 0 || n > len(b) {
		return nil, fmt.Errorf("unpad: pad length %d of %d bytes: %w", n, len(b), ErrBadPadding)
	}
	for _, c := range b[len(b)-n:] {
		if int(c) != n {
			return nil, fmt.Errorf("unpad: inconsistent pad bytes: %w", ErrBadPadding)
		}
	}
	return b[:len(b)-n], nil
}

// EncodeMessage marshals m and pads it: the plaintext of an <enc v="2">.
func EncodeMessage(m *waE2E.Message) ([]byte, error) {
	raw, err := proto.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode message: %w", err)
	}
	return Pad(raw), nil
}

// DecodeMessage unpads a decrypted <enc v="2"> plaintext and unmarshals the
// waE2E.Message inside. It is safe on arbitrary input.
func DecodeMessage(plaintext []byte) (*waE2E.Message, error) {
	raw, err := Unpad(plaintext)
	if err != nil {
		return nil, fmt.Errorf("decode message: %w", err)
	}
	var m waE2E.Message
	if err := proto.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("decode message: %w", err)
	}
	return &m, nil
}

// WrapDeviceSent wraps m for the sender's own other devices, exactly as
// whatsmeow's marshalMessage does: the receiving client unwraps it and sees
// a message from itself in chat.
func WrapDeviceSent(chat types.JID, m *waE2E.Message) *waE2E.Message {
	return &waE2E.Message{
		DeviceSentMessage: &waE2E.DeviceSentMessage{
			DestinationJID: proto.String(chat.String()),
			Message:        m,
		},
		MessageContextInfo: m.GetMessageContextInfo(),
	}
}

// UnwrapDeviceSent returns the inner message and destination chat of a
// DeviceSentMessage, or m itself and an empty JID when m is not one.
func UnwrapDeviceSent(m *waE2E.Message) (*waE2E.Message, types.JID) {
	dsm := m.GetDeviceSentMessage()
	if dsm == nil || dsm.GetMessage() == nil {
		return m, types.JID{}
	}
	chat, _ := types.ParseJID(dsm.GetDestinationJID())
	return dsm.GetMessage(), chat
}
