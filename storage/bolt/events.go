package bolt

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/amarula/amarula/storage"
)

// An event record, inside the storage envelope:
//
//	8 bytes   unix time in nanoseconds, big-endian
//	uvarint   length of the type
//	type
//	data      (the rest)
func encodeEvent(t time.Time, typ string, data []byte) []byte {
	b := make([]byte, 8, 8+binary.MaxVarintLen64+len(typ)+len(data))
	binary.BigEndian.PutUint64(b, uint64(t.UnixNano()))
	b = binary.AppendUvarint(b, uint64(len(typ)))
	b = append(b, typ...)
	return append(b, data...)
}

var errBadEvent = errors.New("bolt: malformed event record")

// decodeEvent parses a stored event (envelope included). The returned data
// is a fresh copy.
func decodeEvent(raw []byte) (t time.Time, typ string, data []byte, err error) {
	b, err := storage.Unseal(raw)
	if err != nil {
		return time.Time{}, "", nil, err
	}
	if len(b) < 8 {
		return time.Time{}, "", nil, fmt.Errorf("%w: %d bytes", errBadEvent, len(b))
	}
	ns := binary.BigEndian.Uint64(b[:8])
	n, w := binary.Uvarint(b[8:])
	if w <= 0 || n > uint64(len(b)-8-w) {
		return time.Time{}, "", nil, fmt.Errorf("%w: bad type length", errBadEvent)
	}
	rest := b[8+w:]
	typ = string(rest[:n])
	data = append([]byte{}, rest[n:]...)
	return time.Unix(0, int64(ns)), typ, data, nil
}

// parseCursor parses a bolt cursor: a decimal event sequence; "" is "0".
func parseCursor(c string) (uint64, error) {
	if c == "" {
		return 0, nil
	}
	if len(c) > 20 || c[0] == '+' || c[0] == '-' {
		return 0, fmt.Errorf("%w: cursor %q is not a decimal sequence", storage.ErrInvalidArgument, trimForError(c))
	}
	v, err := strconv.ParseUint(c, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: cursor %q is not a decimal sequence", storage.ErrInvalidArgument, trimForError(c))
	}
	return v, nil
}

func trimForError(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}

func formatCursor(seq uint64) string { return strconv.FormatUint(seq, 10) }

// appendEvents appends events to the profile's log inside tx, trims it to
// the retention and returns the new cursors.
func (s *Store) appendEvents(tx *bbolt.Tx, profile string, events []storage.PendingEvent) ([]string, error) {
	if len(events) == 0 {
		return nil, nil
	}
	meta, err := tx.Bucket(bucketMeta).CreateBucketIfNotExists([]byte(profile))
	if err != nil {
		return nil, err
	}
	log, err := createSub(tx, profile, bucketEvents)
	if err != nil {
		return nil, err
	}
	seq := u64(meta.Get(keySeq))
	now := s.now()
	cursors := make([]string, 0, len(events))
	for _, e := range events {
		seq++
		if err := log.Put(be64(seq), storage.Seal(encodeEvent(now, e.Type, e.Data))); err != nil {
			return nil, err
		}
		cursors = append(cursors, formatCursor(seq))
	}
	if err := meta.Put(keySeq, be64(seq)); err != nil {
		return nil, err
	}
	return cursors, s.trim(log, seq, now)
}

// trim drops events from the head of log while there are more than
// MaxEvents or the oldest is older than MaxAge. Sequences in a log are
// contiguous (only the head is ever deleted), so the count is last-first+1.
func (s *Store) trim(log *bbolt.Bucket, last uint64, now time.Time) error {
	c := log.Cursor()
	for k, v := c.First(); k != nil; k, v = c.First() {
		first := u64(k)
		over := s.ret.MaxEvents > 0 && last-first+1 > uint64(s.ret.MaxEvents)
		if !over && s.ret.MaxAge > 0 {
			t, _, _, err := decodeEvent(v)
			// A corrupt record at the head is dropped too: it can never
			// be delivered.
			over = err != nil || now.Sub(t) > s.ret.MaxAge
		}
		if !over {
			return nil
		}
		if err := c.Delete(); err != nil {
			return err
		}
	}
	return nil
}

// Append adds an event and returns its cursor (a decimal sequence).
func (s *Store) Append(ctx context.Context, profile string, token storage.Token, typ string, data []byte) (string, error) {
	if err := storage.ValidateProfile(profile); err != nil {
		return "", err
	}
	if err := storage.ValidateEventType(typ); err != nil {
		return "", err
	}
	var cursors []string
	err := s.update(ctx, profile, token, func(tx *bbolt.Tx) error {
		var err error
		cursors, err = s.appendEvents(tx, profile, []storage.PendingEvent{{Type: typ, Data: data}})
		return err
	})
	if err != nil {
		return "", fmt.Errorf("bolt: append %s to %s: %w", typ, profile, err)
	}
	s.notify.Notify(profile)
	return cursors[0], nil
}

// Read returns up to limit events strictly after the cursor.
func (s *Store) Read(ctx context.Context, profile, after string, limit int) ([]storage.Event, error) {
	if err := storage.ValidateProfile(profile); err != nil {
		return nil, err
	}
	from, err := parseCursor(after)
	if err != nil {
		return nil, err
	}
	limit = storage.NormalizeLimit(limit)
	var out []storage.Event
	err = s.view(ctx, func(tx *bbolt.Tx) error {
		log := sub(tx, profile, bucketEvents)
		if log == nil || from == math.MaxUint64 {
			return nil
		}
		c := log.Cursor()
		for k, v := c.Seek(be64(from + 1)); k != nil && len(out) < limit; k, v = c.Next() {
			t, typ, data, err := decodeEvent(v)
			if err != nil {
				s.reportCorrupt(profile, "events", formatCursor(u64(k)))
				continue
			}
			out = append(out, storage.Event{Cursor: formatCursor(u64(k)), Type: typ, Time: t, Data: data})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("bolt: read %s after %s: %w", profile, after, err)
	}
	return out, nil
}

// Tail is Read that waits for an Append when nothing is there yet. It
// starts no goroutine: it waits on the profile's broadcast channel, which
// every commit that appends events closes.
func (s *Store) Tail(ctx context.Context, profile, after string, limit int) ([]storage.Event, error) {
	if err := storage.ValidateProfile(profile); err != nil {
		return nil, err
	}
	for {
		// Take the channel before reading so an append between the read
		// and the wait is never missed.
		wake, err := s.notify.Wait(profile)
		if err != nil {
			return nil, err
		}
		evs, err := s.Read(ctx, profile, after, limit)
		if err != nil || len(evs) > 0 {
			return evs, err
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-s.notify.Done():
			return nil, storage.ErrClosed
		}
	}
}

// LastCursor returns the cursor of the newest retained event, "0" if none.
func (s *Store) LastCursor(ctx context.Context, profile string) (string, error) {
	if err := storage.ValidateProfile(profile); err != nil {
		return "", err
	}
	last := "0"
	err := s.view(ctx, func(tx *bbolt.Tx) error {
		if log := sub(tx, profile, bucketEvents); log != nil {
			if k, _ := log.Cursor().Last(); k != nil {
				last = formatCursor(u64(k))
			}
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("bolt: last cursor of %s: %w", profile, err)
	}
	return last, nil
}

// Ack records that consumer has processed everything up to cursor.
func (s *Store) Ack(ctx context.Context, profile string, token storage.Token, consumer, cursor string) error {
	if err := storage.ValidateProfile(profile); err != nil {
		return err
	}
	if err := storage.ValidateConsumer(consumer); err != nil {
		return err
	}
	seq, err := parseCursor(cursor)
	if err != nil {
		return err
	}
	err = s.update(ctx, profile, token, func(tx *bbolt.Tx) error {
		b, err := createSub(tx, profile, bucketCursors)
		if err != nil {
			return err
		}
		return b.Put([]byte(consumer), []byte(formatCursor(seq)))
	})
	if err != nil {
		return fmt.Errorf("bolt: ack %s/%s at %s: %w", profile, consumer, cursor, err)
	}
	return nil
}

// Cursor returns the consumer's last acknowledged cursor, "0" if none.
func (s *Store) Cursor(ctx context.Context, profile, consumer string) (string, error) {
	if err := storage.ValidateProfile(profile); err != nil {
		return "", err
	}
	if err := storage.ValidateConsumer(consumer); err != nil {
		return "", err
	}
	cur := "0"
	err := s.view(ctx, func(tx *bbolt.Tx) error {
		if b := sub(tx, profile, bucketCursors); b != nil {
			if v := b.Get([]byte(consumer)); v != nil {
				if _, err := parseCursor(string(v)); err == nil {
					cur = string(v)
				} else {
					s.reportCorrupt(profile, "cursors", consumer)
				}
			}
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("bolt: cursor of %s/%s: %w", profile, consumer, err)
	}
	return cur, nil
}
