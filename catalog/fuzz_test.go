package catalog

import (
	"reflect"
	"testing"
)

// FuzzDecode: catalog values come from etcd or the store, where anything
// may have written them. Decoding never panics, and whatever decodes and
// validates survives an encode/decode round trip unchanged.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"id":"alice","webhook":{"url":"https://h.example/x","secret":"s","events":["message"]},"created_at":"2026-01-02T03:04:05Z","stopped":true}`))
	f.Add([]byte(`{"id":"bob"}`))
	f.Add([]byte(`{"id":"../x","webhook":{"url":"ftp://x"}}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`{"webhook":null,"created_at":"not a time"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := decode(b)
		if err != nil || p.Validate() != nil {
			return
		}
		enc, err := encode(p)
		if err != nil {
			t.Fatalf("encode of a decoded profile: %v", err)
		}
		q, err := decode(enc)
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if !reflect.DeepEqual(normalize(p), normalize(q)) {
			t.Fatalf("round trip changed %+v into %+v", p, q)
		}
	})
}

// normalize makes equal meanings compare equal: time location, and an
// empty event filter (omitted when encoded) versus none.
func normalize(p Profile) Profile {
	p.CreatedAt = p.CreatedAt.UTC()
	if p.Webhook != nil {
		w := *p.Webhook
		if len(w.Events) == 0 {
			w.Events = nil
		}
		p.Webhook = &w
	}
	return p
}
