package signal

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"go.mau.fi/whatsmeow/store"

	"github.com/amarula/amarula/storage"
)

// The decrypted-event buffer: event_buffer/<hex sha256 of ciphertext> →
//
//	byte 0      format version (1)
//	byte 1      flags: bit 0 set when the plaintext is present
//	bytes 2-9   server timestamp, Unix seconds, big endian
//	bytes 10-17 insert time, Unix milliseconds, big endian
//	bytes 18-   plaintext
//
// whatsmeow writes the plaintext in the same transaction that advances the
// ratchet (DoDecryptionTxn), so a crash after decryption but before the
// message was handled replays the plaintext instead of failing to decrypt a
// second time; it clears the plaintext once the message was handled.

const (
	eventBufferVersion = 1
	eventBufferHeader  = 18
	// bufferRetention is how long hashes are kept: WhatsApp's servers buffer
	// events for 14 days, so nothing older can be redelivered.
	bufferRetention = 14 * 24 * time.Hour
	// deleteBatch bounds one batch of DeleteOldBufferedHashes.
	deleteBatch = 1000
)

// ErrBufferedEventExists is returned by PutBufferedEvent when the hash is
// already buffered (sqlstore's INSERT fails the same way), which fails the
// enclosing decryption transaction.
var ErrBufferedEventExists = errors.New("signal: buffered event already exists")

func encodeBufferedEvent(plaintext []byte, hasPlaintext bool, serverTS int64, insertMS int64) []byte {
	v := make([]byte, eventBufferHeader, eventBufferHeader+len(plaintext))
	v[0] = eventBufferVersion
	if hasPlaintext {
		v[1] = 1
	}
	binary.BigEndian.PutUint64(v[2:], uint64(serverTS))
	binary.BigEndian.PutUint64(v[10:], uint64(insertMS))
	return append(v, plaintext...)
}

// decodeBufferedEvent parses an event_buffer value.
func decodeBufferedEvent(v []byte) (*store.BufferedEvent, error) {
	if len(v) < eventBufferHeader || v[0] != eventBufferVersion || v[1] > 1 {
		return nil, fmt.Errorf("%w: buffered event of %d bytes", ErrInvalidValue, len(v))
	}
	if v[1] == 0 && len(v) != eventBufferHeader {
		return nil, fmt.Errorf("%w: cleared buffered event carries %d bytes", ErrInvalidValue, len(v)-eventBufferHeader)
	}
	ev := &store.BufferedEvent{
		ServerTime: time.Unix(int64(binary.BigEndian.Uint64(v[2:])), 0),
		InsertTime: time.UnixMilli(int64(binary.BigEndian.Uint64(v[10:]))),
	}
	if v[1] == 1 {
		ev.Plaintext = append(make([]byte, 0, len(v)-eventBufferHeader), v[eventBufferHeader:]...)
	}
	return ev, nil
}

// GetBufferedEvent returns the buffered event of a ciphertext hash, or nil.
// A nil Plaintext means the event was already handled.
func (s *profileStore) GetBufferedEvent(ctx context.Context, ciphertextHash [32]byte) (*store.BufferedEvent, error) {
	v, ok, err := s.b.get(ctx, storage.NSEventBuffer, hex.EncodeToString(ciphertextHash[:]))
	if err != nil || !ok {
		return nil, err
	}
	return decodeBufferedEvent(v)
}

// PutBufferedEvent buffers the plaintext of a decrypted ciphertext. It fails
// with ErrBufferedEventExists if the hash is already buffered.
func (s *profileStore) PutBufferedEvent(ctx context.Context, ciphertextHash [32]byte, plaintext []byte, serverTimestamp time.Time) error {
	key := hex.EncodeToString(ciphertextHash[:])
	if _, ok, err := s.b.get(ctx, storage.NSEventBuffer, key); err != nil {
		return err
	} else if ok {
		return fmt.Errorf("%w: %s", ErrBufferedEventExists, key)
	}
	return s.b.put(ctx, storage.NSEventBuffer, key, encodeBufferedEvent(plaintext, true, serverTimestamp.Unix(), time.Now().UnixMilli()))
}

// DoDecryptionTxn runs fn atomically: every store call made with the ctx
// passed to fn reads and writes through one storage transaction (reads see
// its writes), and the buffered event plus the ratchet advance commit as one
// fenced batch when fn returns nil, or not at all. Nested calls join the
// outer transaction. Decryption transactions of one profile run one at a
// time.
func (s *profileStore) DoDecryptionTxn(ctx context.Context, fn func(context.Context) error) error {
	return s.b.runTxn(ctx, fn)
}

// ClearBufferedEventPlaintext drops the plaintext of a buffered event and
// keeps the hash, so a redelivery is recognised as already processed.
func (s *profileStore) ClearBufferedEventPlaintext(ctx context.Context, ciphertextHash [32]byte) error {
	key := hex.EncodeToString(ciphertextHash[:])
	v, ok, err := s.b.get(ctx, storage.NSEventBuffer, key)
	if err != nil || !ok {
		return err
	}
	ev, err := decodeBufferedEvent(v)
	if err != nil {
		return err
	}
	if ev.Plaintext == nil {
		return nil
	}
	return s.b.put(ctx, storage.NSEventBuffer, key, encodeBufferedEvent(nil, false, ev.ServerTime.Unix(), ev.InsertTime.UnixMilli()))
}

// DeleteOldBufferedHashes deletes buffered events inserted more than 14
// days ago. Unreadable entries are deleted too.
func (s *profileStore) DeleteOldBufferedHashes(ctx context.Context) error {
	kvs, err := s.b.scan(ctx, storage.NSEventBuffer, "")
	if err != nil {
		return err
	}
	cutoff := time.Now().Add(-bufferRetention)
	var entries []storage.Entry
	for _, e := range kvs {
		if ev, err := decodeBufferedEvent(e.Value); err == nil && !ev.InsertTime.Before(cutoff) {
			continue
		}
		entries = append(entries, storage.Entry{NS: storage.NSEventBuffer, Key: e.Key, Delete: true})
		if len(entries) == deleteBatch {
			if err := s.b.write(ctx, entries...); err != nil {
				return err
			}
			entries = entries[:0]
		}
	}
	return s.b.write(ctx, entries...)
}
