package signal

import (
	"context"
	"fmt"
	"strings"

	"go.mau.fi/whatsmeow/types"

	"github.com/amarula/amarula/storage"
)

// Key layout of the Signal namespaces (see docs/signal.md):
//
//	identity    <address>                  32-byte identity public key
//	session     <address>                  serialized libsignal session record
//	sender_key  <sender address>|<group>   serialized sender key record
//
// An address is libsignal's "<user>:<device>" (user may carry "_<agent>"),
// so "<user>:" is the prefix of every device of a user. Sender keys are keyed
// sender first so that MigratePNToLID finds a user's keys across all groups
// with one prefix scan.
const senderKeySep = "|"

func senderKeyKey(group, user string) string { return user + senderKeySep + group }

// PutIdentity stores the identity key of address.
func (s *profileStore) PutIdentity(ctx context.Context, address string, key [32]byte) error {
	return s.b.put(ctx, storage.NSIdentity, address, key[:])
}

// DeleteAllIdentities deletes the identity keys of every device of phone.
func (s *profileStore) DeleteAllIdentities(ctx context.Context, phone string) error {
	_, err := s.b.deletePrefix(ctx, storage.NSIdentity, phone+":")
	return err
}

// DeleteIdentity deletes the identity key of one address.
func (s *profileStore) DeleteIdentity(ctx context.Context, address string) error {
	return s.b.del(ctx, storage.NSIdentity, address)
}

// IsTrustedIdentity reports whether key matches the stored identity of
// address. An unknown address is trusted (it is saved right after), as in
// sqlstore.
func (s *profileStore) IsTrustedIdentity(ctx context.Context, address string, key [32]byte) (bool, error) {
	v, ok, err := s.b.get(ctx, storage.NSIdentity, address)
	if err != nil {
		return false, err
	} else if !ok {
		return true, nil
	} else if len(v) != 32 {
		return false, fmt.Errorf("%w: identity of %s has %d bytes", ErrInvalidValue, address, len(v))
	}
	return [32]byte(v) == key, nil
}

// GetSession returns the session record of address, or nil when none.
func (s *profileStore) GetSession(ctx context.Context, address string) ([]byte, error) {
	v, _, err := s.b.get(ctx, storage.NSSession, address)
	return v, err
}

// HasSession reports whether a session with address exists.
func (s *profileStore) HasSession(ctx context.Context, address string) (bool, error) {
	_, ok, err := s.b.get(ctx, storage.NSSession, address)
	return ok, err
}

// GetManySessions returns a map with one entry per address: the session
// record, or nil when there is none (whatsmeow's WithCachedSessions relies on
// missing addresses being present with a nil value, as sqlstore returns).
func (s *profileStore) GetManySessions(ctx context.Context, addresses []string) (map[string][]byte, error) {
	if len(addresses) == 0 {
		return nil, nil
	}
	got, err := s.b.getMany(ctx, storage.NSSession, addresses)
	if err != nil {
		return nil, err
	}
	out := make(map[string][]byte, len(addresses))
	for _, a := range addresses {
		out[a] = got[a]
	}
	return out, nil
}

// PutSession stores the session record of address.
func (s *profileStore) PutSession(ctx context.Context, address string, session []byte) error {
	return s.b.put(ctx, storage.NSSession, address, session)
}

// PutManySessions stores every session in one atomic batch.
func (s *profileStore) PutManySessions(ctx context.Context, sessions map[string][]byte) error {
	entries := make([]storage.Entry, 0, len(sessions))
	for addr, sess := range sessions {
		entries = append(entries, storage.Entry{NS: storage.NSSession, Key: addr, Value: sess})
	}
	return s.b.write(ctx, entries...)
}

// DeleteAllSessions deletes the sessions with every device of phone.
func (s *profileStore) DeleteAllSessions(ctx context.Context, phone string) error {
	_, err := s.b.deletePrefix(ctx, storage.NSSession, phone+":")
	return err
}

// DeleteSession deletes the session with one address.
func (s *profileStore) DeleteSession(ctx context.Context, address string) error {
	return s.b.del(ctx, storage.NSSession, address)
}

// MigratePNToLID moves every session, identity key and sender key of the
// phone-number user pn (all devices) to the LID user lid, overwriting what
// the LID already has and deleting the PN entries, in one atomic batch. Like
// sqlstore it runs at most once per PN per Container; unlike sqlstore a
// failed migration (or one inside a transaction that rolls back) may be
// retried.
func (s *profileStore) MigratePNToLID(ctx context.Context, pn, lid types.JID) error {
	pnSignal := pn.SignalAddressUser()
	if !s.claimMigration(pnSignal) {
		return nil
	}
	lidSignal := lid.SignalAddressUser()
	prefix := pnSignal + ":"
	var (
		entries []storage.Entry
		counts  [3]int
	)
	for i, ns := range []string{storage.NSSession, storage.NSIdentity, storage.NSSenderKey} {
		kvs, err := s.b.scan(ctx, ns, prefix)
		if err != nil {
			s.releaseMigration(pnSignal)
			return fmt.Errorf("signal: migrate %s from %s to %s: %w", ns, pnSignal, lidSignal, err)
		}
		counts[i] = len(kvs)
		for _, e := range kvs {
			entries = append(entries,
				storage.Entry{NS: ns, Key: lidSignal + strings.TrimPrefix(e.Key, pnSignal), Value: e.Value},
				storage.Entry{NS: ns, Key: e.Key, Delete: true})
		}
	}
	if err := s.b.write(ctx, entries...); err != nil {
		s.releaseMigration(pnSignal)
		return fmt.Errorf("signal: migrate %s to %s: %w", pnSignal, lidSignal, err)
	}
	s.b.onAbort(ctx, func() { s.releaseMigration(pnSignal) })
	if len(entries) > 0 {
		s.log.Infof("Migrated %d sessions, %d identity keys and %d sender keys from %s to %s", counts[0], counts[1], counts[2], pnSignal, lidSignal)
	} else {
		s.log.Debugf("No sessions or sender keys found to migrate from %s to %s", pnSignal, lidSignal)
	}
	return nil
}

// claimMigration marks pnSignal as migrated and reports whether it was not
// already.
func (s *profileStore) claimMigration(pnSignal string) bool {
	s.migratedMu.Lock()
	defer s.migratedMu.Unlock()
	if _, ok := s.migrated[pnSignal]; ok {
		return false
	}
	s.migrated[pnSignal] = struct{}{}
	return true
}

func (s *profileStore) releaseMigration(pnSignal string) {
	s.migratedMu.Lock()
	delete(s.migrated, pnSignal)
	s.migratedMu.Unlock()
}

// PutSenderKey stores the sender key record of user in group.
func (s *profileStore) PutSenderKey(ctx context.Context, group, user string, session []byte) error {
	return s.b.put(ctx, storage.NSSenderKey, senderKeyKey(group, user), session)
}

// GetSenderKey returns the sender key record of user in group, or nil.
func (s *profileStore) GetSenderKey(ctx context.Context, group, user string) ([]byte, error) {
	v, _, err := s.b.get(ctx, storage.NSSenderKey, senderKeyKey(group, user))
	return v, err
}
