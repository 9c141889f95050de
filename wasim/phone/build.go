package phone

import (
	"time"

	"go.mau.fi/whatsmeow"
	"go.mau.fi/whatsmeow/proto/waCommon"
	"go.mau.fi/whatsmeow/proto/waE2E"
	"go.mau.fi/whatsmeow/types"
	"google.golang.org/protobuf/proto"
)

// Message types reported by Describe (Summary.Type) and used by the admin
// messages API.
const (
	TypeText     = "text"
	TypeMedia    = "media"
	TypeReaction = "reaction"
	TypeEdit     = "edit"
	TypeRevoke   = "revoke"
	// TypeProtocol is any other protocol message (history sync
	// notifications, app state keys, peer data operations, …).
	TypeProtocol = "protocol"
	// TypeOther is a message kind the simulator does not model.
	TypeOther = "other"
)

// Media kinds of MediaRef.Kind.
const (
	KindImage    = "image"
	KindVideo    = "video"
	KindAudio    = "audio"
	KindDocument = "document"
	KindSticker  = "sticker"
)

// Uploaded is where an uploaded blob can be fetched: the url and
// direct_path of the upload response (§8.3).
type Uploaded struct {
	URL        string
	DirectPath string
}

// MessageKey names the message a reaction, edit or revoke refers to, from
// the point of view of the device that sends the reaction/edit/revoke.
type MessageKey struct {
	// Chat is the chat the target lives in: for a DM, the other user.
	Chat types.JID
	// ID is the target message id.
	ID string
	// FromMe is true when the target was sent by the same account.
	FromMe bool
	// Participant is the target's sender in a group; empty for DMs.
	Participant types.JID
}

func (k MessageKey) proto() *waCommon.MessageKey {
	key := &waCommon.MessageKey{
		RemoteJID: proto.String(k.Chat.String()),
		FromMe:    proto.Bool(k.FromMe),
		ID:        proto.String(k.ID),
	}
	if !k.Participant.IsEmpty() {
		key.Participant = proto.String(k.Participant.ToNonAD().String())
	}
	return key
}

// Text builds a plain text message (Conversation), what whatsmeow clients
// send for text without formatting.
func Text(text string) *waE2E.Message {
	return &waE2E.Message{Conversation: proto.String(text)}
}

// Image builds an image message for blob after it was uploaded to up.
func Image(blob MediaBlob, up Uploaded, mime, caption string) *waE2E.Message {
	return &waE2E.Message{ImageMessage: &waE2E.ImageMessage{
		URL:           proto.String(up.URL),
		DirectPath:    proto.String(up.DirectPath),
		Mimetype:      proto.String(mime),
		Caption:       optString(caption),
		MediaKey:      blob.MediaKey,
		FileSHA256:    blob.FileSHA256,
		FileEncSHA256: blob.FileEncSHA256,
		FileLength:    proto.Uint64(blob.FileLength),
	}}
}

// Document builds a document message for blob after it was uploaded to up.
func Document(blob MediaBlob, up Uploaded, mime, fileName, caption string) *waE2E.Message {
	return &waE2E.Message{DocumentMessage: &waE2E.DocumentMessage{
		URL:           proto.String(up.URL),
		DirectPath:    proto.String(up.DirectPath),
		Mimetype:      proto.String(mime),
		FileName:      optString(fileName),
		Title:         optString(fileName),
		Caption:       optString(caption),
		MediaKey:      blob.MediaKey,
		FileSHA256:    blob.FileSHA256,
		FileEncSHA256: blob.FileEncSHA256,
		FileLength:    proto.Uint64(blob.FileLength),
	}}
}

// Reaction builds a reaction to target; an empty emoji removes a reaction.
func Reaction(target MessageKey, emoji string) *waE2E.Message {
	return &waE2E.Message{ReactionMessage: &waE2E.ReactionMessage{
		Key:               target.proto(),
		Text:              proto.String(emoji),
		SenderTimestampMS: proto.Int64(time.Now().UnixMilli()),
	}}
}

// Edit builds an edit of the sender's own message id in chat to newText,
// shaped like whatsmeow's BuildEdit.
func Edit(chat types.JID, id, newText string) *waE2E.Message {
	return &waE2E.Message{EditedMessage: &waE2E.FutureProofMessage{Message: &waE2E.Message{
		ProtocolMessage: &waE2E.ProtocolMessage{
			Key:           MessageKey{Chat: chat, ID: id, FromMe: true}.proto(),
			Type:          waE2E.ProtocolMessage_MESSAGE_EDIT.Enum(),
			EditedMessage: Text(newText),
			TimestampMS:   proto.Int64(time.Now().UnixMilli()),
		},
	}}}
}

// Revoke builds a "delete for everyone" of target, shaped like whatsmeow's
// BuildRevoke.
func Revoke(target MessageKey) *waE2E.Message {
	return &waE2E.Message{ProtocolMessage: &waE2E.ProtocolMessage{
		Type: waE2E.ProtocolMessage_REVOKE.Enum(),
		Key:  target.proto(),
	}}
}

func optString(s string) *string {
	if s == "" {
		return nil
	}
	return proto.String(s)
}

// MediaRef is what a media message carries to fetch and decrypt its blob.
type MediaRef struct {
	Kind          string // KindImage, KindDocument, …
	Mime          string
	Caption       string
	FileName      string
	URL           string
	DirectPath    string
	MediaKey      []byte
	FileSHA256    []byte
	FileEncSHA256 []byte
	FileLength    uint64
}

// MediaType returns the HKDF info of the media kind, for DecryptMedia.
func (r MediaRef) MediaType() whatsmeow.MediaType {
	switch r.Kind {
	case KindImage, KindSticker:
		return whatsmeow.MediaImage
	case KindVideo:
		return whatsmeow.MediaVideo
	case KindAudio:
		return whatsmeow.MediaAudio
	default:
		return whatsmeow.MediaDocument
	}
}

// Summary classifies a message for the admin messages API and for building
// the stanza around it.
type Summary struct {
	// Type is one of the Type* constants.
	Type string
	// Text is the text, caption, new text of an edit, or reaction emoji.
	Text string
	// TargetID is the message a reaction, edit or revoke refers to.
	TargetID string
	// Media is set for TypeMedia.
	Media *MediaRef
	// DeviceSentTo is the chat of a DeviceSentMessage (a copy of the
	// account's own message to another chat); empty otherwise.
	DeviceSentTo types.JID
	// StanzaType is the <message type> whatsmeow would use: text, media,
	// reaction or poll (send.go: getTypeFromMessage).
	StanzaType string
	// EncMediaType is the <enc mediatype> of a 1:1 media message; empty
	// otherwise.
	EncMediaType string
	// Edit is the <message edit> attribute: "1" edit, "7" sender revoke,
	// "8" admin revoke; empty otherwise (send.go: getEditAttribute).
	Edit string
	// HideFail is true when <enc decrypt-fail="hide"> is set: edits,
	// revokes and reactions.
	HideFail bool
}

// Describe classifies m. It unwraps DeviceSentMessage and the usual
// ephemeral / view-once wrappers first. It never fails: unknown content is
// TypeOther.
func Describe(m *waE2E.Message) Summary {
	var s Summary
	if m == nil {
		s.Type, s.StanzaType = TypeOther, "text"
		return s
	}
	m, s.DeviceSentTo = UnwrapDeviceSent(m)
	m = unwrap(m)
	s.StanzaType = "text"
	switch {
	case m.Conversation != nil:
		s.Type, s.Text = TypeText, m.GetConversation()
	case m.ExtendedTextMessage != nil:
		s.Type, s.Text = TypeText, m.GetExtendedTextMessage().GetText()
	case m.ReactionMessage != nil:
		r := m.GetReactionMessage()
		s.Type, s.Text, s.TargetID = TypeReaction, r.GetText(), r.GetKey().GetID()
		s.StanzaType = "reaction"
		if r.GetText() == "" {
			s.Edit = string(types.EditAttributeSenderRevoke)
		}
	case m.EditedMessage.GetMessage().GetProtocolMessage() != nil:
		pm := m.GetEditedMessage().GetMessage().GetProtocolMessage()
		s.Type, s.TargetID = TypeEdit, pm.GetKey().GetID()
		s.Text = Describe(pm.GetEditedMessage()).Text
		s.Edit = string(types.EditAttributeMessageEdit)
	case m.ProtocolMessage != nil:
		pm := m.GetProtocolMessage()
		switch pm.GetType() {
		case waE2E.ProtocolMessage_REVOKE:
			s.Type, s.TargetID = TypeRevoke, pm.GetKey().GetID()
			s.Edit = string(types.EditAttributeSenderRevoke)
			if !pm.GetKey().GetFromMe() {
				s.Edit = string(types.EditAttributeAdminRevoke)
			}
		case waE2E.ProtocolMessage_MESSAGE_EDIT:
			s.Type, s.TargetID = TypeEdit, pm.GetKey().GetID()
			s.Text = Describe(pm.GetEditedMessage()).Text
			s.Edit = string(types.EditAttributeMessageEdit)
		default:
			s.Type = TypeProtocol
		}
	default:
		if ref, ok := mediaRef(m); ok {
			s.Type, s.Media, s.Text = TypeMedia, &ref, ref.Caption
			s.StanzaType, s.EncMediaType = "media", ref.Kind
			if m.GetAudioMessage().GetPTT() {
				s.EncMediaType = "ptt"
			} else if m.GetVideoMessage().GetGifPlayback() {
				s.EncMediaType = "gif"
			}
		} else {
			s.Type = TypeOther
		}
	}
	// send.go: any edit attribute, and every reaction, hides decrypt
	// failures on the receiving side.
	s.HideFail = s.Edit != "" || s.StanzaType == "reaction"
	return s
}

// unwrap strips the wrappers whatsmeow also looks through.
func unwrap(m *waE2E.Message) *waE2E.Message {
	for i := 0; i < 8 && m != nil; i++ {
		var inner *waE2E.Message
		switch {
		case m.GetEphemeralMessage().GetMessage() != nil:
			inner = m.GetEphemeralMessage().GetMessage()
		case m.GetViewOnceMessage().GetMessage() != nil:
			inner = m.GetViewOnceMessage().GetMessage()
		case m.GetViewOnceMessageV2().GetMessage() != nil:
			inner = m.GetViewOnceMessageV2().GetMessage()
		case m.GetViewOnceMessageV2Extension().GetMessage() != nil:
			inner = m.GetViewOnceMessageV2Extension().GetMessage()
		case m.GetDocumentWithCaptionMessage().GetMessage() != nil:
			inner = m.GetDocumentWithCaptionMessage().GetMessage()
		default:
			return m
		}
		m = inner
	}
	return m
}

// mediaMessage is what every downloadable media message implements.
type mediaMessage interface {
	GetURL() string
	GetDirectPath() string
	GetMimetype() string
	GetMediaKey() []byte
	GetFileSHA256() []byte
	GetFileEncSHA256() []byte
	GetFileLength() uint64
}

func mediaRef(m *waE2E.Message) (MediaRef, bool) {
	var kind string
	var x mediaMessage
	switch {
	case m.ImageMessage != nil:
		kind, x = KindImage, m.GetImageMessage()
	case m.DocumentMessage != nil:
		kind, x = KindDocument, m.GetDocumentMessage()
	case m.VideoMessage != nil:
		kind, x = KindVideo, m.GetVideoMessage()
	case m.AudioMessage != nil:
		kind, x = KindAudio, m.GetAudioMessage()
	case m.StickerMessage != nil:
		kind, x = KindSticker, m.GetStickerMessage()
	default:
		return MediaRef{}, false
	}
	ref := MediaRef{Kind: kind, Mime: x.GetMimetype(), URL: x.GetURL(), DirectPath: x.GetDirectPath(),
		MediaKey: x.GetMediaKey(), FileSHA256: x.GetFileSHA256(), FileEncSHA256: x.GetFileEncSHA256(), FileLength: x.GetFileLength()}
	if c, ok := x.(interface{ GetCaption() string }); ok {
		ref.Caption = c.GetCaption()
	}
	if f, ok := x.(interface{ GetFileName() string }); ok {
		ref.FileName = f.GetFileName()
	}
	return ref, true
}
