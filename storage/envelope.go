package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// ErrCorrupt is returned by Unseal for bytes that are not a valid envelope.
// Adapters never return it to callers: a corrupt entry is reported as
// ErrNotFound (a miss) and counted.
var ErrCorrupt = errors.New("storage: corrupt value")

// envelopeV1 is the only envelope version so far.
const envelopeV1 byte = 1

// EnvelopeOverhead is the number of bytes Seal adds to a value.
const EnvelopeOverhead = 5

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Seal wraps value in the storage envelope every adapter writes:
//
//	byte 0     version (1)
//	bytes 1-4  CRC-32C (Castagnoli) of the value, big-endian
//	bytes 5-   the value
//
// The checksum lets an adapter tell a torn or tampered entry from a real one
// and report it as a miss instead of handing garbage to the Signal code.
func Seal(value []byte) []byte {
	out := make([]byte, EnvelopeOverhead+len(value))
	out[0] = envelopeV1
	binary.BigEndian.PutUint32(out[1:5], crc32.Checksum(value, castagnoli))
	copy(out[EnvelopeOverhead:], value)
	return out
}

// Unseal checks an envelope written by Seal and returns the value inside.
// The returned slice aliases b. Any malformed input yields ErrCorrupt.
func Unseal(b []byte) ([]byte, error) {
	if len(b) < EnvelopeOverhead {
		return nil, fmt.Errorf("%w: %d bytes, envelope needs %d", ErrCorrupt, len(b), EnvelopeOverhead)
	}
	if b[0] != envelopeV1 {
		return nil, fmt.Errorf("%w: unknown envelope version %d", ErrCorrupt, b[0])
	}
	value := b[EnvelopeOverhead:]
	if want, got := binary.BigEndian.Uint32(b[1:5]), crc32.Checksum(value, castagnoli); want != got {
		return nil, fmt.Errorf("%w: checksum %08x, want %08x", ErrCorrupt, got, want)
	}
	return value, nil
}
