package api_test

import (
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"
)

// TestUnreachableBackendIs503: a backend that refuses connections (Redis
// down) answers 503 unavailable, which a client retries, not 500 internal,
// and the answer does not carry the backend's address.
func TestUnreachableBackendIs503(t *testing.T) {
	e := newEnv(t)
	e.createProfile("alice")
	e.sessions.paired["alice"] = true
	e.sessions.mu.Lock()
	e.sessions.sendErr = fmt.Errorf("msgstore: reserve alice: redis: get alice/msg_idem/k: %w",
		&net.OpError{Op: "dial", Net: "tcp", Addr: &net.TCPAddr{IP: net.IPv4(10, 1, 2, 3), Port: 6379}, Err: syscall.ECONNREFUSED})
	e.sessions.mu.Unlock()
	r := e.do("POST", "/v1/profiles/alice/messages", adminKey, `{"to":"+15551234567","text":"hi"}`)
	if r.status != 503 || errorCode(t, r) != "unavailable" {
		t.Fatalf("got %s, want 503 unavailable", r)
	}
	if strings.Contains(string(r.body), "10.1.2.3") {
		t.Fatalf("answer leaks the backend address: %s", r.body)
	}
}
