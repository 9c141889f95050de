package mediastore_test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/amarula/amarula/wasim/mediastore"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

func token(body []byte) string {
	sum := sha256.Sum256(body)
	return base64.URLEncoding.EncodeToString(sum[:])
}

// upload does what whatsmeow's rawUpload does on the wire.
func upload(t *testing.T, srvURL, mmsType, auth string, body []byte, tok string) (*http.Response, map[string]string) {
	t.Helper()
	q := url.Values{"auth": {auth}, "token": {tok}}
	u := fmt.Sprintf("%s/mms/%s/%s?%s", srvURL, mmsType, tok, q.Encode())
	req, err := http.NewRequest(http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Origin", "https://web.whatsapp.com")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]string
	if resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			t.Fatalf("upload response: %v", err)
		}
	}
	return resp, out
}

func get(t *testing.T, u string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// downloadURL is what whatsmeow's DownloadMediaWithPath requests for a host.
func downloadURL(base, directPath string, encSHA []byte, mmsType string) string {
	return fmt.Sprintf("%s%s&hash=%s&mms-type=%s&__wa-mms=", base, directPath, base64.URLEncoding.EncodeToString(encSHA), mmsType)
}

func newServer(t *testing.T, cfg mediastore.Config) (*mediastore.Store, *httptest.Server) {
	t.Helper()
	s := mediastore.New(cfg)
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
		http.DefaultClient.CloseIdleConnections()
	})
	return s, srv
}

func TestUploadDownload(t *testing.T) {
	tests := []struct {
		mmsType string
		size    int
	}{
		{"image", 11},
		{"document", 4096},
		{"video", 1 << 20},
		{"md-msg-hist", 100},
	}
	s, srv := newServer(t, mediastore.Config{Auth: "secret"})
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%s/%d", tc.mmsType, tc.size), func(t *testing.T) {
			body := randBytes(tc.size)
			resp, out := upload(t, srv.URL, tc.mmsType, "secret", body, token(body))
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("upload status %d", resp.StatusCode)
			}
			dp := out["direct_path"]
			if !strings.HasPrefix(dp, "/") || !strings.Contains(dp, "?") {
				t.Fatalf("direct_path %q must start with / and contain ?", dp)
			}
			if out["url"] != "https://mmg.whatsapp.net"+dp || out["handle"] == "" || out["object_id"] == "" {
				t.Fatalf("upload response %v", out)
			}
			sum := sha256.Sum256(body)
			// Via direct_path plus whatsmeow's appended query, and via url.
			for _, u := range []string{
				downloadURL(srv.URL, dp, sum[:], tc.mmsType),
				srv.URL + strings.TrimPrefix(out["url"], "https://mmg.whatsapp.net"),
			} {
				code, got := get(t, u)
				if code != http.StatusOK || !bytes.Equal(got, body) {
					t.Fatalf("GET %s: %d, %d bytes", u, code, len(got))
				}
			}
			id := mediastore.ID(body)
			if got, err := s.Get(id); err != nil || !bytes.Equal(got, body) {
				t.Fatalf("Get: %v", err)
			}
		})
	}
	st := s.Stats()
	if st.Blobs != len(tests) || st.Uploads != uint64(len(tests)) || st.Downloads != uint64(3*len(tests)) {
		t.Fatalf("stats %+v", st)
	}
}

func TestUploadRejects(t *testing.T) {
	_, srv := newServer(t, mediastore.Config{Auth: "secret", MaxBlobBytes: 1000})
	body := randBytes(100)
	big := randBytes(1001)
	tests := []struct {
		name  string
		auth  string
		body  []byte
		token string
		want  int
	}{
		{"wrong auth", "nope", body, token(body), http.StatusUnauthorized},
		{"missing auth", "", body, token(body), http.StatusUnauthorized},
		{"token of other body", "secret", body, token([]byte("x")), http.StatusBadRequest},
		{"token not base64", "secret", body, "!!", http.StatusBadRequest},
		{"too large", "secret", big, token(big), http.StatusRequestEntityTooLarge},
		{"unpadded token accepted", "secret", body, strings.TrimRight(token(body), "="), http.StatusOK},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, _ := upload(t, srv.URL, "image", tc.auth, tc.body, tc.token)
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.want)
			}
		})
	}
	for _, p := range []string{"/v/t62.7118-24/unknown.enc?ccb=11-4", "/v/t62.7118-24/noext", "/v/x", "/mms/image/x", "/"} {
		if code, _ := get(t, srv.URL+p); code != http.StatusNotFound && code != http.StatusMethodNotAllowed {
			t.Fatalf("GET %s: %d", p, code)
		}
	}
}

func TestExpireAndReupload(t *testing.T) {
	s, srv := newServer(t, mediastore.Config{})
	a, b := randBytes(64), randBytes(65)
	upA, err := s.Put("image", a)
	if err != nil {
		t.Fatal(err)
	}
	upB, err := s.Put("document", b)
	if err != nil {
		t.Fatal(err)
	}
	status := func(up mediastore.Upload) int {
		code, _ := get(t, srv.URL+up.DirectPath+"&hash=x&mms-type=image&__wa-mms=")
		return code
	}
	steps := []struct {
		name   string
		do     func() error
		wantA  int
		wantB  int
		errIs  error
		expire bool
	}{
		{"both live", func() error { return nil }, 200, 200, nil, false},
		{"expire a", func() error { return s.Expire(upA.ID) }, 404, 200, nil, true},
		{"reupload a", func() error { _, err := s.Reupload(upA.ID); return err }, 200, 200, nil, false},
		{"expire all", func() error {
			if n := s.ExpireAll(); n != 2 {
				return fmt.Errorf("ExpireAll expired %d, want 2", n)
			}
			return nil
		}, 404, 404, nil, true},
		{"put b again un-expires b", func() error {
			up, err := s.Put("document", b)
			if err == nil && up.DirectPath != upB.DirectPath {
				err = fmt.Errorf("re-put moved the blob: %s != %s", up.DirectPath, upB.DirectPath)
			}
			return err
		}, 404, 200, nil, false},
		{"expire unknown", func() error { return s.Expire("nope") }, 404, 200, mediastore.ErrNotFound, false},
		{"reupload unknown", func() error { _, err := s.Reupload("nope"); return err }, 404, 200, mediastore.ErrNotFound, false},
	}
	for _, st := range steps {
		err := st.do()
		if st.errIs != nil {
			if !errors.Is(err, st.errIs) {
				t.Fatalf("%s: err %v, want %v", st.name, err, st.errIs)
			}
		} else if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if a, b := status(upA), status(upB); a != st.wantA || b != st.wantB {
			t.Fatalf("%s: status a=%d b=%d, want %d %d", st.name, a, b, st.wantA, st.wantB)
		}
	}
	if _, err := s.Get(upA.ID); !errors.Is(err, mediastore.ErrExpired) {
		t.Fatalf("Get expired: %v", err)
	}
	if !s.Expired(upA.ID) || s.Expired(upB.ID) {
		t.Fatal("Expired() disagrees")
	}
}

func TestEviction(t *testing.T) {
	s := mediastore.New(mediastore.Config{MaxBlobBytes: 100, MaxTotalBytes: 250})
	var ups []mediastore.Upload
	for i := 0; i < 5; i++ {
		up, err := s.Put("image", randBytes(100))
		if err != nil {
			t.Fatal(err)
		}
		ups = append(ups, up)
	}
	for i, up := range ups {
		_, err := s.Get(up.ID)
		if evicted := i < 3; evicted != errors.Is(err, mediastore.ErrNotFound) {
			t.Fatalf("blob %d: err %v, evicted=%v", i, err, evicted)
		}
	}
	if st := s.Stats(); st.Bytes != 200 || st.Blobs != 2 || st.Evicted != 3 {
		t.Fatalf("stats %+v", st)
	}
	if _, err := s.Put("image", randBytes(101)); !errors.Is(err, mediastore.ErrTooLarge) {
		t.Fatalf("oversized put: %v", err)
	}
}

func TestMediaConn(t *testing.T) {
	s := mediastore.New(mediastore.Config{})
	mc := s.MediaConn()
	if mc.Auth == "" || mc.TTL <= 0 || mc.AuthTTL <= 0 || mc.MaxBuckets <= 0 || len(mc.Hosts) == 0 || mc.Hosts[0] != "mmg.whatsapp.net" {
		t.Fatalf("media conn %+v misses a field whatsmeow requires", mc)
	}
	if other := mediastore.New(mediastore.Config{}).MediaConn(); other.Auth == mc.Auth {
		t.Fatal("default auth tokens are not random")
	}
}

func TestConcurrentUse(t *testing.T) {
	s, srv := newServer(t, mediastore.Config{Auth: "a", MaxTotalBytes: 64 << 10, MaxBlobBytes: 4 << 10})
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 40; i++ {
				body := randBytes(1 + i*50)
				up, err := s.Put("image", body)
				if err != nil {
					errs <- err
					return
				}
				switch i % 4 {
				case 0:
					_ = s.Expire(up.ID)
				case 1:
					s.ExpireAll()
				case 2:
					_, _ = s.Reupload(up.ID)
				}
				resp, err := http.Get(srv.URL + up.DirectPath)
				if err != nil {
					errs <- err
					return
				}
				got, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK && !bytes.Equal(got, body) {
					errs <- fmt.Errorf("served wrong bytes for %s", up.ID)
					return
				}
				_ = s.Stats()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Bytes > 64<<10 {
		t.Fatalf("store holds %d bytes over its bound", st.Bytes)
	}
}
