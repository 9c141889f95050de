package signal

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"

	"go.mau.fi/whatsmeow/store"

	"github.com/amarula/amarula/storage"
)

// App state layout:
//
//	app_state_sync_key      <hex key id>              JSON appStateSyncKeyRecord
//	app_state_version       <name>                    8-byte big-endian version + 128-byte hash
//	app_state_mutation_mac  <name>/<hex index MAC>    8-byte big-endian version + value MAC
//
// sqlstore keeps one row per (name, version, index MAC) and always reads the
// highest version; keeping only the highest version per index MAC gives the
// same answers with one key per MAC.

type appStateSyncKeyRecord struct {
	Data        []byte `json:"data"`
	Fingerprint []byte `json:"fingerprint"`
	Timestamp   int64  `json:"timestamp"`
}

func (s *profileStore) getAppStateSyncKey(ctx context.Context, id []byte) (*store.AppStateSyncKey, error) {
	v, ok, err := s.b.get(ctx, storage.NSAppStateSyncKey, hex.EncodeToString(id))
	if err != nil || !ok {
		return nil, err
	}
	var rec appStateSyncKeyRecord
	if err := json.Unmarshal(v, &rec); err != nil {
		return nil, fmt.Errorf("%w: app state sync key %x: %v", ErrInvalidValue, id, err)
	}
	return &store.AppStateSyncKey{Data: rec.Data, Fingerprint: rec.Fingerprint, Timestamp: rec.Timestamp}, nil
}

// PutAppStateSyncKey stores key under id unless a key with the same id and
// an equal or newer timestamp is already stored (sqlstore's conditional
// upsert).
func (s *profileStore) PutAppStateSyncKey(ctx context.Context, id []byte, key store.AppStateSyncKey) error {
	s.appStateMu.Lock()
	defer s.appStateMu.Unlock()
	existing, err := s.getAppStateSyncKey(ctx, id)
	if err != nil {
		return err
	}
	if existing != nil && key.Timestamp <= existing.Timestamp {
		return nil
	}
	v, err := json.Marshal(appStateSyncKeyRecord{Data: key.Data, Fingerprint: key.Fingerprint, Timestamp: key.Timestamp})
	if err != nil {
		return fmt.Errorf("signal: encode app state sync key: %w", err)
	}
	return s.b.put(ctx, storage.NSAppStateSyncKey, hex.EncodeToString(id), v)
}

// GetAppStateSyncKey returns the key with id, or nil when unknown.
func (s *profileStore) GetAppStateSyncKey(ctx context.Context, id []byte) (*store.AppStateSyncKey, error) {
	return s.getAppStateSyncKey(ctx, id)
}

// GetLatestAppStateSyncKeyID returns the id of the key with the newest
// timestamp, or nil when there are none. Ties go to the lowest id.
func (s *profileStore) GetLatestAppStateSyncKeyID(ctx context.Context) ([]byte, error) {
	kvs, err := s.b.scan(ctx, storage.NSAppStateSyncKey, "")
	if err != nil {
		return nil, err
	}
	var (
		latest []byte
		bestTS int64
	)
	for _, e := range kvs {
		var rec appStateSyncKeyRecord
		if err := json.Unmarshal(e.Value, &rec); err != nil {
			s.log.Warnf("Skipping corrupt app state sync key %s: %v", e.Key, err)
			continue
		}
		id, err := hex.DecodeString(e.Key)
		if err != nil {
			continue
		}
		if latest == nil || rec.Timestamp > bestTS {
			latest, bestTS = id, rec.Timestamp
		}
	}
	return latest, nil
}

// PutAppStateVersion stores the version and LT-hash of app state name.
func (s *profileStore) PutAppStateVersion(ctx context.Context, name string, version uint64, hash [128]byte) error {
	v := make([]byte, 8+128)
	binary.BigEndian.PutUint64(v, version)
	copy(v[8:], hash[:])
	return s.b.put(ctx, storage.NSAppStateVersion, name, v)
}

// GetAppStateVersion returns the version and hash of name; version 0 and an
// all-zero hash (the initial state) when unknown.
func (s *profileStore) GetAppStateVersion(ctx context.Context, name string) (uint64, [128]byte, error) {
	v, ok, err := s.b.get(ctx, storage.NSAppStateVersion, name)
	if err != nil || !ok {
		return 0, [128]byte{}, err
	}
	if len(v) != 8+128 {
		return 0, [128]byte{}, fmt.Errorf("%w: app state version %s has %d bytes", ErrInvalidValue, name, len(v))
	}
	return binary.BigEndian.Uint64(v), [128]byte(v[8:]), nil
}

// DeleteAppStateVersion forgets the version of name.
func (s *profileStore) DeleteAppStateVersion(ctx context.Context, name string) error {
	return s.b.del(ctx, storage.NSAppStateVersion, name)
}

func mutationMACKey(name string, indexMAC []byte) string {
	return name + "/" + hex.EncodeToString(indexMAC)
}

// PutAppStateMutationMACs records the value MAC of each mutation at version,
// in one batch. An index MAC already stored with a higher version keeps it,
// since reads return the highest version.
func (s *profileStore) PutAppStateMutationMACs(ctx context.Context, name string, version uint64, mutations []store.AppStateMutationMAC) error {
	if len(mutations) == 0 {
		return nil
	}
	s.appStateMu.Lock()
	defer s.appStateMu.Unlock()
	ks := make([]string, len(mutations))
	for i, m := range mutations {
		ks[i] = mutationMACKey(name, m.IndexMAC)
	}
	existing, err := s.b.getMany(ctx, storage.NSAppStateMutationMAC, ks)
	if err != nil {
		return err
	}
	entries := make([]storage.Entry, 0, len(mutations))
	for i, m := range mutations {
		if old, ok := existing[ks[i]]; ok && len(old) >= 8 && binary.BigEndian.Uint64(old) > version {
			continue
		}
		v := make([]byte, 8+len(m.ValueMAC))
		binary.BigEndian.PutUint64(v, version)
		copy(v[8:], m.ValueMAC)
		entries = append(entries, storage.Entry{NS: storage.NSAppStateMutationMAC, Key: ks[i], Value: v})
	}
	return s.b.write(ctx, entries...)
}

// DeleteAppStateMutationMACs forgets the given index MACs of name.
func (s *profileStore) DeleteAppStateMutationMACs(ctx context.Context, name string, indexMACs [][]byte) error {
	entries := make([]storage.Entry, len(indexMACs))
	for i, m := range indexMACs {
		entries[i] = storage.Entry{NS: storage.NSAppStateMutationMAC, Key: mutationMACKey(name, m), Delete: true}
	}
	return s.b.write(ctx, entries...)
}

// GetAppStateMutationMAC returns the value MAC of indexMAC in name, or nil.
func (s *profileStore) GetAppStateMutationMAC(ctx context.Context, name string, indexMAC []byte) ([]byte, error) {
	v, ok, err := s.b.get(ctx, storage.NSAppStateMutationMAC, mutationMACKey(name, indexMAC))
	if err != nil || !ok {
		return nil, err
	}
	if len(v) < 8 {
		return nil, fmt.Errorf("%w: mutation MAC of %s has %d bytes", ErrInvalidValue, name, len(v))
	}
	return v[8:], nil
}
