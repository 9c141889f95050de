package node

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// TestE2EBadInput sends malformed, unknown-field, wrong-type, trailing and
// oversized bodies, bad and unknown profile ids and wrong keys to every
// endpoint of a running node with a connected profile: each answers the
// documented 4xx with a JSON error, and nothing is written — no profile,
// webhook, key, message or event changes, and nothing reaches WhatsApp.
func TestE2EBadInput(t *testing.T) {
	forEachStore(t, func(t *testing.T, b backendEnv) {
		s := startSim(t)
		n := startNode(t, nodeConfig(s, b, "n1"))
		c := n.api
		c.createProfile("alice", map[string]any{"url": "http://127.0.0.1:1/hook", "secret": "s", "events": []string{"message.*"}})
		device, _ := c.pair(s, "alice")
		c.createProfile("bob", nil)
		var aliceKey, bobKey struct {
			Key string `json:"key"`
		}
		c.json(http.MethodPost, "/v1/profiles/alice/keys", nil, http.StatusCreated, &aliceKey)
		c.json(http.MethodPost, "/v1/profiles/bob/keys", nil, http.StatusCreated, &bobKey)
		if aliceKey.Key == "" || bobKey.Key == "" {
			t.Fatal("no profile keys issued")
		}
		c.send("alice", map[string]any{"to": s.peerJID(), "text": "before the bad input"})

		snapshot := func() string {
			var sb strings.Builder
			for _, id := range []string{"alice", "bob"} {
				p := c.profile(id)
				wh, _ := json.Marshal(p.Webhook)
				var keys struct {
					Keys []json.RawMessage `json:"keys"`
				}
				c.json(http.MethodGet, "/v1/profiles/"+id+"/keys", nil, http.StatusOK, &keys)
				// QR codes rotate while bob is pairing: not counted.
				evs := c.events(id, "0")
				fmt.Fprintf(&sb, "%s state=%s jid=%s webhook=%s keys=%d messages=%d events=%d\n",
					id, p.State, p.JID, wh, len(keys.Keys), len(c.messages(id)), len(evs)-countEvents(evs, "session.qr", ""))
			}
			var list struct {
				Profiles []profileJSON `json:"profiles"`
			}
			c.json(http.MethodGet, "/v1/profiles", nil, http.StatusOK, &list)
			d := s.device(t, device)
			fmt.Fprintf(&sb, "profiles=%d phone_received=%d connections=%d\n", len(list.Profiles), len(s.received(t, peerNumber, 0)), d.ConnectionsTotal)
			return sb.String()
		}
		c.waitEvent("alice", "message.ack", "", nil)
		before := snapshot()

		// expect checks status and the JSON error shape.
		expect := func(what, method, path, key string, body []byte, status int, codes ...string) {
			t.Helper()
			got, raw, _ := httpDo(t, method, c.base+path, key, body, nil)
			if got != status {
				t.Errorf("%s: %s %s: status %d, want %d: %.200s", what, method, path, got, status, raw)
				return
			}
			var e struct {
				Error struct {
					Code    string `json:"code"`
					Message string `json:"message"`
				} `json:"error"`
			}
			if json.Unmarshal(raw, &e) != nil || e.Error.Code == "" || e.Error.Message == "" {
				t.Errorf("%s: %s %s: not a JSON error: %.200s", what, method, path, raw)
				return
			}
			if len(codes) > 0 && !contains(codes, e.Error.Code) {
				t.Errorf("%s: %s %s: code %q, want one of %v", what, method, path, e.Error.Code, codes)
			}
		}

		const mib = 1 << 20
		oversized := func(limit int) []byte {
			return []byte(`{"to":"` + s.peerJID() + `","text":"` + strings.Repeat("y", limit) + `"}`)
		}
		bodies := []struct {
			method, path, wrongType string
			admin                   bool
			limit                   int
		}{
			{"POST", "/v1/profiles", `{"id":7}`, true, mib},
			{"PATCH", "/v1/profiles/alice", `{"webhook":7}`, false, mib},
			{"POST", "/v1/profiles/alice/pair-phone", `{"phone":15551234567}`, false, mib},
			{"POST", "/v1/profiles/alice/connect", `[]`, false, mib},
			{"POST", "/v1/profiles/alice/stop", `"stop"`, false, mib},
			{"POST", "/v1/profiles/alice/keys", `{"name":["a"]}`, true, mib},
			{"POST", "/v1/profiles/alice/messages", `{"to":["` + peerNumber + `"],"text":"x"}`, false, 32 * mib},
			{"POST", "/v1/profiles/alice/webhook/redeliver", `{"ids":"all"}`, false, mib},
		}
		for _, ep := range bodies {
			key := aliceKey.Key
			if ep.admin {
				key = e2eAdminKey
			}
			for _, tc := range []struct {
				name   string
				body   []byte
				status int
				codes  []string
			}{
				{"malformed", []byte(`{"a":`), 400, []string{"invalid_json"}},
				{"not json", []byte(`hello`), 400, []string{"invalid_json"}},
				{"unknown field", []byte(`{"surprise":true}`), 400, []string{"unknown_field"}},
				{"wrong type", []byte(ep.wrongType), 400, []string{"invalid_field", "invalid_json"}},
				{"trailing data", []byte(`{} []`), 400, []string{"invalid_json"}},
				{"oversized", oversized(ep.limit), 413, []string{"body_too_large"}},
			} {
				expect(tc.name, ep.method, ep.path, key, tc.body, tc.status, tc.codes...)
			}
			for _, bad := range []string{"", "wrong-admin-key-0123456789", aliceKey.Key + "x"} {
				expect("bad key", ep.method, ep.path, bad, []byte(`{"a":`), 401, "unauthorized")
			}
			if !ep.admin {
				expect("other profile's key", ep.method, ep.path, bobKey.Key, []byte(`{}`), 403, "forbidden")
			} else {
				expect("profile key on an admin endpoint", ep.method, ep.path, aliceKey.Key, []byte(`{}`), 403, "forbidden")
			}
		}

		// Sends that parse but make no sense.
		for _, body := range []string{
			`{"to":"` + s.peerJID() + `"}`,
			`{"to":"` + s.peerJID() + `","text":""}`,
			`{"to":"not a jid!","text":"x"}`,
			`{"text":"no recipient"}`,
			`{"to":"` + s.peerJID() + `","text":"x","reaction":{"target_id":"X","emoji":"👍"}}`,
			`{"to":"` + s.peerJID() + `","edit":{"target_id":"","text":"x"}}`,
			`{"to":"` + s.peerJID() + `","revoke":{}}`,
		} {
			expect("invalid send "+body, "POST", "/v1/profiles/alice/messages", aliceKey.Key, []byte(body), 400)
		}

		// Bad and unknown profile ids on every kind of route.
		for _, id := range []string{"..%2fetc", "Alice", "al%20ice", "-alice", strings.Repeat("a", 64), "ali.ce"} {
			for _, rt := range []struct{ method, suffix string }{
				{"GET", ""}, {"PATCH", ""}, {"DELETE", ""}, {"GET", "/qr"}, {"POST", "/connect"}, {"POST", "/messages"},
				{"GET", "/messages"}, {"GET", "/messages/ABC"}, {"GET", "/events"}, {"POST", "/keys"},
			} {
				expect("bad id "+id, rt.method, "/v1/profiles/"+id+rt.suffix, e2eAdminKey, []byte(`{}`), 400, "invalid_profile_id")
			}
		}
		for _, rt := range []struct{ method, suffix string }{
			{"GET", ""}, {"DELETE", ""}, {"GET", "/qr"}, {"POST", "/connect"}, {"GET", "/messages"}, {"GET", "/events"},
		} {
			expect("unknown profile", rt.method, "/v1/profiles/nobody"+rt.suffix, e2eAdminKey, nil, 404)
		}
		expect("unknown message", "GET", "/v1/profiles/alice/messages/NOPE", e2eAdminKey, nil, 404)
		expect("duplicate profile", "POST", "/v1/profiles", e2eAdminKey, []byte(`{"id":"alice"}`), 409, "profile_exists")
		expect("bad cursor", "GET", "/v1/profiles/alice/events?after=%00", e2eAdminKey, nil, 400)
		expect("bad limit", "GET", "/v1/profiles/alice/messages?limit=0", e2eAdminKey, nil, 400)

		if after := snapshot(); after != before {
			t.Fatalf("bad requests changed state:\nbefore %s\nafter  %s", before, after)
		}
		t.Logf("state unchanged after the bad requests:\n%s", before)
	})
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
