package wasim

import (
	"bytes"
	"compress/zlib"
	"errors"
	"fmt"
	"io"

	waBinary "go.mau.fi/whatsmeow/binary"
	"go.mau.fi/whatsmeow/binary/token"
)

// ErrNodeTooLarge is returned when a (possibly compressed) node exceeds the limit.
var ErrNodeTooLarge = errors.New("wasim: node too large")

// DecodeNode turns one decrypted frame (flag byte + binary XML) into a node.
// Unlike binary.Unpack it bounds zlib output, so a compression bomb cannot
// exhaust memory, and it recovers from decoder panics on hostile input.
func DecodeNode(data []byte, max int) (node *waBinary.Node, err error) {
	if len(data) == 0 {
		return nil, errors.New("wasim: empty frame")
	}
	flag, body := data[0], data[1:]
	if flag&2 != 0 {
		zr, err := zlib.NewReader(bytes.NewReader(body))
		if err != nil {
			return nil, fmt.Errorf("wasim: zlib: %w", err)
		}
		body, err = io.ReadAll(io.LimitReader(zr, int64(max)+1))
		if err != nil {
			return nil, fmt.Errorf("wasim: zlib: %w", err)
		}
		if len(body) > max {
			return nil, ErrNodeTooLarge
		}
	}
	if err := checkNodeDepth(body, maxNodeDepth); err != nil {
		return nil, err
	}
	defer func() {
		if r := recover(); r != nil {
			node, err = nil, fmt.Errorf("wasim: node decoder panic: %v", r)
		}
	}()
	return waBinary.Unmarshal(body)
}

// EncodeNode marshals a node for the wire (flag byte 0 included).
func EncodeNode(n waBinary.Node) ([]byte, error) {
	return waBinary.Marshal(n)
}

// children returns n's child nodes (nil for byte or empty content).
func children(n waBinary.Node) []waBinary.Node {
	c, _ := n.Content.([]waBinary.Node)
	return c
}

// maxNodeDepth bounds the nesting of a client node. whatsmeow's decoder is
// recursive (a JID can nest JIDs one byte per level), so an unbounded
// depth could exhaust the goroutine stack, which is fatal, not a panic.
// Real stanzas nest about 20 levels.
const maxNodeDepth = 128

// ErrNodeTooDeep is returned for nodes nested deeper than maxNodeDepth.
var ErrNodeTooDeep = errors.New("wasim: node nested too deeply")

var errNodeTruncated = errors.New("wasim: truncated node")

// checkNodeDepth walks the binary XML grammar of binary/decoder.go without
// building anything; its own recursion is bounded by max.
func checkNodeDepth(data []byte, max int) error {
	d := depthScanner{data: data, max: max}
	return d.node(0)
}

type depthScanner struct {
	data []byte
	pos  int
	max  int
}

func (d *depthScanner) byte() (int, error) {
	if d.pos >= len(d.data) {
		return 0, errNodeTruncated
	}
	b := d.data[d.pos]
	d.pos++
	return int(b), nil
}

func (d *depthScanner) skip(n int) error {
	if n < 0 || n > len(d.data)-d.pos {
		return errNodeTruncated
	}
	d.pos += n
	return nil
}

func (d *depthScanner) int(n int) (int, error) {
	v := 0
	for i := 0; i < n; i++ {
		b, err := d.byte()
		if err != nil {
			return 0, err
		}
		v = v<<8 | b
	}
	return v, nil
}

func (d *depthScanner) listSize(tag int) (int, error) {
	switch tag {
	case token.ListEmpty:
		return 0, nil
	case token.List8:
		return d.int(1)
	case token.List16:
		return d.int(2)
	}
	return 0, fmt.Errorf("wasim: bad list tag %d", tag)
}

func (d *depthScanner) node(depth int) error {
	if depth > d.max {
		return ErrNodeTooDeep
	}
	tag, err := d.byte()
	if err != nil {
		return err
	}
	size, err := d.listSize(tag)
	if err != nil {
		return err
	}
	if size == 0 {
		return nil // the real decoder rejects it
	}
	for i := 0; i < size; i++ {
		if err := d.value(depth + 1); err != nil {
			return err
		}
	}
	return nil
}

func (d *depthScanner) value(depth int) error {
	if depth > d.max {
		return ErrNodeTooDeep
	}
	tag, err := d.byte()
	if err != nil {
		return err
	}
	switch tag {
	case token.List8, token.List16:
		n, err := d.listSize(tag)
		if err != nil {
			return err
		}
		for i := 0; i < n; i++ {
			if err := d.node(depth + 1); err != nil {
				return err
			}
		}
	case token.Binary8:
		n, err := d.int(1)
		if err != nil {
			return err
		}
		return d.skip(n)
	case token.Binary20:
		n, err := d.int(3)
		if err != nil {
			return err
		}
		return d.skip(n & 0xFFFFF)
	case token.Binary32:
		n, err := d.int(4)
		if err != nil {
			return err
		}
		return d.skip(n)
	case token.Dictionary0, token.Dictionary1, token.Dictionary2, token.Dictionary3:
		return d.skip(1)
	case token.Nibble8, token.Hex8:
		n, err := d.byte()
		if err != nil {
			return err
		}
		return d.skip(n & 127)
	case token.JIDPair:
		if err := d.value(depth + 1); err != nil {
			return err
		}
		return d.value(depth + 1)
	case token.ADJID:
		if err := d.skip(2); err != nil {
			return err
		}
		return d.value(depth + 1)
	case token.FBJID, token.InteropJID:
		if err := d.value(depth + 1); err != nil {
			return err
		}
		n := 2
		if tag == token.InteropJID {
			n = 4
		}
		if err := d.skip(n); err != nil {
			return err
		}
		return d.value(depth + 1)
	}
	return nil
}
