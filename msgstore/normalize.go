package msgstore

import (
	"encoding/hex"
	"strings"

	"go.mau.fi/whatsmeow/proto/waE2E"
	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/types/events"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Media kinds (Media.Kind).
const (
	KindImage    = "image"
	KindVideo    = "video"
	KindAudio    = "audio"
	KindVoice    = "voice"
	KindDocument = "document"
	KindSticker  = "sticker"
)

// Normalize maps a whatsmeow message event onto the service's Message.
//
// Addressing: Chat is the reply handle (the peer in 1:1, the group in a
// group), From the sender without device part — both in phone-number form
// when WhatsApp addressed them by LID and sent the phone number along —,
// To the recipient when the
// event says who it is (the group for group messages, the destination of
// the user's own messages sent from another device). For an incoming 1:1
// message the event does not name the own account, so To is left empty for
// the caller (the session) to fill in. Profile is left empty too.
//
// A sticker is type sticker and, like media, carries a Media descriptor in
// state pending: consumers and the media worker key on Media != nil.
func Normalize(evt *events.Message) Message {
	info := evt.Info
	m := Message{
		ID:        info.ID,
		Chat:      preferPN(info.Chat, chatAlt(info.MessageSource)).String(),
		From:      preferPN(info.Sender, info.SenderAlt).String(),
		FromMe:    info.IsFromMe,
		Timestamp: info.Timestamp.Unix(),
		PushName:  info.PushName,
		Type:      TypeUnknown,
	}
	if info.Timestamp.IsZero() {
		m.Timestamp = 0
	}
	switch {
	case info.IsGroup:
		m.To = m.Chat
	case info.IsFromMe && info.DeviceSentMeta != nil && info.DeviceSentMeta.DestinationJID != "":
		if jid, err := types.ParseJID(info.DeviceSentMeta.DestinationJID); err == nil {
			m.To = jid.ToNonAD().String()
		} else {
			m.To = m.Chat
		}
	case info.IsFromMe:
		m.To = m.Chat
	}
	if evt.Message == nil && evt.RawMessage != nil {
		cp := *evt // not unwrapped yet (e.g. built by hand): unwrap a copy
		evt = cp.UnwrapRaw()
	}
	if evt.Message == nil {
		return m
	}
	fillContent(&m, evt.Message)
	if evt.IsEdit && m.Type != TypeEdit && m.Type != TypeRevoke {
		// An edit whose inner message was not a MESSAGE_EDIT protocol
		// message (should not happen): keep it as unknown rather than as
		// a new message with a fresh text.
		m.Type, m.RawType = TypeUnknown, "editedMessage"
	}
	return m
}

// chatAlt is the phone-number form of a 1:1 chat addressed by LID, if the
// stanza carried it: the recipient's for own messages, the sender's
// otherwise.
func chatAlt(src types.MessageSource) types.JID {
	if src.IsGroup {
		return types.EmptyJID
	}
	if src.IsFromMe {
		return src.RecipientAlt
	}
	return src.SenderAlt
}

// preferPN returns jid without device, or its phone-number alternative
// when jid is a LID and the alternative is known: the same person then
// keeps one chat and one sender address whichever addressing WhatsApp
// used for a message.
func preferPN(jid, alt types.JID) types.JID {
	if jid.Server == types.HiddenUserServer && alt.Server == types.DefaultUserServer && alt.User != "" {
		return alt.ToNonAD()
	}
	return jid.ToNonAD()
}

// fillContent sets the type-dependent fields of m from msg.
func fillContent(m *Message, msg *waE2E.Message) {
	switch {
	case msg.Conversation != nil:
		m.Type, m.Text = TypeText, msg.GetConversation()
	case msg.ExtendedTextMessage != nil:
		x := msg.GetExtendedTextMessage()
		m.Type, m.Text = TypeText, x.GetText()
		m.ReplyTo = x.GetContextInfo().GetStanzaID()
	case msg.ImageMessage != nil:
		x := msg.GetImageMessage()
		m.Type, m.Text = TypeMedia, x.GetCaption()
		setMedia(m, KindImage, x)
		m.Media.Caption = x.GetCaption()
	case msg.VideoMessage != nil || msg.PtvMessage != nil:
		x := msg.GetVideoMessage()
		if x == nil {
			x = msg.GetPtvMessage()
		}
		m.Type, m.Text = TypeMedia, x.GetCaption()
		setMedia(m, KindVideo, x)
		m.Media.Caption = x.GetCaption()
	case msg.AudioMessage != nil:
		x := msg.GetAudioMessage()
		kind := KindAudio
		if x.GetPTT() {
			kind = KindVoice
		}
		m.Type = TypeMedia
		setMedia(m, kind, x)
	case msg.DocumentMessage != nil:
		x := msg.GetDocumentMessage()
		m.Type, m.Text = TypeMedia, x.GetCaption()
		setMedia(m, KindDocument, x)
		m.Media.Caption, m.Media.FileName = x.GetCaption(), x.GetFileName()
		if m.Media.FileName == "" {
			m.Media.FileName = x.GetTitle()
		}
	case msg.StickerMessage != nil:
		m.Type = TypeSticker
		setMedia(m, KindSticker, msg.GetStickerMessage())
	case msg.ReactionMessage != nil:
		x := msg.GetReactionMessage()
		m.Type, m.TargetID, m.Reaction = TypeReaction, x.GetKey().GetID(), x.GetText()
		if ms := x.GetSenderTimestampMS(); ms > 0 {
			m.Timestamp = ms / 1000
		}
	case msg.ProtocolMessage != nil:
		x := msg.GetProtocolMessage()
		switch x.GetType() {
		case waE2E.ProtocolMessage_REVOKE:
			m.Type, m.TargetID = TypeRevoke, x.GetKey().GetID()
		case waE2E.ProtocolMessage_MESSAGE_EDIT:
			m.Type, m.TargetID = TypeEdit, x.GetKey().GetID()
			m.Text = editText(x.GetEditedMessage())
			if ms := x.GetTimestampMS(); ms > 0 {
				m.Timestamp = ms / 1000
			}
		default:
			m.RawType = "protocolMessage:" + strings.ToLower(x.GetType().String())
		}
	case msg.LocationMessage != nil:
		x := msg.GetLocationMessage()
		m.Type, m.Text = TypeLocation, x.GetComment()
		m.ReplyTo = x.GetContextInfo().GetStanzaID()
		m.Location = &Location{Latitude: x.GetDegreesLatitude(), Longitude: x.GetDegreesLongitude(),
			Name: x.GetName(), Address: x.GetAddress(), URL: x.GetURL(), Live: x.GetIsLive()}
	case msg.LiveLocationMessage != nil:
		x := msg.GetLiveLocationMessage()
		m.Type, m.Text = TypeLocation, x.GetCaption()
		m.ReplyTo = x.GetContextInfo().GetStanzaID()
		m.Location = &Location{Latitude: x.GetDegreesLatitude(), Longitude: x.GetDegreesLongitude(), Live: true}
	case msg.ContactMessage != nil:
		x := msg.GetContactMessage()
		m.Type = TypeContact
		m.ReplyTo = x.GetContextInfo().GetStanzaID()
		m.Contacts = []Contact{{DisplayName: x.GetDisplayName(), VCard: x.GetVcard()}}
	case msg.ContactsArrayMessage != nil:
		x := msg.GetContactsArrayMessage()
		m.Type, m.Text = TypeContact, x.GetDisplayName()
		m.ReplyTo = x.GetContextInfo().GetStanzaID()
		for _, c := range x.GetContacts() {
			m.Contacts = append(m.Contacts, Contact{DisplayName: c.GetDisplayName(), VCard: c.GetVcard()})
		}
	case pollOf(msg) != nil:
		x := pollOf(msg)
		m.Type = TypePoll
		m.ReplyTo = x.GetContextInfo().GetStanzaID()
		p := &Poll{Name: x.GetName(), SelectableCount: x.GetSelectableOptionsCount(), Options: []string{}}
		for _, o := range x.GetOptions() {
			p.Options = append(p.Options, o.GetOptionName())
		}
		m.Poll = p
		m.Text = p.Name
	default:
		m.RawType = rawType(msg)
	}
}

// downloadable is what every WhatsApp media message carries.
type downloadable interface {
	GetURL() string
	GetDirectPath() string
	GetMediaKey() []byte
	GetFileEncSHA256() []byte
	GetFileSHA256() []byte
	GetFileLength() uint64
	GetMimetype() string
	GetContextInfo() *waE2E.ContextInfo
}

// setMedia sets m's media descriptor (state pending: the media worker
// downloads it) and the quoted message id.
func setMedia(m *Message, kind string, x downloadable) {
	m.ReplyTo = x.GetContextInfo().GetStanzaID()
	m.Media = &Media{Kind: kind, Mime: x.GetMimetype(), State: MediaPending,
		URL: x.GetURL(), DirectPath: x.GetDirectPath(), MediaKey: x.GetMediaKey(),
		FileEncSHA256: x.GetFileEncSHA256(), FileSHA256: x.GetFileSHA256(), FileLength: x.GetFileLength(),
		Size: int64(x.GetFileLength())}
	if sum := x.GetFileSHA256(); len(sum) > 0 {
		m.Media.SHA256 = hex.EncodeToString(sum)
	}
}

func pollOf(msg *waE2E.Message) *waE2E.PollCreationMessage {
	for _, p := range []*waE2E.PollCreationMessage{msg.GetPollCreationMessage(), msg.GetPollCreationMessageV2(),
		msg.GetPollCreationMessageV3(), msg.GetPollCreationMessageV5()} {
		if p != nil {
			return p
		}
	}
	return nil
}

// editText is the new text of an edit: the text, or the new caption of a
// media message.
func editText(msg *waE2E.Message) string {
	switch {
	case msg == nil:
		return ""
	case msg.Conversation != nil:
		return msg.GetConversation()
	case msg.ExtendedTextMessage != nil:
		return msg.GetExtendedTextMessage().GetText()
	case msg.ImageMessage != nil:
		return msg.GetImageMessage().GetCaption()
	case msg.VideoMessage != nil:
		return msg.GetVideoMessage().GetCaption()
	case msg.DocumentMessage != nil:
		return msg.GetDocumentMessage().GetCaption()
	}
	return ""
}

// rawType names the first content field set in msg (the protobuf field
// name), ignoring the bookkeeping fields every message may carry.
func rawType(msg *waE2E.Message) string {
	name := ""
	msg.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
		switch fd.Name() {
		case "messageContextInfo", "senderKeyDistributionMessage", "fastRatchetKeySenderKeyDistributionMessage":
			return true
		}
		name = string(fd.Name())
		return false
	})
	return name
}

// IsControl reports whether evt carries no user-visible content: protocol
// messages other than edit and revoke (history-sync notifications, app
// state key shares, ephemeral settings…) and messages that only distribute
// a sender key. The session acknowledges them without storing them.
func IsControl(evt *events.Message) bool {
	if evt.Message == nil && evt.RawMessage != nil {
		cp := *evt
		evt = cp.UnwrapRaw()
	}
	msg := evt.Message
	if msg == nil {
		return true
	}
	if pm := msg.GetProtocolMessage(); pm != nil {
		t := pm.GetType()
		return t != waE2E.ProtocolMessage_REVOKE && t != waE2E.ProtocolMessage_MESSAGE_EDIT
	}
	return rawType(msg) == ""
}
