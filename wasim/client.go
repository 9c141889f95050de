package wasim

import (
	"encoding/hex"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"go.mau.fi/whatsmeow"
)

// HTTPClient returns an *http.Client that sends every request to the
// simulator at addr (host:port) over plain HTTP, whatever the URL's host
// and scheme: wss://web.whatsapp.com/ws/chat reaches addr's /ws/chat and
// https://mmg.whatsapp.net/... reaches addr's media handlers. Loopback
// URLs pass through unchanged. Install it on a whatsmeow client with
// ConfigureClient (all three setters are needed, notes §1.2).
//
// addr may also be the simulator's websocket URL (ws://127.0.0.1:9800/ws/chat,
// what AMARULA_WHATSAPP_URL carries); its host:port is used.
func HTTPClient(addr string) *http.Client {
	if u, err := url.Parse(addr); err == nil && u.Host != "" && strings.Contains(addr, "://") {
		addr = u.Host
	}
	return &http.Client{Transport: &redirectTransport{addr: addr, base: &http.Transport{
		DialContext:         (&net.Dialer{}).DialContext,
		MaxIdleConnsPerHost: 16,
	}}}
}

// redirectTransport rewrites every request for a non-loopback host to
// http://addr (keeping path, query and the Host header), the recipe of
// testing.md. wss/https become plain ws/http on the simulator's listener.
type redirectTransport struct {
	addr string
	base *http.Transport
}

func (t *redirectTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if isLoopback(r.URL.Hostname()) {
		return t.base.RoundTrip(r)
	}
	r2 := r.Clone(r.Context())
	r2.URL.Scheme = "http"
	r2.URL.Host = t.addr
	if r2.Host == "" {
		r2.Host = r.URL.Host
	}
	return t.base.RoundTrip(r2)
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// ConfigureClient points cli at the simulator at addr: it installs
// HTTPClient(addr) as the pre-login, websocket and media HTTP client.
// Call SetRootKey once per process as well.
func ConfigureClient(cli *whatsmeow.Client, addr string) {
	hc := HTTPClient(addr)
	cli.SetPreLoginHTTPClient(hc)
	cli.SetWebsocketHTTPClient(hc)
	cli.SetMediaHTTPClient(hc)
}

var rootKeyMu sync.Mutex

// SetRootKey sets whatsmeow.WACertPubKey, the root that must sign the
// server's Noise certificate. It is PROCESS-GLOBAL: every whatsmeow client
// in the process then trusts this simulator (and no longer real WhatsApp).
// Call it once (e.g. in TestMain) before any client connects; all
// simulators in one process should share one root (Config.RootPrivateKey).
func SetRootKey(pub [32]byte) {
	rootKeyMu.Lock()
	defer rootKeyMu.Unlock()
	whatsmeow.WACertPubKey = pub
}

// SetRootKeyHex is SetRootKey for the hex form served by GET /admin/root-key.
func SetRootKeyHex(h string) error {
	b, err := hex.DecodeString(h)
	if err != nil || len(b) != 32 {
		return errors.New("wasim: root key must be 64 hex characters")
	}
	SetRootKey([32]byte(b))
	return nil
}
