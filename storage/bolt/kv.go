package bolt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sort"

	bbolt "go.etcd.io/bbolt"

	"github.com/amarula/amarula/storage"
)

// nsBucket returns profiles/<profile>/kv/<ns>, or nil.
func nsBucket(tx *bbolt.Tx, profile, ns string) *bbolt.Bucket {
	if kv := sub(tx, profile, bucketKV); kv != nil {
		return kv.Bucket([]byte(ns))
	}
	return nil
}

// decode unseals a stored value into a fresh slice; a corrupt value is
// counted and reported as a miss (ok false).
func (s *Store) decode(profile, ns, key string, raw []byte) ([]byte, bool) {
	v, err := storage.Unseal(raw)
	if err != nil {
		s.reportCorrupt(profile, ns, key)
		return nil, false
	}
	return append(make([]byte, 0, len(v)), v...), true
}

// Get returns the value or storage.ErrNotFound (also for a corrupt entry).
func (s *Store) Get(ctx context.Context, profile, ns, key string) ([]byte, error) {
	if err := storage.ValidateProfile(profile); err != nil {
		return nil, err
	}
	if err := storage.ValidateNSKey(ns, key); err != nil {
		return nil, err
	}
	var out []byte
	found := false
	err := s.view(ctx, func(tx *bbolt.Tx) error {
		b := nsBucket(tx, profile, ns)
		if b == nil {
			return nil
		}
		if raw := b.Get([]byte(key)); raw != nil {
			out, found = s.decode(profile, ns, key, raw)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("bolt: get %s/%s/%s: %w", profile, ns, key, err)
	}
	if !found {
		return nil, fmt.Errorf("bolt: get %s/%s/%s: %w", profile, ns, key, storage.ErrNotFound)
	}
	return out, nil
}

// GetMany returns the values that exist among keys; misses are absent.
func (s *Store) GetMany(ctx context.Context, profile, ns string, keys []string) (map[string][]byte, error) {
	if err := storage.ValidateProfile(profile); err != nil {
		return nil, err
	}
	if err := storage.ValidateKeys(ns, keys); err != nil {
		return nil, err
	}
	out := make(map[string][]byte, len(keys))
	err := s.view(ctx, func(tx *bbolt.Tx) error {
		b := nsBucket(tx, profile, ns)
		if b == nil {
			return nil
		}
		for _, k := range keys {
			if raw := b.Get([]byte(k)); raw != nil {
				if v, ok := s.decode(profile, ns, k, raw); ok {
					out[k] = v
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("bolt: get many %s/%s: %w", profile, ns, err)
	}
	return out, nil
}

// Put stores value, overwriting any prior value.
func (s *Store) Put(ctx context.Context, profile string, token storage.Token, ns, key string, value []byte) error {
	return s.PutMany(ctx, profile, token, []storage.Entry{{NS: ns, Key: key, Value: value}})
}

// PutMany applies every entry in one transaction with the fence check.
func (s *Store) PutMany(ctx context.Context, profile string, token storage.Token, entries []storage.Entry) error {
	if err := storage.ValidateProfile(profile); err != nil {
		return err
	}
	if err := storage.ValidateEntries(entries); err != nil {
		return err
	}
	err := s.update(ctx, profile, token, func(tx *bbolt.Tx) error { return applyEntries(tx, profile, entries) })
	if err != nil {
		return fmt.Errorf("bolt: put %d entries for %s: %w", len(entries), profile, err)
	}
	return nil
}

func applyEntries(tx *bbolt.Tx, profile string, entries []storage.Entry) error {
	for _, e := range entries {
		if e.Delete {
			b := nsBucket(tx, profile, e.NS)
			if b == nil {
				continue
			}
			if err := b.Delete([]byte(e.Key)); err != nil {
				return err
			}
			continue
		}
		kv, err := createSub(tx, profile, bucketKV)
		if err != nil {
			return err
		}
		b, err := kv.CreateBucketIfNotExists([]byte(e.NS))
		if err != nil {
			return err
		}
		if err := b.Put([]byte(e.Key), storage.Seal(e.Value)); err != nil {
			return err
		}
	}
	return nil
}

// Delete removes a key; a missing key is not an error.
func (s *Store) Delete(ctx context.Context, profile string, token storage.Token, ns, key string) error {
	return s.PutMany(ctx, profile, token, []storage.Entry{{NS: ns, Key: key, Delete: true}})
}

// Scan returns every entry of ns whose key starts with prefix, sorted by key.
func (s *Store) Scan(ctx context.Context, profile, ns, prefix string) ([]storage.KeyValue, error) {
	if err := storage.ValidateProfile(profile); err != nil {
		return nil, err
	}
	if err := storage.ValidateNamespace(ns); err != nil {
		return nil, err
	}
	var out []storage.KeyValue
	err := s.view(ctx, func(tx *bbolt.Tx) error {
		b := nsBucket(tx, profile, ns)
		if b == nil {
			return nil
		}
		p := []byte(prefix)
		c := b.Cursor()
		for k, raw := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, raw = c.Next() {
			if v, ok := s.decode(profile, ns, string(k), raw); ok {
				out = append(out, storage.KeyValue{Key: string(k), Value: v})
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("bolt: scan %s/%s/%q: %w", profile, ns, prefix, err)
	}
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
	err := s.update(ctx, profile, token, func(tx *bbolt.Tx) error {
		kv := sub(tx, profile, bucketKV)
		if kv == nil || kv.Bucket([]byte(ns)) == nil {
			return nil
		}
		return kv.DeleteBucket([]byte(ns))
	})
	if err != nil {
		return fmt.Errorf("bolt: clear namespace %s/%s: %w", profile, ns, err)
	}
	return nil
}

// Clear wipes every namespace, the event log and the consumer cursors of the
// profile. The fence and the event sequence survive (meta bucket), so a
// zombie stays fenced and new cursors never reuse old ones.
func (s *Store) Clear(ctx context.Context, profile string, token storage.Token) error {
	if err := storage.ValidateProfile(profile); err != nil {
		return err
	}
	err := s.update(ctx, profile, token, func(tx *bbolt.Tx) error {
		err := tx.Bucket(bucketProfiles).DeleteBucket([]byte(profile))
		if errors.Is(err, bbolt.ErrBucketNotFound) {
			return nil
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("bolt: clear %s: %w", profile, err)
	}
	return nil
}

// hasData reports whether a profile bucket holds a key/value entry or an
// event log (even one trimmed to empty).
func hasData(p *bbolt.Bucket) bool {
	if p.Bucket(bucketEvents) != nil {
		return true
	}
	kv := p.Bucket(bucketKV)
	if kv == nil {
		return false
	}
	found := false
	_ = kv.ForEachBucket(func(name []byte) error {
		if k, _ := kv.Bucket(name).Cursor().First(); k != nil {
			found = true
			return errStop
		}
		return nil
	})
	return found
}

var errStop = errors.New("stop")

// ListProfiles lists every profile holding key/value data or events,
// sorted.
func (s *Store) ListProfiles(ctx context.Context) ([]string, error) {
	var out []string
	err := s.view(ctx, func(tx *bbolt.Tx) error {
		root := tx.Bucket(bucketProfiles)
		return root.ForEachBucket(func(name []byte) error {
			if hasData(root.Bucket(name)) {
				out = append(out, string(name))
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("bolt: list profiles: %w", err)
	}
	sort.Strings(out)
	return out, nil
}

// ListProfilesWithMetadata is ListProfiles plus the creds/self summary, read
// in the same transaction.
func (s *Store) ListProfilesWithMetadata(ctx context.Context) ([]storage.ProfileInfo, error) {
	var out []storage.ProfileInfo
	err := s.view(ctx, func(tx *bbolt.Tx) error {
		root := tx.Bucket(bucketProfiles)
		return root.ForEachBucket(func(name []byte) error {
			p := root.Bucket(name)
			if !hasData(p) {
				return nil
			}
			profile := string(name)
			var creds []byte
			if b := nsBucket(tx, profile, storage.NSCreds); b != nil {
				if raw := b.Get([]byte(storage.CredsKey)); raw != nil {
					creds, _ = s.decode(profile, storage.NSCreds, storage.CredsKey, raw)
				}
			}
			out = append(out, storage.ProfileInfoFromCreds(profile, creds))
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("bolt: list profiles with metadata: %w", err)
	}
	return out, nil
}

// Txn runs fn over a buffering Tx and commits its writes and events in one
// bbolt transaction with the fence check.
func (s *Store) Txn(ctx context.Context, profile string, token storage.Token, fn func(tx storage.Tx) error) ([]string, error) {
	if err := storage.ValidateProfile(profile); err != nil {
		return nil, err
	}
	if err := s.usable(ctx); err != nil {
		return nil, err
	}
	read := func(ctx context.Context, ns, key string) ([]byte, error) { return s.Get(ctx, profile, ns, key) }
	return storage.RunTxn(ctx, read, fn, func(entries []storage.Entry, events []storage.PendingEvent) ([]string, error) {
		if len(entries) == 0 && len(events) == 0 {
			return nil, nil
		}
		var cursors []string
		err := s.update(ctx, profile, token, func(tx *bbolt.Tx) error {
			if err := applyEntries(tx, profile, entries); err != nil {
				return err
			}
			var err error
			cursors, err = s.appendEvents(tx, profile, events)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("bolt: commit txn of %s (%d writes, %d events): %w", profile, len(entries), len(events), err)
		}
		if len(events) > 0 {
			s.notify.Notify(profile)
		}
		return cursors, nil
	})
}
