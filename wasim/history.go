package wasim

import (
	"bytes"
	"compress/zlib"
	"fmt"
	"sort"

	"google.golang.org/protobuf/proto"

	"go.mau.fi/whatsmeow/proto/waCommon"
	"go.mau.fi/whatsmeow/proto/waE2E"
	"go.mau.fi/whatsmeow/proto/waHistorySync"
	"go.mau.fi/whatsmeow/proto/waWeb"
	"go.mau.fi/whatsmeow/types"
)

// HistoryMessage is one text message of a history sync (POST
// /admin/phones/{phone}/history-sync).
type HistoryMessage struct {
	// Chat is the other user of the DM (user JID).
	Chat      string `json:"chat"`
	ID        string `json:"id"`
	FromMe    bool   `json:"from_me"`
	Text      string `json:"text"`
	Timestamp int64  `json:"timestamp"` // unix seconds; 0 means now
}

// SendHistorySync sends one of the phone's own companions an initial
// bootstrap history sync with msgs, inline (zlib-compressed) in a
// HISTORY_SYNC_NOTIFICATION protocol message (notes §10). whatsmeow emits
// events.HistorySync and answers with a hist_sync receipt.
func (p *Phone) SendHistorySync(deviceJID types.JID, msgs []HistoryMessage) (string, error) {
	d := p.srv.lookupDevice(deviceJID)
	if d == nil || d.acct != p.acct {
		return "", fmt.Errorf("%w: %s", ErrUnknownDevice, deviceJID)
	}
	byChat := map[string][]*waHistorySync.HistorySyncMsg{}
	now := nowUnix()
	for i, m := range msgs {
		chat, err := types.ParseJID(m.Chat)
		if err != nil || chat.User == "" || m.ID == "" {
			return "", fmt.Errorf("%w: history message %d needs chat and id", ErrInvalidRequest, i)
		}
		ts := m.Timestamp
		if ts == 0 {
			ts = now
		}
		key := &waCommon.MessageKey{RemoteJID: proto.String(chat.ToNonAD().String()), FromMe: proto.Bool(m.FromMe), ID: proto.String(m.ID)}
		byChat[key.GetRemoteJID()] = append(byChat[key.GetRemoteJID()], &waHistorySync.HistorySyncMsg{
			Message: &waWeb.WebMessageInfo{
				Key:              key,
				Message:          &waE2E.Message{Conversation: proto.String(m.Text)},
				MessageTimestamp: proto.Uint64(uint64(ts)),
			},
			MsgOrderID: proto.Uint64(uint64(i + 1)),
		})
	}
	chats := make([]string, 0, len(byChat))
	for c := range byChat {
		chats = append(chats, c)
	}
	sort.Strings(chats)
	hs := &waHistorySync.HistorySync{
		SyncType:   waHistorySync.HistorySync_INITIAL_BOOTSTRAP.Enum(),
		ChunkOrder: proto.Uint32(1),
		Progress:   proto.Uint32(100),
	}
	for _, c := range chats {
		hs.Conversations = append(hs.Conversations, &waHistorySync.Conversation{ID: proto.String(c), Messages: byChat[c]})
	}
	raw, err := proto.Marshal(hs)
	if err != nil {
		return "", err
	}
	var buf bytes.Buffer
	zw := zlib.NewWriter(&buf)
	zw.Write(raw)
	zw.Close()
	m := &waE2E.Message{ProtocolMessage: &waE2E.ProtocolMessage{
		Type: waE2E.ProtocolMessage_HISTORY_SYNC_NOTIFICATION.Enum(),
		HistorySyncNotification: &waE2E.HistorySyncNotification{
			SyncType:                          waE2E.HistorySyncType_INITIAL_BOOTSTRAP.Enum(),
			ChunkOrder:                        proto.Uint32(1),
			Progress:                          proto.Uint32(100),
			InitialHistBootstrapInlinePayload: buf.Bytes(),
		},
	}}
	id := "3A" + randomID(9)
	p.remember(id, p.acct.jid(), m)
	p.sendTo(d, id, now, p.acct.jid(), m, 0)
	return id, nil
}
