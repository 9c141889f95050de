package session

import (
	"errors"
	"testing"
)

// TestMediaMime: the type sent is the declared one, else the served one,
// else the sniffed one; every known type must fit the kind (a document
// takes anything), and an unknown one gets the kind's usual type.
func TestMediaMime(t *testing.T) {
	for _, tc := range []struct {
		kind, declared, served, sniffed string
		want                            string
		bad                             bool
	}{
		{"image", "", "image/png", "image/png", "image/png", false},
		{"document", "", "text/csv; charset=utf-8", "text/plain; charset=utf-8", "text/csv; charset=utf-8", false},
		{"image", "image/jpeg", "", "image/jpeg", "image/jpeg", false},
		{"image", "", "application/octet-stream", "image/png", "image/png", false},
		{"image", "", "", "application/octet-stream", "image/jpeg", false},
		{"image", "", "text/html; charset=utf-8", "text/html; charset=utf-8", "", true},
		{"image", "image/png", "", "text/html; charset=utf-8", "", true},
		{"image", "application/pdf", "", "image/png", "", true},
		{"sticker", "", "", "image/webp", "image/webp", false},
		{"sticker", "", "", "image/png", "", true},
		{"video", "", "video/mp4", "application/octet-stream", "video/mp4", false},
		{"video", "", "audio/mpeg", "", "", true},
		{"voice", "audio/ogg; codecs=opus", "", "application/ogg", "audio/ogg; codecs=opus", false},
		{"voice", "", "", "application/octet-stream", "audio/ogg; codecs=opus", false},
		{"audio", "", "", "image/png", "", true},
		{"document", "", "", "text/html; charset=utf-8", "text/html", false},
		{"document", "", "application/zip", "application/zip", "application/zip", false},
		{"document", "", "", "", "application/octet-stream", false},
	} {
		got, err := mediaMime(tc.kind, tc.declared, tc.served, tc.sniffed)
		if tc.bad {
			if !errors.Is(err, ErrMediaType) || !errors.Is(err, ErrInvalidRequest) {
				t.Errorf("%+v: %q, %v; want ErrMediaType", tc, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%+v: %q, %v; want %q", tc, got, err, tc.want)
		}
	}
}
