package wasim

import (
	"bytes"
	"compress/zlib"
	"errors"
	"fmt"
	"io"

	waBinary "go.mau.fi/whatsmeow/binary"
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
