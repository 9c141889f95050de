package session

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.mau.fi/whatsmeow"
	"go.mau.fi/whatsmeow/proto/waE2E"
	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/types/events"
	"google.golang.org/protobuf/proto"

	"github.com/amarula/amarula/msgstore"
)

// SendRequest is one outgoing message. Exactly one of Text, Reaction,
// Edit, Revoke and Media is set.
type SendRequest struct {
	// To is a JID ("15551234567@s.whatsapp.net", "…@g.us") or a phone
	// number ("+15551234567").
	To string
	// Text sends a text message; ReplyTo quotes a stored message.
	Text    string
	ReplyTo string
	// Reaction reacts to TargetID with Emoji ("" removes the reaction).
	Reaction *Reaction
	// Edit replaces the text of one of the account's own messages.
	Edit *Edit
	// Revoke deletes a message for everyone.
	Revoke *Revoke
	// Media sends an attachment: an OutgoingMedia (or pointer), or a value
	// with an OutgoingMedia() method (see sendmedia.go).
	Media any
	// IdempotencyKey makes a retried Send return the first result (even
	// after a failover: the key is kept in storage).
	IdempotencyKey string
}

// Reaction is a reaction to a message.
type Reaction struct{ TargetID, Emoji string }

// Edit is an edit of an own message.
type Edit struct{ TargetID, Text string }

// Revoke is a delete-for-everyone.
type Revoke struct{ TargetID string }

// SendResult is what Send reports.
type SendResult struct {
	ID        string
	Timestamp int64 // Unix seconds, from WhatsApp's ack
	Status    string
	Message   msgstore.Message
	// Replayed is true when IdempotencyKey matched an earlier send whose
	// stored result is returned instead of sending again.
	Replayed bool
}

// ParseRecipient turns a JID or a phone number into a JID.
func ParseRecipient(to string) (types.JID, error) {
	to = strings.TrimSpace(to)
	if strings.Contains(to, "@") {
		jid, err := types.ParseJID(to)
		if err != nil || jid.User == "" {
			return types.EmptyJID, fmt.Errorf("%w: recipient %q is not a valid JID", ErrInvalidRequest, to)
		}
		if jid.Server == types.GroupServer {
			return ParseGroupJID(to) // groups.go
		}
		return jid.ToNonAD(), nil
	}
	digits := strings.Map(func(r rune) rune {
		switch {
		case r >= '0' && r <= '9':
			return r
		case r == '+' || r == ' ' || r == '-' || r == '(' || r == ')' || r == '.':
			return -1
		}
		return 'x'
	}, to)
	if len(digits) < 5 || len(digits) > 20 || strings.Contains(digits, "x") {
		return types.EmptyJID, fmt.Errorf("%w: recipient %q is neither a JID nor a phone number", ErrInvalidRequest, to)
	}
	return types.NewJID(digits, types.DefaultUserServer), nil
}

// Send sends req, stores the message as from_me (status sent) and appends
// message.sent in one transaction, and returns WhatsApp's id and
// timestamp. It needs a connected session.
func (s *Session) Send(ctx context.Context, req SendRequest) (SendResult, error) {
	chat, err := ParseRecipient(req.To)
	if err != nil {
		return SendResult{}, err
	}
	if !s.running() {
		return SendResult{}, ErrNotRunning
	}
	cli := s.client()
	if cli == nil || !cli.IsLoggedIn() {
		return SendResult{}, fmt.Errorf("%w (state %s)", ErrNotConnected, s.State())
	}
	own := s.ownJID()
	var msg *waE2E.Message
	var out *outgoing
	if req.Media != nil {
		if out, err = s.prepareMedia(ctx, cli, own, req); err != nil {
			return SendResult{}, err
		}
		defer out.close()
		msg = out.msg
	} else if msg, err = s.build(ctx, cli, chat, own, req); err != nil {
		return SendResult{}, err
	}

	id := cli.GenerateMessageID()
	if req.IdempotencyKey != "" {
		r, created, err := s.msgs.Reserve(ctx, s.cfg.Profile, s.cfg.Token, req.IdempotencyKey, id)
		if err != nil {
			return SendResult{}, fmt.Errorf("session %s: send: %w", s.cfg.Profile, err)
		}
		if !created {
			if r.Done {
				m, err := s.msgs.Get(ctx, s.cfg.Profile, r.ID)
				if err != nil {
					return SendResult{}, fmt.Errorf("session %s: idempotent replay of %s: %w", s.cfg.Profile, r.ID, err)
				}
				return SendResult{ID: m.ID, Timestamp: m.Timestamp, Status: msgstore.StatusSent, Message: m, Replayed: true}, nil
			}
			// An earlier attempt reserved the id but did not finish:
			// send again under the same id; receivers dedup on it.
			id = r.ID
		}
	}
	resp, err := cli.SendMessage(ctx, chat, msg, whatsmeow.SendRequestExtra{ID: id})
	if err != nil {
		return SendResult{}, fmt.Errorf("session %s: send: %w", s.cfg.Profile, s.groupSendError(ctx, chat, err))
	}
	evt := (&events.Message{
		Info: types.MessageInfo{
			MessageSource: types.MessageSource{Chat: chat, Sender: own, IsFromMe: true, IsGroup: chat.Server == types.GroupServer},
			ID:            resp.ID,
			Timestamp:     resp.Timestamp,
		},
		RawMessage: msg,
	}).UnwrapRaw()
	m := msgstore.Normalize(evt)
	m.Status = msgstore.StatusSent
	// WhatsApp has the message now: record it even if the caller gave up.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.StoreTimeout)
	defer cancel()
	if out != nil {
		// A failed copy leaves the media pending: the media worker then
		// fetches it from the CDN like a received file.
		if err := out.keep(sctx, s.cfg.Media.Objects, s.cfg.Profile, resp.ID, &m); err != nil {
			s.log.Warn("sent media not copied to the object store", "id", resp.ID, "err", err)
		}
	}
	res, err := s.msgs.PutSent(sctx, s.cfg.Profile, s.cfg.Token, m, req.IdempotencyKey)
	if err != nil {
		return SendResult{ID: resp.ID, Timestamp: resp.Timestamp.Unix()}, fmt.Errorf("session %s: sent %s but could not store it: %w", s.cfg.Profile, resp.ID, err)
	}
	s.log.Debug("message sent", "id", resp.ID, "type", m.Type, "chat", m.Chat)
	s.stored()
	return SendResult{ID: resp.ID, Timestamp: resp.Timestamp.Unix(), Status: msgstore.StatusSent, Message: res.Message}, nil
}

// storageFailed is called by the storage watcher on a backend failure; the
// supervisor drops the connection (see watchedStore).
func (s *Session) storageFailed(err error) {
	s.mu.Lock()
	queued := s.storageDown
	s.storageDown = true
	s.mu.Unlock()
	if !queued {
		s.push(evStorageFailed{err: err})
	}
}

// fenced is called by the storage watcher on the first write refused with
// ErrFenced: from then on nothing is acknowledged or written, and the
// supervisor halts.
func (s *Session) fenced(err error) {
	s.mu.Lock()
	first := !s.halted
	s.halted = true
	s.mu.Unlock()
	if first {
		s.push(evHalt{err: err})
	}
}

// build turns req into the WhatsApp message.
func (s *Session) build(ctx context.Context, cli *whatsmeow.Client, chat, own types.JID, req SendRequest) (*waE2E.Message, error) {
	set := 0
	for _, b := range []bool{req.Text != "", req.Reaction != nil, req.Edit != nil, req.Revoke != nil} {
		if b {
			set++
		}
	}
	if set != 1 {
		return nil, fmt.Errorf("%w: exactly one of text, reaction, edit, revoke is required", ErrInvalidRequest)
	}
	switch {
	case req.Reaction != nil:
		sender, err := s.targetSender(ctx, chat, own, req.Reaction.TargetID)
		if err != nil {
			return nil, err
		}
		return cli.BuildReaction(chat, sender, req.Reaction.TargetID, req.Reaction.Emoji), nil
	case req.Edit != nil:
		if req.Edit.Text == "" {
			return nil, fmt.Errorf("%w: edit needs text", ErrInvalidRequest)
		}
		sender, err := s.targetSender(ctx, chat, own, req.Edit.TargetID)
		if err != nil {
			return nil, err
		}
		if sender != own {
			return nil, fmt.Errorf("%w: only own messages can be edited", ErrInvalidRequest)
		}
		return cli.BuildEdit(chat, req.Edit.TargetID, &waE2E.Message{Conversation: proto.String(req.Edit.Text)}), nil
	case req.Revoke != nil:
		sender, err := s.targetSender(ctx, chat, own, req.Revoke.TargetID)
		if err != nil {
			return nil, err
		}
		return cli.BuildRevoke(chat, sender, req.Revoke.TargetID), nil
	}
	if req.ReplyTo == "" {
		return &waE2E.Message{Conversation: proto.String(req.Text)}, nil
	}
	ci := s.quote(ctx, own, req.ReplyTo)
	return &waE2E.Message{ExtendedTextMessage: &waE2E.ExtendedTextMessage{Text: proto.String(req.Text), ContextInfo: ci}}, nil
}

// targetSender is who wrote the stored message id: own for own messages.
// An unknown target in a 1:1 chat is taken to be the peer's.
func (s *Session) targetSender(ctx context.Context, chat, own types.JID, id string) (types.JID, error) {
	if id == "" {
		return types.EmptyJID, fmt.Errorf("%w: target_id is required", ErrInvalidRequest)
	}
	m, err := s.msgs.Get(ctx, s.cfg.Profile, id)
	switch {
	case errors.Is(err, msgstore.ErrNotFound):
		if chat.Server == types.GroupServer {
			return types.EmptyJID, fmt.Errorf("%w: unknown target %s in a group", ErrInvalidRequest, id)
		}
		return chat, nil
	case err != nil:
		return types.EmptyJID, fmt.Errorf("session %s: look up %s: %w", s.cfg.Profile, id, err)
	case m.FromMe:
		return own, nil
	}
	jid, err := types.ParseJID(m.From)
	if err != nil {
		return types.EmptyJID, fmt.Errorf("session %s: target %s has a bad sender %q", s.cfg.Profile, id, m.From)
	}
	return jid, nil
}

// PairPhone starts phone-code pairing for phone ("+15551234567") and
// returns the 8-character code the user types on the phone. It starts a
// pairing round if none runs and waits for its connection.
func (s *Session) PairPhone(ctx context.Context, phone string) (string, error) {
	if !s.running() {
		return "", ErrNotRunning
	}
	jid, err := ParseRecipient(phone)
	if err != nil || jid.Server != types.DefaultUserServer {
		return "", fmt.Errorf("%w: phone %q", ErrInvalidRequest, phone)
	}
	if s.isPaired() {
		return "", ErrAlreadyPaired
	}
	// Wait until a pairing round shows its first code (its connection is
	// then up); wake a resting session once.
	asked := false
	for {
		s.mu.Lock()
		showing := s.state == StatePairing && s.qr != nil
		resting := s.state == StateUnpaired || s.state == StateLoggedOut
		s.mu.Unlock()
		if showing {
			code, err := s.client().PairPhone(ctx, jid.User, true, whatsmeow.PairClientChrome, "Chrome (Linux)")
			if err != nil {
				return "", fmt.Errorf("session %s: pair phone: %w", s.cfg.Profile, err)
			}
			return code, nil
		}
		if resting && !asked {
			s.command(cmdConnect{})
			asked = true
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-s.done:
			return "", ErrNotRunning
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Logout unlinks the device on WhatsApp and wipes its credentials; the
// session then rests in logged_out (Connect starts a new pairing).
func (s *Session) Logout(ctx context.Context) error {
	if !s.running() {
		return ErrNotRunning
	}
	reply := make(chan error, 1)
	s.command(cmdLogout{ctx: ctx, reply: reply})
	select {
	case err := <-reply:
		return err
	case <-s.done:
		return ErrNotRunning
	case <-ctx.Done():
		return ctx.Err()
	}
}
