package bolt

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/amarula/amarula/storage"
)

// FuzzDecodeEvent: the event-record decoder reads bytes from disk and must
// never panic; a valid record re-encodes to the same bytes.
func FuzzDecodeEvent(f *testing.F) {
	f.Add(storage.Seal(encodeEvent(time.Unix(1700000000, 5), "message.received", []byte(`{"id":"x"}`))))
	f.Add(storage.Seal(encodeEvent(time.Unix(0, 0), "t", nil)))
	f.Add(storage.Seal([]byte{0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}))
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, raw []byte) {
		ts, typ, data, err := decodeEvent(raw)
		if err != nil {
			if !errors.Is(err, storage.ErrCorrupt) && !errors.Is(err, errBadEvent) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		if again := storage.Seal(encodeEvent(ts, typ, data)); !bytes.Equal(again, raw) {
			// Only a non-minimal uvarint may differ; it must still decode alike.
			ts2, typ2, data2, err := decodeEvent(again)
			if err != nil || !ts2.Equal(ts) || typ2 != typ || !bytes.Equal(data2, data) {
				t.Fatalf("re-encoding %x changed the event", raw)
			}
		}
	})
}

// FuzzParseCursor: cursors come from API clients; parsing never panics and
// an accepted cursor formats back to the same sequence.
func FuzzParseCursor(f *testing.F) {
	for _, c := range []string{"", "0", "1", "18446744073709551615", "18446744073709551616", "-1", "+1", "1e3", " 1", "01"} {
		f.Add(c)
	}
	f.Fuzz(func(t *testing.T, c string) {
		v, err := parseCursor(c)
		if err != nil {
			if !errors.Is(err, storage.ErrInvalidArgument) {
				t.Fatalf("parseCursor(%q): %v is not ErrInvalidArgument", c, err)
			}
			return
		}
		if back, err := parseCursor(formatCursor(v)); err != nil || back != v {
			t.Fatalf("parseCursor(%q) = %d does not round-trip: %d, %v", c, v, back, err)
		}
	})
}
