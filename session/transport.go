package session

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"go.mau.fi/whatsmeow"
)

// loopbackHTTPClient returns an http.Client that sends every request, for
// any host and port, to the simulator at addr over plain TCP: with
// DialTLSContext returning a plain connection, the transport treats it as
// already secured, so "wss://web.whatsapp.com/ws/chat" and media "https"
// requests go out as plain HTTP/1.1 to the simulator (protocol notes §1.2,
// option A). whatsmeow must get it through all three setters: pre-login,
// websocket and media.
func loopbackHTTPClient(addr string) *http.Client {
	dial := func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{Timeout: 10 * time.Second}).DialContext(ctx, "tcp", addr)
	}
	return &http.Client{Transport: &http.Transport{
		DialContext:         dial,
		DialTLSContext:      dial,
		ForceAttemptHTTP2:   false,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     30 * time.Second,
	}}
}

// simulatorAddr extracts host:port from an AMARULA_WHATSAPP_URL value such
// as "ws://127.0.0.1:9800/ws/chat" or "http://127.0.0.1:9800".
func simulatorAddr(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("whatsapp url %q: %w", raw, err)
	}
	switch u.Scheme {
	case "ws", "http":
	default:
		return "", fmt.Errorf("whatsapp url %q: scheme must be ws:// or http:// (the simulator speaks plain HTTP)", raw)
	}
	if u.Host == "" || u.Port() == "" {
		return "", fmt.Errorf("whatsapp url %q: want host:port", raw)
	}
	return u.Host, nil
}

// ParseRootKey decodes a simulator root public key given as 64 hex digits
// (AMARULA_WHATSAPP_ROOT_KEY).
func ParseRootKey(s string) ([32]byte, error) {
	var k [32]byte
	b, err := hex.DecodeString(strings.TrimSpace(s))
	if err != nil || len(b) != 32 {
		return k, errors.New("whatsapp root key must be 64 hex digits (32 bytes)")
	}
	copy(k[:], b)
	return k, nil
}

var rootKey struct {
	mu  sync.Mutex
	set bool
	key [32]byte
}

// errRootKeyConflict is returned when two sessions of one process want
// different simulator roots: whatsmeow.WACertPubKey is a process global.
var errRootKeyConflict = errors.New("session: a different whatsapp root key is already in use in this process (whatsmeow.WACertPubKey is global)")

// useRootKey installs key as the certificate root whatsmeow trusts. It is
// set once per process, before any client of this package connects;
// asking for another key later is an error rather than a silent switch
// under running clients.
func useRootKey(key [32]byte) error {
	rootKey.mu.Lock()
	defer rootKey.mu.Unlock()
	if rootKey.set {
		if rootKey.key != key {
			return errRootKeyConflict
		}
		return nil
	}
	whatsmeow.WACertPubKey = key
	rootKey.key, rootKey.set = key, true
	return nil
}
