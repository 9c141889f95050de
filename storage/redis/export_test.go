package redis

import (
	"context"
	"fmt"
)

// CorruptForTest flips a bit in the stored bytes of one entry so that its
// checksum no longer matches. It exists only in test binaries and makes
// *Store a storagetest.Corrupter.
func (s *Store) CorruptForTest(profile, ns, key string) error {
	ctx := context.Background()
	raw, err := s.c.HGet(ctx, s.kvKey(profile, ns), key).Bytes()
	if err != nil {
		return fmt.Errorf("corrupt %s/%s/%s: %w", profile, ns, key, err)
	}
	raw[len(raw)-1] ^= 0x40
	return s.c.HSet(ctx, s.kvKey(profile, ns), key, raw).Err()
}
