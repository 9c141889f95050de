package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/amarula/amarula/api"
	"github.com/amarula/amarula/msgstore"
	"github.com/amarula/amarula/storage/s3"
)

// mediaMessages is a message store stand-in: GET media only reads.
type mediaMessages map[string]msgstore.Message

func (m mediaMessages) Get(_ context.Context, _, id string) (msgstore.Message, error) {
	if msg, ok := m[id]; ok {
		return msg, nil
	}
	return msgstore.Message{}, msgstore.ErrNotFound
}

func (m mediaMessages) List(context.Context, string, msgstore.Query) (msgstore.Page, error) {
	return msgstore.Page{}, nil
}

// TestMediaHandler: states map to their 404 codes; a stored file is served
// whole and by single ranges (206; 416 past the end; several ranges →
// whole file), with its content type and ETag; ?redirect=1 on a store that
// cannot presign streams instead.
func TestMediaHandler(t *testing.T) {
	objs, err := s3.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("0123456789"), 100)
	info, err := objs.Put(context.Background(), "media/p/STORED", bytes.NewReader(data), int64(len(data)), "image/png", "")
	if err != nil {
		t.Fatal(err)
	}
	msgs := mediaMessages{
		"TEXT":    {ID: "TEXT", Type: msgstore.TypeText},
		"PENDING": {ID: "PENDING", Media: &msgstore.Media{Kind: "image", State: msgstore.MediaPending}},
		"FAILED":  {ID: "FAILED", Media: &msgstore.Media{Kind: "image", State: msgstore.MediaFailed}},
		"GONE":    {ID: "GONE", Media: &msgstore.Media{Kind: "image", State: msgstore.MediaStored, ObjectKey: "media/p/GONE"}},
		"STORED":  {ID: "STORED", Media: &msgstore.Media{Kind: "image", Mime: "image/png", State: msgstore.MediaStored, ObjectKey: "media/p/STORED"}},
	}
	mux := http.NewServeMux()
	mux.Handle("GET /v1/profiles/{id}/media/{msgid}", &api.MediaHandler{Messages: msgs, Objects: objs})
	srv := httptest.NewServer(mux)
	defer srv.Close()

	get := func(id, query, rng string) (int, http.Header, []byte, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/v1/profiles/p/media/"+id+query, nil)
		if rng != "" {
			req.Header.Set("Range", rng)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		var e struct {
			Error struct{ Code string } `json:"error"`
		}
		_ = json.Unmarshal(body, &e)
		return resp.StatusCode, resp.Header, body, e.Error.Code
	}
	for _, tc := range []struct {
		id, code string
	}{{"NOPE", "not_found"}, {"TEXT", "not_found"}, {"PENDING", "media_pending"}, {"FAILED", "media_failed"}, {"GONE", "not_found"}} {
		if status, _, _, code := get(tc.id, "", ""); status != http.StatusNotFound || code != tc.code {
			t.Errorf("%s: %d %q, want 404 %q", tc.id, status, code, tc.code)
		}
	}
	n := int64(len(data))
	for _, tc := range []struct {
		query, rng   string
		status       int
		want         []byte
		contentRange string
	}{
		{"", "", 200, data, ""},
		{"?redirect=1", "", 200, data, ""}, // local store: no presigning, streamed
		{"", "bytes=0-0", 206, data[:1], fmt.Sprintf("bytes 0-0/%d", n)},
		{"", "bytes=10-19", 206, data[10:20], fmt.Sprintf("bytes 10-19/%d", n)},
		{"", "bytes=990-5000", 206, data[990:], fmt.Sprintf("bytes 990-999/%d", n)},
		{"", "bytes=-5", 206, data[995:], fmt.Sprintf("bytes 995-999/%d", n)},
		{"", "bytes=500-", 206, data[500:], fmt.Sprintf("bytes 500-999/%d", n)},
		{"", "bytes=0-1,5-6", 200, data, ""},
		{"", "items=0-1", 200, data, ""},
		{"", "bytes=1000-", 416, nil, fmt.Sprintf("bytes */%d", n)},
		{"", "bytes=-0", 416, nil, fmt.Sprintf("bytes */%d", n)},
	} {
		status, hdr, body, _ := get("STORED", tc.query, tc.rng)
		if status != tc.status || hdr.Get("Content-Range") != tc.contentRange || (tc.want != nil && !bytes.Equal(body, tc.want)) {
			t.Errorf("%q %q: %d %q, %d bytes; want %d %q, %d bytes", tc.query, tc.rng, status, hdr.Get("Content-Range"), len(body), tc.status, tc.contentRange, len(tc.want))
			continue
		}
		if status < 300 && (hdr.Get("Content-Type") != "image/png" || hdr.Get("ETag") != `"`+info.SHA256+`"` || hdr.Get("Accept-Ranges") != "bytes") {
			t.Errorf("%q: headers %v", tc.rng, hdr)
		}
	}
}
