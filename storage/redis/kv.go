package redis

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	goredis "github.com/redis/go-redis/v9"

	"github.com/amarula/amarula/storage"
)

// batch builds one invocation of applyScript for one profile.
type batch struct {
	s       *Store
	profile string
	token   storage.Token
	keys    []string
	kidx    map[string]int // namespace -> 1-based index into keys
	args    []interface{}
}

func (s *Store) newBatch(profile string, token storage.Token) *batch {
	maxEvents, maxAgeMs := 0, int64(0)
	if s.ret.MaxEvents > 0 {
		maxEvents = s.ret.MaxEvents
	}
	if s.ret.MaxAge > 0 {
		maxAgeMs = s.ret.MaxAge.Milliseconds()
		if maxAgeMs == 0 {
			maxAgeMs = 1
		}
	}
	return &batch{
		s:       s,
		profile: profile,
		token:   token,
		keys:    []string{s.fenceKey(profile), s.nssKey(profile), s.eventsKey(profile), s.cursorsKey(profile)},
		kidx:    map[string]int{},
		args:    []interface{}{formatToken(token), maxEvents, maxAgeMs},
	}
}

func (b *batch) nsIndex(ns string) int {
	if i, ok := b.kidx[ns]; ok {
		return i
	}
	b.keys = append(b.keys, b.s.kvKey(b.profile, ns))
	b.kidx[ns] = len(b.keys)
	return len(b.keys)
}

func (b *batch) entry(e storage.Entry) {
	if e.Delete {
		b.args = append(b.args, "D", b.nsIndex(e.NS), e.NS, e.Key)
		return
	}
	b.args = append(b.args, "P", b.nsIndex(e.NS), e.NS, e.Key, storage.Seal(e.Value))
}

func (b *batch) clearNamespace(ns string) { b.args = append(b.args, "N", b.nsIndex(ns), ns) }

func (b *batch) event(typ string, data []byte) {
	b.args = append(b.args, "E", typ, storage.Seal(data))
}

func (b *batch) ack(consumer, cursor string) { b.args = append(b.args, "A", consumer, cursor) }

func (b *batch) clearAll(nss []string) {
	b.args = append(b.args, "C", len(nss))
	for _, ns := range nss {
		b.args = append(b.args, b.nsIndex(ns), ns)
	}
}

// run indexes the profile and executes the batch; it returns the ids of
// the events it appended.
func (b *batch) run(ctx context.Context) ([]string, error) {
	if err := b.s.usable(); err != nil {
		return nil, err
	}
	if err := b.s.ensureIndexed(ctx, b.profile); err != nil {
		return nil, err
	}
	res, err := applyScript.Run(ctx, b.s.c, b.keys, b.args...).Slice()
	if err != nil {
		return nil, b.s.mapErr(err)
	}
	if err := fencedResult(b.profile, b.token, res); err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(res)-1)
	for _, r := range res[1:] {
		id, ok := r.(string)
		if !ok {
			return nil, fmt.Errorf("unexpected event id %v in script reply", r)
		}
		ids = append(ids, id)
	}
	if len(ids) > 0 {
		b.s.notify.Notify(b.profile)
	}
	return ids, nil
}

// decode unseals a stored value; a corrupt value is counted and reported as
// a miss (ok false).
func (s *Store) decode(profile, ns, key, raw string) ([]byte, bool) {
	v, err := storage.Unseal([]byte(raw))
	if err != nil {
		s.reportCorrupt(profile, ns, key)
		return nil, false
	}
	return v, true
}

// Get returns the value or storage.ErrNotFound (also for a corrupt entry).
func (s *Store) Get(ctx context.Context, profile, ns, key string) ([]byte, error) {
	if err := storage.ValidateProfile(profile); err != nil {
		return nil, err
	}
	if err := storage.ValidateNSKey(ns, key); err != nil {
		return nil, err
	}
	if err := s.usable(); err != nil {
		return nil, err
	}
	raw, err := s.c.HGet(ctx, s.kvKey(profile, ns), key).Result()
	if errors.Is(err, goredis.Nil) {
		return nil, fmt.Errorf("redis: get %s/%s/%s: %w", profile, ns, key, storage.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("redis: get %s/%s/%s: %w", profile, ns, key, s.mapErr(err))
	}
	v, ok := s.decode(profile, ns, key, raw)
	if !ok {
		return nil, fmt.Errorf("redis: get %s/%s/%s: corrupt entry: %w", profile, ns, key, storage.ErrNotFound)
	}
	return v, nil
}

// GetMany returns the values that exist among keys (one HMGET); misses are
// absent.
func (s *Store) GetMany(ctx context.Context, profile, ns string, keys []string) (map[string][]byte, error) {
	if err := storage.ValidateProfile(profile); err != nil {
		return nil, err
	}
	if err := storage.ValidateKeys(ns, keys); err != nil {
		return nil, err
	}
	if err := s.usable(); err != nil {
		return nil, err
	}
	out := make(map[string][]byte, len(keys))
	if len(keys) == 0 {
		return out, nil
	}
	vals, err := s.c.HMGet(ctx, s.kvKey(profile, ns), keys...).Result()
	if err != nil {
		return nil, fmt.Errorf("redis: get many %s/%s: %w", profile, ns, s.mapErr(err))
	}
	for i, v := range vals {
		raw, ok := v.(string)
		if !ok {
			continue
		}
		if val, ok := s.decode(profile, ns, keys[i], raw); ok {
			out[keys[i]] = val
		}
	}
	return out, nil
}

// Put stores value, overwriting any prior value.
func (s *Store) Put(ctx context.Context, profile string, token storage.Token, ns, key string, value []byte) error {
	return s.PutMany(ctx, profile, token, []storage.Entry{{NS: ns, Key: key, Value: value}})
}

// PutMany applies every entry atomically in one fenced script.
func (s *Store) PutMany(ctx context.Context, profile string, token storage.Token, entries []storage.Entry) error {
	if err := storage.ValidateProfile(profile); err != nil {
		return err
	}
	if err := storage.ValidateEntries(entries); err != nil {
		return err
	}
	b := s.newBatch(profile, token)
	for _, e := range entries {
		b.entry(e)
	}
	if _, err := b.run(ctx); err != nil {
		return fmt.Errorf("redis: put %d entries for %s: %w", len(entries), profile, err)
	}
	return nil
}

// Delete removes a key; a missing key is not an error.
func (s *Store) Delete(ctx context.Context, profile string, token storage.Token, ns, key string) error {
	return s.PutMany(ctx, profile, token, []storage.Entry{{NS: ns, Key: key, Delete: true}})
}

// globEscape escapes the glob metacharacters of a HSCAN MATCH pattern.
func globEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '*', '?', '[', ']', '\\', '^', '-':
			b.WriteByte('\\')
			b.WriteByte(c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// Scan returns every entry of ns whose key starts with prefix, sorted by
// key. It walks the hash with HSCAN MATCH (the prefix is escaped, so glob
// characters in keys are literal) and sorts client-side.
func (s *Store) Scan(ctx context.Context, profile, ns, prefix string) ([]storage.KeyValue, error) {
	if err := storage.ValidateProfile(profile); err != nil {
		return nil, err
	}
	if err := storage.ValidateNamespace(ns); err != nil {
		return nil, err
	}
	if err := s.usable(); err != nil {
		return nil, err
	}
	key := s.kvKey(profile, ns)
	match := globEscape(prefix) + "*"
	seen := map[string][]byte{}
	var cursor uint64
	for {
		page, next, err := s.c.HScan(ctx, key, cursor, match, 1000).Result()
		if err != nil {
			return nil, fmt.Errorf("redis: scan %s/%s/%q: %w", profile, ns, prefix, s.mapErr(err))
		}
		for i := 0; i+1 < len(page); i += 2 {
			k := page[i]
			if !strings.HasPrefix(k, prefix) {
				continue // belt and braces over the glob escaping
			}
			if _, dup := seen[k]; dup {
				continue // HSCAN may return an element twice
			}
			if v, ok := s.decode(profile, ns, k, page[i+1]); ok {
				seen[k] = v
			} else {
				seen[k] = nil
			}
		}
		if next == 0 {
			break
		}
		cursor = next
	}
	out := make([]storage.KeyValue, 0, len(seen))
	for k, v := range seen {
		if v != nil {
			out = append(out, storage.KeyValue{Key: k, Value: v})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

// ClearNamespace removes every key of one namespace of the profile.
func (s *Store) ClearNamespace(ctx context.Context, profile string, token storage.Token, ns string) error {
	if err := storage.ValidateProfile(profile); err != nil {
		return err
	}
	if err := storage.ValidateNamespace(ns); err != nil {
		return err
	}
	b := s.newBatch(profile, token)
	b.clearNamespace(ns)
	if _, err := b.run(ctx); err != nil {
		return fmt.Errorf("redis: clear namespace %s/%s: %w", profile, ns, err)
	}
	return nil
}

// clearAttempts bounds how often Clear retries when a write adds a new
// namespace between reading the namespace set and running the script.
const clearAttempts = 10

// Clear wipes every namespace, the event log and the consumer cursors of
// the profile; the fence survives. The script refuses (and Clear retries)
// if the profile gained a namespace that is not among its KEYS, so no
// key is ever touched without being declared.
func (s *Store) Clear(ctx context.Context, profile string, token storage.Token) error {
	if err := storage.ValidateProfile(profile); err != nil {
		return err
	}
	if err := s.usable(); err != nil {
		return err
	}
	for attempt := 0; attempt < clearAttempts; attempt++ {
		nss, err := s.c.SMembers(ctx, s.nssKey(profile)).Result()
		if err != nil {
			return fmt.Errorf("redis: clear %s: %w", profile, s.mapErr(err))
		}
		for _, ns := range nss {
			if err := storage.ValidateNamespace(ns); err != nil {
				return fmt.Errorf("redis: clear %s: namespace set holds %w", profile, err)
			}
		}
		b := s.newBatch(profile, token)
		b.clearAll(sortedUnique(nss))
		_, err = b.run(ctx)
		if errors.Is(err, errRetry) {
			continue
		}
		if err != nil {
			return fmt.Errorf("redis: clear %s: %w", profile, err)
		}
		return nil
	}
	return fmt.Errorf("redis: clear %s: namespaces kept changing over %d attempts", profile, clearAttempts)
}

// members returns the profile index (SSCAN), valid ids only, sorted.
func (s *Store) members(ctx context.Context) ([]string, error) {
	var out []string
	var cursor uint64
	for {
		page, next, err := s.c.SScan(ctx, s.indexKey(), cursor, "", 1000).Result()
		if err != nil {
			return nil, s.mapErr(err)
		}
		for _, p := range page {
			if storage.ValidateProfile(p) == nil {
				out = append(out, p)
			}
		}
		if next == 0 {
			return sortedUnique(out), nil
		}
		cursor = next
	}
}

// ListProfiles lists, sorted, every indexed profile that holds key/value
// data or an event log. One pipelined EXISTS per profile.
func (s *Store) ListProfiles(ctx context.Context) ([]string, error) {
	if err := s.usable(); err != nil {
		return nil, err
	}
	profiles, err := s.members(ctx)
	if err != nil {
		return nil, fmt.Errorf("redis: list profiles: %w", err)
	}
	if len(profiles) == 0 {
		return nil, nil
	}
	cmds := make([]*goredis.IntCmd, len(profiles))
	_, err = s.c.Pipelined(ctx, func(p goredis.Pipeliner) error {
		for i, prof := range profiles {
			cmds[i] = p.Exists(ctx, s.nssKey(prof), s.eventsKey(prof))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("redis: list profiles: %w", s.mapErr(err))
	}
	out := profiles[:0]
	for i, prof := range profiles {
		if cmds[i].Val() > 0 {
			out = append(out, prof)
		}
	}
	return out, nil
}

// ListProfilesWithMetadata is ListProfiles plus the creds/self summary (one
// pipelined HGET per profile).
func (s *Store) ListProfilesWithMetadata(ctx context.Context) ([]storage.ProfileInfo, error) {
	profiles, err := s.ListProfiles(ctx)
	if err != nil {
		return nil, err
	}
	cmds := make([]*goredis.StringCmd, len(profiles))
	_, err = s.c.Pipelined(ctx, func(p goredis.Pipeliner) error {
		for i, prof := range profiles {
			cmds[i] = p.HGet(ctx, s.kvKey(prof, storage.NSCreds), storage.CredsKey)
		}
		return nil
	})
	if err != nil && !errors.Is(err, goredis.Nil) {
		return nil, fmt.Errorf("redis: list profiles with metadata: %w", s.mapErr(err))
	}
	out := make([]storage.ProfileInfo, len(profiles))
	for i, prof := range profiles {
		var creds []byte
		if raw, err := cmds[i].Result(); err == nil {
			creds, _ = s.decode(prof, storage.NSCreds, storage.CredsKey, raw)
		}
		out[i] = storage.ProfileInfoFromCreds(prof, creds)
	}
	return out, nil
}

// Txn runs fn over a buffering Tx (reads go to Redis) and commits its
// writes and events as one fenced script.
func (s *Store) Txn(ctx context.Context, profile string, token storage.Token, fn func(tx storage.Tx) error) ([]string, error) {
	if err := storage.ValidateProfile(profile); err != nil {
		return nil, err
	}
	if err := s.usable(); err != nil {
		return nil, err
	}
	read := func(ctx context.Context, ns, key string) ([]byte, error) { return s.Get(ctx, profile, ns, key) }
	return storage.RunTxn(ctx, read, fn, func(entries []storage.Entry, events []storage.PendingEvent) ([]string, error) {
		if len(entries) == 0 && len(events) == 0 {
			return nil, nil
		}
		b := s.newBatch(profile, token)
		for _, e := range entries {
			b.entry(e)
		}
		for _, e := range events {
			b.event(e.Type, e.Data)
		}
		ids, err := b.run(ctx)
		if err != nil {
			return nil, fmt.Errorf("redis: commit txn of %s (%d writes, %d events): %w", profile, len(entries), len(events), err)
		}
		return ids, nil
	})
}

// parseStreamID parses a cursor: a stream id "ms-seq" or "ms"; "" is "0".
func parseStreamID(c string) (ms, seq uint64, err error) {
	if c == "" {
		return 0, 0, nil
	}
	msPart, seqPart, hasSeq := strings.Cut(c, "-")
	bad := func() error {
		if len(c) > 40 {
			c = c[:40] + "…"
		}
		return fmt.Errorf("%w: cursor %q is not a stream id", storage.ErrInvalidArgument, c)
	}
	if !isDigits(msPart) || hasSeq && !isDigits(seqPart) {
		return 0, 0, bad()
	}
	if ms, err = strconv.ParseUint(msPart, 10, 64); err != nil {
		return 0, 0, bad()
	}
	if hasSeq {
		if seq, err = strconv.ParseUint(seqPart, 10, 64); err != nil {
			return 0, 0, bad()
		}
	}
	return ms, seq, nil
}

func isDigits(s string) bool {
	if s == "" || len(s) > 20 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
