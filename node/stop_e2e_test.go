package node

import (
	"fmt"
	"net/http"
	"testing"
	"time"
)

// TestE2EStopConnect: POST /stop closes the connection and keeps it
// closed, also across a node restart (api.md: the profile stays, state
// stopped; design §4: stopped is an operator state), and POST /connect
// resumes it without pairing. It found that connect after stop answered
// 409 owned_elsewhere (the reconciler's grant outlived the stop) and that a
// stop did not survive a restart; both go through the catalogue now.
func TestE2EStopConnect(t *testing.T) {
	const id = "alice"
	forEachStore(t, func(t *testing.T, b backendEnv) {
		s := startSim(t)
		cfg := nodeConfig(s, b, "n1")
		n := startNode(t, cfg)
		c := n.api
		c.createProfile(id, nil)
		device, p := c.pair(s, id)

		var stopped profileJSON
		c.json(http.MethodPost, "/v1/profiles/"+id+"/stop", nil, http.StatusOK, &stopped)
		if stopped.State != "stopped" {
			t.Fatalf("after stop: state %q", stopped.State)
		}
		waitFor(t, "wasim to see the device gone", 10*time.Second, func() error {
			if s.device(t, device).Connected {
				return fmt.Errorf("still connected")
			}
			return nil
		})
		stillStopped := func(what string) {
			t.Helper()
			d0 := s.device(t, device)
			window := time.Now().Add(2 * time.Second)
			for time.Now().Before(window) {
				if st := c.profile(id).State; st != "stopped" {
					t.Fatalf("%s: a stopped profile came back on its own: %s", what, st)
				}
				if d := s.device(t, device); d.ConnectionsTotal != d0.ConnectionsTotal {
					t.Fatalf("%s: a stopped profile reconnected: %+v", what, d)
				}
				time.Sleep(200 * time.Millisecond)
			}
		}
		stillStopped("after stop")

		c.json(http.MethodPost, "/v1/profiles/"+id+"/connect", nil, http.StatusAccepted, nil)
		if again := c.waitState(id, "connected", 30*time.Second); again.JID != p.JID {
			t.Fatalf("connected as %q after stop, was %q", again.JID, p.JID)
		}

		// A stop outlives a restart of the node.
		c.json(http.MethodPost, "/v1/profiles/"+id+"/stop", nil, http.StatusOK, nil)
		if err := n.stop(); err != nil {
			t.Fatal(err)
		}
		n = startNode(t, cfg)
		c = n.api
		stillStopped("after a restart")
		c.json(http.MethodPost, "/v1/profiles/"+id+"/connect", nil, http.StatusAccepted, nil)
		c.waitState(id, "connected", 30*time.Second)
	})
}
