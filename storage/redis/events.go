package redis

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/amarula/amarula/storage"
)

// Stream entry fields.
const (
	fieldType = "t"
	fieldData = "d"
)

var errBadEntry = errors.New("redis: malformed stream entry")

// decodeEntry turns a stream entry into an Event. The time is the
// millisecond part of the stream id (Redis' clock at XADD).
func decodeEntry(id string, values map[string]interface{}) (storage.Event, error) {
	ms, _, err := parseStreamID(id)
	if err != nil || id == "" {
		return storage.Event{}, fmt.Errorf("%w: id %q", errBadEntry, id)
	}
	typ, ok := values[fieldType].(string)
	if !ok || storage.ValidateEventType(typ) != nil {
		return storage.Event{}, fmt.Errorf("%w: %s: bad type field", errBadEntry, id)
	}
	raw, ok := values[fieldData].(string)
	if !ok {
		return storage.Event{}, fmt.Errorf("%w: %s: no data field", errBadEntry, id)
	}
	data, err := storage.Unseal([]byte(raw))
	if err != nil {
		return storage.Event{}, fmt.Errorf("%s: %w", id, err)
	}
	if ms > math.MaxInt64 {
		return storage.Event{}, fmt.Errorf("%w: %s: time out of range", errBadEntry, id)
	}
	return storage.Event{Cursor: id, Type: typ, Time: time.UnixMilli(int64(ms)), Data: data}, nil
}

func (s *Store) decodeEntries(profile string, msgs []goredis.XMessage) []storage.Event {
	out := make([]storage.Event, 0, len(msgs))
	for _, m := range msgs {
		ev, err := decodeEntry(m.ID, m.Values)
		if err != nil {
			s.reportCorrupt(profile, "events", m.ID)
			continue
		}
		out = append(out, ev)
	}
	return out
}

// Append adds an event (one fenced script: XADD plus retention trim) and
// returns its stream id.
func (s *Store) Append(ctx context.Context, profile string, token storage.Token, typ string, data []byte) (string, error) {
	if err := storage.ValidateProfile(profile); err != nil {
		return "", err
	}
	if err := storage.ValidateEventType(typ); err != nil {
		return "", err
	}
	b := s.newBatch(profile, token)
	b.event(typ, data)
	ids, err := b.run(ctx)
	if err == nil && len(ids) != 1 {
		err = fmt.Errorf("script returned %d ids for one event", len(ids))
	}
	if err != nil {
		return "", fmt.Errorf("redis: append %s to %s: %w", typ, profile, err)
	}
	return ids[0], nil
}

// nextID returns the smallest stream id strictly after after, and false if
// there is none.
func nextID(after string) (string, bool, error) {
	ms, seq, err := parseStreamID(after)
	if err != nil {
		return "", false, err
	}
	switch {
	case seq < math.MaxUint64:
		seq++
	case ms < math.MaxUint64:
		ms, seq = ms+1, 0
	default:
		return "", false, nil
	}
	return strconv.FormatUint(ms, 10) + "-" + strconv.FormatUint(seq, 10), true, nil
}

// Read returns up to limit events strictly after the cursor (XRANGE).
func (s *Store) Read(ctx context.Context, profile, after string, limit int) ([]storage.Event, error) {
	if err := storage.ValidateProfile(profile); err != nil {
		return nil, err
	}
	start, ok, err := nextID(after)
	if err != nil {
		return nil, err
	}
	if err := s.usable(); err != nil {
		return nil, err
	}
	if !ok {
		return nil, nil
	}
	msgs, err := s.c.XRangeN(ctx, s.eventsKey(profile), start, "+", int64(storage.NormalizeLimit(limit))).Result()
	if err != nil {
		return nil, fmt.Errorf("redis: read %s after %s: %w", profile, after, s.mapErr(err))
	}
	return s.decodeEntries(profile, msgs), nil
}

// Tail is Read that waits for new events. It holds no Redis connection
// while it waits: a blocking XREAD per waiting profile would pin one pooled
// connection each, and a node with more webhook deliverers than pool
// connections would starve every other storage call. Instead it reads, and
// when there is nothing waits for an append made through this Store (the
// owner's own writes: woken at once) or for the poll interval TailBlock
// (appends by other processes, e.g. a WebSocket reader on another node:
// seen within TailBlock).
func (s *Store) Tail(ctx context.Context, profile, after string, limit int) ([]storage.Event, error) {
	if err := storage.ValidateProfile(profile); err != nil {
		return nil, err
	}
	if _, _, err := parseStreamID(after); err != nil {
		return nil, err
	}
	if after == "" {
		after = "0"
	}
	timer := time.NewTimer(s.tailBlock)
	defer timer.Stop()
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		// Take the wake-up channel before reading so that an append between
		// the read and the wait is never missed.
		wake, err := s.notify.Wait(profile)
		if err != nil {
			return nil, err
		}
		evs, err := s.Read(ctx, profile, after, limit)
		if err != nil {
			if ctxErr := ctx.Err(); ctxErr != nil {
				return nil, ctxErr
			}
			return nil, fmt.Errorf("redis: tail %s after %s: %w", profile, after, err)
		}
		if len(evs) > 0 {
			return evs, nil
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(s.tailBlock)
		select {
		case <-wake:
		case <-timer.C:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-s.notify.Done():
			return nil, storage.ErrClosed
		}
	}
}

// LastCursor returns the id of the newest retained event, "0" if none.
func (s *Store) LastCursor(ctx context.Context, profile string) (string, error) {
	if err := storage.ValidateProfile(profile); err != nil {
		return "", err
	}
	if err := s.usable(); err != nil {
		return "", err
	}
	msgs, err := s.c.XRevRangeN(ctx, s.eventsKey(profile), "+", "-", 1).Result()
	if err != nil {
		return "", fmt.Errorf("redis: last cursor of %s: %w", profile, s.mapErr(err))
	}
	if len(msgs) == 0 {
		return "0", nil
	}
	return msgs[0].ID, nil
}

// Ack records that consumer has processed everything up to cursor (fenced).
func (s *Store) Ack(ctx context.Context, profile string, token storage.Token, consumer, cursor string) error {
	if err := storage.ValidateProfile(profile); err != nil {
		return err
	}
	if err := storage.ValidateConsumer(consumer); err != nil {
		return err
	}
	if _, _, err := parseStreamID(cursor); err != nil {
		return err
	}
	if cursor == "" {
		cursor = "0"
	}
	b := s.newBatch(profile, token)
	b.ack(consumer, cursor)
	if _, err := b.run(ctx); err != nil {
		return fmt.Errorf("redis: ack %s/%s at %s: %w", profile, consumer, cursor, err)
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
	if err := s.usable(); err != nil {
		return "", err
	}
	v, err := s.c.HGet(ctx, s.cursorsKey(profile), consumer).Result()
	if errors.Is(err, goredis.Nil) {
		return "0", nil
	}
	if err != nil {
		return "", fmt.Errorf("redis: cursor of %s/%s: %w", profile, consumer, s.mapErr(err))
	}
	if _, _, err := parseStreamID(v); err != nil {
		s.reportCorrupt(profile, "cursors", consumer)
		return "0", nil
	}
	return v, nil
}
