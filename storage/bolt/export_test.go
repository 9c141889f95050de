package bolt

import (
	"fmt"

	bbolt "go.etcd.io/bbolt"
)

// CorruptForTest flips a bit in the stored bytes of one entry so that its
// checksum no longer matches. It exists only in test binaries and makes
// *Store a storagetest.Corrupter.
func (s *Store) CorruptForTest(profile, ns, key string) error {
	return s.db.Update(func(tx *bbolt.Tx) error {
		b := nsBucket(tx, profile, ns)
		if b == nil {
			return fmt.Errorf("corrupt %s/%s/%s: no such namespace", profile, ns, key)
		}
		raw := b.Get([]byte(key))
		if raw == nil {
			return fmt.Errorf("corrupt %s/%s/%s: no such key", profile, ns, key)
		}
		bad := append([]byte{}, raw...)
		bad[len(bad)-1] ^= 0x40
		return b.Put([]byte(key), bad)
	})
}
