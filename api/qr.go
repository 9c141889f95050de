package api

import (
	"fmt"
	"mime"
	"net/http"
	"strings"

	"github.com/amarula/amarula/api/internal/qrcode"
)

// qrScale is the PNG's pixels per QR module (a WhatsApp code, version ~10,
// becomes about 520 px square).
const qrScale = 8

// acceptsPNG reports whether the client prefers the QR code as an image:
// image/png is listed with a non-zero quality before any JSON type.
func acceptsPNG(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept"), ",") {
		mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil || params["q"] == "0" {
			continue
		}
		switch mt {
		case "image/png", "image/*":
			return true
		case "application/json":
			return false
		}
	}
	return false
}

// qrPNG renders code as a PNG QR code.
func qrPNG(code string) ([]byte, error) {
	c, err := qrcode.Encode([]byte(code))
	if err != nil {
		return nil, fmt.Errorf("encode qr: %w", err)
	}
	return c.PNG(qrScale)
}
