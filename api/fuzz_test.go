package api_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"reflect"
	"testing"

	"github.com/amarula/amarula/api"
)

// checkDecodeError: a decoder error is always a 400 with a code and message.
func checkDecodeError(t *testing.T, in []byte, e *api.Error) {
	if e.Status != http.StatusBadRequest || e.Code == "" || e.Message == "" {
		t.Fatalf("input %q: error %+v", in, e)
	}
}

// FuzzDecodeSendRequest: the send decoder never panics, rejects with a 400,
// and whatever it accepts survives a re-encode unchanged and valid.
func FuzzDecodeSendRequest(f *testing.F) {
	for _, s := range []string{
		`{"to":"+15551234567","text":"hi"}`,
		`{"to":"15551234567@s.whatsapp.net","media":{"kind":"image","url":"https://x.test/a.jpg","caption":"c"}}`,
		`{"to":"1203630@g.us","media":{"kind":"document","data":"aGVsbG8=","mime":"application/pdf","file_name":"a.pdf"}}`,
		`{"to":"+15551234567","reaction":{"target_id":"3EB0","emoji":"👍"}}`,
		`{"to":"+15551234567","edit":{"target_id":"3EB0","text":"x"}}`,
		`{"to":"+15551234567","revoke":{"target_id":"3EB0"}}`,
		`{"to":"+15551234567","text":"hi","reply_to":"3EB0"}`,
		`{"to":1}`, `[]`, `null`, `{"to":"+1555","text":"\ud800"}`, `{} {}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		req, e := api.DecodeSendRequest(bytes.NewReader(in))
		if e != nil {
			checkDecodeError(t, in, e)
			return
		}
		out, err := json.Marshal(req)
		if err != nil {
			t.Fatalf("re-encode %+v: %v", req, err)
		}
		again, e := api.DecodeSendRequest(bytes.NewReader(out))
		if e != nil {
			t.Fatalf("accepted %q but rejected its re-encoding %s: %v", in, out, e)
		}
		if !reflect.DeepEqual(normalize(req), normalize(again)) {
			t.Fatalf("round trip changed %+v into %+v", req, again)
		}
	})
}

// normalize maps empty and nil media data to one value for comparison.
func normalize(r api.SendRequest) api.SendRequest {
	if r.Media != nil && len(r.Media.Data) == 0 {
		m := *r.Media
		m.Data = nil
		r.Media = &m
	}
	return r
}

// FuzzDecodeCreateProfile: the create decoder never panics, rejects with a
// 400, and only accepts valid ids and webhook configurations.
func FuzzDecodeCreateProfile(f *testing.F) {
	for _, s := range []string{
		`{"id":"alice"}`,
		`{"id":"alice","webhook":{"url":"https://x.test/h","secret":"s","events":["message.*","session.connected"]}}`,
		`{"id":"../etc"}`, `{"id":"Alice"}`, `{"id":"a","webhook":{"url":"ftp://x"}}`,
		`{"id":"a","webhook":null}`, `{"id":"a","extra":1}`, `{"id":`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		req, e := api.DecodeCreateProfile(bytes.NewReader(in))
		if e != nil {
			checkDecodeError(t, in, e)
			return
		}
		out, err := json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		again, e := api.DecodeCreateProfile(bytes.NewReader(out))
		if e != nil || !reflect.DeepEqual(req, again) {
			t.Fatalf("accepted %q; re-encoding %s gives %+v, %v", in, out, again, e)
		}
	})
}
