package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/amarula/amarula/api"
	"github.com/amarula/amarula/catalog"
	"github.com/amarula/amarula/msgstore"
	"github.com/amarula/amarula/session"
	"github.com/amarula/amarula/storage"
	"github.com/amarula/amarula/storage/bolt"
	"github.com/amarula/amarula/webhook"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const adminKey = "test-admin-key-0123456789"

// testStore is what the tests need of a real storage adapter.
type testStore interface {
	api.KV
	api.Fences
	storage.EventLog
	catalog.Store
	msgstore.Backend
}

// newStore opens a real bbolt store in a temporary directory.
func newStore(t *testing.T) testStore {
	t.Helper()
	st, err := bolt.Open(t.TempDir(), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// testLogger sends the API's logs to the test log at debug level, so a
// failing test shows them and a passing one stays quiet.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// fakeSessions implements api.Sessions and counts what it was asked.
type fakeSessions struct {
	mu       sync.Mutex
	sends    []session.SendRequest
	state    map[string]string
	paired   map[string]bool
	deleted  []string
	calls    map[string]int // method -> count
	sendErr  error
	sendWait chan struct{} // when set, Send blocks until it is closed
}

func newFakeSessions() *fakeSessions {
	return &fakeSessions{state: map[string]string{}, paired: map[string]bool{}, calls: map[string]int{}}
}

func (f *fakeSessions) Info(_ context.Context, p string) (session.Info, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st, ok := f.state[p]
	if !ok {
		return session.Info{}, api.ErrNotFound
	}
	info := session.Info{Profile: p, State: session.State(st)}
	if st == "connected" {
		info.JID, info.PushName, info.ConnectedSince = "15551234567@s.whatsapp.net", "Alice", time.Unix(1700000000, 0)
	}
	return info, nil
}

// Whereis implements api.Owners: "n1" runs every profile with a state.
func (f *fakeSessions) Whereis(_ context.Context, p string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.state[p]; ok {
		return "n1", nil
	}
	return "", nil
}

func (f *fakeSessions) QR(_ context.Context, p string) (session.QR, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.paired[p] {
		return session.QR{}, fmt.Errorf("qr of %s: %w", p, session.ErrAlreadyPaired)
	}
	return session.QR{Code: "2@qr-code-of-" + p, ExpiresAt: time.Unix(1700000060, 0)}, nil
}

func (f *fakeSessions) PairPhone(_ context.Context, p, phone string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls["PairPhone"]++
	return "ABCD-EFGH", nil
}

func (f *fakeSessions) Connect(_ context.Context, p string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls["Connect"]++
	f.state[p] = "connecting"
	return nil
}

func (f *fakeSessions) Stop(_ context.Context, p string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls["Stop"]++
	f.state[p] = "stopped"
	return nil
}

func (f *fakeSessions) Send(ctx context.Context, p string, req session.SendRequest) (session.SendResult, error) {
	f.mu.Lock()
	wait, err := f.sendWait, f.sendErr
	f.mu.Unlock()
	if wait != nil {
		select {
		case <-wait:
		case <-ctx.Done():
			return session.SendResult{}, ctx.Err()
		}
	}
	if err != nil {
		return session.SendResult{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sends = append(f.sends, req)
	return session.SendResult{ID: fmt.Sprintf("3EB0%04d", len(f.sends)), Timestamp: 1700000000 + int64(len(f.sends)), Status: "delivered"}, nil
}

func (f *fakeSessions) Delete(_ context.Context, p string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.deleted = append(f.deleted, p)
	delete(f.state, p)
	return nil
}

func (f *fakeSessions) sendCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.sends)
}

// sendAnswer is the JSON answer of a send.
type sendAnswer struct {
	ID        string `json:"id"`
	Status    string `json:"status"`
	Timestamp int64  `json:"timestamp"`
}

// env is one API under test.
type env struct {
	t        *testing.T
	srv      *httptest.Server
	api      *api.Server
	store    testStore
	catalog  *catalog.Local
	sessions *fakeSessions
	msgs     *msgstore.Store
	reg      *prometheus.Registry
	ready    error
}

type option func(*api.Config)

func newEnv(t *testing.T, opts ...option) *env {
	t.Helper()
	return newEnvWithStore(t, newStore(t), opts...)
}

func newEnvWithStore(t *testing.T, st testStore, opts ...option) *env {
	t.Helper()
	e := &env{
		t: t, store: st,
		catalog:  catalog.NewLocal(st),
		sessions: newFakeSessions(),
		msgs:     msgstore.New(st),
		reg:      prometheus.NewRegistry(),
	}
	cfg := api.Config{
		AdminKey: adminKey,
		Profiles: e.catalog, Sessions: e.sessions, Owners: e.sessions, Messages: e.msgs,
		Events: st, KV: st, Fences: st,
		Webhooks: &webhook.DeadLetters{
			KV:     st,
			Token:  st.Fence,
			Target: webhook.CatalogTarget(e.catalog),
		},
		Readiness:    api.ReadyFunc(func(context.Context) error { return e.ready }),
		Gatherer:     e.reg,
		Registerer:   e.reg,
		PingInterval: 200 * time.Millisecond,
		WriteTimeout: 2 * time.Second,
		Logger:       testLogger(t),
	}
	for _, o := range opts {
		o(&cfg)
	}
	s, err := api.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.api = s
	e.srv = httptest.NewServer(s)
	t.Cleanup(func() {
		_ = s.Close()
		e.srv.Close()
	})
	return e
}

// resp is an answer read in full.
type resp struct {
	status int
	header http.Header
	body   []byte
}

func (r resp) String() string { return fmt.Sprintf("%d %s", r.status, r.body) }

// do sends a request; key "" sends no Authorization header. Headers come in
// name, value pairs.
func (e *env) do(method, path, key, body string, headers ...string) resp {
	e.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	// Keep escapes such as %2f exactly as written.
	req.URL.Opaque = "//" + req.URL.Host + strings.SplitN(path, "?", 2)[0]
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	res, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp{status: res.StatusCode, header: res.Header, body: b}
}

// must is do that fails the test unless the status is want; it decodes the
// body into out when out is not nil.
func (e *env) must(want int, out any, method, path, key, body string, headers ...string) resp {
	e.t.Helper()
	r := e.do(method, path, key, body, headers...)
	if r.status != want {
		e.t.Fatalf("%s %s: got %s, want %d", method, path, r, want)
	}
	if out != nil {
		if err := json.Unmarshal(r.body, out); err != nil {
			e.t.Fatalf("%s %s: decode %s: %v", method, path, r.body, err)
		}
	}
	return r
}

// createProfile creates a profile as admin.
func (e *env) createProfile(id string) {
	e.t.Helper()
	e.must(http.StatusCreated, nil, "POST", "/v1/profiles", adminKey, `{"id":"`+id+`"}`)
}

// createKey mints a profile key.
func (e *env) createKey(id string) string {
	e.t.Helper()
	var out struct {
		Key string `json:"key"`
	}
	e.must(http.StatusCreated, &out, "POST", "/v1/profiles/"+id+"/keys", adminKey, `{"name":"test"}`)
	return out.Key
}

// errorCode checks r is exactly the documented error shape and returns the
// code.
func errorCode(t *testing.T, r resp) string {
	t.Helper()
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("error answer has Content-Type %q", ct)
	}
	dec := json.NewDecoder(bytes.NewReader(r.body))
	dec.DisallowUnknownFields()
	var body struct {
		Error *struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := dec.Decode(&body); err != nil || body.Error == nil {
		t.Fatalf("error answer %s is not {\"error\":{\"code\",\"message\"}}: %v", r, err)
	}
	if body.Error.Code == "" || body.Error.Message == "" {
		t.Errorf("error answer %s lacks code or message", r)
	}
	for _, c := range body.Error.Code {
		if (c < 'a' || c > 'z') && c != '_' {
			t.Errorf("error code %q is not snake_case", body.Error.Code)
			break
		}
	}
	return body.Error.Code
}

// appendEvents appends n message.received events to profile's log.
func appendEvents(t *testing.T, st testStore, profile string, from, n int) []string {
	t.Helper()
	var cursors []string
	for i := from; i < from+n; i++ {
		c, err := st.Append(context.Background(), profile, 0, msgstore.EventMessageReceived, []byte(fmt.Sprintf(`{"id":"m%d","text":"hello %d"}`, i, i)))
		if err != nil {
			t.Fatal(err)
		}
		cursors = append(cursors, c)
	}
	return cursors
}
