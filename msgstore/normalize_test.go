package msgstore

import (
	"reflect"
	"testing"
	"time"

	"go.mau.fi/whatsmeow/proto/waCommon"
	"go.mau.fi/whatsmeow/proto/waE2E"
	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/types/events"
	"google.golang.org/protobuf/proto"
)

var (
	peer    = types.NewJID("15550001111", types.DefaultUserServer)
	peerDev = types.JID{User: "15550001111", Device: 3, Server: types.DefaultUserServer}
	self    = types.NewJID("15559990000", types.DefaultUserServer)
	group   = types.NewJID("120363000000000001", types.GroupServer)
	t0      = time.Unix(1_763_900_000, 0)
)

// incoming builds the event whatsmeow dispatches for msg sent by peerDev
// in a 1:1 chat.
func incoming(id string, msg *waE2E.Message) *events.Message {
	evt := &events.Message{
		Info: types.MessageInfo{
			MessageSource: types.MessageSource{Chat: peer, Sender: peerDev},
			ID:            id, PushName: "Peer", Timestamp: t0,
		},
		RawMessage: msg,
	}
	return evt.UnwrapRaw()
}

func key(id string) *waCommon.MessageKey {
	return &waCommon.MessageKey{RemoteJID: proto.String(peer.String()), ID: proto.String(id), FromMe: proto.Bool(false)}
}

func TestNormalize(t *testing.T) {
	quoted := &waE2E.ContextInfo{StanzaID: proto.String("Q1")}
	mediaFields := func(kind string) *Media {
		return &Media{Kind: kind, Mime: "m/x", URL: "https://mmg.whatsapp.net/x", DirectPath: "/v/t62/x?a=b",
			MediaKey: []byte{1}, FileEncSHA256: []byte{2}, FileSHA256: []byte{0xab, 0xcd}, FileLength: 42,
			Size: 42, SHA256: "abcd", State: MediaPending}
	}
	tests := []struct {
		name string
		msg  *waE2E.Message
		want Message // only the type-dependent fields; addressing is checked below
	}{
		{"conversation", &waE2E.Message{Conversation: proto.String("hi")},
			Message{Type: TypeText, Text: "hi"}},
		{"extended text with quote", &waE2E.Message{ExtendedTextMessage: &waE2E.ExtendedTextMessage{Text: proto.String("re"), ContextInfo: quoted}},
			Message{Type: TypeText, Text: "re", ReplyTo: "Q1"}},
		{"image", &waE2E.Message{ImageMessage: &waE2E.ImageMessage{Caption: proto.String("cap"), Mimetype: proto.String("m/x"),
			URL: proto.String("https://mmg.whatsapp.net/x"), DirectPath: proto.String("/v/t62/x?a=b"), MediaKey: []byte{1},
			FileEncSHA256: []byte{2}, FileSHA256: []byte{0xab, 0xcd}, FileLength: proto.Uint64(42), ContextInfo: quoted}},
			Message{Type: TypeMedia, Text: "cap", ReplyTo: "Q1", Media: func() *Media { m := mediaFields(KindImage); m.Caption = "cap"; return m }()}},
		{"video", &waE2E.Message{VideoMessage: &waE2E.VideoMessage{Mimetype: proto.String("m/x"),
			URL: proto.String("https://mmg.whatsapp.net/x"), DirectPath: proto.String("/v/t62/x?a=b"), MediaKey: []byte{1},
			FileEncSHA256: []byte{2}, FileSHA256: []byte{0xab, 0xcd}, FileLength: proto.Uint64(42)}},
			Message{Type: TypeMedia, Media: mediaFields(KindVideo)}},
		{"audio", &waE2E.Message{AudioMessage: &waE2E.AudioMessage{Mimetype: proto.String("m/x"),
			URL: proto.String("https://mmg.whatsapp.net/x"), DirectPath: proto.String("/v/t62/x?a=b"), MediaKey: []byte{1},
			FileEncSHA256: []byte{2}, FileSHA256: []byte{0xab, 0xcd}, FileLength: proto.Uint64(42)}},
			Message{Type: TypeMedia, Media: mediaFields(KindAudio)}},
		{"voice note", &waE2E.Message{AudioMessage: &waE2E.AudioMessage{PTT: proto.Bool(true), Mimetype: proto.String("m/x"),
			URL: proto.String("https://mmg.whatsapp.net/x"), DirectPath: proto.String("/v/t62/x?a=b"), MediaKey: []byte{1},
			FileEncSHA256: []byte{2}, FileSHA256: []byte{0xab, 0xcd}, FileLength: proto.Uint64(42)}},
			Message{Type: TypeMedia, Media: mediaFields(KindVoice)}},
		{"document", &waE2E.Message{DocumentMessage: &waE2E.DocumentMessage{FileName: proto.String("a.pdf"), Mimetype: proto.String("m/x"),
			URL: proto.String("https://mmg.whatsapp.net/x"), DirectPath: proto.String("/v/t62/x?a=b"), MediaKey: []byte{1},
			FileEncSHA256: []byte{2}, FileSHA256: []byte{0xab, 0xcd}, FileLength: proto.Uint64(42)}},
			Message{Type: TypeMedia, Media: func() *Media { m := mediaFields(KindDocument); m.FileName = "a.pdf"; return m }()}},
		{"document with caption (unwrapped)", &waE2E.Message{DocumentWithCaptionMessage: &waE2E.FutureProofMessage{Message: &waE2E.Message{
			DocumentMessage: &waE2E.DocumentMessage{Title: proto.String("t.txt"), Caption: proto.String("see"), Mimetype: proto.String("m/x"),
				URL: proto.String("https://mmg.whatsapp.net/x"), DirectPath: proto.String("/v/t62/x?a=b"), MediaKey: []byte{1},
				FileEncSHA256: []byte{2}, FileSHA256: []byte{0xab, 0xcd}, FileLength: proto.Uint64(42)}}}},
			Message{Type: TypeMedia, Text: "see", Media: func() *Media { m := mediaFields(KindDocument); m.FileName = "t.txt"; m.Caption = "see"; return m }()}},
		{"sticker", &waE2E.Message{StickerMessage: &waE2E.StickerMessage{Mimetype: proto.String("m/x"),
			URL: proto.String("https://mmg.whatsapp.net/x"), DirectPath: proto.String("/v/t62/x?a=b"), MediaKey: []byte{1},
			FileEncSHA256: []byte{2}, FileSHA256: []byte{0xab, 0xcd}, FileLength: proto.Uint64(42)}},
			Message{Type: TypeSticker, Media: mediaFields(KindSticker)}},
		{"ephemeral image (unwrapped)", &waE2E.Message{EphemeralMessage: &waE2E.FutureProofMessage{Message: &waE2E.Message{
			ImageMessage: &waE2E.ImageMessage{Mimetype: proto.String("m/x"),
				URL: proto.String("https://mmg.whatsapp.net/x"), DirectPath: proto.String("/v/t62/x?a=b"), MediaKey: []byte{1},
				FileEncSHA256: []byte{2}, FileSHA256: []byte{0xab, 0xcd}, FileLength: proto.Uint64(42)}}}},
			Message{Type: TypeMedia, Media: mediaFields(KindImage)}},
		{"reaction", &waE2E.Message{ReactionMessage: &waE2E.ReactionMessage{Key: key("T1"), Text: proto.String("👍"),
			SenderTimestampMS: proto.Int64(t0.Add(5 * time.Second).UnixMilli())}},
			Message{Type: TypeReaction, TargetID: "T1", Reaction: "👍", Timestamp: t0.Unix() + 5}},
		{"reaction removed", &waE2E.Message{ReactionMessage: &waE2E.ReactionMessage{Key: key("T1"), Text: proto.String("")}},
			Message{Type: TypeReaction, TargetID: "T1"}},
		{"revoke", &waE2E.Message{ProtocolMessage: &waE2E.ProtocolMessage{Type: waE2E.ProtocolMessage_REVOKE.Enum(), Key: key("T2")}},
			Message{Type: TypeRevoke, TargetID: "T2"}},
		{"edit (EditedMessage wrapper)", &waE2E.Message{EditedMessage: &waE2E.FutureProofMessage{Message: &waE2E.Message{
			ProtocolMessage: &waE2E.ProtocolMessage{Type: waE2E.ProtocolMessage_MESSAGE_EDIT.Enum(), Key: key("T3"),
				EditedMessage: &waE2E.Message{Conversation: proto.String("fixed")}, TimestampMS: proto.Int64(t0.Add(time.Minute).UnixMilli())}}}},
			Message{Type: TypeEdit, TargetID: "T3", Text: "fixed", Timestamp: t0.Unix() + 60}},
		{"edit of a caption", &waE2E.Message{ProtocolMessage: &waE2E.ProtocolMessage{Type: waE2E.ProtocolMessage_MESSAGE_EDIT.Enum(), Key: key("T4"),
			EditedMessage: &waE2E.Message{ImageMessage: &waE2E.ImageMessage{Caption: proto.String("new cap")}}}},
			Message{Type: TypeEdit, TargetID: "T4", Text: "new cap"}},
		{"location", &waE2E.Message{LocationMessage: &waE2E.LocationMessage{DegreesLatitude: proto.Float64(45.5), DegreesLongitude: proto.Float64(9.2),
			Name: proto.String("Duomo"), Address: proto.String("Milano")}},
			Message{Type: TypeLocation, Location: &Location{Latitude: 45.5, Longitude: 9.2, Name: "Duomo", Address: "Milano"}}},
		{"live location", &waE2E.Message{LiveLocationMessage: &waE2E.LiveLocationMessage{DegreesLatitude: proto.Float64(1), DegreesLongitude: proto.Float64(2),
			Caption: proto.String("here")}},
			Message{Type: TypeLocation, Text: "here", Location: &Location{Latitude: 1, Longitude: 2, Live: true}}},
		{"contact", &waE2E.Message{ContactMessage: &waE2E.ContactMessage{DisplayName: proto.String("Bob"), Vcard: proto.String("BEGIN:VCARD")}},
			Message{Type: TypeContact, Contacts: []Contact{{DisplayName: "Bob", VCard: "BEGIN:VCARD"}}}},
		{"contacts array", &waE2E.Message{ContactsArrayMessage: &waE2E.ContactsArrayMessage{DisplayName: proto.String("2 contacts"),
			Contacts: []*waE2E.ContactMessage{{DisplayName: proto.String("A")}, {DisplayName: proto.String("B")}}}},
			Message{Type: TypeContact, Text: "2 contacts", Contacts: []Contact{{DisplayName: "A"}, {DisplayName: "B"}}}},
		{"poll v3", &waE2E.Message{PollCreationMessageV3: &waE2E.PollCreationMessage{Name: proto.String("Lunch?"), SelectableOptionsCount: proto.Uint32(1),
			Options: []*waE2E.PollCreationMessage_Option{{OptionName: proto.String("pizza")}, {OptionName: proto.String("sushi")}}}},
			Message{Type: TypePoll, Text: "Lunch?", Poll: &Poll{Name: "Lunch?", Options: []string{"pizza", "sushi"}, SelectableCount: 1}}},
		{"unknown: poll vote", &waE2E.Message{PollUpdateMessage: &waE2E.PollUpdateMessage{}},
			Message{Type: TypeUnknown, RawType: "pollUpdateMessage"}},
		{"unknown: protocol message", &waE2E.Message{ProtocolMessage: &waE2E.ProtocolMessage{Type: waE2E.ProtocolMessage_EPHEMERAL_SETTING.Enum()}},
			Message{Type: TypeUnknown, RawType: "protocolMessage:ephemeral_setting"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := Normalize(incoming("ID1", tc.msg))
			want := tc.want
			want.ID, want.Chat, want.From, want.PushName = "ID1", peer.String(), peer.String(), "Peer"
			if want.Timestamp == 0 {
				want.Timestamp = t0.Unix()
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("Normalize:\n got %+v\nwant %+v", got, want)
			}
			if got.Media != nil && !reflect.DeepEqual(*got.Media, *want.Media) {
				t.Fatalf("media:\n got %+v\nwant %+v", *got.Media, *want.Media)
			}
		})
	}
}

func TestNormalizeAddressing(t *testing.T) {
	text := &waE2E.Message{Conversation: proto.String("x")}
	tests := []struct {
		name                 string
		src                  types.MessageSource
		dsm                  *types.DeviceSentMeta
		chat, from, to       string
		fromMe               bool
		wrapDeviceSentOnWire bool
	}{
		{"incoming 1:1: own jid unknown to the event", types.MessageSource{Chat: peer, Sender: peerDev}, nil,
			peer.String(), peer.String(), "", false, false},
		{"group: chat is the group, sender the member", types.MessageSource{Chat: group, Sender: peerDev, IsGroup: true}, nil,
			group.String(), peer.String(), group.String(), false, false},
		{"LID-addressed 1:1 with the phone number along", types.MessageSource{Chat: types.NewJID("123456789", types.HiddenUserServer),
			Sender: types.JID{User: "123456789", Device: 2, Server: types.HiddenUserServer}, SenderAlt: peerDev, AddressingMode: types.AddressingModeLID}, nil,
			peer.String(), peer.String(), "", false, false},
		{"LID-addressed without the phone number", types.MessageSource{Chat: types.NewJID("123456789", types.HiddenUserServer),
			Sender: types.JID{User: "123456789", Device: 2, Server: types.HiddenUserServer}}, nil,
			"123456789@lid", "123456789@lid", "", false, false},
		{"LID group member", types.MessageSource{Chat: group, IsGroup: true,
			Sender: types.NewJID("123456789", types.HiddenUserServer), SenderAlt: peer}, nil,
			group.String(), peer.String(), group.String(), false, false},
		{"own message to a LID chat", types.MessageSource{Chat: types.NewJID("123456789", types.HiddenUserServer), Sender: self, IsFromMe: true,
			RecipientAlt: peer}, nil, peer.String(), self.String(), peer.String(), true, false},
		{"own message from another device", types.MessageSource{Chat: peer, Sender: types.JID{User: self.User, Device: 0, Server: self.Server}, IsFromMe: true},
			&types.DeviceSentMeta{DestinationJID: peer.String()}, peer.String(), self.String(), peer.String(), true, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			raw := text
			if tc.wrapDeviceSentOnWire {
				raw = &waE2E.Message{DeviceSentMessage: &waE2E.DeviceSentMessage{DestinationJID: proto.String(peer.String()), Message: text}}
			}
			evt := (&events.Message{Info: types.MessageInfo{MessageSource: tc.src, ID: "A", Timestamp: t0, DeviceSentMeta: tc.dsm}, RawMessage: raw}).UnwrapRaw()
			got := Normalize(evt)
			if got.Chat != tc.chat || got.From != tc.from || got.To != tc.to || got.FromMe != tc.fromMe || got.Text != "x" {
				t.Fatalf("got chat=%q from=%q to=%q from_me=%v text=%q; want chat=%q from=%q to=%q from_me=%v",
					got.Chat, got.From, got.To, got.FromMe, got.Text, tc.chat, tc.from, tc.to, tc.fromMe)
			}
		})
	}
}

func TestNormalizeUnwrapsRaw(t *testing.T) {
	evt := &events.Message{
		Info: types.MessageInfo{MessageSource: types.MessageSource{Chat: peer, Sender: peerDev}, ID: "W", Timestamp: t0},
		RawMessage: &waE2E.Message{EphemeralMessage: &waE2E.FutureProofMessage{Message: &waE2E.Message{
			Conversation: proto.String("inside")}}},
	}
	if m := Normalize(evt); m.Type != TypeText || m.Text != "inside" {
		t.Fatalf("not unwrapped: %+v", m)
	}
	if evt.Message != nil {
		t.Fatal("Normalize modified its argument")
	}
}

func TestIsControl(t *testing.T) {
	tests := []struct {
		name string
		msg  *waE2E.Message
		want bool
	}{
		{"text", &waE2E.Message{Conversation: proto.String("x")}, false},
		{"edit", &waE2E.Message{ProtocolMessage: &waE2E.ProtocolMessage{Type: waE2E.ProtocolMessage_MESSAGE_EDIT.Enum()}}, false},
		{"revoke", &waE2E.Message{ProtocolMessage: &waE2E.ProtocolMessage{Type: waE2E.ProtocolMessage_REVOKE.Enum()}}, false},
		{"history sync notification", &waE2E.Message{ProtocolMessage: &waE2E.ProtocolMessage{Type: waE2E.ProtocolMessage_HISTORY_SYNC_NOTIFICATION.Enum()}}, true},
		{"app state key share", &waE2E.Message{ProtocolMessage: &waE2E.ProtocolMessage{Type: waE2E.ProtocolMessage_APP_STATE_SYNC_KEY_SHARE.Enum()}}, true},
		{"sender key only", &waE2E.Message{SenderKeyDistributionMessage: &waE2E.SenderKeyDistributionMessage{}}, true},
		{"sender key plus text", &waE2E.Message{SenderKeyDistributionMessage: &waE2E.SenderKeyDistributionMessage{}, Conversation: proto.String("x")}, false},
		{"reaction", &waE2E.Message{ReactionMessage: &waE2E.ReactionMessage{}}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := IsControl(incoming("X", tc.msg)); got != tc.want {
				t.Fatalf("IsControl = %v, want %v", got, tc.want)
			}
		})
	}
}
