package signal

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"go.mau.fi/whatsmeow/store"
	"go.mau.fi/whatsmeow/types"

	"github.com/amarula/amarula/storage"
)

// lidMap is the LID↔phone-number map. whatsmeow treats it as global; here it
// is scoped to the profile (NSLIDMapping) and kept in both directions:
//
//	lid_mapping  pn:<phone user>   <lid user>
//	lid_mapping  lid:<lid user>    <phone user>
//
// It keeps sqlstore's invariants (a LID maps to one PN and a PN to one LID;
// putting a mapping replaces whatever either side mapped to before) and its
// cache of answers, misses included. The cache is safe because only this
// profile's owner writes the namespace.
type lidMap struct {
	b *kv

	mu      sync.RWMutex
	pnToLID map[string]string // "" caches a miss
	lidToPN map[string]string
}

var _ store.LIDStore = (*lidMap)(nil)

const (
	lidKeyPrefix = "lid:"
	pnKeyPrefix  = "pn:"
)

func newLIDMap(b *kv) *lidMap {
	return &lidMap{b: b, pnToLID: make(map[string]string), lidToPN: make(map[string]string)}
}

// reset drops the cache (after a wipe).
func (m *lidMap) reset() {
	m.mu.Lock()
	m.pnToLID = make(map[string]string)
	m.lidToPN = make(map[string]string)
	m.mu.Unlock()
}

// directions returns the cache map keyed by the side keyPrefix names and the
// reverse one. Caller holds mu.
func (m *lidMap) directions(keyPrefix string) (forward, backward map[string]string) {
	if keyPrefix == lidKeyPrefix {
		return m.lidToPN, m.pnToLID
	}
	return m.pnToLID, m.lidToPN
}

// lookup resolves source.User through the map under keyPrefix.
func (m *lidMap) lookup(ctx context.Context, source types.JID, targetServer, keyPrefix string) (types.JID, error) {
	result := func(target string) types.JID {
		if target == "" {
			return types.JID{}
		}
		return types.JID{User: target, Device: source.Device, Server: targetServer}
	}
	key := keyPrefix + source.User
	if t := m.b.txFrom(ctx); t != nil {
		if ov, ok := t.lookup(storage.NSLIDMapping, key); ok {
			if ov.deleted {
				return types.JID{}, nil
			}
			return result(string(ov.value)), nil
		}
	}
	m.mu.RLock()
	forward, _ := m.directions(keyPrefix)
	target, ok := forward[source.User]
	m.mu.RUnlock()
	if ok {
		return result(target), nil
	}
	// Hold the write lock across the read, as sqlstore does, so a put that
	// lands meanwhile cannot be overwritten by this (older) answer.
	m.mu.Lock()
	defer m.mu.Unlock()
	forward, backward := m.directions(keyPrefix)
	if target, ok := forward[source.User]; ok {
		return result(target), nil
	}
	v, found, err := m.b.get(ctx, storage.NSLIDMapping, key)
	if err != nil {
		return types.JID{}, err
	}
	target = ""
	if found {
		target = string(v)
	}
	forward[source.User] = target
	if target != "" {
		backward[target] = source.User
	}
	return result(target), nil
}

// GetLIDForPN returns the LID of a phone-number JID (same device), or an
// empty JID when unknown.
func (m *lidMap) GetLIDForPN(ctx context.Context, pn types.JID) (types.JID, error) {
	if pn.Server != types.DefaultUserServer {
		return types.JID{}, fmt.Errorf("invalid GetLIDForPN call with non-PN JID %s", pn)
	}
	return m.lookup(ctx, pn, types.HiddenUserServer, pnKeyPrefix)
}

// GetPNForLID returns the phone-number JID of a LID (same device), or an
// empty JID when unknown.
func (m *lidMap) GetPNForLID(ctx context.Context, lid types.JID) (types.JID, error) {
	if lid.Server != types.HiddenUserServer {
		return types.JID{}, fmt.Errorf("invalid GetPNForLID call with non-LID JID %s", lid)
	}
	return m.lookup(ctx, lid, types.DefaultUserServer, lidKeyPrefix)
}

// GetManyLIDsForPNs returns the LID of each phone-number JID that has one,
// keyed by the given JID. Each LID keeps the device of its PN (sqlstore does
// so for cached answers but drops it for ones it had to query; the device
// is what callers build Signal addresses from, so it is kept here always).
func (m *lidMap) GetManyLIDsForPNs(ctx context.Context, pns []types.JID) (map[types.JID]types.JID, error) {
	if len(pns) == 0 {
		return nil, nil
	}
	result := make(map[types.JID]types.JID, len(pns))
	t := m.b.txFrom(ctx)
	var missing []types.JID
	m.mu.RLock()
	for _, pn := range pns {
		if pn.Server != types.DefaultUserServer {
			continue
		}
		if t != nil {
			if ov, ok := t.lookup(storage.NSLIDMapping, pnKeyPrefix+pn.User); ok {
				if !ov.deleted {
					result[pn] = types.JID{User: string(ov.value), Device: pn.Device, Server: types.HiddenUserServer}
				}
				continue
			}
		}
		if lid, ok := m.pnToLID[pn.User]; ok && lid != "" {
			result[pn] = types.JID{User: lid, Device: pn.Device, Server: types.HiddenUserServer}
		} else {
			missing = append(missing, pn)
		}
	}
	m.mu.RUnlock()
	if len(missing) == 0 {
		return result, nil
	}
	keys := make([]string, 0, len(missing))
	seen := make(map[string]bool, len(missing))
	for _, pn := range missing {
		if !seen[pn.User] {
			seen[pn.User] = true
			keys = append(keys, pnKeyPrefix+pn.User)
		}
	}
	// As in lookup, the write lock spans the read.
	m.mu.Lock()
	defer m.mu.Unlock()
	got, err := m.b.getMany(ctx, storage.NSLIDMapping, keys)
	if err != nil {
		return nil, err
	}
	for _, pn := range missing {
		lid, ok := got[pnKeyPrefix+pn.User]
		if !ok || len(lid) == 0 {
			continue
		}
		result[pn] = types.JID{User: string(lid), Device: pn.Device, Server: types.HiddenUserServer}
		if t == nil {
			m.pnToLID[pn.User] = string(lid)
			m.lidToPN[string(lid)] = pn.User
		}
	}
	return result, nil
}

// PutLIDMapping records that lid and pn are the same user.
func (m *lidMap) PutLIDMapping(ctx context.Context, lid, pn types.JID) error {
	if lid.Server != types.HiddenUserServer || pn.Server != types.DefaultUserServer {
		return fmt.Errorf("invalid PutLIDMapping call %s/%s", lid, pn)
	}
	return m.PutManyLIDMappings(ctx, []store.LIDMapping{{LID: lid, PN: pn}})
}

// PutManyLIDMappings records many mappings in one atomic batch, applied in
// order (a later mapping of the same LID or PN wins). Invalid entries are
// skipped, as in sqlstore.
func (m *lidMap) PutManyLIDMappings(ctx context.Context, mappings []store.LIDMapping) error {
	inTx := m.b.txFrom(ctx) != nil
	m.mu.Lock()
	defer m.mu.Unlock()
	valid := make([]store.LIDMapping, 0, len(mappings))
	for _, mp := range mappings {
		if mp.LID.Server != types.HiddenUserServer || mp.PN.Server != types.DefaultUserServer {
			continue
		}
		if !inTx {
			if cached, ok := m.pnToLID[mp.PN.User]; ok && cached == mp.LID.User {
				continue
			}
		}
		valid = append(valid, mp)
	}
	if len(valid) == 0 {
		return nil
	}
	// Load both directions of every side involved, then apply the mappings
	// to that working copy so the batch leaves the map consistent.
	keySet := make(map[string]bool, 2*len(valid))
	keys := make([]string, 0, 2*len(valid))
	for _, mp := range valid {
		for _, k := range []string{lidKeyPrefix + mp.LID.User, pnKeyPrefix + mp.PN.User} {
			if !keySet[k] {
				keySet[k] = true
				keys = append(keys, k)
			}
		}
	}
	stored, err := m.b.getMany(ctx, storage.NSLIDMapping, keys)
	if err != nil {
		return err
	}
	// work holds the current value of every key whose value is known
	// (loaded or written by this batch); absent means "no mapping".
	work := make(map[string]string, len(stored))
	for k, v := range stored {
		work[k] = string(v)
	}
	known := keySet
	changed := make(map[string]bool)
	set := func(k, v string) {
		// A key outside the loaded set (the far side of a replaced mapping)
		// is written unconditionally.
		if !known[k] || work[k] != v {
			changed[k] = true
		}
		known[k] = true
		if v == "" {
			delete(work, k)
		} else {
			work[k] = v
		}
	}
	for _, mp := range valid {
		lid, pn := mp.LID.User, mp.PN.User
		if oldLID := work[pnKeyPrefix+pn]; oldLID != "" && oldLID != lid {
			set(lidKeyPrefix+oldLID, "")
		}
		if oldPN := work[lidKeyPrefix+lid]; oldPN != "" && oldPN != pn {
			set(pnKeyPrefix+oldPN, "")
		}
		set(lidKeyPrefix+lid, pn)
		set(pnKeyPrefix+pn, lid)
	}
	entries := make([]storage.Entry, 0, len(changed))
	for k := range changed {
		if v, ok := work[k]; ok {
			entries = append(entries, storage.Entry{NS: storage.NSLIDMapping, Key: k, Value: []byte(v)})
		} else {
			entries = append(entries, storage.Entry{NS: storage.NSLIDMapping, Key: k, Delete: true})
		}
	}
	if err := m.b.write(ctx, entries...); err != nil {
		return err
	}
	apply := func() {
		for k := range changed {
			v := work[k]
			if user, ok := strings.CutPrefix(k, lidKeyPrefix); ok {
				m.lidToPN[user] = v
			} else if user, ok := strings.CutPrefix(k, pnKeyPrefix); ok {
				m.pnToLID[user] = v
			}
		}
	}
	if !inTx {
		apply()
	} else {
		m.b.onCommit(ctx, func() {
			m.mu.Lock()
			defer m.mu.Unlock()
			apply()
		})
	}
	return nil
}
