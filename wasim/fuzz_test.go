package wasim

import (
	"bytes"
	"errors"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	waBinary "go.mau.fi/whatsmeow/binary"
	"go.mau.fi/whatsmeow/socket"
	"go.mau.fi/whatsmeow/types"
)

// seedNodes are real stanza shapes (marshalled, flag byte included).
func seedNodes() [][]byte {
	jid := types.NewJID("15550001111", types.DefaultUserServer)
	dev := types.NewADJID("15550001111", 0, 7)
	nodes := []waBinary.Node{
		{Tag: "iq", Attrs: waBinary.Attrs{"id": "1", "type": "get", "xmlns": "w:p", "to": types.ServerJID}},
		{Tag: "iq", Attrs: waBinary.Attrs{"id": "2", "type": "get", "xmlns": "usync"}, Content: []waBinary.Node{{
			Tag: "usync", Attrs: waBinary.Attrs{"sid": "x", "mode": "query", "context": "message"},
			Content: []waBinary.Node{
				{Tag: "query", Content: []waBinary.Node{{Tag: "devices", Attrs: waBinary.Attrs{"version": "2"}}}},
				{Tag: "list", Content: []waBinary.Node{{Tag: "user", Attrs: waBinary.Attrs{"jid": jid}}}},
			}}}},
		{Tag: "message", Attrs: waBinary.Attrs{"id": "3EB0AA", "to": jid, "type": "text"}, Content: []waBinary.Node{
			{Tag: "participants", Content: []waBinary.Node{{Tag: "to", Attrs: waBinary.Attrs{"jid": dev}, Content: []waBinary.Node{
				{Tag: "enc", Attrs: waBinary.Attrs{"v": "2", "type": "pkmsg"}, Content: []byte{1, 2, 3, 4}},
			}}}},
		}},
		{Tag: "receipt", Attrs: waBinary.Attrs{"id": "3EB0AA", "to": jid, "type": "retry"}, Content: []waBinary.Node{
			{Tag: "retry", Attrs: waBinary.Attrs{"count": "1", "id": "3EB0AA", "t": "1", "v": "1"}},
			{Tag: "registration", Content: []byte{0, 0, 0, 7}},
		}},
	}
	var out [][]byte
	for _, n := range nodes {
		b, _ := waBinary.Marshal(n)
		out = append(out, b)
	}
	out = append(out, deepNode(200), zlibBomb(1<<10))
	return out
}

func FuzzDecodeNode(f *testing.F) {
	for _, s := range seedNodes() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		n, err := DecodeNode(data, 1<<20)
		if err != nil {
			return
		}
		// Whatever decodes must re-encode without panicking.
		if _, err := EncodeNode(*n); err != nil {
			t.Fatalf("re-encode: %v", err)
		}
	})
}

func FuzzDecodeFrames(f *testing.F) {
	hello := append(append([]byte{}, socket.WAConnHeader...), 0, 0, 2, 0x12, 0x00)
	f.Add(hello, true)
	f.Add([]byte{0, 0, 1, 9, 0, 0, 0}, false)
	f.Add([]byte{0xFF, 0xFF, 0xFF}, false)
	f.Fuzz(func(t *testing.T, data []byte, first bool) {
		frames, err := DecodeFrames(data, first, 1<<16)
		if err != nil {
			return
		}
		// Frames re-encode to exactly the input (minus the header).
		var buf bytes.Buffer
		if first {
			buf.Write(socket.WAConnHeader)
		}
		for _, fr := range frames {
			if len(fr) > 1<<16 {
				t.Fatalf("frame of %d bytes above max", len(fr))
			}
			enc, err := EncodeFrame(fr)
			if err != nil {
				t.Fatal(err)
			}
			buf.Write(enc)
		}
		if !bytes.Equal(buf.Bytes(), data) {
			t.Fatal("frames do not re-encode to the input")
		}
	})
}

func TestDecodeNodeLimits(t *testing.T) {
	if _, err := DecodeNode(deepNode(1<<16), 1<<20); !errors.Is(err, ErrNodeTooDeep) {
		t.Fatalf("deep node: %v", err)
	}
	if _, err := DecodeNode(zlibBomb(2<<20), 1<<20); !errors.Is(err, ErrNodeTooLarge) {
		t.Fatalf("bomb: %v", err)
	}
	for i, s := range seedNodes()[:4] {
		n, err := DecodeNode(s, 1<<20)
		if err != nil {
			t.Fatalf("seed %d: %v", i, err)
		}
		again, _ := EncodeNode(*n)
		n2, err := DecodeNode(again, 1<<20)
		if err != nil || n2.Tag != n.Tag || len(n2.Attrs) != len(n.Attrs) || len(n2.GetChildren()) != len(n.GetChildren()) {
			t.Fatalf("seed %d does not round-trip: %v", i, err)
		}
	}
}

// TestFuzzCorpus checks the committed seed corpus exists; with
// WASIM_WRITE_CORPUS=1 it regenerates testdata/fuzz first.
func TestFuzzCorpus(t *testing.T) {
	if os.Getenv("WASIM_WRITE_CORPUS") == "" {
		for _, fz := range []string{"FuzzDecodeNode", "FuzzDecodeFrames"} {
			files, _ := filepath.Glob(filepath.Join("testdata", "fuzz", fz, "*"))
			if len(files) < 3 {
				t.Fatalf("%s: seed corpus missing (%d files); run with WASIM_WRITE_CORPUS=1", fz, len(files))
			}
		}
		return
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzDecodeNode")
	must(t, os.MkdirAll(dir, 0o755))
	for i, s := range seedNodes() {
		must(t, os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed%d", i)), []byte(fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s)), 0o644))
	}
	dir = filepath.Join("testdata", "fuzz", "FuzzDecodeFrames")
	must(t, os.MkdirAll(dir, 0o755))
	seeds := map[string][]byte{
		"hello":     append(append([]byte{}, socket.WAConnHeader...), 0, 0, 2, 0x12, 0x00),
		"two":       {0, 0, 1, 9, 0, 0, 0},
		"oversized": {0xFF, 0xFF, 0xFF},
	}
	for name, s := range seeds {
		must(t, os.WriteFile(filepath.Join(dir, name), []byte(fmt.Sprintf("go test fuzz v1\n[]byte(%q)\nbool(%v)\n", s, name == "hello")), 0o644))
	}
}

// FuzzAdminSend feeds arbitrary bodies to POST /admin/phones/{phone}/messages:
// the API must answer 2xx or 4xx, never 5xx or panic.
func FuzzAdminSend(f *testing.F) {
	for _, s := range []string{
		`{"to":"15550002222@s.whatsapp.net","text":"hi"}`,
		`{"to":"15550002222@s.whatsapp.net","media":{"kind":"image","mime":"image/png","data":"aGVsbG8="}}`,
		`{"to":"15550002222@s.whatsapp.net","reaction":"x","target_id":"1"}`,
		`{"to":"15550002222@s.whatsapp.net","revoke":true}`,
		`{"to":"@","edit":"x","target_id":"1"}`,
		`{`, `[]`, `{"media":{"data":"!!"}}`,
	} {
		f.Add([]byte(s))
	}
	srv, err := New(Config{})
	if err != nil {
		f.Fatal(err)
	}
	if _, err := srv.CreatePhone("15550001111", "A"); err != nil {
		f.Fatal(err)
	}
	if _, err := srv.CreatePhone("15550002222", "B"); err != nil {
		f.Fatal(err)
	}
	h := srv.Handler()
	f.Fuzz(func(t *testing.T, body []byte) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("POST", "/admin/phones/15550001111/messages", bytes.NewReader(body)))
		if rec.Code >= 500 {
			t.Fatalf("%d for %q: %s", rec.Code, body, rec.Body)
		}
	})
}
