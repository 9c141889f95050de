package qrcode

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"image/png"
	"strings"
	"testing"
)

// goldenInputs are encoded by TestGolden. Their symbols were checked once
// with an independent decoder (zbarimg from zbar-tools) and are pinned by
// hash, so a change in the encoder that still "looks fine" is caught.
func goldenInputs() []string {
	wa := "2@Y2lDGdGvQ7sIYkAbc/HfSm5rBXlLw2mbq8F9mYZKYV8W3l1JmJb2r7yY2f0PO8q0F0S4o9tFMw==,7fqJxkVfXtbX8rTq0DbXoRDH5xgA2P5B7tS+6QQCm0s=,J0o1b2x3v4p5f6c7p8e9y0w1q2r3t4u5i6o7p8a9s0d=,xkZ9bQ1v7v0X5u4b3X3o4w9d2m8n1C0t6Y5Q8R7U6E4="
	return []string{"a", "hello world", strings.Repeat("0123456789", 20), wa, strings.Repeat("x", 1200)}
}

// String renders the matrix as rows of '#' and '.', for hashing and
// debugging.
func (c *Code) String() string {
	var b strings.Builder
	for y := 0; y < c.Size; y++ {
		for x := 0; x < c.Size; x++ {
			if c.Dark(x, y) {
				b.WriteByte('#')
			} else {
				b.WriteByte('.')
			}
		}
		b.WriteByte('\n')
	}
	return b.String()
}

func TestGolden(t *testing.T) {
	want := []struct {
		version, mask int
		hash          string
	}{
		{1, 5, "4eb117b183a22f269fd83c15967da5e32959415317cd548bfd9215712800272a"},
		{1, 3, "da3295580c94d37a7772a45f394787e1c5f87c5e9dfbfc91cb70ec80c15c4e5d"},
		{10, 2, "1c9125ee1266e8e78e573051075685de5b7462545becd70a44e3836d5aad659f"},
		{10, 2, "b923cc13613fdc568eceff8ea8943b4f7abf841a39a49e8c36c6747af1b23d66"},
		{29, 0, "cbfd88728d23b253fa2efc22d04727c25a67c2b53b15acea2a522f92d30eff1a"},
	}
	for i, s := range goldenInputs() {
		c, err := Encode([]byte(s))
		if err != nil {
			t.Fatal(err)
		}
		h := fmt.Sprintf("%x", sha256.Sum256([]byte(c.String())))
		if c.Version != want[i].version || c.Mask != want[i].mask || h != want[i].hash {
			t.Errorf("input %d: version %d mask %d hash %s, want %+v", i, c.Version, c.Mask, h, want[i])
		}
	}
}

// TestVersionChoice checks capacity boundaries of level M.
func TestVersionChoice(t *testing.T) {
	for _, tc := range []struct{ n, version int }{
		{0, 1}, {14, 1}, {15, 2}, {26, 2}, {27, 3}, {180, 9}, {181, 10}, {213, 10}, {214, 11}, {2331, 40},
	} {
		c, err := Encode(bytes.Repeat([]byte("a"), tc.n))
		if err != nil || c.Version != tc.version || c.Size != tc.version*4+17 {
			t.Errorf("%d bytes: %v, want version %d", tc.n, err, tc.version)
		}
	}
	if _, err := Encode(make([]byte, 2332)); !errors.Is(err, ErrTooLong) {
		t.Errorf("2332 bytes: %v", err)
	}
}

// TestStructure checks the fixed patterns and the format information of
// every symbol: finders, timing, dark module, and both format copies
// decoding to level M with the chosen mask.
func TestStructure(t *testing.T) {
	for _, s := range goldenInputs() {
		c, err := Encode([]byte(s))
		if err != nil {
			t.Fatal(err)
		}
		n := c.Size
		for _, o := range [][2]int{{0, 0}, {n - 7, 0}, {0, n - 7}} {
			for dy := 0; dy < 7; dy++ {
				for dx := 0; dx < 7; dx++ {
					d := max(abs(dx-3), abs(dy-3))
					if want := d != 2; c.Dark(o[0]+dx, o[1]+dy) != want {
						t.Fatalf("v%d finder at %v broken at %d,%d", c.Version, o, dx, dy)
					}
				}
			}
		}
		for i := 8; i < n-8; i++ {
			if c.Dark(6, i) != (i%2 == 0) || c.Dark(i, 6) != (i%2 == 0) {
				t.Fatalf("v%d timing pattern broken at %d", c.Version, i)
			}
		}
		if !c.Dark(8, n-8) {
			t.Fatalf("v%d: dark module missing", c.Version)
		}
		var first, second int
		for i := 0; i <= 5; i++ {
			first |= b(c.Dark(8, i)) << i
		}
		first |= b(c.Dark(8, 7))<<6 | b(c.Dark(8, 8))<<7 | b(c.Dark(7, 8))<<8
		for i := 9; i < 15; i++ {
			first |= b(c.Dark(14-i, 8)) << i
		}
		for i := 0; i < 8; i++ {
			second |= b(c.Dark(n-1-i, 8)) << i
		}
		for i := 8; i < 15; i++ {
			second |= b(c.Dark(8, n-15+i)) << i
		}
		if first != second {
			t.Fatalf("v%d: format copies differ: %015b %015b", c.Version, first, second)
		}
		f := (first ^ 0x5412) >> 10
		if f>>3 != formatBitsM || f&7 != c.Mask {
			t.Fatalf("v%d: format %05b, want level M mask %d", c.Version, f, c.Mask)
		}
	}
}

func b(v bool) int {
	if v {
		return 1
	}
	return 0
}

// TestPNG checks the image size and that it decodes.
func TestPNG(t *testing.T) {
	c, _ := Encode([]byte("hello"))
	raw, err := c.PNG(8)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	if side := (c.Size + 8) * 8; img.Bounds().Dx() != side || img.Bounds().Dy() != side {
		t.Fatalf("image %v, want %d px", img.Bounds(), side)
	}
	// Top-left finder corner is dark, quiet zone is light.
	if r, _, _, _ := img.At(4*8, 4*8).RGBA(); r != 0 {
		t.Error("finder corner is not dark")
	}
	if r, _, _, _ := img.At(1, 1).RGBA(); r == 0 {
		t.Error("quiet zone is not light")
	}
}

// FuzzEncode: any input either fits and yields a well-formed symbol or is
// ErrTooLong; never a panic.
func FuzzEncode(f *testing.F) {
	f.Add([]byte("2@abc,def,ghi,jkl"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Encode(data)
		if err != nil {
			if !errors.Is(err, ErrTooLong) {
				t.Fatal(err)
			}
			return
		}
		if c.Size != c.Version*4+17 || c.Mask < 0 || c.Mask > 7 {
			t.Fatalf("symbol %+v", c)
		}
	})
}
