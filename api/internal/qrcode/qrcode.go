// Package qrcode renders text as a QR code (ISO/IEC 18004, byte mode,
// error-correction level M, versions 1–40) and as a PNG image. It exists so
// that GET /v1/profiles/{id}/qr can answer image/png without a dependency;
// it only encodes, never decodes.
package qrcode

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/png"
)

// ErrTooLong is returned for data beyond the capacity of version 40-M.
var ErrTooLong = errors.New("qrcode: data too long")

// Level M tables, indexed by version (index 0 unused).
var (
	eccPerBlock = [41]int{-1, 10, 16, 26, 18, 24, 16, 18, 22, 22, 26, 30, 22, 22, 24, 24, 28, 28, 26, 26, 26, 26, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28}
	numBlocks   = [41]int{-1, 1, 1, 1, 2, 2, 4, 4, 4, 5, 5, 5, 8, 9, 9, 10, 10, 11, 13, 14, 16, 17, 17, 18, 20, 21, 23, 25, 26, 28, 29, 31, 33, 35, 37, 38, 40, 43, 45, 47, 49}
)

// formatBitsM is level M's value in the format information.
const formatBitsM = 0

// Code is an encoded symbol: Size×Size modules, true = dark.
type Code struct {
	Version int
	Size    int
	Mask    int
	modules [][]bool
	isFunc  [][]bool
}

// Dark reports whether the module at column x, row y is dark.
func (c *Code) Dark(x, y int) bool { return c.modules[y][x] }

// Encode encodes data in byte mode at level M in the smallest version that
// fits, choosing the mask with the lowest penalty.
func Encode(data []byte) (*Code, error) {
	version := 0
	for v := 1; v <= 40; v++ {
		countBits := 8
		if v >= 10 {
			countBits = 16
		}
		if 4+countBits+8*len(data) <= dataCodewords(v)*8 && len(data) < 1<<countBits {
			version = v
			break
		}
	}
	if version == 0 {
		return nil, fmt.Errorf("%w: %d bytes", ErrTooLong, len(data))
	}
	c := &Code{Version: version, Size: version*4 + 17}
	c.modules = grid(c.Size)
	c.isFunc = grid(c.Size)
	c.drawFunctionPatterns()
	c.drawCodewords(addECCAndInterleave(version, dataBits(version, data)))

	best, bestPenalty := 0, -1
	for m := 0; m < 8; m++ {
		c.applyMask(m)
		c.drawFormatBits(m)
		if p := c.penalty(); bestPenalty < 0 || p < bestPenalty {
			best, bestPenalty = m, p
		}
		c.applyMask(m) // XOR again undoes it
	}
	c.Mask = best
	c.applyMask(best)
	c.drawFormatBits(best)
	return c, nil
}

func grid(n int) [][]bool {
	g := make([][]bool, n)
	for i := range g {
		g[i] = make([]bool, n)
	}
	return g
}

// rawDataModules is the number of modules available for data and ECC.
func rawDataModules(v int) int {
	r := (16*v+128)*v + 64
	if v >= 2 {
		n := v/7 + 2
		r -= (25*n-10)*n - 55
		if v >= 7 {
			r -= 36
		}
	}
	return r
}

func dataCodewords(v int) int {
	return rawDataModules(v)/8 - eccPerBlock[v]*numBlocks[v]
}

// dataBits builds the padded data codewords: mode, count, bytes,
// terminator, pad bytes.
func dataBits(v int, data []byte) []byte {
	var bb bitBuffer
	bb.append(0x4, 4) // byte mode
	if v >= 10 {
		bb.append(uint32(len(data)), 16)
	} else {
		bb.append(uint32(len(data)), 8)
	}
	for _, b := range data {
		bb.append(uint32(b), 8)
	}
	capacity := dataCodewords(v) * 8
	term := capacity - bb.n
	if term > 4 {
		term = 4
	}
	bb.append(0, term)
	bb.append(0, (8-bb.n%8)%8)
	for pad := uint32(0xEC); bb.n < capacity; pad ^= 0xEC ^ 0x11 {
		bb.append(pad, 8)
	}
	return bb.bytes
}

type bitBuffer struct {
	bytes []byte
	n     int
}

func (b *bitBuffer) append(v uint32, bits int) {
	for i := bits - 1; i >= 0; i-- {
		if b.n%8 == 0 {
			b.bytes = append(b.bytes, 0)
		}
		if v>>uint(i)&1 == 1 {
			b.bytes[b.n/8] |= 0x80 >> uint(b.n%8)
		}
		b.n++
	}
}

// addECCAndInterleave splits data into blocks, appends each block's
// Reed-Solomon codewords and interleaves the result.
func addECCAndInterleave(v int, data []byte) []byte {
	blocks, eccLen := numBlocks[v], eccPerBlock[v]
	raw := rawDataModules(v) / 8
	numShort := blocks - raw%blocks
	shortLen := raw / blocks
	gen := rsGenerator(eccLen)
	out := make([][]byte, blocks)
	k := 0
	for i := 0; i < blocks; i++ {
		n := shortLen - eccLen
		if i >= numShort {
			n++
		}
		dat := append([]byte(nil), data[k:k+n]...)
		k += n
		ecc := rsRemainder(dat, gen)
		if i < numShort {
			dat = append(dat, 0) // placeholder, skipped when interleaving
		}
		out[i] = append(dat, ecc...)
	}
	var res []byte
	for i := range out[0] {
		for j := range out {
			if i != shortLen-eccLen || j >= numShort {
				res = append(res, out[j][i])
			}
		}
	}
	return res
}

func gfMul(x, y byte) byte {
	var z int
	for i := 7; i >= 0; i-- {
		z = (z << 1) ^ ((z >> 7) * 0x11D)
		z ^= int(y>>uint(i)&1) * int(x)
	}
	return byte(z)
}

func rsGenerator(degree int) []byte {
	res := make([]byte, degree)
	res[degree-1] = 1
	root := byte(1)
	for i := 0; i < degree; i++ {
		for j := range res {
			res[j] = gfMul(res[j], root)
			if j+1 < len(res) {
				res[j] ^= res[j+1]
			}
		}
		root = gfMul(root, 0x02)
	}
	return res
}

func rsRemainder(data, gen []byte) []byte {
	res := make([]byte, len(gen))
	for _, b := range data {
		factor := b ^ res[0]
		copy(res, res[1:])
		res[len(res)-1] = 0
		for i, g := range gen {
			res[i] ^= gfMul(g, factor)
		}
	}
	return res
}

func (c *Code) set(x, y int, dark bool) {
	c.modules[y][x] = dark
	c.isFunc[y][x] = true
}

func (c *Code) drawFunctionPatterns() {
	for i := 0; i < c.Size; i++ {
		c.set(6, i, i%2 == 0)
		c.set(i, 6, i%2 == 0)
	}
	c.drawFinder(3, 3)
	c.drawFinder(c.Size-4, 3)
	c.drawFinder(3, c.Size-4)
	pos := alignmentPositions(c.Version, c.Size)
	last := len(pos) - 1
	for i := range pos {
		for j := range pos {
			if (i == 0 && j == 0) || (i == 0 && j == last) || (i == last && j == 0) {
				continue
			}
			for dy := -2; dy <= 2; dy++ {
				for dx := -2; dx <= 2; dx++ {
					c.set(pos[i]+dx, pos[j]+dy, max(abs(dx), abs(dy)) != 1)
				}
			}
		}
	}
	c.drawFormatBits(0) // reserve the area; redrawn with the real mask
	if c.Version >= 7 {
		rem := c.Version
		for i := 0; i < 12; i++ {
			rem = (rem << 1) ^ ((rem >> 11) * 0x1F25)
		}
		bits := c.Version<<12 | rem
		for i := 0; i < 18; i++ {
			dark := bits>>uint(i)&1 == 1
			a, b := c.Size-11+i%3, i/3
			c.set(a, b, dark)
			c.set(b, a, dark)
		}
	}
}

func (c *Code) drawFinder(x, y int) {
	for dy := -4; dy <= 4; dy++ {
		for dx := -4; dx <= 4; dx++ {
			xx, yy := x+dx, y+dy
			if xx >= 0 && xx < c.Size && yy >= 0 && yy < c.Size {
				d := max(abs(dx), abs(dy))
				c.set(xx, yy, d != 2 && d != 4)
			}
		}
	}
}

func alignmentPositions(v, size int) []int {
	if v == 1 {
		return nil
	}
	n := v/7 + 2
	step := (v*4 + n*2 + 1) / (n*2 - 2) * 2
	if v == 32 {
		step = 26
	}
	res := make([]int, n)
	res[0] = 6
	for i, p := n-1, size-7; i >= 1; i, p = i-1, p-step {
		res[i] = p
	}
	return res
}

func (c *Code) drawFormatBits(mask int) {
	data := formatBitsM<<3 | mask
	rem := data
	for i := 0; i < 10; i++ {
		rem = (rem << 1) ^ ((rem >> 9) * 0x537)
	}
	bits := (data<<10 | rem) ^ 0x5412
	bit := func(i int) bool { return bits>>uint(i)&1 == 1 }
	for i := 0; i <= 5; i++ {
		c.set(8, i, bit(i))
	}
	c.set(8, 7, bit(6))
	c.set(8, 8, bit(7))
	c.set(7, 8, bit(8))
	for i := 9; i < 15; i++ {
		c.set(14-i, 8, bit(i))
	}
	for i := 0; i < 8; i++ {
		c.set(c.Size-1-i, 8, bit(i))
	}
	for i := 8; i < 15; i++ {
		c.set(8, c.Size-15+i, bit(i))
	}
	c.set(8, c.Size-8, true)
}

// drawCodewords places the bits in the zigzag order, skipping function
// modules.
func (c *Code) drawCodewords(data []byte) {
	i := 0
	for right := c.Size - 1; right >= 1; right -= 2 {
		if right == 6 {
			right = 5
		}
		for vert := 0; vert < c.Size; vert++ {
			for j := 0; j < 2; j++ {
				x := right - j
				y := vert
				if (right+1)&2 == 0 {
					y = c.Size - 1 - vert
				}
				if !c.isFunc[y][x] && i < len(data)*8 {
					c.modules[y][x] = data[i>>3]>>uint(7-i&7)&1 == 1
					i++
				}
			}
		}
	}
}

func (c *Code) applyMask(m int) {
	for y := 0; y < c.Size; y++ {
		for x := 0; x < c.Size; x++ {
			var inv bool
			switch m {
			case 0:
				inv = (x+y)%2 == 0
			case 1:
				inv = y%2 == 0
			case 2:
				inv = x%3 == 0
			case 3:
				inv = (x+y)%3 == 0
			case 4:
				inv = (x/3+y/2)%2 == 0
			case 5:
				inv = x*y%2+x*y%3 == 0
			case 6:
				inv = (x*y%2+x*y%3)%2 == 0
			case 7:
				inv = ((x+y)%2+x*y%3)%2 == 0
			}
			if inv && !c.isFunc[y][x] {
				c.modules[y][x] = !c.modules[y][x]
			}
		}
	}
}

// penalty scores the symbol by the four rules of the standard (lower is
// easier to scan).
func (c *Code) penalty() int {
	n := c.Size
	p := 0
	line := func(get func(i int) bool) {
		run := 1
		for i := 1; i <= n; i++ {
			if i < n && get(i) == get(i-1) {
				run++
				continue
			}
			if run >= 5 {
				p += 3 + run - 5
			}
			run = 1
		}
		// Finder-like 1:1:3:1:1 with four light modules on either side.
		pat := []bool{true, false, true, true, true, false, true}
		for i := 0; i+7 <= n; i++ {
			ok := true
			for k, want := range pat {
				if get(i+k) != want {
					ok = false
					break
				}
			}
			if !ok {
				continue
			}
			light := func(from, to int) bool {
				for k := from; k < to; k++ {
					if k >= 0 && k < n && get(k) {
						return false
					}
				}
				return true
			}
			if light(i-4, i) || light(i+7, i+11) {
				p += 40
			}
		}
	}
	for y := 0; y < n; y++ {
		line(func(i int) bool { return c.modules[y][i] })
	}
	for x := 0; x < n; x++ {
		line(func(i int) bool { return c.modules[i][x] })
	}
	dark := 0
	for y := 0; y < n; y++ {
		for x := 0; x < n; x++ {
			if c.modules[y][x] {
				dark++
			}
			if x+1 < n && y+1 < n {
				v := c.modules[y][x]
				if c.modules[y][x+1] == v && c.modules[y+1][x] == v && c.modules[y+1][x+1] == v {
					p += 3
				}
			}
		}
	}
	total := n * n
	k := (abs(dark*20-total*10)+total-1)/total - 1
	return p + k*10
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

// PNG renders the code with scale pixels per module and the standard
// four-module quiet zone.
func (c *Code) PNG(scale int) ([]byte, error) {
	if scale < 1 {
		scale = 1
	}
	const border = 4
	side := (c.Size + 2*border) * scale
	img := image.NewGray(image.Rect(0, 0, side, side))
	for i := range img.Pix {
		img.Pix[i] = 0xFF
	}
	for y := 0; y < c.Size; y++ {
		for x := 0; x < c.Size; x++ {
			if !c.modules[y][x] {
				continue
			}
			for dy := 0; dy < scale; dy++ {
				for dx := 0; dx < scale; dx++ {
					img.SetGray((x+border)*scale+dx, (y+border)*scale+dy, color.Gray{Y: 0})
				}
			}
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		return nil, fmt.Errorf("qrcode: encode png: %w", err)
	}
	return buf.Bytes(), nil
}
