package media

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
	"testing/iotest"

	"go.mau.fi/whatsmeow/util/cbcutil"
	"go.mau.fi/whatsmeow/util/hkdfutil"
)

func randBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed+1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func mediaKey(seed uint64) []byte { return randBytes(32, seed+1000) }

func encrypt(t testing.TB, plain, key []byte, kind string) ([]byte, Encrypted) {
	t.Helper()
	var buf bytes.Buffer
	res, err := Encrypt(&buf, bytes.NewReader(plain), key, kind)
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), res
}

// TestEncryptMatchesWhatsmeow proves our streaming encryption produces the
// very bytes whatsmeow's upload path produces (same HKDF, CBC, MAC, hashes),
// for sizes around block and chunk boundaries.
func TestEncryptMatchesWhatsmeow(t *testing.T) {
	for _, kind := range []string{"image", "video", "audio", "document", "sticker", "voice"} {
		for _, size := range []int{0, 1, 15, 16, 17, chunkSize - 1, chunkSize, chunkSize + 1, 3*chunkSize + 100} {
			plain := randBytes(size, uint64(size))
			key := mediaKey(uint64(size))
			got, res := encrypt(t, plain, key, kind)

			info, _, _ := kindInfo(kind)
			exp := hkdfutil.SHA256(key, nil, []byte(info), 112)
			var want bytes.Buffer
			fileSHA, encSHA, fileLen, encLen, err := cbcutil.EncryptStream(exp[16:48], exp[:16], exp[48:80], bytes.NewReader(plain), &want)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want.Bytes()) {
				t.Fatalf("%s/%d: ciphertext differs from whatsmeow's", kind, size)
			}
			if !bytes.Equal(res.FileSHA256, fileSHA) || !bytes.Equal(res.FileEncSHA256, encSHA) ||
				res.FileLength != fileLen || uint64(res.EncLength) != encLen {
				t.Fatalf("%s/%d: metadata %+v differs from whatsmeow's", kind, size, res)
			}
		}
	}
}

// TestDecryptReaderRoundTrip proves streaming decryption returns the
// plaintext for every size and every read pattern (one byte at a time,
// short reads, data with EOF).
func TestDecryptReaderRoundTrip(t *testing.T) {
	readers := map[string]func(io.Reader) io.Reader{
		"plain":    func(r io.Reader) io.Reader { return r },
		"onebyte":  iotest.OneByteReader,
		"half":     iotest.HalfReader,
		"dataerr":  iotest.DataErrReader,
		"truncbuf": func(r io.Reader) io.Reader { return bufioSized{r, 7} },
	}
	for _, size := range []int{0, 1, 16, 31, 4096, chunkSize + 26, 2*chunkSize + 5} {
		plain := randBytes(size, uint64(size)+7)
		key := mediaKey(uint64(size))
		enc, res := encrypt(t, plain, key, "document")
		for name, wrap := range readers {
			if name == "onebyte" && size > chunkSize {
				continue // slow and adds nothing over "truncbuf"
			}
			r, err := NewDecryptReader(wrap(bytes.NewReader(enc)), key, "document", res.FileEncSHA256)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(r)
			if err != nil {
				t.Fatalf("size %d reader %s: %v", size, name, err)
			}
			if !bytes.Equal(got, plain) {
				t.Fatalf("size %d reader %s: plaintext differs (%d vs %d bytes)", size, name, len(got), len(plain))
			}
		}
	}
}

type bufioSized struct {
	r io.Reader
	n int
}

func (b bufioSized) Read(p []byte) (int, error) {
	if len(p) > b.n {
		p = p[:b.n]
	}
	return b.r.Read(p)
}

// TestDecryptReaderRejectsTampering proves every kind of damage ends the
// stream with ErrCorrupt instead of a clean EOF, and that the bytes
// released before the end never include the final block.
func TestDecryptReaderRejectsTampering(t *testing.T) {
	plain := randBytes(100_003, 3) // not block-aligned: the held-back last block carries data
	key := mediaKey(3)
	enc, res := encrypt(t, plain, key, "image")
	flip := func(i int) []byte { b := bytes.Clone(enc); b[i] ^= 1; return b }
	for _, tc := range []struct {
		name   string
		data   []byte
		key    []byte
		encSHA []byte
	}{
		{"flipped first byte", flip(0), key, res.FileEncSHA256},
		{"flipped middle", flip(len(enc) / 2), key, res.FileEncSHA256},
		{"flipped mac", flip(len(enc) - 1), key, res.FileEncSHA256},
		{"flipped first byte, no enc sha", flip(0), key, nil},
		{"truncated by one", enc[:len(enc)-1], key, nil},
		{"truncated to a block", enc[:len(enc)-16], key, nil},
		{"too short", enc[:20], key, nil},
		{"empty", nil, key, nil},
		{"wrong key", enc, mediaKey(99), nil},
		{"wrong enc sha", enc, key, sha256Sum([]byte("x"))},
		{"appended garbage", append(bytes.Clone(enc), 1, 2, 3), key, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := NewDecryptReader(bytes.NewReader(tc.data), tc.key, "image", tc.encSHA)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(r)
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("err = %v, want ErrCorrupt", err)
			}
			if len(got) >= len(plain) {
				t.Fatalf("released %d bytes of a corrupt file", len(got))
			}
		})
	}
	for _, tc := range []struct {
		name string
		key  []byte
		kind string
	}{
		{"short key", key[:16], "image"},
		{"unknown kind", key, "hologram"},
	} {
		if _, err := NewDecryptReader(bytes.NewReader(enc), tc.key, tc.kind, nil); !errors.Is(err, ErrPermanent) {
			t.Errorf("%s: %v, want ErrPermanent", tc.name, err)
		}
	}
}

func sha256Sum(b []byte) []byte { s := sha256.Sum256(b); return s[:] }

// FuzzDecryptReader feeds arbitrary bytes (an untrusted CDN answer) to the
// decrypter: it must never panic, and must end in ErrCorrupt unless the
// input is a genuine encryption under the key.
func FuzzDecryptReader(f *testing.F) {
	key := mediaKey(5)
	for _, n := range []int{0, 1, 16, 100} {
		enc, _ := encrypt(f, randBytes(n, uint64(n)), key, "video")
		f.Add(enc)
		f.Add(enc[:len(enc)/2])
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := NewDecryptReader(bytes.NewReader(data), key, "video", nil)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(r)
		if err == nil {
			// Only a real ciphertext decrypts: re-encrypting must give it back.
			again, _ := encrypt(t, got, key, "video")
			if !bytes.Equal(again, data) {
				t.Fatalf("accepted %d bytes that are not an encryption of what they decrypt to", len(data))
			}
		} else if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("err = %v, want ErrCorrupt", err)
		}
	})
}
