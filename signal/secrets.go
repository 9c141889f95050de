package signal

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"go.mau.fi/whatsmeow/store"
	"go.mau.fi/whatsmeow/types"

	"github.com/amarula/amarula/storage"
)

// Message secrets: msg_secret/<chat>|<sender>|<message id> → secret, with
// chat and sender as non-AD JIDs. Privacy tokens: privacy_token/<user> →
// JSON privacyTokenRecord. Both are looked up under the JID as given and
// under its LID/PN counterpart, as sqlstore's queries do through its LID map.

func msgSecretKey(chat, sender types.JID, id types.MessageID) string {
	return chat.String() + "|" + sender.String() + "|" + id
}

// altJID returns the LID of a PN JID or the PN of a LID JID (empty when
// unknown or for other servers).
func (s *profileStore) altJID(ctx context.Context, jid types.JID) (types.JID, error) {
	switch jid.Server {
	case types.HiddenUserServer:
		return s.lids.GetPNForLID(ctx, jid)
	case types.DefaultUserServer:
		return s.lids.GetLIDForPN(ctx, jid)
	}
	return types.JID{}, nil
}

// PutMessageSecrets stores many message secrets in one batch. Like
// sqlstore's ON CONFLICT DO NOTHING, an existing secret is never replaced
// (and within the batch the first one wins).
func (s *profileStore) PutMessageSecrets(ctx context.Context, inserts []store.MessageSecretInsert) error {
	if len(inserts) == 0 {
		return nil
	}
	keys := make([]string, len(inserts))
	for i, in := range inserts {
		keys[i] = msgSecretKey(in.Chat.ToNonAD(), in.Sender.ToNonAD(), in.ID)
	}
	existing, err := s.b.getMany(ctx, storage.NSMsgSecret, keys)
	if err != nil {
		return err
	}
	entries := make([]storage.Entry, 0, len(inserts))
	for i, in := range inserts {
		if _, ok := existing[keys[i]]; ok {
			continue
		}
		existing[keys[i]] = in.Secret
		entries = append(entries, storage.Entry{NS: storage.NSMsgSecret, Key: keys[i], Value: in.Secret})
	}
	return s.b.write(ctx, entries...)
}

// PutMessageSecret stores one message secret unless one is already stored.
func (s *profileStore) PutMessageSecret(ctx context.Context, chat, sender types.JID, id types.MessageID, secret []byte) error {
	return s.PutMessageSecrets(ctx, []store.MessageSecretInsert{{Chat: chat, Sender: sender, ID: id, Secret: secret}})
}

// GetMessageSecret returns the secret of message id and the sender it was
// stored under, matching chat and sender by their PN or LID form; nil when
// unknown.
func (s *profileStore) GetMessageSecret(ctx context.Context, chat, sender types.JID, id types.MessageID) ([]byte, types.JID, error) {
	chat, sender = chat.ToNonAD(), sender.ToNonAD()
	altChat, err := s.altJID(ctx, chat)
	if err != nil {
		return nil, types.JID{}, err
	}
	altSender, err := s.altJID(ctx, sender)
	if err != nil {
		return nil, types.JID{}, err
	}
	type candidate struct {
		key    string
		sender types.JID
	}
	var cands []candidate
	for _, c := range []types.JID{chat, altChat.ToNonAD()} {
		if c.IsEmpty() {
			continue
		}
		for _, snd := range []types.JID{sender, altSender.ToNonAD()} {
			if !snd.IsEmpty() {
				cands = append(cands, candidate{msgSecretKey(c, snd, id), snd})
			}
		}
	}
	keys := make([]string, len(cands))
	for i, c := range cands {
		keys[i] = c.key
	}
	got, err := s.b.getMany(ctx, storage.NSMsgSecret, keys)
	if err != nil {
		return nil, types.JID{}, err
	}
	for _, c := range cands {
		if v, ok := got[c.key]; ok {
			return v, c.sender, nil
		}
	}
	return nil, types.JID{}, nil
}

type privacyTokenRecord struct {
	Token     []byte `json:"token"`
	Timestamp int64  `json:"ts"` // Unix seconds, as sqlstore keeps it
}

// PutPrivacyTokens stores (replaces) the privacy tokens of their users in one
// batch.
func (s *profileStore) PutPrivacyTokens(ctx context.Context, tokens ...store.PrivacyToken) error {
	entries := make([]storage.Entry, 0, len(tokens))
	for _, t := range tokens {
		v, err := json.Marshal(privacyTokenRecord{Token: t.Token, Timestamp: t.Timestamp.Unix()})
		if err != nil {
			return fmt.Errorf("signal: encode privacy token: %w", err)
		}
		entries = append(entries, storage.Entry{NS: storage.NSPrivacyToken, Key: t.User.ToNonAD().String(), Value: v})
	}
	return s.b.write(ctx, entries...)
}

// GetPrivacyToken returns the newest privacy token stored for user under its
// PN or LID form, or nil when none.
func (s *profileStore) GetPrivacyToken(ctx context.Context, user types.JID) (*store.PrivacyToken, error) {
	user = user.ToNonAD()
	keys := []string{user.String()}
	alt, err := s.altJID(ctx, user)
	if err != nil {
		return nil, err
	}
	if !alt.IsEmpty() {
		keys = append(keys, alt.ToNonAD().String())
	}
	got, err := s.b.getMany(ctx, storage.NSPrivacyToken, keys)
	if err != nil {
		return nil, err
	}
	var best *privacyTokenRecord
	for _, k := range keys {
		v, ok := got[k]
		if !ok {
			continue
		}
		var rec privacyTokenRecord
		if err := json.Unmarshal(v, &rec); err != nil {
			return nil, fmt.Errorf("%w: privacy token of %s: %v", ErrInvalidValue, k, err)
		}
		if best == nil || rec.Timestamp > best.Timestamp {
			best = &rec
		}
	}
	if best == nil {
		return nil, nil
	}
	return &store.PrivacyToken{User: user, Token: best.Token, Timestamp: time.Unix(best.Timestamp, 0)}, nil
}
