package msgstore

import (
	"errors"
	"strconv"
	"testing"
	"time"

	"go.mau.fi/whatsmeow/proto/waE2E"
	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/types/events"
	"google.golang.org/protobuf/proto"
)

// FuzzNormalize feeds arbitrary WhatsApp message protobufs (untrusted: they
// come from other people's phones) through Normalize and IsControl: they
// must never panic, and an edit, revoke or reaction always names a target
// or is reported as something else.
func FuzzNormalize(f *testing.F) {
	for _, m := range []*waE2E.Message{
		{Conversation: proto.String("hi")},
		{ExtendedTextMessage: &waE2E.ExtendedTextMessage{Text: proto.String("re"), ContextInfo: &waE2E.ContextInfo{StanzaID: proto.String("Q")}}},
		{ImageMessage: &waE2E.ImageMessage{Caption: proto.String("c"), FileLength: proto.Uint64(3), FileSHA256: []byte{1, 2}}},
		{ReactionMessage: &waE2E.ReactionMessage{Key: key("T"), Text: proto.String("👍")}},
		{ProtocolMessage: &waE2E.ProtocolMessage{Type: waE2E.ProtocolMessage_MESSAGE_EDIT.Enum(), Key: key("T"),
			EditedMessage: &waE2E.Message{Conversation: proto.String("x")}}},
		{EditedMessage: &waE2E.FutureProofMessage{Message: &waE2E.Message{ProtocolMessage: &waE2E.ProtocolMessage{Type: waE2E.ProtocolMessage_REVOKE.Enum()}}}},
		{DeviceSentMessage: &waE2E.DeviceSentMessage{DestinationJID: proto.String("1@s.whatsapp.net"), Message: &waE2E.Message{Conversation: proto.String("x")}}},
		{PollCreationMessageV3: &waE2E.PollCreationMessage{Name: proto.String("p"), Options: []*waE2E.PollCreationMessage_Option{{OptionName: proto.String("a")}}}},
	} {
		raw, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw, true, false)
	}
	f.Fuzz(func(t *testing.T, raw []byte, fromMe, group bool) {
		var msg waE2E.Message
		if proto.Unmarshal(raw, &msg) != nil {
			return
		}
		chat := peer
		if group {
			chat = types.NewJID("120363000000000001", types.GroupServer)
		}
		evt := (&events.Message{Info: types.MessageInfo{
			MessageSource: types.MessageSource{Chat: chat, Sender: peerDev, IsFromMe: fromMe, IsGroup: group},
			ID:            "F", Timestamp: time.Unix(1_700_000_000, 0),
		}, RawMessage: &msg}).UnwrapRaw()
		m := Normalize(evt)
		_ = IsControl(evt)
		if m.ID != "F" || m.Type == "" {
			t.Fatalf("Normalize lost the id or type: %+v", m)
		}
		if isOp(m.Type) && m.TargetID == "" && validate(m) == nil {
			t.Fatalf("op without target passes validation: %+v", m)
		}
	})
}

// FuzzListCursor: List takes its cursor from API clients; parseCursor
// must accept exactly the canonical "<ts>.<seq>" values (and their
// zero-padded forms) and reject everything else with ErrInvalid.
func FuzzListCursor(f *testing.F) {
	for _, c := range []string{"", "1.2", "0.0", "garbage", "-1.5", "99999999999999999999.1", "1.", ".1", "1.2.3", "+1.2"} {
		f.Add(c)
	}
	f.Fuzz(func(t *testing.T, cursor string) {
		ts, seq, err := parseCursor(cursor)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("parseCursor(%q): %v", cursor, err)
			}
			return
		}
		if ts < 0 {
			t.Fatalf("parseCursor(%q) accepted a negative timestamp", cursor)
		}
		canon := strconv.FormatInt(ts, 10) + "." + strconv.FormatUint(seq, 10)
		if ts2, seq2, err := parseCursor(canon); err != nil || ts2 != ts || seq2 != seq {
			t.Fatalf("canonical form %q of %q does not round-trip", canon, cursor)
		}
	})
}
