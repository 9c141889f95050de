package mediastore_test

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"github.com/amarula/amarula/wasim/mediastore"
)

// FuzzHandler sends arbitrary upload and download requests, as clients on
// the media port could. The handler must never panic or answer 5xx, and an
// upload it accepts must download byte-identical.
func FuzzHandler(f *testing.F) {
	f.Add("image", "tok", "auth", []byte("body"), "/v/t62.7118-24/x.enc?ccb=11-4")
	f.Add("document", "", "", []byte{}, "/v/a/b")
	s := mediastore.New(mediastore.Config{Auth: "auth", MaxBlobBytes: 1 << 12, MaxTotalBytes: 1 << 16})
	h := s.Handler()
	f.Fuzz(func(t *testing.T, mmsType, tok, auth string, body []byte, getPath string) {
		if tok == "tok" {
			tok = token(body)
		}
		u := "/mms/" + url.PathEscape(mmsType) + "/" + url.PathEscape(tok) + "?" + url.Values{"auth": {auth}, "token": {tok}}.Encode()
		req := httptest.NewRequest(http.MethodPost, "http://mmg.whatsapp.net/", bytes.NewReader(body))
		var err error
		if req.URL, err = url.Parse(u); err != nil {
			return
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("upload answered %d", rec.Code)
		}
		if rec.Code == http.StatusOK {
			if auth != "auth" {
				t.Fatalf("upload with auth %q accepted", auth)
			}
			got, err := s.Get(mediastore.ID(body))
			if err != nil || !bytes.Equal(got, body) {
				t.Fatalf("accepted upload not stored: %v", err)
			}
		}
		gu, err := url.Parse(getPath)
		if err != nil {
			return
		}
		req = httptest.NewRequest(http.MethodGet, "http://mmg.whatsapp.net/", nil)
		req.URL = gu
		rec = httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("download answered %d", rec.Code)
		}
	})
}
