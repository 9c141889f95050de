package api

import (
	"net/http"
	"strings"
)

// acceptsPNG reports whether the client asked for the QR code as an image.
func acceptsPNG(r *http.Request) bool {
	return strings.Contains(r.Header.Get("Accept"), "image/png")
}

// qrPNG renders code as a PNG QR code.
func qrPNG(code string) ([]byte, error) {
	return nil, ErrNotImplemented
}
