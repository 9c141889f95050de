package signal

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"go.mau.fi/whatsmeow/util/keys"

	"github.com/amarula/amarula/storage"
)

// Prekeys live in NSPrekey as
//
//	id:<8-digit zero-padded id>   1 flag byte (1 = uploaded) + 32-byte private key
//	next_id                       decimal: the id the next generated prekey gets
//
// Zero padding makes Scan's key order the numeric order, which
// GetOrGenPreKeys needs ("the oldest unuploaded keys first"). The persisted
// counter means an id is never handed out twice, even after every key was
// used and removed (sqlstore derives the next id from MAX(key_id) and would
// reuse ids in that case).
const (
	preKeyPrefix     = "id:"
	preKeyCounterKey = "next_id"
	// maxPreKeyID bounds ids to 24 bits: WhatsApp encodes them in 3 bytes
	// (sqlstore's schema has the same CHECK).
	maxPreKeyID = 1<<24 - 1
)

func preKeyKey(id uint32) string { return fmt.Sprintf("%s%08d", preKeyPrefix, id) }

func encodePreKey(key *keys.PreKey, uploaded bool) []byte {
	v := make([]byte, 33)
	if uploaded {
		v[0] = 1
	}
	copy(v[1:], key.Priv[:])
	return v
}

// parsePreKeyEntry checks one NSPrekey entry and returns its id and
// uploaded flag without deriving the public key.
func parsePreKeyEntry(k string, v []byte) (uint32, bool, error) {
	id, err := strconv.ParseUint(strings.TrimPrefix(k, preKeyPrefix), 10, 32)
	if err != nil || !strings.HasPrefix(k, preKeyPrefix) || id > maxPreKeyID {
		return 0, false, fmt.Errorf("%w: prekey key %q", ErrInvalidValue, k)
	}
	if len(v) != 33 || v[0] > 1 {
		return 0, false, fmt.Errorf("%w: prekey %d has %d bytes", ErrInvalidValue, id, len(v))
	}
	return uint32(id), v[0] == 1, nil
}

// decodePreKey parses one NSPrekey entry into the key pair.
func decodePreKey(k string, v []byte) (*keys.PreKey, bool, error) {
	id, uploaded, err := parsePreKeyEntry(k, v)
	if err != nil {
		return nil, false, err
	}
	return &keys.PreKey{
		KeyPair: *keys.NewKeyPairFromPrivateKey([32]byte(v[1:])),
		KeyID:   id,
	}, uploaded, nil
}

// nextPreKeyID returns the id the next new prekey gets. Without a counter
// (never generated, or a wiped counter) it falls back to sqlstore's
// MAX(id)+1 so ids stay unique.
func (s *profileStore) nextPreKeyID(ctx context.Context) (uint32, error) {
	v, ok, err := s.b.get(ctx, storage.NSPrekey, preKeyCounterKey)
	if err != nil {
		return 0, err
	}
	if ok {
		n, perr := strconv.ParseUint(string(v), 10, 32)
		if perr == nil && n >= 1 {
			return uint32(n), nil
		}
		s.log.Warnf("Ignoring corrupt prekey counter %q", v)
	}
	kvs, err := s.b.scan(ctx, storage.NSPrekey, preKeyPrefix)
	if err != nil {
		return 0, err
	}
	var maxID uint32
	for _, e := range kvs {
		if id, perr := strconv.ParseUint(strings.TrimPrefix(e.Key, preKeyPrefix), 10, 32); perr == nil && uint32(id) > maxID {
			maxID = uint32(id)
		}
	}
	return maxID + 1, nil
}

// genPreKeys makes n new prekeys starting at the persisted counter and
// writes them plus the advanced counter in one batch.
func (s *profileStore) genPreKeys(ctx context.Context, n uint32, uploaded bool) ([]*keys.PreKey, error) {
	next, err := s.nextPreKeyID(ctx)
	if err != nil {
		return nil, err
	}
	if uint64(next)+uint64(n)-1 > maxPreKeyID {
		return nil, fmt.Errorf("signal: prekey id space exhausted (next %d, want %d)", next, n)
	}
	out := make([]*keys.PreKey, n)
	entries := make([]storage.Entry, 0, n+1)
	for i := range out {
		out[i] = keys.NewPreKey(next + uint32(i))
		entries = append(entries, storage.Entry{NS: storage.NSPrekey, Key: preKeyKey(out[i].KeyID), Value: encodePreKey(out[i], uploaded)})
	}
	entries = append(entries, storage.Entry{NS: storage.NSPrekey, Key: preKeyCounterKey, Value: []byte(strconv.FormatUint(uint64(next+n), 10))})
	if err := s.b.write(ctx, entries...); err != nil {
		return nil, fmt.Errorf("signal: save %d new prekeys: %w", n, err)
	}
	return out, nil
}

// GenOnePreKey generates, stores (marked as uploaded, as sqlstore does) and
// returns one new prekey.
func (s *profileStore) GenOnePreKey(ctx context.Context) (*keys.PreKey, error) {
	s.preKeyMu.Lock()
	defer s.preKeyMu.Unlock()
	ks, err := s.genPreKeys(ctx, 1, true)
	if err != nil {
		return nil, err
	}
	return ks[0], nil
}

// GetOrGenPreKeys returns count prekeys not yet uploaded: the stored ones
// with the lowest ids first, topped up with newly generated ones.
func (s *profileStore) GetOrGenPreKeys(ctx context.Context, count uint32) ([]*keys.PreKey, error) {
	s.preKeyMu.Lock()
	defer s.preKeyMu.Unlock()
	kvs, err := s.b.scan(ctx, storage.NSPrekey, preKeyPrefix)
	if err != nil {
		return nil, fmt.Errorf("signal: query existing prekeys: %w", err)
	}
	out := make([]*keys.PreKey, 0, count)
	for _, e := range kvs {
		if uint32(len(out)) >= count {
			break
		}
		if _, uploaded, err := parsePreKeyEntry(e.Key, e.Value); err != nil {
			return nil, err
		} else if uploaded {
			continue
		}
		key, _, err := decodePreKey(e.Key, e.Value)
		if err != nil {
			return nil, err
		}
		out = append(out, key)
	}
	if missing := count - uint32(len(out)); missing > 0 {
		fresh, err := s.genPreKeys(ctx, missing, false)
		if err != nil {
			return nil, fmt.Errorf("signal: generate prekeys: %w", err)
		}
		out = append(out, fresh...)
	}
	return out, nil
}

// GetPreKey returns the prekey with id, or nil when there is none.
func (s *profileStore) GetPreKey(ctx context.Context, id uint32) (*keys.PreKey, error) {
	k := preKeyKey(id)
	v, ok, err := s.b.get(ctx, storage.NSPrekey, k)
	if err != nil || !ok {
		return nil, err
	}
	key, _, err := decodePreKey(k, v)
	return key, err
}

// RemovePreKey deletes the prekey with id (used once a session consumed it).
func (s *profileStore) RemovePreKey(ctx context.Context, id uint32) error {
	return s.b.del(ctx, storage.NSPrekey, preKeyKey(id))
}

// MarkPreKeysAsUploaded marks every stored prekey with id <= upToID as
// uploaded, in one batch.
func (s *profileStore) MarkPreKeysAsUploaded(ctx context.Context, upToID uint32) error {
	s.preKeyMu.Lock()
	defer s.preKeyMu.Unlock()
	kvs, err := s.b.scan(ctx, storage.NSPrekey, preKeyPrefix)
	if err != nil {
		return err
	}
	var entries []storage.Entry
	for _, e := range kvs {
		id, uploaded, err := parsePreKeyEntry(e.Key, e.Value)
		if err != nil {
			return err
		}
		if id > upToID {
			break // sorted by id
		}
		if !uploaded {
			v := append([]byte{1}, e.Value[1:]...)
			entries = append(entries, storage.Entry{NS: storage.NSPrekey, Key: e.Key, Value: v})
		}
	}
	return s.b.write(ctx, entries...)
}

// UploadedPreKeyCount returns how many stored prekeys are marked uploaded.
func (s *profileStore) UploadedPreKeyCount(ctx context.Context) (int, error) {
	kvs, err := s.b.scan(ctx, storage.NSPrekey, preKeyPrefix)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range kvs {
		if len(e.Value) == 33 && e.Value[0] == 1 {
			n++
		}
	}
	return n, nil
}
