package dashboard

// A minimal Chrome DevTools Protocol client for the browser test: launch
// Debian's chromium headless, attach to one page over the browser's
// WebSocket (flattened sessions), send commands, collect JavaScript
// exceptions and CSP violations.

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/amarula/amarula/internal/testenv"
)

type cdpMessage struct {
	ID        int64           `json:"id,omitempty"`
	SessionID string          `json:"sessionId,omitempty"`
	Method    string          `json:"method,omitempty"`
	Params    json.RawMessage `json:"params,omitempty"`
	Result    json.RawMessage `json:"result,omitempty"`
	Error     *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error,omitempty"`
}

type browser struct {
	t       *testing.T
	conn    *websocket.Conn
	session string

	mu       sync.Mutex
	nextID   int64
	pending  map[int64]chan cdpMessage
	problems []string // JS exceptions and CSP violations seen on the page

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
}

// startBrowser launches chromium headless with a fresh profile and attaches
// to a new blank page of width×height CSS pixels.
func startBrowser(t *testing.T, bin string, width, height int) *browser {
	t.Helper()
	profile := t.TempDir()
	args := []string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-extensions", "--disable-default-apps", "--no-first-run", "--no-default-browser-check",
		"--metrics-recording-only", "--mute-audio", "--hide-scrollbars",
		"--user-data-dir=" + profile,
		"--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
		fmt.Sprintf("--window-size=%d,%d", width, height),
		"about:blank",
	}
	proc := testenv.StartProcess(t, "chromium", bin, args, profile)

	// Chromium writes the port it picked and the browser target's path.
	var port, path string
	err := testenv.WaitFor(60*time.Second, func() error {
		if proc.Exited() {
			return errors.New("chromium exited")
		}
		b, err := os.ReadFile(filepath.Join(profile, "DevToolsActivePort"))
		if err != nil {
			return err
		}
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		if len(lines) != 2 {
			return fmt.Errorf("DevToolsActivePort: %q", b)
		}
		port, path = lines[0], lines[1]
		return nil
	})
	if err != nil {
		t.Fatalf("chromium did not start its DevTools endpoint: %v\n%s", err, proc.Output())
	}

	ctx, cancel := context.WithCancel(context.Background())
	conn, _, err := websocket.Dial(ctx, "ws://127.0.0.1:"+port+path, nil)
	if err != nil {
		cancel()
		t.Fatalf("dial DevTools: %v", err)
	}
	conn.SetReadLimit(64 << 20) // screenshots arrive base64-encoded
	b := &browser{t: t, conn: conn, pending: map[int64]chan cdpMessage{}, ctx: ctx, cancel: cancel, done: make(chan struct{})}
	go b.readLoop()
	t.Cleanup(b.close)

	var target struct {
		TargetID string `json:"targetId"`
	}
	b.call("", "Target.createTarget", map[string]any{"url": "about:blank"}, &target)
	var attached struct {
		SessionID string `json:"sessionId"`
	}
	b.call("", "Target.attachToTarget", map[string]any{"targetId": target.TargetID, "flatten": true}, &attached)
	b.session = attached.SessionID
	b.do("Page.enable", nil, nil)
	b.do("Runtime.enable", nil, nil)
	b.do("Log.enable", nil, nil)
	b.do("Emulation.setDeviceMetricsOverride", map[string]any{"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}, nil)
	return b
}

func (b *browser) close() {
	b.cancel()
	_ = b.conn.Close(websocket.StatusNormalClosure, "")
	<-b.done
}

func (b *browser) readLoop() {
	defer close(b.done)
	for {
		_, data, err := b.conn.Read(b.ctx)
		if err != nil {
			b.mu.Lock()
			for id, ch := range b.pending {
				close(ch)
				delete(b.pending, id)
			}
			b.mu.Unlock()
			return
		}
		var m cdpMessage
		if json.Unmarshal(data, &m) != nil {
			continue
		}
		if m.ID != 0 {
			b.mu.Lock()
			ch := b.pending[m.ID]
			delete(b.pending, m.ID)
			b.mu.Unlock()
			if ch != nil {
				ch <- m
			}
			continue
		}
		b.event(m)
	}
}

// event records what must fail the test: uncaught exceptions and CSP
// violations (reported as console errors mentioning the policy).
func (b *browser) event(m cdpMessage) {
	var problem string
	switch m.Method {
	case "Runtime.exceptionThrown":
		var p struct {
			ExceptionDetails struct {
				Text      string `json:"text"`
				Exception struct {
					Description string `json:"description"`
				} `json:"exception"`
			} `json:"exceptionDetails"`
		}
		_ = json.Unmarshal(m.Params, &p)
		problem = "uncaught exception: " + p.ExceptionDetails.Text + " " + p.ExceptionDetails.Exception.Description
	case "Log.entryAdded", "Runtime.consoleAPICalled":
		s := string(m.Params)
		if strings.Contains(s, "Content Security Policy") || strings.Contains(s, "Content-Security-Policy") {
			problem = "CSP violation: " + s
		}
	}
	if problem != "" {
		b.mu.Lock()
		b.problems = append(b.problems, problem)
		b.mu.Unlock()
	}
}

// call sends a command on session ("" for the browser) and decodes its
// result into out (may be nil). Errors fail the test.
func (b *browser) call(session, method string, params any, out any) {
	b.t.Helper()
	if err := b.try(session, method, params, out); err != nil {
		b.t.Fatalf("%s: %v", method, err)
	}
}

func (b *browser) try(session, method string, params any, out any) error {
	b.mu.Lock()
	b.nextID++
	id := b.nextID
	ch := make(chan cdpMessage, 1)
	b.pending[id] = ch
	b.mu.Unlock()
	raw, err := json.Marshal(params)
	if err != nil {
		return err
	}
	if params == nil {
		raw = nil
	}
	msg, _ := json.Marshal(cdpMessage{ID: id, SessionID: session, Method: method, Params: raw})
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	if err := b.conn.Write(ctx, websocket.MessageText, msg); err != nil {
		return err
	}
	select {
	case m, ok := <-ch:
		if !ok {
			return errors.New("connection closed")
		}
		if m.Error != nil {
			return fmt.Errorf("%d %s", m.Error.Code, m.Error.Message)
		}
		if out != nil {
			return json.Unmarshal(m.Result, out)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("no answer: %w", ctx.Err())
	}
}

// do sends a command to the page.
func (b *browser) do(method string, params any, out any) {
	b.t.Helper()
	b.call(b.session, method, params, out)
}

// eval evaluates a JavaScript expression in the page (promises awaited) and
// decodes its value into out.
func (b *browser) evalErr(expr string, out any) error {
	var r struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		ExceptionDetails *struct {
			Text      string `json:"text"`
			Exception struct {
				Description string `json:"description"`
			} `json:"exception"`
		} `json:"exceptionDetails"`
	}
	if err := b.try(b.session, "Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true, "awaitPromise": true}, &r); err != nil {
		return err
	}
	if r.ExceptionDetails != nil {
		return fmt.Errorf("%s %s", r.ExceptionDetails.Text, r.ExceptionDetails.Exception.Description)
	}
	if out != nil && len(r.Result.Value) > 0 {
		return json.Unmarshal(r.Result.Value, out)
	}
	return nil
}

func (b *browser) eval(expr string, out any) {
	b.t.Helper()
	if err := b.evalErr(expr, out); err != nil {
		b.t.Fatalf("eval %s: %v", expr, err)
	}
}

func (b *browser) evalString(expr string) string {
	b.t.Helper()
	var s string
	b.eval(expr, &s)
	return s
}

// waitFor polls a boolean expression until it is true; on timeout it fails
// with what the page shows.
func (b *browser) waitFor(what, expr string) {
	b.t.Helper()
	var last error
	err := testenv.WaitFor(45*time.Second, func() error {
		var ok bool
		if last = b.evalErr(expr, &ok); last != nil {
			return last
		}
		if !ok {
			return errors.New("not yet")
		}
		return nil
	})
	if err != nil {
		var text string
		_ = b.evalErr("document.body ? document.body.innerText : ''", &text)
		b.t.Fatalf("waiting for %s (%s): %v\npage text:\n%s", what, expr, err, text)
	}
}

func (b *browser) navigate(url string) {
	b.t.Helper()
	b.do("Page.navigate", map[string]any{"url": url}, nil)
	b.waitFor("page load of "+url, "document.readyState === 'complete' && location.href.startsWith("+jsString(strings.SplitN(url, "#", 2)[0])+")")
}

// typeInto focuses the element and types text as keyboard input would.
func (b *browser) typeInto(selector, text string) {
	b.t.Helper()
	b.eval("(() => { const el = document.querySelector("+jsString(selector)+"); el.focus(); el.select && el.select(); return true })()", nil)
	b.do("Input.insertText", map[string]any{"text": text}, nil)
}

func (b *browser) click(selector string) {
	b.t.Helper()
	b.eval("(() => { document.querySelector("+jsString(selector)+").click(); return true })()", nil)
}

// screenshot captures the viewport as PNG.
func (b *browser) screenshot() []byte {
	b.t.Helper()
	var r struct {
		Data string `json:"data"`
	}
	b.do("Page.captureScreenshot", map[string]any{"format": "png"}, &r)
	png, err := base64.StdEncoding.DecodeString(r.Data)
	if err != nil {
		b.t.Fatalf("screenshot: %v", err)
	}
	return png
}

// pageProblems returns the exceptions and CSP violations seen so far.
func (b *browser) pageProblems() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.problems...)
}

func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
