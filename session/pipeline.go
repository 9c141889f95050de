package session

import (
	"context"
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
	case *events.Connected, *events.Disconnected, *events.StreamReplaced, *events.LoggedOut,
		*events.PairSuccess, *events.PairError, *events.ConnectFailure, *events.TemporaryBan,
		*events.ClientOutdated:
		s.push(e)
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
