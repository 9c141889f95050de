package node

// End-to-end tests of media (issue 6): wasim phones and the gateway
// exchange real encrypted media; files land in a real S3 (versitygw); the
// API serves them. A proxy between the node and wasim (mediaProxy) can
// stall or damage CDN downloads.

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/amarula/amarula/internal/testenv"
	"github.com/amarula/amarula/media"
	"github.com/amarula/amarula/msgstore"
	"github.com/amarula/amarula/storage/s3"
)

const mediaBucket = "amarula-media-e2e"

// mediaEnv is versitygw plus a client of the bucket for checks.
type mediaEnv struct {
	s3   *testenv.S3
	objs s3.Objects
}

func startMediaS3(t testing.TB) *mediaEnv {
	t.Helper()
	gw := testenv.StartS3(t, mediaBucket)
	objs, err := s3.Open(context.Background(), s3.Config{Endpoint: gw.Endpoint, Bucket: mediaBucket, AccessKey: gw.AccessKey,
		SecretKey: gw.SecretKey, PathStyle: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = objs.Close() })
	return &mediaEnv{s3: gw, objs: objs}
}

func (e *mediaEnv) configure(cfg *Config) {
	cfg.S3 = S3Config{Endpoint: e.s3.Endpoint, Bucket: mediaBucket, Region: "us-east-1", AccessKey: e.s3.AccessKey, SecretKey: e.s3.SecretKey}
}

func (e *mediaEnv) env(env map[string]string) map[string]string {
	env["AMARULA_S3_ENDPOINT"], env["AMARULA_S3_BUCKET"] = e.s3.Endpoint, mediaBucket
	env["AMARULA_S3_ACCESS_KEY"], env["AMARULA_S3_SECRET_KEY"] = e.s3.AccessKey, e.s3.SecretKey
	return env
}

// startMediaNode starts a node on b with its media in versitygw (me),
// creates profile and pairs it with the sim's own phone; tweak, if set,
// adjusts the config first.
func startMediaNode(t testing.TB, s *sim, me *mediaEnv, b backendEnv, profile string, tweak func(*Config)) *testNode {
	t.Helper()
	cfg := nodeConfig(s, b, profile)
	me.configure(&cfg)
	if tweak != nil {
		tweak(&cfg)
	}
	n := startNode(t, cfg)
	n.api.createProfile(profile, nil)
	n.api.pair(s, profile)
	return n
}

// object reads key straight from the bucket and returns its SHA-256.
func (e *mediaEnv) objectSHA(t testing.TB, key string) (string, int64) {
	t.Helper()
	rc, info, err := e.objs.Get(context.Background(), key, nil)
	if err != nil {
		t.Fatalf("S3 object %s: %v", key, err)
	}
	defer rc.Close()
	h := sha256.New()
	n, err := io.Copy(h, rc)
	if err != nil {
		t.Fatalf("read S3 object %s: %v", key, err)
	}
	if n != info.Size {
		t.Fatalf("S3 object %s: read %d of %d bytes", key, n, info.Size)
	}
	return hex.EncodeToString(h.Sum(nil)), n
}

func sha(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// testPNG is a real PNG of w×w pixels.
func testPNG(t testing.TB, w int) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, w, w))
	for x := range w {
		for y := range w {
			img.Set(x, y, color.RGBA{uint8(x), uint8(y), uint8(x ^ y), 255})
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// randomFile is n bytes starting with magic.
func randomFile(magic string, n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	copy(b, magic)
	return b
}

type mediaFile struct {
	kind, mime, name string
	data             []byte
}

func mediaFiles(t testing.TB) []mediaFile {
	return []mediaFile{
		{kind: "image", mime: "image/png", data: testPNG(t, 200)},
		{kind: "document", mime: "application/pdf", name: "report.pdf", data: randomFile("%PDF-1.4\n", 700<<10)},
		{kind: "voice", mime: "audio/ogg; codecs=opus", data: randomFile("OggS", 48<<10)},
		{kind: "video", mime: "video/mp4", data: randomFile("\x00\x00\x00\x20ftypmp42", 300<<10)},
		{kind: "sticker", mime: "image/webp", data: randomFile("RIFF\x00\x50\x00\x00WEBPVP8 ", 20<<10)},
	}
}

// phoneSendsMedia makes the peer phone send f to the gateway's account
// through wasim's admin API.
func phoneSendsMedia(t testing.TB, s *sim, f mediaFile, caption string) string {
	t.Helper()
	return s.send(t, peerNumber, map[string]any{"to": s.ownJID(), "media": map[string]any{
		"kind": f.kind, "mime": f.mime, "data": base64.StdEncoding.EncodeToString(f.data), "caption": caption, "file_name": f.name}})
}

// waitMediaState waits until message id's media reaches state (stored or
// failed) and returns the message.
func waitMediaState(t testing.TB, c *apiClient, profile, id, state string, timeout time.Duration) msgstore.Message {
	t.Helper()
	var m msgstore.Message
	waitFor(t, "media of "+id+" "+state, timeout, func() error {
		var status int
		if m, status = c.message(profile, id); status != http.StatusOK {
			return fmt.Errorf("message status %d", status)
		}
		if m.Media == nil {
			t.Fatalf("message %s has no media: %+v", id, m)
		}
		if m.Media.State != state {
			return fmt.Errorf("media state %q", m.Media.State)
		}
		return nil
	})
	return m
}

// getMedia is GET /v1/profiles/{id}/media/{msgid} with optional headers;
// redirects are not followed.
func getMedia(t testing.TB, base, profile, id, query string, hdr map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, base+"/v1/profiles/"+profile+"/media/"+url.PathEscape(id)+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+e2eAdminKey)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	cl := &http.Client{Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := cl.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

func errorCode(body []byte) string {
	var e struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	_ = json.Unmarshal(body, &e)
	return e.Error.Code
}

// mediaEvents counts media.stored/media.failed events per message id and
// returns the attempts and reason of the last one.
func mediaEvents(evs []event, typ, id string) (n, attempts int, reason string) {
	for _, e := range evs {
		if e.Type != typ || e.messageID() != id {
			continue
		}
		var d media.EventData
		_ = json.Unmarshal(e.Data, &d)
		n, attempts, reason = n+1, d.Attempts, d.Reason
		if strings.Contains(string(e.Data), "media_key") || strings.Contains(string(e.Data), "direct_path") {
			panic("media event leaks the download descriptor: " + string(e.Data))
		}
	}
	return n, attempts, reason
}

// TestE2EMediaReceive: an image, a document, a voice note, a video and a
// sticker sent by a phone are downloaded once into S3 (versitygw) byte-identical, announced
// once with media.stored, and served by GET media: whole, as a byte range,
// and as a redirect to a presigned S3 URL. Deleting the profile deletes
// the files.
func TestE2EMediaReceive(t *testing.T) {
	forEachStore(t, func(t *testing.T, b backendEnv) {
		const profile = "pics"
		s, me := startSim(t), startMediaS3(t)
		n := startMediaNode(t, s, me, b, profile, nil)
		c := n.api

		files := mediaFiles(t)
		ids := make([]string, len(files))
		sent := time.Now()
		for i, f := range files {
			ids[i] = phoneSendsMedia(t, s, f, "caption "+f.kind)
		}
		for i, f := range files {
			m := waitMediaState(t, c, profile, ids[i], msgstore.MediaStored, 30*time.Second)
			wantKind := f.kind
			if m.Media.Kind != wantKind || m.Media.SHA256 != sha(f.data) || m.Media.Size != int64(len(f.data)) ||
				m.Media.ObjectKey != media.ObjectKey(profile, ids[i]) || len(m.Media.MediaKey) != 0 || m.Media.DirectPath != "" {
				t.Fatalf("%s: stored media %+v (want kind %s, sha %s, %d bytes, no descriptor)", f.kind, m.Media, wantKind, sha(f.data), len(f.data))
			}
			got, size := me.objectSHA(t, m.Media.ObjectKey)
			if got != sha(f.data) || size != int64(len(f.data)) {
				t.Fatalf("%s: S3 object sha %s (%d bytes), sent %s (%d bytes)", f.kind, got, size, sha(f.data), len(f.data))
			}
			resp, body := getMedia(t, n.URL(), profile, ids[i], "", nil)
			if resp.StatusCode != http.StatusOK || sha(body) != sha(f.data) || resp.Header.Get("Content-Type") != f.mime {
				t.Fatalf("%s: GET media %d %q, %d bytes sha %s", f.kind, resp.StatusCode, resp.Header.Get("Content-Type"), len(body), sha(body))
			}
		}
		took := time.Since(sent)

		// A byte range of the document, and a suffix range.
		doc := files[1].data
		resp, body := getMedia(t, n.URL(), profile, ids[1], "", map[string]string{"Range": "bytes=1000-70999"})
		if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, doc[1000:71000]) ||
			resp.Header.Get("Content-Range") != fmt.Sprintf("bytes 1000-70999/%d", len(doc)) {
			t.Fatalf("range: %d %q, %d bytes", resp.StatusCode, resp.Header.Get("Content-Range"), len(body))
		}
		resp, body = getMedia(t, n.URL(), profile, ids[1], "", map[string]string{"Range": "bytes=-10"})
		if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, doc[len(doc)-10:]) {
			t.Fatalf("suffix range: %d, %d bytes", resp.StatusCode, len(body))
		}
		resp, body = getMedia(t, n.URL(), profile, ids[1], "", map[string]string{"Range": fmt.Sprintf("bytes=%d-", len(doc))})
		if resp.StatusCode != http.StatusRequestedRangeNotSatisfiable || errorCode(body) != "invalid_range" {
			t.Fatalf("range past the end: %d %s", resp.StatusCode, body)
		}
		// ?redirect=1: a presigned S3 URL that a plain GET can fetch.
		resp, _ = getMedia(t, n.URL(), profile, ids[0], "?redirect=1", nil)
		loc := resp.Header.Get("Location")
		if resp.StatusCode != http.StatusFound || !strings.HasPrefix(loc, me.s3.Endpoint) {
			t.Fatalf("redirect: %d %q", resp.StatusCode, loc)
		}
		pre, err := http.Get(loc)
		if err != nil {
			t.Fatal(err)
		}
		preBody, _ := io.ReadAll(pre.Body)
		pre.Body.Close()
		if pre.StatusCode != http.StatusOK || sha(preBody) != sha(files[0].data) {
			t.Fatalf("presigned GET: %d, sha %s", pre.StatusCode, sha(preBody))
		}
		// Unknown message and a text message: not_found.
		resp, body = getMedia(t, n.URL(), profile, "3EB0NOSUCHMESSAGE", "", nil)
		if resp.StatusCode != http.StatusNotFound || errorCode(body) != "not_found" {
			t.Fatalf("unknown message: %d %s", resp.StatusCode, body)
		}

		evs := c.events(profile, "0")
		for i, id := range ids {
			if k, attempts, _ := mediaEvents(evs, "media.stored", id); k != 1 || attempts != 1 {
				t.Fatalf("%s: %d media.stored events, attempts %d", files[i].kind, k, attempts)
			}
			if k, _, _ := mediaEvents(evs, "media.failed", id); k != 0 {
				t.Fatalf("%s: media.failed", files[i].kind)
			}
		}
		t.Logf("image %d B, document %d B, voice %d B, video %d B, sticker %d B: stored in S3 byte-identical (sha256) %s after the phone sent them; one media.stored each; GET media whole, range (206), suffix range, 416, presigned redirect all correct",
			len(files[0].data), len(files[1].data), len(files[2].data), len(files[3].data), len(files[4].data), took.Round(time.Millisecond))

		// Deleting the profile deletes its files.
		c.json(http.MethodDelete, "/v1/profiles/"+profile, nil, http.StatusNoContent, nil)
		for i, id := range ids {
			if _, err := me.objs.Stat(context.Background(), media.ObjectKey(profile, id)); err == nil {
				t.Fatalf("%s: object left in S3 after the profile was deleted", files[i].kind)
			}
		}
	})
}

// TestE2EMediaRetry: the CDN copy expires before the gateway downloads it
// (the profile is stopped while the phone sends; wasim expires the blob);
// after connect the worker's download gets 404, it asks the phone to
// re-upload (media retry receipt), and the file is stored byte-identical.
func TestE2EMediaRetry(t *testing.T) {
	b := newBackend(t, storeKinds[0])
	const profile = "expired"
	s, me := startSim(t), startMediaS3(t)
	c := startMediaNode(t, s, me, b, profile, nil).api

	c.json(http.MethodPost, "/v1/profiles/"+profile+"/stop", nil, http.StatusOK, nil)
	c.waitState(profile, "stopped", 20*time.Second)
	f := mediaFiles(t)[1]
	id := phoneSendsMedia(t, s, f, "")
	var exp struct {
		Expired int `json:"expired"`
	}
	httpJSON(t, http.MethodPost, s.admin+"/admin/media/expire", "", map[string]string{"id": id}, http.StatusOK, &exp)
	if exp.Expired != 1 {
		t.Fatalf("wasim expired %d blobs", exp.Expired)
	}
	before := s.srv.Stats().MediaRetries
	c.json(http.MethodPost, "/v1/profiles/"+profile+"/connect", nil, http.StatusAccepted, nil)
	m := waitMediaState(t, c, profile, id, msgstore.MediaStored, 60*time.Second)
	got, _ := me.objectSHA(t, m.Media.ObjectKey)
	retries := s.srv.Stats().MediaRetries - before
	if got != sha(f.data) || retries < 1 {
		t.Fatalf("after media retry: S3 sha %s want %s; wasim served %d media retries", got, sha(f.data), retries)
	}
	k, attempts, _ := mediaEvents(c.events(profile, "0"), "media.stored", id)
	if k != 1 {
		t.Fatalf("%d media.stored events", k)
	}
	t.Logf("CDN copy expired before download: %d media retry request(s), file recovered byte-identical (%d B) on attempt %d, one media.stored", retries, len(f.data), attempts)
}

// mediaProxy sits between a node and wasim: everything passes (the
// WebSocket too), but CDN downloads (GET /v/…) can be stalled half-way or
// damaged.
type mediaProxy struct {
	srv       *httptest.Server
	mu        sync.Mutex
	stallNext bool
	stalled   chan struct{} // closed once a download stalled half-way
	release   chan struct{} // closing it ends every stall
	corrupt   atomic.Bool
	downloads atomic.Int64
}

func startMediaProxy(t testing.TB, s *sim) *mediaProxy {
	t.Helper()
	target := &url.URL{Scheme: "http", Host: s.srv.Addr()}
	p := &mediaProxy{stalled: make(chan struct{}), release: make(chan struct{})}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.ErrorLog = nil
	rp.ModifyResponse = func(resp *http.Response) error {
		r := resp.Request
		if r.Method != http.MethodGet || !strings.HasPrefix(r.URL.Path, "/v/") || resp.StatusCode != http.StatusOK {
			return nil
		}
		p.downloads.Add(1)
		p.mu.Lock()
		stall := p.stallNext
		p.stallNext = false
		p.mu.Unlock()
		switch {
		case stall:
			resp.Body = &stallingBody{ReadCloser: resp.Body, at: resp.ContentLength / 2, p: p, ctx: r.Context()}
		case p.corrupt.Load():
			resp.Body = &flippingBody{ReadCloser: resp.Body, at: resp.ContentLength / 2}
		}
		return nil
	}
	p.srv = httptest.NewServer(rp)
	t.Cleanup(func() {
		p.releaseAll()
		p.srv.CloseClientConnections()
		p.srv.Close()
	})
	return p
}

func (p *mediaProxy) url() string { return "ws://" + p.srv.Listener.Addr().String() + "/ws/chat" }

func (p *mediaProxy) stallNextDownload() {
	p.mu.Lock()
	p.stallNext = true
	p.mu.Unlock()
}

func (p *mediaProxy) releaseAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.release:
	default:
		close(p.release)
	}
}

// stallingBody passes the first at bytes, then blocks until released or
// the client went away.
type stallingBody struct {
	io.ReadCloser
	at, n int64
	p     *mediaProxy
	ctx   context.Context
	once  sync.Once
}

func (b *stallingBody) Read(buf []byte) (int, error) {
	if b.n >= b.at {
		b.once.Do(func() { close(b.p.stalled) })
		select {
		case <-b.p.release:
		case <-b.ctx.Done():
			return 0, b.ctx.Err()
		}
	} else if rest := b.at - b.n; int64(len(buf)) > rest {
		buf = buf[:rest]
	}
	k, err := b.ReadCloser.Read(buf)
	b.n += int64(k)
	return k, err
}

// flippingBody flips one bit of the byte at offset at.
type flippingBody struct {
	io.ReadCloser
	at, n int64
}

func (b *flippingBody) Read(buf []byte) (int, error) {
	k, err := b.ReadCloser.Read(buf)
	if b.at >= b.n && b.at < b.n+int64(k) {
		buf[b.at-b.n] ^= 0x01
	}
	b.n += int64(k)
	return k, err
}

// TestE2EMediaKill9MidDownload runs the real binary, SIGKILLs it while the
// CDN download of a 6 MiB document is stalled half-way (the proxy holds
// it), restarts it on the same data: the stored job resumes and completes
// exactly once (one media.stored, attempts 2, one object, byte-identical).
func TestE2EMediaKill9MidDownload(t *testing.T) {
	forEachStore(t, func(t *testing.T, b backendEnv) {
		s, me := startSim(t), startMediaS3(t)
		px := startMediaProxy(t, s)
		env := me.env(binaryEnv(s, b, "kill"))
		env["AMARULA_WHATSAPP_URL"] = px.url()
		p := startNodeBinary(t, env)
		c := newAPIClient(t, p.url)
		const profile = "killed"
		c.createProfile(profile, nil)
		c.pair(s, profile)

		f := mediaFile{kind: "document", mime: "application/zip", name: "big.zip", data: randomFile("PK\x03\x04", 6<<20)}
		px.stallNextDownload()
		id := phoneSendsMedia(t, s, f, "")
		select {
		case <-px.stalled:
		case <-time.After(30 * time.Second):
			t.Fatal("the download never reached the half-way stall")
		}
		if m, status := c.message(profile, id); status != http.StatusOK || m.Media == nil || m.Media.State != msgstore.MediaPending {
			t.Fatalf("before the kill: status %d, %+v", status, m.Media)
		}
		resp, body := getMedia(t, p.url, profile, id, "", nil)
		if resp.StatusCode != http.StatusNotFound || errorCode(body) != "media_pending" {
			t.Fatalf("GET media while downloading: %d %s", resp.StatusCode, body)
		}
		p.kill()
		killedAt := time.Now()
		px.releaseAll()

		p = startNodeBinary(t, env)
		c = newAPIClient(t, p.url)
		m := waitMediaState(t, c, profile, id, msgstore.MediaStored, 90*time.Second)
		got, size := me.objectSHA(t, m.Media.ObjectKey)
		k, attempts, _ := mediaEvents(c.events(profile, "0"), "media.stored", id)
		if got != sha(f.data) || k != 1 || attempts != 2 {
			t.Fatalf("after restart: S3 sha %s (want %s), %d media.stored, attempts %d", got, sha(f.data), k, attempts)
		}
		resp, body = getMedia(t, p.url, profile, id, "", nil)
		if resp.StatusCode != http.StatusOK || sha(body) != sha(f.data) {
			t.Fatalf("GET media after restart: %d, sha %s", resp.StatusCode, sha(body))
		}
		t.Logf("kill -9 with a %d B download stalled half-way: after restart stored byte-identical %s after the kill, one media.stored, attempts %d, %d CDN downloads in all",
			size, time.Since(killedAt).Round(time.Millisecond), attempts, px.downloads.Load())
	})
}

// TestE2EMediaCorrupt: every CDN download is damaged (one bit flipped by
// the proxy): the worker retries MaxAttempts times, then reports
// media.failed (reason corrupt); nothing is stored in S3 and GET media
// answers 404 media_failed.
func TestE2EMediaCorrupt(t *testing.T) {
	b := newBackend(t, storeKinds[0])
	const profile = "damaged"
	s, me := startSim(t), startMediaS3(t)
	px := startMediaProxy(t, s)
	px.corrupt.Store(true)
	n := startMediaNode(t, s, me, b, profile, func(cfg *Config) {
		cfg.WhatsAppURL = px.url()
		cfg.tuneMedia = func(mc *media.Config) {
			mc.MaxAttempts, mc.BackoffBase, mc.BackoffMax = 3, 100*time.Millisecond, 200*time.Millisecond
		}
	})
	c := n.api

	f := mediaFiles(t)[0]
	id := phoneSendsMedia(t, s, f, "")
	m := waitMediaState(t, c, profile, id, msgstore.MediaFailed, 60*time.Second)
	evs := c.events(profile, "0")
	k, attempts, reason := mediaEvents(evs, "media.failed", id)
	if k != 1 || attempts != 3 || reason != "corrupt" {
		t.Fatalf("%d media.failed, attempts %d, reason %q", k, attempts, reason)
	}
	if st, _, _ := mediaEvents(evs, "media.stored", id); st != 0 {
		t.Fatal("a corrupt file was announced as stored")
	}
	if _, err := me.objs.Stat(context.Background(), media.ObjectKey(profile, id)); err == nil {
		t.Fatal("a corrupt file is in S3")
	}
	resp, body := getMedia(t, n.URL(), profile, id, "", nil)
	if resp.StatusCode != http.StatusNotFound || errorCode(body) != "media_failed" {
		t.Fatalf("GET media of a failed job: %d %s", resp.StatusCode, body)
	}
	t.Logf("every download damaged: %d CDN downloads, media.failed reason corrupt after %d attempts, message state %s, nothing in S3",
		px.downloads.Load(), attempts, m.Media.State)
}

// TestE2EMediaSend: media sent through the API — inline base64 (image,
// voice note, video, sticker) and by URL from an HTTP server (document) — arrives at the phone
// byte-identical, is stored with its object copy in S3, and GET media
// serves it. Bad input answers 4xx: an unreachable URL, a URL that answers
// 404, a file over AMARULA_MEDIA_MAX_BYTES (by URL and inline), a file of
// the wrong type.
func TestE2EMediaSend(t *testing.T) {
	forEachStore(t, func(t *testing.T, b backendEnv) {
		const profile = "outbox"
		s, me := startSim(t), startMediaS3(t)
		n := startMediaNode(t, s, me, b, profile, func(cfg *Config) { cfg.MediaMaxBytes = 2 << 20 })
		c := n.api

		files := mediaFiles(t)
		big := randomFile("PK\x03\x04", 3<<20)
		web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch r.URL.Path {
			case "/report.pdf":
				w.Header().Set("Content-Type", "application/pdf")
				_, _ = w.Write(files[1].data)
			case "/big.zip":
				w.Header().Set("Content-Type", "application/zip")
				_, _ = w.Write(big)
			case "/chunked.zip": // no Content-Length: the limit is found while reading
				w.Header().Set("Content-Type", "application/zip")
				w.(http.Flusher).Flush()
				_, _ = w.Write(big)
			case "/page.html":
				w.Header().Set("Content-Type", "text/html; charset=utf-8")
				_, _ = w.Write([]byte("<!doctype html><html><body>not an image</body></html>"))
			default:
				http.NotFound(w, r)
			}
		}))
		t.Cleanup(web.Close)
		closedPort := fmt.Sprintf("http://127.0.0.1:%d/x.png", testenv.FreePort(t))

		to := s.peerJID()
		sends := []struct {
			f    mediaFile
			body map[string]any
		}{
			{files[0], map[string]any{"kind": "image", "data": base64.StdEncoding.EncodeToString(files[0].data), "caption": "a picture"}},
			{files[1], map[string]any{"kind": "document", "url": web.URL + "/report.pdf", "file_name": "report.pdf", "caption": "the report"}},
			{files[2], map[string]any{"kind": "voice", "mime": "audio/ogg; codecs=opus", "data": base64.StdEncoding.EncodeToString(files[2].data)}},
			{files[3], map[string]any{"kind": "video", "data": base64.StdEncoding.EncodeToString(files[3].data), "caption": "a clip"}},
			{files[4], map[string]any{"kind": "sticker", "data": base64.StdEncoding.EncodeToString(files[4].data)}},
		}
		for _, sd := range sends {
			start := time.Now()
			r := c.send(profile, map[string]any{"to": to, "media": sd.body})
			got := s.waitReceived(t, peerNumber, r.ID)
			if got.Media == nil || got.Media.SHA256 != sha(sd.f.data) || got.Media.Size != len(sd.f.data) || got.Media.Error != "" {
				t.Fatalf("%s: the phone received %+v, want sha %s (%d bytes)", sd.f.kind, got.Media, sha(sd.f.data), len(sd.f.data))
			}
			m, _ := c.message(profile, r.ID)
			if m.Media == nil || m.Media.State != msgstore.MediaStored || m.Media.SHA256 != sha(sd.f.data) || !m.FromMe {
				t.Fatalf("%s: stored sent message %+v", sd.f.kind, m.Media)
			}
			if m.Media.Kind != sd.f.kind || (sd.f.kind != "document" && m.Media.Mime != sd.f.mime) {
				t.Fatalf("%s: stored kind %s, mime %s", sd.f.kind, m.Media.Kind, m.Media.Mime)
			}
			if got, _ := me.objectSHA(t, m.Media.ObjectKey); got != sha(sd.f.data) {
				t.Fatalf("%s: S3 copy sha %s", sd.f.kind, got)
			}
			resp, body := getMedia(t, n.URL(), profile, r.ID, "", nil)
			if resp.StatusCode != http.StatusOK || sha(body) != sha(sd.f.data) {
				t.Fatalf("%s: GET media of a sent file: %d", sd.f.kind, resp.StatusCode)
			}
			t.Logf("sent %s (%d B, %s): phone decrypted it byte-identical %s after the request; S3 copy and GET media identical",
				sd.f.kind, len(sd.f.data), map[bool]string{true: "by URL", false: "base64"}[sd.body["url"] != nil], time.Since(start).Round(time.Millisecond))
		}

		bad := []struct {
			name   string
			media  map[string]any
			status int
			code   string
		}{
			{"unreachable URL", map[string]any{"kind": "image", "url": closedPort}, http.StatusBadRequest, "media_unreachable"},
			{"URL answers 404", map[string]any{"kind": "image", "url": web.URL + "/missing.png"}, http.StatusBadRequest, "media_unreachable"},
			{"too large by URL", map[string]any{"kind": "document", "url": web.URL + "/big.zip"}, http.StatusRequestEntityTooLarge, "media_too_large"},
			{"too large, no length", map[string]any{"kind": "document", "url": web.URL + "/chunked.zip"}, http.StatusRequestEntityTooLarge, "media_too_large"},
			{"too large inline", map[string]any{"kind": "document", "data": base64.StdEncoding.EncodeToString(big)}, http.StatusRequestEntityTooLarge, "media_too_large"},
			{"HTML as an image", map[string]any{"kind": "image", "url": web.URL + "/page.html"}, http.StatusUnsupportedMediaType, "unsupported_media_type"},
			{"PDF declared as an image", map[string]any{"kind": "image", "mime": "application/pdf", "data": base64.StdEncoding.EncodeToString(files[1].data)}, http.StatusUnsupportedMediaType, "unsupported_media_type"},
			{"PNG bytes as a voice note", map[string]any{"kind": "voice", "data": base64.StdEncoding.EncodeToString(files[0].data)}, http.StatusUnsupportedMediaType, "unsupported_media_type"},
		}
		before := len(s.received(t, peerNumber, 0))
		for _, tc := range bad {
			status, raw, _ := c.do(http.MethodPost, "/v1/profiles/"+profile+"/messages", map[string]any{"to": to, "media": tc.media}, nil)
			if status != tc.status || errorCode(raw) != tc.code {
				t.Fatalf("%s: %d %s, want %d %s", tc.name, status, raw, tc.status, tc.code)
			}
		}
		if after := len(s.received(t, peerNumber, 0)); after != before {
			t.Fatalf("bad sends reached the phone: %d messages", after-before)
		}
		t.Logf("bad input: %d cases answered 4xx with their codes, nothing sent", len(bad))
	})
}
