package session

import (
	"context"
	"encoding/json"
	"errors"

	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/types/events"

	"github.com/amarula/amarula/msgstore"
)

// handle is the whatsmeow event handler (registered with
// AddEventHandlerWithSuccessStatus). With SynchronousAck, whatsmeow acks a
// message or receipt only when every handler returned true, so a message
// is acknowledged only after it is stored and its event appended; false
// leaves it unacknowledged and WhatsApp redelivers it (the decrypted
// plaintext waits in the event buffer, so the redelivery decrypts again).
//
// Only messages and receipts are handled here, with one storage
// transaction each; every other event is queued to the supervisor.
func (s *Session) handle(evt any) bool {
	switch e := evt.(type) {
	case *events.Message:
		return s.onMessage(e)
	case *events.Receipt:
		return s.onReceipt(e)
	case *events.JoinedGroup, *events.GroupInfo:
		return s.onGroupEvent(e) // groups.go
	case *events.HistorySync:
		// Dispatched from whatsmeow's history goroutine (its result is
		// not an ack), so storing here blocks no message handling.
		s.onHistorySync(e)
	case *events.Connected, *events.Disconnected, *events.StreamReplaced, *events.LoggedOut,
		*events.PairSuccess, *events.PairError, *events.ConnectFailure, *events.TemporaryBan,
		*events.ClientOutdated, *events.KeepAliveTimeout:
		s.push(e)
	case *events.MediaRetry:
		s.onMediaRetry(e)
	case *events.StreamError:
		s.log.Warn("unknown stream error", "code", e.Code)
	case *events.UndecryptableMessage:
		s.log.Warn("undecryptable message", "id", e.Info.ID, "chat", e.Info.Chat.String())
	}
	return true
}

// enter registers an in-flight write; false once the session is draining
// or halted (the message is then left unacknowledged).
func (s *Session) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing || s.halted {
		return false
	}
	s.inflight.Add(1)
	return true
}

// failed logs a pipeline write error (a fenced one has already halted the
// session through the storage watcher).
func (s *Session) failed(what, id string, err error) {
	s.log.Warn(what+" not stored; leaving it unacknowledged for redelivery", "id", id, "err", err)
}

func (s *Session) onMessage(e *events.Message) bool {
	if !s.enter() {
		return false
	}
	defer s.inflight.Done()
	if msgstore.IsControl(e) {
		return true
	}
	m := msgstore.Normalize(e)
	if m.To == "" {
		m.To = s.ownJID().String()
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.StoreTimeout)
	defer cancel()
	res, err := s.msgs.Put(ctx, s.cfg.Profile, s.cfg.Token, m, msgstore.Received)
	switch {
	case errors.Is(err, msgstore.ErrInvalid):
		// It can never be stored; acknowledging avoids a redelivery loop.
		s.log.Warn("dropping unstorable message", "id", m.ID, "err", err)
		return true
	case err != nil:
		s.failed("message", m.ID, err)
		return false
	}
	s.log.Debug("message stored", "id", m.ID, "type", m.Type, "chat", m.Chat,
		"duplicate", res.Duplicate, "pending", res.Pending, "event", res.Event)
	if !res.Duplicate {
		s.stored()
	}
	return true
}

// receiptStatus maps receipt types onto own-message statuses; other
// receipt types (retry, sender, read-self, …) are not acks.
var receiptStatus = map[types.ReceiptType]string{
	types.ReceiptTypeDelivered: msgstore.StatusDelivered,
	types.ReceiptTypeRead:      msgstore.StatusRead,
	types.ReceiptTypePlayed:    msgstore.StatusPlayed,
}

func (s *Session) onReceipt(e *events.Receipt) bool {
	status, ok := receiptStatus[e.Type]
	if !ok || e.IsFromMe || len(e.MessageIDs) == 0 {
		return true
	}
	if !s.enter() {
		return false
	}
	defer s.inflight.Done()
	acks := make([]msgstore.AckData, 0, len(e.MessageIDs))
	for _, id := range e.MessageIDs {
		acks = append(acks, msgstore.AckData{ID: id, Chat: e.Chat.ToNonAD().String(),
			From: e.Sender.ToNonAD().String(), Status: status, Timestamp: e.Timestamp.Unix()})
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.StoreTimeout)
	defer cancel()
	if _, err := s.msgs.Ack(ctx, s.cfg.Profile, s.cfg.Token, acks); err != nil {
		s.failed("receipt", e.MessageIDs[0], err)
		return false
	}
	return true
}

// onHistorySync seeds the message store with a history-sync blob (deduped,
// origin History) and appends one history.synced summary event.
func (s *Session) onHistorySync(e *events.HistorySync) {
	if !s.enter() {
		return
	}
	defer s.inflight.Done()
	cli := s.client()
	own := s.ownJID().String()
	var msgs []msgstore.Message
	convs := e.Data.GetConversations()
	for _, conv := range convs {
		chat, err := types.ParseJID(conv.GetID())
		if err != nil {
			continue
		}
		for _, hm := range conv.GetMessages() {
			evt, err := cli.ParseWebMessage(chat, hm.GetMessage())
			if err != nil || msgstore.IsControl(evt) {
				continue
			}
			m := msgstore.Normalize(evt)
			m.HistorySync = true
			if m.To == "" {
				m.To = own
			}
			msgs = append(msgs, m)
		}
	}
	summary := func(stored, dup int) ([]byte, error) {
		return json.Marshal(map[string]any{
			"sync_type": e.Data.GetSyncType().String(), "chunk_order": e.Data.GetChunkOrder(),
			"progress": e.Data.GetProgress(), "conversations": len(convs),
			"messages": len(msgs), "stored": stored, "duplicates": dup,
		})
	}
	ctx, cancel := context.WithTimeout(s.ctx, 4*s.cfg.StoreTimeout)
	defer cancel()
	stored, dup, err := s.msgs.PutBatch(ctx, s.cfg.Profile, s.cfg.Token, msgs, msgstore.History, msgstore.EventHistorySynced, summary)
	if err != nil {
		s.log.Warn("history sync not fully stored", "stored", stored, "err", err)
		return
	}
	s.log.Info("history synced", "conversations", len(convs), "stored", stored, "duplicates", dup)
	if stored > 0 {
		s.stored()
	}
}
