package s3

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// harness is what the shared conformance suite needs from one
// implementation.
type harness struct {
	store Objects
	// corrupt flips bytes of the stored object in place (same length),
	// behind the store's back, to prove full reads verify the checksum.
	corrupt func(t *testing.T, key string)
	// presign reports whether PresignGet must work.
	presign bool
}

// testObjects is the conformance suite every Objects implementation passes.
func testObjects(t *testing.T, h harness) {
	s := h.store
	ctx := context.Background()

	t.Run("PutGetIdentical", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			size int
			ct   string
		}{
			{"empty", 0, "text/plain"},
			{"one", 1, "image/jpeg"},
			{"small", 4096 + 7, "audio/ogg; codecs=opus"},
			{"1MiB", 1 << 20, ""},
		} {
			t.Run(tc.name, func(t *testing.T) {
				key := "conf/identical/" + tc.name
				data := randBytes(tc.size, uint64(tc.size))
				sum := sha256Hex(data)
				info, err := s.Put(ctx, key, bytes.NewReader(data), int64(len(data)), tc.ct, sum)
				if err != nil {
					t.Fatalf("put: %v", err)
				}
				wantCT := tc.ct
				if wantCT == "" {
					wantCT = DefaultContentType
				}
				if info.Size != int64(tc.size) || info.SHA256 != sum || info.ContentType != wantCT || info.Key != key {
					t.Fatalf("put info = %+v, want size %d sha %s ct %q", info, tc.size, sum, wantCT)
				}
				got, ginfo := getAll(t, s, key, nil)
				if sha256Hex(got) != sum {
					t.Fatalf("get: sha256 %s, want %s (len %d vs %d)", sha256Hex(got), sum, len(got), len(data))
				}
				if ginfo.Size != int64(tc.size) || ginfo.SHA256 != sum || ginfo.ContentType != wantCT {
					t.Fatalf("get info = %+v", ginfo)
				}
				st, err := s.Stat(ctx, key)
				if err != nil || st.Size != int64(tc.size) || st.SHA256 != sum || st.ContentType != wantCT {
					t.Fatalf("stat = %+v, %v", st, err)
				}
				if st.ModTime.IsZero() || time.Since(st.ModTime) > time.Hour {
					t.Fatalf("stat mod time %v", st.ModTime)
				}
			})
		}
	})

	t.Run("UnknownSizeAndChecksum", func(t *testing.T) {
		data := randBytes(3000, 3)
		// A reader with no length: announced size -1, no checksum.
		info, err := s.Put(ctx, "conf/unknown", io.MultiReader(bytes.NewReader(data)), -1, "", "")
		if err != nil {
			t.Fatal(err)
		}
		if info.SHA256 != sha256Hex(data) || info.Size != 3000 {
			t.Fatalf("info %+v", info)
		}
		st, err := s.Stat(ctx, "conf/unknown")
		if err != nil || st.SHA256 != sha256Hex(data) {
			t.Fatalf("stat %+v %v: sha256 must be recorded even when not announced", st, err)
		}
	})

	t.Run("Ranges", func(t *testing.T) {
		data := randBytes(10000, 42)
		key := "conf/ranges"
		if _, err := s.Put(ctx, key, bytes.NewReader(data), int64(len(data)), "application/pdf", ""); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			name   string
			rng    Range
			want   []byte
			err    error
			errMsg string
		}{
			{name: "head", rng: Range{0, 100}, want: data[:100]},
			{name: "middle", rng: Range{1234, 4321}, want: data[1234 : 1234+4321]},
			{name: "to end", rng: Range{9000, -1}, want: data[9000:]},
			{name: "past end truncated", rng: Range{9990, 500}, want: data[9990:]},
			{name: "last byte", rng: Range{9999, 1}, want: data[9999:]},
			{name: "whole", rng: Range{0, -1}, want: data},
			{name: "offset at size", rng: Range{10000, 1}, err: ErrInvalidRange},
			{name: "offset beyond", rng: Range{20000, -1}, err: ErrInvalidRange},
		} {
			t.Run(tc.name, func(t *testing.T) {
				rng := tc.rng
				rc, info, err := s.Get(ctx, key, &rng)
				if tc.err != nil {
					if !errors.Is(err, tc.err) {
						t.Fatalf("err = %v, want %v", err, tc.err)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				got, err := io.ReadAll(rc)
				_ = rc.Close()
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, tc.want) {
					t.Fatalf("got %d bytes, want %d (content differs: %v)", len(got), len(tc.want), len(got) == len(tc.want))
				}
				if info.Size != int64(len(data)) {
					t.Fatalf("info.Size = %d, want the whole object's %d", info.Size, len(data))
				}
			})
		}
	})

	t.Run("Missing", func(t *testing.T) {
		if _, _, err := s.Get(ctx, "conf/missing/x", nil); !errors.Is(err, ErrNotFound) {
			t.Fatalf("get missing: %v, want ErrNotFound", err)
		}
		if _, err := s.Stat(ctx, "conf/missing/x"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("stat missing: %v, want ErrNotFound", err)
		}
		if err := s.Delete(ctx, "conf/missing/x"); err != nil {
			t.Fatalf("delete missing: %v, want nil", err)
		}
	})

	t.Run("Overwrite", func(t *testing.T) {
		key := "conf/overwrite"
		first, second := randBytes(5000, 1), randBytes(777, 2)
		if _, err := s.Put(ctx, key, bytes.NewReader(first), -1, "image/png", ""); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Put(ctx, key, bytes.NewReader(second), -1, "image/webp", ""); err != nil {
			t.Fatal(err)
		}
		got, info := getAll(t, s, key, nil)
		if !bytes.Equal(got, second) || info.ContentType != "image/webp" || info.SHA256 != sha256Hex(second) {
			t.Fatalf("after overwrite: %d bytes, info %+v", len(got), info)
		}
	})

	t.Run("MismatchStoresNothing", func(t *testing.T) {
		data := randBytes(2048, 9)
		good := sha256Hex(data)
		bad := sha256Hex([]byte("something else"))
		for _, tc := range []struct {
			name string
			size int64
			sha  string
			err  error
		}{
			{"wrong sha", int64(len(data)), bad, ErrChecksum},
			{"short size", int64(len(data)) - 1, good, ErrSizeMismatch},
			{"long size", int64(len(data)) + 1, "", ErrSizeMismatch},
		} {
			t.Run(tc.name, func(t *testing.T) {
				key := "conf/mismatch/" + strings.ReplaceAll(tc.name, " ", "-")
				if _, err := s.Put(ctx, key, bytes.NewReader(data), tc.size, "", tc.sha); !errors.Is(err, tc.err) {
					t.Fatalf("put: %v, want %v", err, tc.err)
				}
				if _, err := s.Stat(ctx, key); !errors.Is(err, ErrNotFound) {
					t.Fatalf("stat after failed put: %v, want ErrNotFound", err)
				}
			})
		}
		// A failed overwrite keeps the previous object.
		key := "conf/mismatch/keep"
		if _, err := s.Put(ctx, key, bytes.NewReader(data), -1, "", good); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Put(ctx, key, strings.NewReader("evil"), -1, "", good); !errors.Is(err, ErrChecksum) {
			t.Fatalf("bad overwrite: %v", err)
		}
		if got, _ := getAll(t, s, key, nil); !bytes.Equal(got, data) {
			t.Fatal("failed overwrite replaced the object")
		}
	})

	t.Run("ReaderErrorAndCancel", func(t *testing.T) {
		boom := errors.New("boom")
		r := io.MultiReader(bytes.NewReader(randBytes(1000, 5)), errReader{boom})
		if _, err := s.Put(ctx, "conf/readerr", r, -1, "", ""); !errors.Is(err, boom) {
			t.Fatalf("put with failing reader: %v, want boom", err)
		}
		if _, err := s.Stat(ctx, "conf/readerr"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("stat: %v", err)
		}
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := s.Put(cctx, "conf/cancelled", bytes.NewReader([]byte("x")), 1, "", ""); !errors.Is(err, context.Canceled) {
			t.Fatalf("put with cancelled ctx: %v", err)
		}
		if _, err := s.Stat(ctx, "conf/cancelled"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("stat: %v", err)
		}
	})

	t.Run("DeleteAndPrefix", func(t *testing.T) {
		keys := []string{
			"conf/del/alice/1", "conf/del/alice/2", "conf/del/alice/sub/3",
			"conf/del/alice2/1", "conf/del/bob/1", "conf/del/alicex",
		}
		for _, k := range keys {
			if _, err := s.Put(ctx, k, strings.NewReader(k), -1, "text/plain", ""); err != nil {
				t.Fatalf("put %s: %v", k, err)
			}
		}
		if err := s.Delete(ctx, "conf/del/bob/1"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Stat(ctx, "conf/del/bob/1"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("after delete: %v", err)
		}
		n, err := s.DeletePrefix(ctx, "conf/del/alice/")
		if err != nil || n != 3 {
			t.Fatalf("delete prefix alice/ = %d, %v; want 3", n, err)
		}
		for _, k := range []string{"conf/del/alice/1", "conf/del/alice/2", "conf/del/alice/sub/3"} {
			if _, err := s.Stat(ctx, k); !errors.Is(err, ErrNotFound) {
				t.Fatalf("%s survived DeletePrefix: %v", k, err)
			}
		}
		for _, k := range []string{"conf/del/alice2/1", "conf/del/alicex"} {
			if got, _ := getAll(t, s, k, nil); string(got) != k {
				t.Fatalf("%s damaged by DeletePrefix: %q", k, got)
			}
		}
		// A partial last segment matches like a string prefix, as on S3.
		n, err = s.DeletePrefix(ctx, "conf/del/ali")
		if err != nil || n != 2 {
			t.Fatalf("delete prefix conf/del/ali = %d, %v; want 2", n, err)
		}
		if n, err := s.DeletePrefix(ctx, "conf/del/none/"); err != nil || n != 0 {
			t.Fatalf("delete empty prefix = %d, %v", n, err)
		}
	})

	t.Run("BadKeys", func(t *testing.T) {
		for _, key := range []string{
			"", "/abs", "a//b", "../x", "a/../b", "a/./b", "a/", ".hidden", "a/.meta",
			`a\b`, "a b", "a~1", "a\x00b", "ü", strings.Repeat("a", MaxKeyLen+1),
			strings.Repeat("a", maxSegmentLen+1),
		} {
			if err := ValidateKey(key); !errors.Is(err, ErrInvalidKey) {
				t.Errorf("ValidateKey(%q) = %v", key, err)
			}
			if _, err := s.Put(ctx, key, strings.NewReader("x"), 1, "", ""); !errors.Is(err, ErrInvalidKey) {
				t.Errorf("Put(%q) = %v, want ErrInvalidKey", key, err)
			}
			if _, _, err := s.Get(ctx, key, nil); !errors.Is(err, ErrInvalidKey) {
				t.Errorf("Get(%q) = %v", key, err)
			}
			if _, err := s.Stat(ctx, key); !errors.Is(err, ErrInvalidKey) {
				t.Errorf("Stat(%q) = %v", key, err)
			}
			if err := s.Delete(ctx, key); !errors.Is(err, ErrInvalidKey) {
				t.Errorf("Delete(%q) = %v", key, err)
			}
		}
		for _, p := range []string{"", "../", "/", "a//"} {
			if _, err := s.DeletePrefix(ctx, p); !errors.Is(err, ErrInvalidKey) {
				t.Errorf("DeletePrefix(%q) = %v", p, err)
			}
		}
		if _, err := s.Put(ctx, "conf/badsha", strings.NewReader("x"), 1, "", "ABC"); err == nil {
			t.Error("malformed sha256 accepted")
		}
		for _, key := range []string{"media/alice/3EB0C431C26A1916E07A", "a=b/c+d/e@f:g,h-i_j.k"} {
			if err := ValidateKey(key); err != nil {
				t.Errorf("ValidateKey(%q) = %v, want ok", key, err)
			}
		}
	})

	t.Run("Multipart20MiB", func(t *testing.T) {
		const size = 20 << 20
		for _, announce := range []bool{true, false} {
			name := map[bool]string{true: "announced", false: "unannounced"}[announce]
			t.Run(name, func(t *testing.T) {
				key := "conf/big/" + name
				src := newPatternReader(size, 77)
				want := patternSHA(size, 77)
				sha, n := "", int64(-1)
				if announce {
					sha, n = want, size
				}
				info, err := s.Put(ctx, key, src, n, "application/zip", sha)
				if err != nil {
					t.Fatal(err)
				}
				if info.SHA256 != want || info.Size != size {
					t.Fatalf("info %+v", info)
				}
				rc, ginfo, err := s.Get(ctx, key, nil)
				if err != nil {
					t.Fatal(err)
				}
				hh := sha256.New()
				m, err := io.Copy(hh, rc)
				_ = rc.Close()
				if err != nil || m != size || hex.EncodeToString(hh.Sum(nil)) != want {
					t.Fatalf("read back %d bytes, err %v", m, err)
				}
				if ginfo.SHA256 != want || ginfo.ContentType != "application/zip" {
					t.Fatalf("get info %+v", ginfo)
				}
				// A ranged read across a part boundary.
				rng := Range{Offset: 5<<20 - 10, Length: 20}
				part, _ := getAll(t, s, key, &rng)
				if !bytes.Equal(part, patternSlice(rng.Offset, 20, 77)) {
					t.Fatal("range across a part boundary differs")
				}
			})
		}
		// A large upload whose checksum is wrong is aborted: nothing stored.
		bad := sha256Hex([]byte("nope"))
		if _, err := s.Put(ctx, "conf/big/bad", newPatternReader(size, 78), size, "", bad); !errors.Is(err, ErrChecksum) {
			t.Fatalf("bad big put: %v", err)
		}
		if _, err := s.Stat(ctx, "conf/big/bad"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("bad big put left an object: %v", err)
		}
	})

	t.Run("CorruptionDetectedOnRead", func(t *testing.T) {
		if h.corrupt == nil {
			t.Skip("no corruption hook")
		}
		key := "conf/corrupt"
		data := randBytes(9000, 11)
		if _, err := s.Put(ctx, key, bytes.NewReader(data), -1, "", ""); err != nil {
			t.Fatal(err)
		}
		h.corrupt(t, key)
		rc, _, err := s.Get(ctx, key, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, err = io.ReadAll(rc)
		_ = rc.Close()
		if !errors.Is(err, ErrChecksum) {
			t.Fatalf("reading a corrupted object: %v, want ErrChecksum", err)
		}
	})

	t.Run("Presign", func(t *testing.T) {
		key := "conf/presign/file"
		data := randBytes(12345, 12)
		if _, err := s.Put(ctx, key, bytes.NewReader(data), -1, "video/mp4", ""); err != nil {
			t.Fatal(err)
		}
		u, err := s.PresignGet(ctx, key, time.Minute)
		if !h.presign {
			if !errors.Is(err, ErrNotSupported) {
				t.Fatalf("presign: %v, want ErrNotSupported", err)
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		got, ct := httpGet(t, u)
		if !bytes.Equal(got, data) || ct != "video/mp4" {
			t.Fatalf("presigned GET: %d bytes, content type %q", len(got), ct)
		}
	})
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

func getAll(t *testing.T, s Objects, key string, rng *Range) ([]byte, Info) {
	t.Helper()
	rc, info, err := s.Get(context.Background(), key, rng)
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read %s: %v", key, err)
	}
	return b, info
}

func randBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// patternReader yields n deterministic bytes without holding them.
type patternReader struct {
	off, n int64
	seed   byte
}

func newPatternReader(n int64, seed byte) *patternReader { return &patternReader{n: n, seed: seed} }

func patternByte(i int64, seed byte) byte { return byte(i*31+i>>9) ^ seed }

func (p *patternReader) Read(b []byte) (int, error) {
	if p.off >= p.n {
		return 0, io.EOF
	}
	if rem := p.n - p.off; int64(len(b)) > rem {
		b = b[:rem]
	}
	for i := range b {
		b[i] = patternByte(p.off+int64(i), p.seed)
	}
	p.off += int64(len(b))
	return len(b), nil
}

func patternSHA(n int64, seed byte) string {
	h := sha256.New()
	_, _ = io.Copy(h, newPatternReader(n, seed))
	return hex.EncodeToString(h.Sum(nil))
}

func patternSlice(off, n int64, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = patternByte(off+int64(i), seed)
	}
	return b
}
