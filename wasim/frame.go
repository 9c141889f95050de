package wasim

import (
	"bytes"
	"errors"
	"fmt"

	"go.mau.fi/whatsmeow/socket"
)

// Frame decoding errors. Each closes the offending connection.
var (
	ErrBadHeader     = errors.New("wasim: missing or wrong WA connection header")
	ErrShortFrame    = errors.New("wasim: truncated frame")
	ErrFrameTooLarge = errors.New("wasim: frame too large")
)

// DecodeFrames splits one websocket message into WhatsApp frames
// (len24 | payload, repeated). When first is true the message must start with
// the 4-byte WA connection header. Frames never span websocket messages
// (whatsmeow always writes one frame per message), so a truncated frame is an
// error rather than something to buffer. max bounds each payload.
func DecodeFrames(msg []byte, first bool, max int) ([][]byte, error) {
	if first {
		if len(msg) < len(socket.WAConnHeader) || !bytes.Equal(msg[:len(socket.WAConnHeader)], socket.WAConnHeader) {
			return nil, ErrBadHeader
		}
		msg = msg[len(socket.WAConnHeader):]
	}
	if len(msg) == 0 {
		return nil, ErrShortFrame
	}
	var frames [][]byte
	for len(msg) > 0 {
		if len(msg) < socket.FrameLengthSize {
			return nil, ErrShortFrame
		}
		n := int(msg[0])<<16 | int(msg[1])<<8 | int(msg[2])
		msg = msg[socket.FrameLengthSize:]
		if n > max {
			return nil, fmt.Errorf("%w: %d > %d", ErrFrameTooLarge, n, max)
		}
		if n > len(msg) {
			return nil, ErrShortFrame
		}
		frames = append(frames, msg[:n:n])
		msg = msg[n:]
	}
	return frames, nil
}

// EncodeFrame prefixes payload with its 24-bit length.
func EncodeFrame(payload []byte) ([]byte, error) {
	if len(payload) >= socket.FrameMaxSize {
		return nil, ErrFrameTooLarge
	}
	out := make([]byte, socket.FrameLengthSize+len(payload))
	out[0], out[1], out[2] = byte(len(payload)>>16), byte(len(payload)>>8), byte(len(payload))
	copy(out[socket.FrameLengthSize:], payload)
	return out, nil
}
