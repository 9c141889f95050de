package node

// Shared pieces of the end-to-end tests (e2e_test.go, crash_e2e_test.go)
// and BenchmarkGateway: a wasim simulator with two phones, a node (in
// process or the real binary) pointed at it on bolt or Redis, and a small
// client of the HTTP API of docs/api.md.

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/util/keys"

	"github.com/amarula/amarula/internal/testenv"
	"github.com/amarula/amarula/msgstore"
	"github.com/amarula/amarula/wasim"
)

// simRoot is the certificate root of every simulator of this test process:
// whatsmeow trusts one root per process (WACertPubKey is a global).
var simRoot = keys.NewKeyPair()

const (
	e2eAdminKey = "e2e-admin-key-0123456789abcdef"
	ownNumber   = "15550001111" // the account the gateway links to
	peerNumber  = "15550002222" // someone who chats with it
)

// e2eDebug streams node logs to stderr (E2E_DEBUG=1) instead of keeping
// only their tail for failure messages.
var e2eDebug = os.Getenv("E2E_DEBUG") != ""

// sim is a running wasim with the gateway's own phone and a peer.
type sim struct {
	srv       *wasim.Server
	own, peer *wasim.Phone
	admin     string // http://host:port of the admin API
}

func startSim(t testing.TB) *sim {
	t.Helper()
	level := slog.LevelError
	if os.Getenv("WASIM_DEBUG") != "" {
		level = slog.LevelDebug
	}
	srv, err := wasim.New(wasim.Config{
		RootPrivateKey: simRoot.Priv[:],
		Logger:         slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	s := &sim{srv: srv, admin: "http://" + srv.Addr()}
	if s.own, err = srv.CreatePhone(ownNumber, "Own"); err != nil {
		t.Fatal(err)
	}
	if s.peer, err = srv.CreatePhone(peerNumber, "Peer"); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *sim) rootKeyHex() string { return hex.EncodeToString(simRoot.Pub[:]) }

// device returns wasim's view of a linked device.
func (s *sim) device(t testing.TB, jid string) wasim.DeviceInfo {
	t.Helper()
	var devs []wasim.DeviceInfo
	httpJSON(t, http.MethodGet, s.admin+"/admin/devices", "", nil, http.StatusOK, &devs)
	for _, d := range devs {
		if d.JID == jid {
			return d
		}
	}
	t.Fatalf("device %s unknown to wasim (%d devices)", jid, len(devs))
	return wasim.DeviceInfo{}
}

// send makes a phone send a message through the admin API and returns its id.
func (s *sim) send(t testing.TB, number string, body map[string]any) string {
	t.Helper()
	var out struct {
		ID string `json:"id"`
	}
	httpJSON(t, http.MethodPost, s.admin+"/admin/phones/"+number+"/messages", "", body, http.StatusOK, &out)
	if out.ID == "" {
		t.Fatalf("wasim send %v: no id", body)
	}
	return out.ID
}

// received lists what a phone received and decrypted after seq.
func (s *sim) received(t testing.TB, number string, after int64) []wasim.ReceivedMessage {
	t.Helper()
	var out []wasim.ReceivedMessage
	httpJSON(t, http.MethodGet, fmt.Sprintf("%s/admin/phones/%s/messages?after=%d", s.admin, number, after), "", nil, http.StatusOK, &out)
	return out
}

// waitReceived waits until the phone decrypted a message with id and
// returns it.
func (s *sim) waitReceived(t testing.TB, number, id string) wasim.ReceivedMessage {
	t.Helper()
	var got wasim.ReceivedMessage
	waitFor(t, "phone "+number+" receives "+id, 20*time.Second, func() error {
		for _, m := range s.received(t, number, 0) {
			if m.ID == id {
				got = m
				return nil
			}
		}
		return fmt.Errorf("not received")
	})
	return got
}

// link shows the profile's QR through the API to the own phone and returns
// the linked device JID.
func (s *sim) link(t testing.TB, c *apiClient, profile string) string {
	t.Helper()
	code := c.waitQR(profile)
	var out struct {
		DeviceJID string `json:"device_jid"`
	}
	httpJSON(t, http.MethodPost, s.admin+"/admin/phones/"+ownNumber+"/link", "", map[string]string{"qr": code}, http.StatusOK, &out)
	if out.DeviceJID == "" {
		t.Fatal("wasim link: no device_jid")
	}
	return out.DeviceJID
}

// ownJID and peerJID are the phones' user JIDs.
func (s *sim) ownJID() string  { return s.own.JID().String() }
func (s *sim) peerJID() string { return s.peer.JID().String() }

// storeKind is one storage adapter under test.
type storeKind struct {
	name string
	// redis starts a server for the test when the adapter needs one.
	redis bool
}

var storeKinds = []storeKind{{name: "bolt"}, {name: "redis", redis: true}}

// backendEnv is one test's storage: a data dir and, for Redis, a server.
type backendEnv struct {
	kind    storeKind
	dataDir string
	redis   *testenv.Redis
}

func (b backendEnv) redisURL() string {
	if b.redis == nil {
		return ""
	}
	return b.redis.URL()
}

// forEachStore runs fn as one sub-test per storage adapter.
func forEachStore(t *testing.T, fn func(t *testing.T, b backendEnv)) {
	for _, k := range storeKinds {
		t.Run(k.name, func(t *testing.T) { fn(t, newBackend(t, k)) })
	}
}

func newBackend(t testing.TB, k storeKind) backendEnv {
	b := backendEnv{kind: k, dataDir: t.TempDir()}
	if k.redis {
		b.redis = testenv.StartRedis(t)
	}
	return b
}

// nodeConfig is a single-node config on 127.0.0.1:0 pointed at the sim.
func nodeConfig(s *sim, b backendEnv, name string) Config {
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.DataDir = b.dataDir
	cfg.RedisURL = b.redisURL()
	cfg.NodeName = name
	cfg.AdminKey = e2eAdminKey
	cfg.WhatsAppURL = s.srv.URL()
	cfg.WhatsAppRootKey = s.rootKeyHex()
	cfg.ShutdownTimeout = 8 * time.Second
	if e2eDebug {
		cfg.LogLevel = "debug"
	}
	return cfg
}

// logTail keeps the last lines written to it, for failure messages.
type logTail struct {
	mu    sync.Mutex
	buf   []byte
	limit int
}

func (l *logTail) Write(p []byte) (int, error) {
	if e2eDebug {
		_, _ = os.Stderr.Write(p)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	if over := len(l.buf) - l.limit; over > 0 {
		l.buf = append([]byte(nil), l.buf[over:]...)
	}
	return len(p), nil
}

func (l *logTail) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return string(l.buf)
}

// testNode is a node.Main running in the test process.
type testNode struct {
	*Main
	api  *apiClient
	logs *logTail
	stop func() error
}

// startNode opens and runs a Main with cfg; it is stopped at cleanup (and
// its log tail printed if the test failed).
func startNode(t testing.TB, cfg Config) *testNode {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	logs := &logTail{limit: 16 << 10}
	m := New(cfg, NewLogger(cfg, logs))
	m.Out = io.Discard
	ctx, cancel := context.WithCancel(context.Background())
	if err := m.Open(ctx); err != nil {
		cancel()
		t.Fatalf("open node %s: %v\n%s", cfg.NodeName, err, logs)
	}
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	var once sync.Once
	var stopErr error
	stop := func() error {
		once.Do(func() {
			cancel()
			select {
			case stopErr = <-done:
			case <-time.After(20 * time.Second):
				stopErr = fmt.Errorf("node %s: Run did not return within 20s of cancel", cfg.NodeName)
			}
		})
		return stopErr
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("stop node %s: %v", cfg.NodeName, err)
		}
		if t.Failed() {
			t.Logf("log tail of node %s:\n%s", cfg.NodeName, logs)
		}
	})
	return &testNode{Main: m, api: newAPIClient(t, m.URL()), logs: logs, stop: stop}
}

// nodeProc is the real amarula-node binary run by a test.
type nodeProc struct {
	cmd    *exec.Cmd
	logs   *logTail
	url    string
	exited chan struct{}
	state  *os.ProcessState
}

// startNodeBinary runs amarula-node with the AMARULA_* environment env (and
// a fresh listen port), waits until /readyz answers, and kills it at
// cleanup.
func startNodeBinary(t testing.TB, env map[string]string) *nodeProc {
	t.Helper()
	bin := testenv.ProjectBinary(t, "amarula-node", "cmd/node")
	port := testenv.FreePort(t)
	p := &nodeProc{logs: &logTail{limit: 16 << 10}, url: fmt.Sprintf("http://127.0.0.1:%d", port), exited: make(chan struct{})}
	p.cmd = exec.Command(bin)
	p.cmd.Env = []string{"PATH=/usr/bin:/bin", fmt.Sprintf("AMARULA_LISTEN=127.0.0.1:%d", port)}
	for k, v := range env {
		p.cmd.Env = append(p.cmd.Env, k+"="+v)
	}
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start amarula-node: %v", err)
	}
	go func() {
		_ = p.cmd.Wait()
		p.state = p.cmd.ProcessState
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("log tail of amarula-node (%s):\n%s", p.url, p.logs)
		}
	})
	waitFor(t, "amarula-node /readyz", 30*time.Second, func() error {
		select {
		case <-p.exited:
			t.Fatalf("amarula-node exited at start: %v\n%s", p.state, p.logs)
		default:
		}
		resp, err := http.Get(p.url + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	})
	return p
}

// binaryEnv is the environment of the binary for backend b and sim s.
func binaryEnv(s *sim, b backendEnv, name string) map[string]string {
	env := map[string]string{
		"AMARULA_DATA_DIR":          b.dataDir,
		"AMARULA_NODE_NAME":         name,
		"AMARULA_ADMIN_KEY":         e2eAdminKey,
		"AMARULA_WHATSAPP_URL":      s.srv.URL(),
		"AMARULA_WHATSAPP_ROOT_KEY": s.rootKeyHex(),
		"AMARULA_LOG_LEVEL":         "info",
	}
	if b.redis != nil {
		env["AMARULA_REDIS_URL"] = b.redis.URL()
	}
	return env
}

// kill sends SIGKILL to the process (group) and waits for it.
func (p *nodeProc) kill() {
	if p.cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
	}
}

// waitExit waits up to timeout for the process to exit.
func (p *nodeProc) waitExit(timeout time.Duration) (*os.ProcessState, bool) {
	select {
	case <-p.exited:
		return p.state, true
	case <-time.After(timeout):
		return nil, false
	}
}

// waitFor polls check until it returns nil, or fails the test.
func waitFor(t testing.TB, what string, timeout time.Duration, check func() error) {
	t.Helper()
	if err := testenv.WaitFor(timeout, check); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

// httpJSON does one request with an optional bearer key and JSON body,
// checks the status and decodes the answer into out (when not nil).
func httpJSON(t testing.TB, method, u, key string, body any, want int, out any) {
	t.Helper()
	status, raw, _ := httpDo(t, method, u, key, body, nil)
	if status != want {
		t.Fatalf("%s %s: status %d, want %d: %s", method, u, status, want, raw)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("%s %s: decode %T: %v: %s", method, u, out, err, raw)
		}
	}
}

var httpClient = &http.Client{Timeout: 30 * time.Second}

func httpDo(t testing.TB, method, u, key string, body any, hdr map[string]string) (int, []byte, http.Header) {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte: // sent as is (bad-input tests)
		rd = bytes.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read: %v", method, u, err)
	}
	return resp.StatusCode, raw, resp.Header
}

// apiClient talks to one node's HTTP API with the admin key.
type apiClient struct {
	t    testing.TB
	base string
}

func newAPIClient(t testing.TB, base string) *apiClient { return &apiClient{t: t, base: base} }

func (c *apiClient) do(method, path string, body any, hdr map[string]string) (int, []byte, http.Header) {
	c.t.Helper()
	return httpDo(c.t, method, c.base+path, e2eAdminKey, body, hdr)
}

func (c *apiClient) json(method, path string, body any, want int, out any) {
	c.t.Helper()
	httpJSON(c.t, method, c.base+path, e2eAdminKey, body, want, out)
}

// profileJSON is GET /v1/profiles/{id}.
type profileJSON struct {
	ID             string `json:"id"`
	State          string `json:"state"`
	Owner          string `json:"owner"`
	JID            string `json:"jid"`
	LID            string `json:"lid"`
	ConnectedSince *int64 `json:"connected_since"`
	Webhook        *struct {
		URL       string   `json:"url"`
		Events    []string `json:"events"`
		SecretSet bool     `json:"secret_set"`
	} `json:"webhook"`
}

func (c *apiClient) createProfile(id string, webhook map[string]any) profileJSON {
	c.t.Helper()
	body := map[string]any{"id": id}
	if webhook != nil {
		body["webhook"] = webhook
	}
	var p profileJSON
	c.json(http.MethodPost, "/v1/profiles", body, http.StatusCreated, &p)
	if p.ID != id {
		c.t.Fatalf("created profile %+v, want id %s", p, id)
	}
	return p
}

func (c *apiClient) profile(id string) profileJSON {
	c.t.Helper()
	var p profileJSON
	c.json(http.MethodGet, "/v1/profiles/"+id, nil, http.StatusOK, &p)
	return p
}

// waitState polls the profile until its state is want.
func (c *apiClient) waitState(id, want string, timeout time.Duration) profileJSON {
	c.t.Helper()
	var p profileJSON
	waitFor(c.t, "profile "+id+" state "+want, timeout, func() error {
		status, raw, _ := c.do(http.MethodGet, "/v1/profiles/"+id, nil, nil)
		if status != http.StatusOK {
			return fmt.Errorf("status %d: %s", status, raw)
		}
		p = profileJSON{}
		if err := json.Unmarshal(raw, &p); err != nil {
			return err
		}
		if p.State != want {
			return fmt.Errorf("state %q", p.State)
		}
		return nil
	})
	return p
}

// waitQR polls GET /qr until it shows a code.
func (c *apiClient) waitQR(id string) string {
	c.t.Helper()
	var q struct {
		Code      string `json:"code"`
		ExpiresAt int64  `json:"expires_at"`
	}
	waitFor(c.t, "a QR code of "+id, 30*time.Second, func() error {
		status, raw, _ := c.do(http.MethodGet, "/v1/profiles/"+id+"/qr", nil, nil)
		if status != http.StatusOK {
			return fmt.Errorf("status %d: %s", status, raw)
		}
		return json.Unmarshal(raw, &q)
	})
	if q.Code == "" || q.ExpiresAt <= time.Now().Unix() {
		c.t.Fatalf("QR of %s = %+v", id, q)
	}
	return q.Code
}

// pair creates nothing: it links the existing profile id through its QR
// and waits until it is connected with a JID.
func (c *apiClient) pair(s *sim, id string) (device string, p profileJSON) {
	c.t.Helper()
	device = s.link(c.t, c, id)
	p = c.waitState(id, "connected", 30*time.Second)
	if p.JID == "" {
		c.t.Fatalf("connected profile without jid: %+v", p)
	}
	return device, p
}

// sendResult is the 202 answer of POST /messages.
type sendResult struct {
	ID        string `json:"id"`
	Status    string `json:"status"`
	Timestamp int64  `json:"timestamp"`
}

func (c *apiClient) send(id string, body map[string]any) sendResult {
	c.t.Helper()
	var r sendResult
	c.json(http.MethodPost, "/v1/profiles/"+id+"/messages", body, http.StatusAccepted, &r)
	if r.ID == "" || r.Status != "sent" {
		c.t.Fatalf("send %v: answer %+v", body, r)
	}
	return r
}

// message is GET /v1/profiles/{id}/messages/{msgid}; status is 404 when
// it is not stored.
func (c *apiClient) message(id, msgID string) (msgstore.Message, int) {
	c.t.Helper()
	status, raw, _ := c.do(http.MethodGet, "/v1/profiles/"+id+"/messages/"+url.PathEscape(msgID), nil, nil)
	var m msgstore.Message
	if status == http.StatusOK {
		if err := json.Unmarshal(raw, &m); err != nil {
			c.t.Fatalf("decode message: %v: %s", err, raw)
		}
	}
	return m, status
}

// waitMessage waits until msgID is stored and check (optional) accepts it.
func (c *apiClient) waitMessage(id, msgID string, check func(m msgstore.Message) error) msgstore.Message {
	c.t.Helper()
	var m msgstore.Message
	waitFor(c.t, "stored message "+msgID, 20*time.Second, func() error {
		var status int
		if m, status = c.message(id, msgID); status != http.StatusOK {
			return fmt.Errorf("status %d", status)
		}
		if check != nil {
			return check(m)
		}
		return nil
	})
	return m
}

// messages pages through every stored message of the profile (newest
// first) with the largest page size.
func (c *apiClient) messages(id string) []msgstore.Message {
	c.t.Helper()
	return c.messagePages(id, msgstore.MaxLimit)
}

// messagePages pages through every stored message with pages of size.
func (c *apiClient) messagePages(id string, size int) []msgstore.Message {
	c.t.Helper()
	var all []msgstore.Message
	before := ""
	for page := 0; page < 10000; page++ {
		q := url.Values{"limit": {fmt.Sprint(size)}}
		if before != "" {
			q.Set("before", before)
		}
		var out struct {
			Messages []msgstore.Message `json:"messages"`
			Next     string             `json:"next"`
		}
		c.json(http.MethodGet, "/v1/profiles/"+id+"/messages?"+q.Encode(), nil, http.StatusOK, &out)
		all = append(all, out.Messages...)
		if out.Next == "" || len(out.Messages) == 0 {
			return all
		}
		before = out.Next
	}
	c.t.Fatal("messages: more than 10000 pages")
	return nil
}

// event is one entry of the event log (api.md "Events").
type event struct {
	ID      string          `json:"id"`
	Profile string          `json:"profile"`
	Type    string          `json:"type"`
	Time    string          `json:"time"`
	Data    json.RawMessage `json:"data"`
}

// messageID is the "id" of a message.* event's data.
func (e event) messageID() string {
	var d struct {
		ID string `json:"id"`
	}
	_ = json.Unmarshal(e.Data, &d)
	return d.ID
}

// events pages through the profile's event log after cursor ("0": all).
func (c *apiClient) events(id, after string) []event {
	c.t.Helper()
	var all []event
	for page := 0; page < 10000; page++ {
		var out struct {
			Events []event `json:"events"`
			Next   string  `json:"next"`
		}
		c.json(http.MethodGet, "/v1/profiles/"+id+"/events?limit=1000&after="+url.QueryEscape(after), nil, http.StatusOK, &out)
		all = append(all, out.Events...)
		if len(out.Events) == 0 {
			return all
		}
		after = out.Next
	}
	c.t.Fatal("events: more than 10000 pages")
	return nil
}

// lastCursor is the id of the newest event ("0" when none).
func (c *apiClient) lastCursor(id string) string {
	c.t.Helper()
	var out struct {
		Next string `json:"next"`
	}
	c.json(http.MethodGet, "/v1/profiles/"+id+"/events?limit=1&after=now", nil, http.StatusOK, &out)
	return out.Next
}

// countEvents counts events of typ, only those about message msgID when
// msgID is not empty.
func countEvents(evs []event, typ, msgID string) int {
	n := 0
	for _, e := range evs {
		if e.Type == typ && (msgID == "" || e.messageID() == msgID) {
			n++
		}
	}
	return n
}

// waitEvent waits until the log holds an event of typ (about msgID when
// set) matching check, and returns it.
func (c *apiClient) waitEvent(id, typ, msgID string, check func(e event) bool) event {
	c.t.Helper()
	var found event
	waitFor(c.t, "event "+typ+" "+msgID, 20*time.Second, func() error {
		for _, e := range c.events(id, "0") {
			if e.Type == typ && (msgID == "" || e.messageID() == msgID) && (check == nil || check(e)) {
				found = e
				return nil
			}
		}
		return fmt.Errorf("not in the log")
	})
	return found
}

// userJID parses a JID string of the sim.
func userJID(t testing.TB, s string) types.JID {
	t.Helper()
	j, err := types.ParseJID(s)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

// copyDir copies a stopped node's data dir (regular files only).
func copyDir(t testing.TB, src, dst string) {
	t.Helper()
	err := filepath.Walk(src, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if info.IsDir() {
			return os.MkdirAll(target, 0o700)
		}
		if !info.Mode().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, info.Mode().Perm())
	})
	if err != nil {
		t.Fatalf("copy %s: %v", src, err)
	}
}

// containsAll reports the first of want missing from have.
func missing(have map[string]int, want []string) []string {
	var out []string
	for _, w := range want {
		if have[w] == 0 {
			out = append(out, w)
		}
	}
	return out
}
