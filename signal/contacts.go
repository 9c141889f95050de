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

// contactRecord is the JSON value of contacts/<jid>: every column of
// sqlstore's whatsmeow_contacts row, so single-field upserts are a
// read-modify-write of one record.
type contactRecord struct {
	FirstName     string `json:"first_name,omitempty"`
	FullName      string `json:"full_name,omitempty"`
	PushName      string `json:"push_name,omitempty"`
	BusinessName  string `json:"business_name,omitempty"`
	RedactedPhone string `json:"redacted_phone,omitempty"`
}

func (r contactRecord) info() types.ContactInfo {
	return types.ContactInfo{
		Found:         true,
		FirstName:     r.FirstName,
		FullName:      r.FullName,
		PushName:      r.PushName,
		BusinessName:  r.BusinessName,
		RedactedPhone: r.RedactedPhone,
	}
}

func recordOf(info *types.ContactInfo) contactRecord {
	return contactRecord{
		FirstName:     info.FirstName,
		FullName:      info.FullName,
		PushName:      info.PushName,
		BusinessName:  info.BusinessName,
		RedactedPhone: info.RedactedPhone,
	}
}

func decodeContact(v []byte) (types.ContactInfo, error) {
	var rec contactRecord
	if err := json.Unmarshal(v, &rec); err != nil {
		return types.ContactInfo{}, fmt.Errorf("%w: contact: %v", ErrInvalidValue, err)
	}
	return rec.info(), nil
}

// getContact returns the contact of user (Found false when unknown). Caller
// holds contactMu. Like sqlstore it caches every answer, misses included;
// reads inside a transaction that wrote the contact see that write.
func (s *profileStore) getContact(ctx context.Context, user types.JID) (types.ContactInfo, error) {
	key := user.String()
	if t := s.b.txFrom(ctx); t != nil {
		if ov, ok := t.lookup(storage.NSContacts, key); ok {
			if ov.deleted {
				return types.ContactInfo{}, nil
			}
			return decodeContact(ov.value)
		}
	}
	if cached, ok := s.contacts[user]; ok {
		return cached, nil
	}
	v, ok, err := s.b.get(ctx, storage.NSContacts, key)
	if err != nil {
		return types.ContactInfo{}, err
	}
	info := types.ContactInfo{}
	if ok {
		if info, err = decodeContact(v); err != nil {
			return types.ContactInfo{}, err
		}
	}
	s.contacts[user] = info
	return info, nil
}

// putContact writes info as the contact of user and caches it once durable.
// Caller holds contactMu.
func (s *profileStore) putContact(ctx context.Context, user types.JID, info types.ContactInfo) error {
	v, err := json.Marshal(recordOf(&info))
	if err != nil {
		return fmt.Errorf("signal: encode contact: %w", err)
	}
	if err := s.b.put(ctx, storage.NSContacts, user.String(), v); err != nil {
		return err
	}
	info.Found = true
	s.cacheContacts(ctx, map[types.JID]types.ContactInfo{user: info})
	return nil
}

// cacheContacts records written contacts in the cache once they are
// durable: now, or when the enclosing transaction commits. Caller holds
// contactMu.
func (s *profileStore) cacheContacts(ctx context.Context, written map[types.JID]types.ContactInfo) {
	if s.b.txFrom(ctx) == nil {
		for j, info := range written {
			s.contacts[j] = info
		}
		return
	}
	s.b.onCommit(ctx, func() {
		s.contactMu.Lock()
		defer s.contactMu.Unlock()
		for j, info := range written {
			s.contacts[j] = info
		}
	})
}

// updateContact applies change to the contact of user and stores it when
// change reports a difference. It returns whether it changed and the value
// change returned as previous.
func (s *profileStore) updateContact(ctx context.Context, user types.JID, change func(*types.ContactInfo) (bool, string)) (bool, string, error) {
	s.contactMu.Lock()
	defer s.contactMu.Unlock()
	info, err := s.getContact(ctx, user)
	if err != nil {
		return false, "", err
	}
	changed, previous := change(&info)
	if !changed {
		return false, "", nil
	}
	if err := s.putContact(ctx, user, info); err != nil {
		return false, "", err
	}
	return true, previous, nil
}

// PutPushName stores the push name of user and reports whether it changed
// and what it was before.
func (s *profileStore) PutPushName(ctx context.Context, user types.JID, pushName string) (bool, string, error) {
	return s.updateContact(ctx, user, func(info *types.ContactInfo) (bool, string) {
		prev := info.PushName
		info.PushName = pushName
		return prev != pushName, prev
	})
}

// PutBusinessName stores the business name of user and reports whether it
// changed and what it was before.
func (s *profileStore) PutBusinessName(ctx context.Context, user types.JID, businessName string) (bool, string, error) {
	return s.updateContact(ctx, user, func(info *types.ContactInfo) (bool, string) {
		prev := info.BusinessName
		info.BusinessName = businessName
		return prev != businessName, prev
	})
}

// PutContactName stores the address-book names of user.
func (s *profileStore) PutContactName(ctx context.Context, user types.JID, firstName, fullName string) error {
	_, _, err := s.updateContact(ctx, user, func(info *types.ContactInfo) (bool, string) {
		changed := info.FirstName != firstName || info.FullName != fullName
		info.FirstName, info.FullName = firstName, fullName
		return changed, ""
	})
	return err
}

// mergeContacts reads the stored records of jids, lets apply change each,
// and writes them all in one batch. Duplicates in jids are applied in order,
// so the last one wins (sqlstore deduplicates the same way).
func (s *profileStore) mergeContacts(ctx context.Context, jids []types.JID, apply func(i int, info *types.ContactInfo)) error {
	s.contactMu.Lock()
	defer s.contactMu.Unlock()
	keys := make([]string, len(jids))
	for i, j := range jids {
		keys[i] = j.String()
	}
	stored, err := s.b.getMany(ctx, storage.NSContacts, keys)
	if err != nil {
		return err
	}
	merged := make(map[types.JID]types.ContactInfo, len(jids))
	order := make([]types.JID, 0, len(jids))
	for i, j := range jids {
		info, seen := merged[j]
		if !seen {
			if v, ok := stored[keys[i]]; ok {
				if info, err = decodeContact(v); err != nil {
					s.log.Warnf("Overwriting corrupt contact %s: %v", j, err)
					info = types.ContactInfo{}
				}
			}
			order = append(order, j)
		}
		apply(i, &info)
		info.Found = true
		merged[j] = info
	}
	entries := make([]storage.Entry, 0, len(order))
	for _, j := range order {
		info := merged[j]
		v, err := json.Marshal(recordOf(&info))
		if err != nil {
			return fmt.Errorf("signal: encode contact: %w", err)
		}
		entries = append(entries, storage.Entry{NS: storage.NSContacts, Key: j.String(), Value: v})
	}
	if err := s.b.write(ctx, entries...); err != nil {
		return err
	}
	if dups := len(jids) - len(order); dups > 0 {
		s.log.Warnf("%d duplicate contacts found in batch contact update", dups)
	}
	s.cacheContacts(ctx, merged)
	return nil
}

// PutAllContactNames stores the address-book names of many contacts in one
// batch, keeping their push names, business names and redacted phones.
func (s *profileStore) PutAllContactNames(ctx context.Context, contacts []store.ContactEntry) error {
	if len(contacts) == 0 {
		return nil
	}
	jids := make([]types.JID, len(contacts))
	for i, c := range contacts {
		jids[i] = c.JID
	}
	return s.mergeContacts(ctx, jids, func(i int, info *types.ContactInfo) {
		info.FirstName, info.FullName = contacts[i].FirstName, contacts[i].FullName
	})
}

// PutManyRedactedPhones stores the redacted phone numbers of many contacts
// in one batch.
func (s *profileStore) PutManyRedactedPhones(ctx context.Context, entries []store.RedactedPhoneEntry) error {
	if len(entries) == 0 {
		return nil
	}
	jids := make([]types.JID, len(entries))
	for i, e := range entries {
		jids[i] = e.JID
	}
	return s.mergeContacts(ctx, jids, func(i int, info *types.ContactInfo) {
		info.RedactedPhone = entries[i].RedactedPhone
	})
}

// GetContact returns what is known about user (Found false when nothing).
func (s *profileStore) GetContact(ctx context.Context, user types.JID) (types.ContactInfo, error) {
	s.contactMu.Lock()
	defer s.contactMu.Unlock()
	return s.getContact(ctx, user)
}

// GetAllContacts returns every stored contact.
func (s *profileStore) GetAllContacts(ctx context.Context) (map[types.JID]types.ContactInfo, error) {
	s.contactMu.Lock()
	defer s.contactMu.Unlock()
	kvs, err := s.b.scan(ctx, storage.NSContacts, "")
	if err != nil {
		return nil, err
	}
	out := make(map[types.JID]types.ContactInfo, len(kvs))
	for _, e := range kvs {
		jid, err := types.ParseJID(e.Key)
		if err != nil {
			s.log.Warnf("Skipping contact with unparseable JID %q: %v", e.Key, err)
			continue
		}
		info, err := decodeContact(e.Value)
		if err != nil {
			s.log.Warnf("Skipping corrupt contact %s: %v", jid, err)
			continue
		}
		out[jid] = info
		if s.b.txFrom(ctx) == nil {
			s.contacts[jid] = info
		}
	}
	return out, nil
}

// chatSettingsRecord is the JSON value of chat_settings/<jid>. MutedUntil
// uses sqlstore's encoding: 0 not muted, -1 forever, else Unix seconds.
type chatSettingsRecord struct {
	MutedUntil int64 `json:"muted_until,omitempty"`
	Pinned     bool  `json:"pinned,omitempty"`
	Archived   bool  `json:"archived,omitempty"`
}

func (s *profileStore) updateChatSettings(ctx context.Context, chat types.JID, change func(*chatSettingsRecord)) error {
	s.chatMu.Lock()
	defer s.chatMu.Unlock()
	var rec chatSettingsRecord
	v, ok, err := s.b.get(ctx, storage.NSChatSettings, chat.String())
	if err != nil {
		return err
	}
	if ok {
		if err := json.Unmarshal(v, &rec); err != nil {
			s.log.Warnf("Overwriting corrupt chat settings of %s: %v", chat, err)
			rec = chatSettingsRecord{}
		}
	}
	change(&rec)
	if v, err = json.Marshal(rec); err != nil {
		return fmt.Errorf("signal: encode chat settings: %w", err)
	}
	return s.b.put(ctx, storage.NSChatSettings, chat.String(), v)
}

// PutMutedUntil stores until when chat is muted (zero: not muted;
// store.MutedForever: forever).
func (s *profileStore) PutMutedUntil(ctx context.Context, chat types.JID, mutedUntil time.Time) error {
	var val int64
	if mutedUntil.Equal(store.MutedForever) {
		val = -1
	} else if !mutedUntil.IsZero() {
		val = mutedUntil.Unix()
	}
	return s.updateChatSettings(ctx, chat, func(r *chatSettingsRecord) { r.MutedUntil = val })
}

// PutPinned stores whether chat is pinned.
func (s *profileStore) PutPinned(ctx context.Context, chat types.JID, pinned bool) error {
	return s.updateChatSettings(ctx, chat, func(r *chatSettingsRecord) { r.Pinned = pinned })
}

// PutArchived stores whether chat is archived.
func (s *profileStore) PutArchived(ctx context.Context, chat types.JID, archived bool) error {
	return s.updateChatSettings(ctx, chat, func(r *chatSettingsRecord) { r.Archived = archived })
}

// GetChatSettings returns the local settings of chat (Found false when none).
func (s *profileStore) GetChatSettings(ctx context.Context, chat types.JID) (types.LocalChatSettings, error) {
	var settings types.LocalChatSettings
	v, ok, err := s.b.get(ctx, storage.NSChatSettings, chat.String())
	if err != nil || !ok {
		return settings, err
	}
	var rec chatSettingsRecord
	if err := json.Unmarshal(v, &rec); err != nil {
		return settings, fmt.Errorf("%w: chat settings of %s: %v", ErrInvalidValue, chat, err)
	}
	settings.Found = true
	settings.Pinned = rec.Pinned
	settings.Archived = rec.Archived
	if rec.MutedUntil < 0 {
		settings.MutedUntil = store.MutedForever
	} else if rec.MutedUntil > 0 {
		settings.MutedUntil = time.Unix(rec.MutedUntil, 0)
	}
	return settings, nil
}
