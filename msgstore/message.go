// Package msgstore is the consumer message store: every message a profile
// sends or receives, keyed by WhatsApp message id (dedup on id), with an
// ordered index per chat, and edits, revokes and reactions applied to (and
// linked from) the original. It is built on the storage seam and writes
// inside the same transaction that appends the matching event, so a message
// is stored and announced together or not at all.
package msgstore

// Message types (api.md "type").
const (
	TypeText     = "text"
	TypeMedia    = "media"
	TypeReaction = "reaction"
	TypeEdit     = "edit"
	TypeRevoke   = "revoke"
	TypeLocation = "location"
	TypeContact  = "contact"
	TypePoll     = "poll"
	TypeSticker  = "sticker"
	TypeUnknown  = "unknown"
)

// Media states.
const (
	MediaPending = "pending"
	MediaStored  = "stored"
	MediaFailed  = "failed"
)

// Message is the service's normalised message, the JSON object of api.md.
type Message struct {
	ID        string `json:"id"`
	Profile   string `json:"profile"`
	Chat      string `json:"chat"` // reply handle: the peer in 1:1, the group in a group
	From      string `json:"from"`
	To        string `json:"to,omitempty"`
	FromMe    bool   `json:"from_me"`
	Timestamp int64  `json:"timestamp"` // Unix seconds
	PushName  string `json:"push_name,omitempty"`
	Type      string `json:"type"`
	Text      string `json:"text,omitempty"`
	Media     *Media `json:"media,omitempty"`
	TargetID  string `json:"target_id,omitempty"` // reaction/edit/revoke target
	Reaction  string `json:"reaction,omitempty"`  // emoji of a reaction message
	ReplyTo   string `json:"reply_to,omitempty"`  // quoted message id

	// State applied from later messages.
	Edited    bool              `json:"edited"`
	Revoked   bool              `json:"revoked"`
	Reactions map[string]string `json:"reactions,omitempty"` // sender jid -> emoji
	History   []Revision        `json:"history,omitempty"`   // earlier texts, oldest first
	// Raw WhatsApp status of an own message: sent, delivered, read.
	Status string `json:"status,omitempty"`
	// HistorySync marks messages that came from a history-sync blob.
	HistorySync bool `json:"history_sync,omitempty"`

	// Fields added by the session core (msgstore owner); all optional.

	// EditedAt is the time (Unix seconds) of the edit whose text is current.
	EditedAt int64 `json:"edited_at,omitempty"`
	// Location is set for type location.
	Location *Location `json:"location,omitempty"`
	// Contacts is set for type contact (one or more shared contacts).
	Contacts []Contact `json:"contacts,omitempty"`
	// Poll is set for type poll.
	Poll *Poll `json:"poll,omitempty"`
	// RawType names the WhatsApp message kind of an unknown message (the
	// protobuf field, e.g. "pollUpdateMessage"), so consumers can tell
	// them apart.
	RawType string `json:"raw_type,omitempty"`
}

// Location is a shared (or live) location.
type Location struct {
	Latitude  float64 `json:"latitude"`
	Longitude float64 `json:"longitude"`
	Name      string  `json:"name,omitempty"`
	Address   string  `json:"address,omitempty"`
	URL       string  `json:"url,omitempty"`
	Live      bool    `json:"live,omitempty"`
}

// Contact is one shared contact card.
type Contact struct {
	DisplayName string `json:"display_name,omitempty"`
	VCard       string `json:"vcard,omitempty"`
}

// Poll is a poll creation message.
type Poll struct {
	Name            string   `json:"name"`
	Options         []string `json:"options"`
	SelectableCount uint32   `json:"selectable_count,omitempty"`
}

// Media describes a message's attachment and where the gateway keeps it.
type Media struct {
	Kind      string `json:"kind"` // image, video, audio, voice, document, sticker
	Mime      string `json:"mime,omitempty"`
	Size      int64  `json:"size,omitempty"`
	SHA256    string `json:"sha256,omitempty"` // hex of the plaintext
	Caption   string `json:"caption,omitempty"`
	FileName  string `json:"file_name,omitempty"`
	ObjectKey string `json:"object_key,omitempty"`
	State     string `json:"state,omitempty"` // pending, stored, failed

	// Download descriptor (kept so the media worker can fetch and retry).
	URL           string `json:"url,omitempty"` // added by msgstore owner: WhatsApp CDN URL, when the sender gave one
	DirectPath    string `json:"direct_path,omitempty"`
	MediaKey      []byte `json:"media_key,omitempty"`
	FileEncSHA256 []byte `json:"file_enc_sha256,omitempty"`
	FileSHA256    []byte `json:"file_sha256,omitempty"`
	FileLength    uint64 `json:"file_length,omitempty"`
}

// Revision is an earlier version of an edited message.
type Revision struct {
	Text      string `json:"text"`
	Timestamp int64  `json:"timestamp"`
}

// Event types of the per-profile event log (api.md "Events").
const (
	EventMessageReceived     = "message.received"
	EventMessageSent         = "message.sent"
	EventMessageAck          = "message.ack"
	EventMessageEdited       = "message.edited"
	EventMessageRevoked      = "message.revoked"
	EventMessageReaction     = "message.reaction"
	EventMediaStored         = "media.stored"
	EventMediaFailed         = "media.failed"
	EventSessionQR           = "session.qr"
	EventSessionPaired       = "session.paired"
	EventSessionConnected    = "session.connected"
	EventSessionDisconnected = "session.disconnected"
	EventSessionConflict     = "session.conflict"
	EventSessionLoggedOut    = "session.logged_out"
	EventHistorySynced       = "history.synced"
	EventProfileMoved        = "profile.moved"
)

// Public returns m as it may leave the gateway (API responses, event
// payloads, webhooks): the media download descriptor (CDN URL, direct
// path, media key, encrypted-file hash) is left out, since with it anyone
// could fetch and decrypt the file from WhatsApp's CDN.
func (m Message) Public() Message {
	if m.Media != nil {
		md := *m.Media
		md.URL, md.DirectPath, md.MediaKey, md.FileEncSHA256, md.FileSHA256 = "", "", nil, nil, nil
		m.Media = &md
	}
	return m
}
