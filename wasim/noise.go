package wasim

import (
	"crypto/cipher"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"golang.org/x/crypto/curve25519"
	"golang.org/x/crypto/hkdf"

	"go.mau.fi/whatsmeow/socket"
	"go.mau.fi/whatsmeow/util/gcmutil"
)

// noiseState is the responder side of WhatsApp's Noise_XX_25519_AESGCM_SHA256
// handshake. whatsmeow's socket.NoiseHandshake hides the chaining key and the
// final split, so the server keeps its own copy of the state (notes §2).
type noiseState struct {
	hash    []byte
	salt    []byte
	key     cipher.AEAD
	counter uint32
}

func newNoiseState() *noiseState {
	ns := &noiseState{}
	pattern := []byte(socket.NoiseStartPattern) // exactly 32 bytes: used unhashed
	ns.hash = pattern
	ns.salt = pattern
	ns.key, _ = gcmutil.Prepare(pattern)
	ns.authenticate(socket.WAConnHeader)
	return ns
}

func (ns *noiseState) authenticate(data []byte) {
	h := sha256.New()
	h.Write(ns.hash)
	h.Write(data)
	ns.hash = h.Sum(nil)
}

func (ns *noiseState) encrypt(plaintext []byte) []byte {
	ct := ns.key.Seal(nil, nonce(ns.counter), plaintext, ns.hash)
	ns.counter++
	ns.authenticate(ct)
	return ct
}

func (ns *noiseState) decrypt(ct []byte) ([]byte, error) {
	pt, err := ns.key.Open(nil, nonce(ns.counter), ct, ns.hash)
	ns.counter++
	if err != nil {
		return nil, err
	}
	ns.authenticate(ct)
	return pt, nil
}

func (ns *noiseState) mixDH(priv, pub []byte) error {
	secret, err := curve25519.X25519(priv, pub)
	if err != nil {
		return fmt.Errorf("x25519: %w", err)
	}
	return ns.mixKey(secret)
}

func (ns *noiseState) mixKey(ikm []byte) error {
	ck, k, err := expand(ns.salt, ikm)
	if err != nil {
		return err
	}
	ns.salt = ck
	ns.counter = 0
	ns.key, err = gcmutil.Prepare(k)
	return err
}

// split returns the server's read and write transport ciphers.
func (ns *noiseState) split() (read, write cipher.AEAD, err error) {
	k1, k2, err := expand(ns.salt, nil)
	if err != nil {
		return nil, nil, err
	}
	if read, err = gcmutil.Prepare(k1); err != nil {
		return nil, nil, err
	}
	if write, err = gcmutil.Prepare(k2); err != nil {
		return nil, nil, err
	}
	return read, write, nil
}

func expand(salt, ikm []byte) ([]byte, []byte, error) {
	r := hkdf.New(sha256.New, ikm, salt, nil)
	out := make([]byte, 64)
	if _, err := io.ReadFull(r, out); err != nil {
		return nil, nil, err
	}
	return out[:32], out[32:], nil
}

func nonce(n uint32) []byte {
	iv := make([]byte, 12)
	binary.BigEndian.PutUint32(iv[8:], n)
	return iv
}

// transport is the post-handshake frame cipher of one connection.
type transport struct {
	read, write       cipher.AEAD
	readCtr, writeCtr uint32
}

var errDecrypt = errors.New("frame decryption failed")

func (t *transport) open(ct []byte) ([]byte, error) {
	pt, err := t.read.Open(nil, nonce(t.readCtr), ct, nil)
	t.readCtr++
	if err != nil {
		return nil, errDecrypt
	}
	return pt, nil
}

// seal must be called with the connection's write lock held.
func (t *transport) seal(pt []byte) []byte {
	ct := t.write.Seal(nil, nonce(t.writeCtr), pt, nil)
	t.writeCtr++
	return ct
}
