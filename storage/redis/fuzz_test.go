package redis

import (
	"errors"
	"strconv"
	"testing"

	"github.com/amarula/amarula/storage"
)

// FuzzDecodeEntry: stream entries are read back from Redis, where anything
// may have been written by hand or by an older version; decoding never
// panics and accepts only well-formed entries.
func FuzzDecodeEntry(f *testing.F) {
	f.Add("1700000000000-0", "message.received", storage.Seal([]byte(`{"id":"x"}`)), true)
	f.Add("0-1", "t", storage.Seal(nil), true)
	f.Add("garbage", "", []byte{1}, false)
	f.Add("18446744073709551615-18446744073709551615", "t", storage.Seal([]byte("x")), true)
	f.Fuzz(func(t *testing.T, id, typ string, data []byte, withType bool) {
		values := map[string]interface{}{fieldData: string(data)}
		if withType {
			values[fieldType] = typ
		}
		ev, err := decodeEntry(id, values)
		if err != nil {
			return
		}
		if ev.Cursor != id || ev.Type != typ || !withType {
			t.Fatalf("decodeEntry(%q) = %+v", id, ev)
		}
		if v, _ := storage.Unseal(data); string(v) != string(ev.Data) {
			t.Fatalf("data %x decoded as %x", data, ev.Data)
		}
	})
}

// FuzzParseStreamID: cursors come from API clients; parsing never panics,
// an accepted id round-trips, and nextID is strictly after it.
func FuzzParseStreamID(f *testing.F) {
	for _, c := range []string{"", "0", "0-0", "1700000000000-3", "5", "18446744073709551615-18446744073709551615", "1-", "-1", "a-b", "1-2-3", "+", "$"} {
		f.Add(c)
	}
	f.Fuzz(func(t *testing.T, c string) {
		ms, seq, err := parseStreamID(c)
		if err != nil {
			if !errors.Is(err, storage.ErrInvalidArgument) {
				t.Fatalf("parseStreamID(%q): %v is not ErrInvalidArgument", c, err)
			}
			return
		}
		full := strconv.FormatUint(ms, 10) + "-" + strconv.FormatUint(seq, 10)
		if ms2, seq2, err := parseStreamID(full); err != nil || ms2 != ms || seq2 != seq {
			t.Fatalf("%q -> %s does not round-trip", c, full)
		}
		next, ok, err := nextID(c)
		if err != nil {
			t.Fatalf("nextID(%q): %v", c, err)
		}
		if !ok {
			if ms != ^uint64(0) || seq != ^uint64(0) {
				t.Fatalf("nextID(%q) reported no successor", c)
			}
			return
		}
		nms, nseq, err := parseStreamID(next)
		if err != nil || !(nms > ms || nms == ms && nseq > seq) {
			t.Fatalf("nextID(%q) = %q is not after it", c, next)
		}
	})
}
