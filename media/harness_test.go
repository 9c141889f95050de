package media

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/amarula/amarula/internal/testenv"
	"github.com/amarula/amarula/msgstore"
	"github.com/amarula/amarula/storage"
	"github.com/amarula/amarula/storage/bolt"
	"github.com/amarula/amarula/storage/redis"
	"github.com/amarula/amarula/storage/s3"
)

func TestMain(m *testing.M) {
	if cfg := os.Getenv(helperEnv); cfg != "" {
		os.Exit(runWorkerProcess(cfg))
	}
	goleak.VerifyTestMain(m)
}

const (
	prof   = "alice"
	tok    = storage.Token(1)
	bucket = "media"
	chat   = "393331234567@s.whatsapp.net"
)

// storeHandle is a real storage adapter that a test can "restart": close
// and open again on the same data (bolt directory, Redis server).
type storeHandle struct {
	name string
	open func() (storage.Store, error)
	mu   sync.Mutex
	st   storage.Store
}

func (h *storeHandle) store() storage.Store {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.st
}

// restart closes the adapter and opens it again, as a process restart does.
func (h *storeHandle) restart(t testing.TB) {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.st.Close(); err != nil {
		t.Fatalf("close %s: %v", h.name, err)
	}
	st, err := h.open()
	if err != nil {
		t.Fatalf("reopen %s: %v", h.name, err)
	}
	h.st = st
}

// backends are the real adapters the pipeline runs on.
var backends = []struct {
	name string
	new  func(t testing.TB) *storeHandle
}{
	{"bolt", func(t testing.TB) *storeHandle {
		dir := t.TempDir()
		return newHandle(t, "bolt", func() (storage.Store, error) { return bolt.Open(dir, bolt.Options{}) })
	}},
	{"redis", func(t testing.TB) *storeHandle {
		r := testenv.StartRedis(t)
		return newHandle(t, "redis", func() (storage.Store, error) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			return redis.New(ctx, r.URL(), redis.Options{})
		})
	}},
}

func newHandle(t testing.TB, name string, open func() (storage.Store, error)) *storeHandle {
	t.Helper()
	st, err := open()
	if err != nil {
		t.Fatalf("open %s: %v", name, err)
	}
	h := &storeHandle{name: name, open: open, st: st}
	t.Cleanup(func() { _ = h.store().Close() })
	return h
}

// storeMessages is the Messages implementation the tests use: the real
// message layout of msgstore (NSMessages, JSON Message) updated in one
// transaction, serialised per store like msgstore.Store does.
type storeMessages struct {
	h  *storeHandle
	mu sync.Mutex
}

func (s *storeMessages) UpdateMessage(ctx context.Context, profile string, token storage.Token, msgID string,
	fn func(tx storage.Tx, m *msgstore.Message) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, err := s.h.store().Txn(ctx, profile, token, func(tx storage.Tx) error {
		var m *msgstore.Message
		raw, err := tx.Get(ctx, msgstore.NSMessages, msgID)
		switch {
		case err == nil:
			m = new(msgstore.Message)
			if json.Unmarshal(raw, m) != nil {
				m = nil
			}
		case !errors.Is(err, storage.ErrNotFound):
			return err
		}
		if err := fn(tx, m); err != nil {
			return err
		}
		if m != nil {
			raw, err := json.Marshal(m)
			if err != nil {
				return err
			}
			tx.Put(msgstore.NSMessages, msgID, raw)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("update message %s: %w", msgID, err)
	}
	return nil
}

// handleStore lets the worker follow a storeHandle across restarts.
type handleStore struct{ h *storeHandle }

func (s handleStore) Get(ctx context.Context, profile, ns, key string) ([]byte, error) {
	return s.h.store().Get(ctx, profile, ns, key)
}
func (s handleStore) Put(ctx context.Context, profile string, token storage.Token, ns, key string, value []byte) error {
	return s.h.store().Put(ctx, profile, token, ns, key, value)
}
func (s handleStore) Scan(ctx context.Context, profile, ns, prefix string) ([]storage.KeyValue, error) {
	return s.h.store().Scan(ctx, profile, ns, prefix)
}

// fakeCDN plays WhatsApp's media CDN: it serves encrypted files by direct
// path and can answer 404/410, serve damaged bytes, fail with 500, or stall
// in the middle of a body.
type fakeCDN struct {
	srv *httptest.Server

	mu       sync.Mutex
	files    map[string][]byte // URL path -> encrypted file
	expired  map[string]int    // path -> status to answer (404, 410)
	corrupt  map[string]int    // path -> how many more damaged answers
	fail500  map[string]int    // path -> how many more 500 answers
	stall    map[string]chan struct{}
	hits     map[string]int
	started  chan string // a stalled body has been half sent
	inflight atomic.Int32
	maxInfl  atomic.Int32
}

func newCDN(t testing.TB) *fakeCDN {
	c := &fakeCDN{
		files: map[string][]byte{}, expired: map[string]int{}, corrupt: map[string]int{},
		fail500: map[string]int{}, stall: map[string]chan struct{}{}, hits: map[string]int{},
		started: make(chan string, 16),
	}
	c.srv = httptest.NewServer(http.HandlerFunc(c.serve))
	t.Cleanup(c.srv.Close)
	return c
}

func (c *fakeCDN) serve(w http.ResponseWriter, r *http.Request) {
	n := c.inflight.Add(1)
	defer c.inflight.Add(-1)
	for {
		m := c.maxInfl.Load()
		if n <= m || c.maxInfl.CompareAndSwap(m, n) {
			break
		}
	}
	if r.Header.Get("Origin") != waOrigin || r.URL.Query().Get("hash") == "" || r.URL.Query().Get("mms-type") == "" {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	p := r.URL.Path
	c.mu.Lock()
	c.hits[p]++
	blob, ok := c.files[p]
	status := c.expired[p]
	damaged := c.corrupt[p] > 0
	if damaged {
		c.corrupt[p]--
	}
	fail := c.fail500[p] > 0
	if fail {
		c.fail500[p]--
	}
	gate := c.stall[p]
	c.mu.Unlock()
	switch {
	case !ok:
		http.NotFound(w, r)
		return
	case status != 0:
		w.WriteHeader(status)
		return
	case fail:
		http.Error(w, "boom", http.StatusInternalServerError)
		return
	}
	if damaged {
		blob = bytes.Clone(blob)
		blob[len(blob)/3] ^= 0x40
	}
	w.Header().Set("Content-Length", fmt.Sprint(len(blob)))
	if gate != nil {
		half := len(blob) / 2
		_, _ = w.Write(blob[:half])
		w.(http.Flusher).Flush()
		c.started <- p
		select {
		case <-gate:
		case <-r.Context().Done():
			return
		}
		blob = blob[half:]
	}
	_, _ = w.Write(blob)
}

func (c *fakeCDN) set(fn func(c *fakeCDN)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fn(c)
}

func (c *fakeCDN) hitCount(path string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hits[path]
}

func (c *fakeCDN) downloader() *CDN {
	return &CDN{
		Client: c.srv.Client(),
		Scheme: "http",
		Hosts: func(context.Context) ([]string, error) {
			return []string{strings.TrimPrefix(c.srv.URL, "http://")}, nil
		},
	}
}

// urlPath is the part of a direct path the CDN routes on.
func urlPath(directPath string) string {
	p, _, _ := strings.Cut(directPath, "?")
	return p
}

// phone plays the sender's phone answering media retry receipts: it
// re-uploads the file under a new direct path.
type phone struct {
	cdn   *fakeCDN
	calls atomic.Int32
	// answer, if set, replaces the re-upload (to fail it).
	answer func(n int32, old string) (string, error)
}

func (p *phone) RequestReupload(ctx context.Context, profile, msgID string, m msgstore.Media) (string, error) {
	n := p.calls.Add(1)
	if p.answer != nil {
		return p.answer(n, m.DirectPath)
	}
	newPath := fmt.Sprintf("/v/reupload/%s-%d.enc?ccb=11-4", msgID, n)
	p.cdn.set(func(c *fakeCDN) { c.files[urlPath(newPath)] = c.files[urlPath(m.DirectPath)] })
	return newPath, nil
}

// env is one test's world: a real storage adapter, a real versitygw, the
// fake CDN and phone.
type env struct {
	t     testing.TB
	h     *storeHandle
	s3env *testenv.S3
	obj   *s3.S3
	cdn   *fakeCDN
	phone *phone
	msgs  Messages
	// profile the helpers act on; prof unless a test shares the world
	// between profiles (see forProfile).
	profile string
}

// forProfile returns a view of the same world acting on another profile.
func (e *env) forProfile(profile string) *env {
	c := *e
	c.profile = profile
	return &c
}

func newEnv(t testing.TB, h *storeHandle) *env {
	t.Helper()
	s3env := testenv.StartS3(t, bucket)
	obj, err := s3.New(context.Background(), s3.Config{
		Endpoint: s3env.Endpoint, Bucket: bucket, AccessKey: s3env.AccessKey, SecretKey: s3env.SecretKey,
		PathStyle: true, PartSize: s3.MinPartSize,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = obj.Close() })
	cdn := newCDN(t)
	e := &env{t: t, h: h, s3env: s3env, obj: obj, cdn: cdn, phone: &phone{cdn: cdn}, profile: prof}
	e.msgs = &storeMessages{h: h}
	return e
}

func testConfig() Config {
	return Config{
		Concurrency:  2,
		MaxAttempts:  3,
		BackoffBase:  20 * time.Millisecond,
		BackoffMax:   100 * time.Millisecond,
		PollInterval: 250 * time.Millisecond,
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

// runningWorker is a Worker started by a test.
type runningWorker struct {
	*Worker
	cancel context.CancelFunc
	done   chan struct{}
}

// stop cancels Run and waits for it, as a process shutdown (or, with the
// cancel in the middle of a download, a crash) does.
func (r *runningWorker) stop() {
	r.cancel()
	<-r.done
}

func (e *env) start(cfg Config, deps Deps) *runningWorker {
	e.t.Helper()
	if deps.Store == nil {
		deps.Store = handleStore{e.h}
	}
	if deps.Objects == nil {
		deps.Objects = e.obj
	}
	if deps.Messages == nil {
		deps.Messages = e.msgs
	}
	if deps.Downloader == nil {
		deps.Downloader = e.cdn.downloader()
	}
	w, err := New(deps, cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := w.Attach(e.profile, tok); err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &runningWorker{Worker: w, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		_ = w.Run(ctx)
	}()
	e.t.Cleanup(r.stop)
	return r
}

// received is a media message as a session stores it.
type received struct {
	id    string
	plain []byte
	media msgstore.Media
	enc   []byte
}

// receive puts an encrypted file on the CDN and stores its message and
// download job in one transaction, as the session does on receipt.
func (e *env) receive(id, kind, mime string, plain []byte) received {
	e.t.Helper()
	md, enc := e.publish(id, kind, mime, bytes.NewReader(plain), uint64(len(id)+len(plain)), nil)
	return received{id: id, plain: plain, media: md, enc: enc}
}

// publish encrypts src onto the CDN and stores the message with its job.
// descr, if set, tampers with what the message announces.
func (e *env) publish(id, kind, mime string, src io.Reader, seed uint64, descr func(m *msgstore.Media)) (msgstore.Media, []byte) {
	e.t.Helper()
	key := mediaKey(seed)
	var buf bytes.Buffer
	res, err := Encrypt(&buf, src, key, kind)
	if err != nil {
		e.t.Fatal(err)
	}
	path := "/v/t62.7118-24/" + id + ".enc?ccb=11-4&oh=x&oe=y"
	e.cdn.set(func(c *fakeCDN) { c.files[urlPath(path)] = buf.Bytes() })
	md := msgstore.Media{
		Kind: kind, Mime: mime, Caption: "caption of " + id, DirectPath: path, MediaKey: key,
		FileEncSHA256: res.FileEncSHA256, FileSHA256: res.FileSHA256, FileLength: res.FileLength,
		State: msgstore.MediaPending,
	}
	if descr != nil {
		descr(&md)
	}
	msg := msgstore.Message{ID: id, Chat: chat, From: chat, Timestamp: time.Now().Unix(), Type: msgstore.TypeMedia, Media: &md}
	e.enqueue(msg, md)
	return md, buf.Bytes()
}

func (e *env) enqueue(msg msgstore.Message, md msgstore.Media) {
	e.t.Helper()
	ctx := context.Background()
	_, err := e.h.store().Txn(ctx, e.profile, tok, func(tx storage.Tx) error {
		res, err := msgstore.PutTx(ctx, tx, e.profile, msg, msgstore.Received)
		if err != nil {
			return err
		}
		if res.Duplicate {
			return nil
		}
		return Enqueue(tx, e.profile, msg.ID, md)
	})
	if err != nil {
		e.t.Fatalf("store message %s: %v", msg.ID, err)
	}
}

// mediaEvents returns the media.* events of the profile's log.
func (e *env) mediaEvents() []storage.Event {
	e.t.Helper()
	var out []storage.Event
	after := "0"
	for range 1000 {
		evs, err := e.h.store().Read(context.Background(), e.profile, after, 500)
		if err != nil {
			e.t.Fatalf("read events: %v", err)
		}
		if len(evs) == 0 {
			return out
		}
		for _, ev := range evs {
			if strings.HasPrefix(ev.Type, "media.") {
				out = append(out, ev)
			}
		}
		after = evs[len(evs)-1].Cursor
	}
	e.t.Fatal("event log does not end")
	return nil
}

// waitOutcome polls the log until msgID has a media.* event and returns
// it with its decoded data.
func (e *env) waitOutcome(msgID string) (storage.Event, EventData) {
	e.t.Helper()
	var ev storage.Event
	var data EventData
	err := testenv.WaitFor(60*time.Second, func() error {
		for _, x := range e.mediaEvents() {
			var d EventData
			if json.Unmarshal(x.Data, &d) == nil && d.ID == msgID {
				ev, data = x, d
				return nil
			}
		}
		return fmt.Errorf("no media event for %s yet", msgID)
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return ev, data
}

// eventsFor counts media events per type for msgID.
func (e *env) eventsFor(msgID string) map[string]int {
	n := map[string]int{}
	for _, x := range e.mediaEvents() {
		var d EventData
		if json.Unmarshal(x.Data, &d) == nil && d.ID == msgID {
			n[x.Type]++
		}
	}
	return n
}

func (e *env) message(id string) msgstore.Message {
	e.t.Helper()
	raw, err := e.h.store().Get(context.Background(), e.profile, msgstore.NSMessages, id)
	if err != nil {
		e.t.Fatalf("message %s: %v", id, err)
	}
	var m msgstore.Message
	if err := json.Unmarshal(raw, &m); err != nil {
		e.t.Fatal(err)
	}
	return m
}

func (e *env) job(id string) (Job, bool) {
	e.t.Helper()
	raw, err := e.h.store().Get(context.Background(), e.profile, NSJobs, id)
	if errors.Is(err, storage.ErrNotFound) {
		return Job{}, false
	}
	if err != nil {
		e.t.Fatal(err)
	}
	var j Job
	if err := json.Unmarshal(raw, &j); err != nil {
		e.t.Fatal(err)
	}
	return j, true
}

// objectFiles lists the objects versitygw holds under media/<profile>/ (its
// posix backend keeps one file per object; dot-directories are its own).
func (e *env) objectFiles() []string {
	e.t.Helper()
	root := filepath.Join(e.s3env.Root, bucket, "media", e.profile)
	var files []string
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.IsDir() && strings.HasPrefix(d.Name(), ".") {
			return filepath.SkipDir
		}
		if !d.IsDir() && !strings.HasPrefix(d.Name(), ".") {
			rel, _ := filepath.Rel(root, p)
			files = append(files, rel)
		}
		return nil
	})
	return files
}

// readObject returns the stored bytes of msgID (verified by the full Get).
func (e *env) readObject(id string) ([]byte, s3.Info) {
	e.t.Helper()
	rc, info, err := e.obj.Get(context.Background(), ObjectKey(e.profile, id), nil)
	if err != nil {
		e.t.Fatalf("get object of %s: %v", id, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		e.t.Fatalf("read object of %s: %v", id, err)
	}
	return b, info
}

// assertStored checks everything a stored outcome promises.
func (e *env) assertStored(r received) {
	e.t.Helper()
	_, data := e.waitOutcome(r.id)
	if n := e.eventsFor(r.id); n[msgstore.EventMediaStored] != 1 || n[msgstore.EventMediaFailed] != 0 {
		e.t.Fatalf("%s: events %v, want exactly one media.stored", r.id, n)
	}
	got, info := e.readObject(r.id)
	if !bytes.Equal(got, r.plain) {
		e.t.Fatalf("%s: stored %d bytes differ from the %d sent", r.id, len(got), len(r.plain))
	}
	wantSHA := fmt.Sprintf("%x", r.media.FileSHA256)
	if info.SHA256 != wantSHA || info.ContentType != r.media.Mime {
		e.t.Fatalf("%s: object info %+v", r.id, info)
	}
	m := e.message(r.id)
	if m.Media == nil || m.Media.State != msgstore.MediaStored || m.Media.ObjectKey != ObjectKey(e.profile, r.id) ||
		m.Media.SHA256 != wantSHA || m.Media.Size != int64(len(r.plain)) || m.Media.Caption != r.media.Caption {
		e.t.Fatalf("%s: message media %+v", r.id, m.Media)
	}
	if data.Media == nil || data.Media.ObjectKey != ObjectKey(e.profile, r.id) || data.Media.SHA256 != wantSHA || data.Chat != chat {
		e.t.Fatalf("%s: event data %+v", r.id, data)
	}
	if _, ok := e.job(r.id); ok {
		e.t.Fatalf("%s: job still stored after media.stored", r.id)
	}
}

// assertFailed checks a failed outcome: one media.failed with reason, no
// object, message marked failed, job gone.
func (e *env) assertFailed(id, reason string) EventData {
	e.t.Helper()
	ev, data := e.waitOutcome(id)
	if ev.Type != msgstore.EventMediaFailed || data.Reason != reason {
		e.t.Fatalf("%s: outcome %s reason %q (%s), want media.failed %q", id, ev.Type, data.Reason, data.Error, reason)
	}
	if n := e.eventsFor(id); n[msgstore.EventMediaFailed] != 1 || n[msgstore.EventMediaStored] != 0 {
		e.t.Fatalf("%s: events %v", id, n)
	}
	if _, err := e.obj.Stat(context.Background(), ObjectKey(e.profile, id)); !errors.Is(err, s3.ErrNotFound) {
		e.t.Fatalf("%s: an object was stored for a failed download: %v", id, err)
	}
	if m := e.message(id); m.Media == nil || m.Media.State != msgstore.MediaFailed {
		e.t.Fatalf("%s: message media %+v, want state failed", id, m.Media)
	}
	if _, ok := e.job(id); ok {
		e.t.Fatalf("%s: job still stored after media.failed", id)
	}
	return data
}

func s3Info(e *env, id string) s3.Info {
	e.t.Helper()
	info, err := e.obj.Stat(context.Background(), ObjectKey(e.profile, id))
	if err != nil {
		e.t.Fatal(err)
	}
	return info
}
