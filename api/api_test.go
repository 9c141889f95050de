package api_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"image/png"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/amarula/amarula/api"
	"github.com/amarula/amarula/msgstore"
	"github.com/amarula/amarula/session"
	"github.com/amarula/amarula/storage"
	"github.com/amarula/amarula/webhook"
)

// TestAuthMatrix proves who may call what: no key and wrong keys are 401,
// the admin key does everything, a profile key acts on its own profile only
// (403 elsewhere and on admin-only endpoints).
func TestAuthMatrix(t *testing.T) {
	e := newEnv(t)
	e.createProfile("alice")
	e.createProfile("bob")
	aliceKey := e.createKey("alice")
	bobKey := e.createKey("bob")
	forged := "amk_alice." + strings.Repeat("A", 43)

	type call struct{ method, path, body string }
	profileCalls := []call{
		{"GET", "/v1/profiles/alice", ""},
		{"PATCH", "/v1/profiles/alice", `{}`},
		{"GET", "/v1/profiles/alice/qr", ""},
		{"POST", "/v1/profiles/alice/pair-phone", `{"phone":"+15551234567"}`},
		{"POST", "/v1/profiles/alice/connect", ""},
		{"POST", "/v1/profiles/alice/stop", ""},
		{"POST", "/v1/profiles/alice/messages", `{"to":"+15551234567","text":"hi"}`},
		{"GET", "/v1/profiles/alice/messages", ""},
		{"GET", "/v1/profiles/alice/events", ""},
		{"GET", "/v1/profiles/alice/webhook/dead", ""},
	}
	adminCalls := []call{
		{"GET", "/v1/profiles", ""},
		{"POST", "/v1/profiles", `{"id":"carol"}`},
		{"POST", "/v1/profiles/alice/keys", ""},
		{"GET", "/v1/profiles/alice/keys", ""},
	}
	okStatus := map[string]int{"POST /v1/profiles": 201, "POST /v1/profiles/alice/keys": 201,
		"POST /v1/profiles/alice/messages": 202, "POST /v1/profiles/alice/connect": 202}
	want := func(c call) int {
		if s, ok := okStatus[c.method+" "+c.path]; ok {
			return s
		}
		return 200
	}
	for _, c := range profileCalls {
		for _, tc := range []struct {
			who, key string
			status   int
		}{
			{"none", "", 401}, {"garbage", "nope", 401}, {"forged", forged, 401},
			{"admin", adminKey, want(c)}, {"own key", aliceKey, want(c)}, {"other key", bobKey, 403},
		} {
			t.Run(c.method+" "+c.path+" as "+tc.who, func(t *testing.T) {
				r := e.do(c.method, c.path, tc.key, c.body)
				if r.status != tc.status {
					t.Fatalf("got %s, want %d", r, tc.status)
				}
				if tc.status >= 400 {
					code := errorCode(t, r)
					if tc.status == 401 && (code != "unauthorized" || r.header.Get("WWW-Authenticate") == "") {
						t.Errorf("401 answer: code %q, WWW-Authenticate %q", code, r.header.Get("WWW-Authenticate"))
					}
					if tc.status == 403 && code != "forbidden" {
						t.Errorf("403 answer: code %q", code)
					}
				}
			})
		}
	}
	for _, c := range adminCalls {
		for _, tc := range []struct {
			who, key string
			status   int
		}{
			{"none", "", 401}, {"own key", aliceKey, 403}, {"other key", bobKey, 403}, {"admin", adminKey, want(c)},
		} {
			t.Run(c.method+" "+c.path+" as "+tc.who, func(t *testing.T) {
				if r := e.do(c.method, c.path, tc.key, c.body); r.status != tc.status {
					t.Fatalf("got %s, want %d", r, tc.status)
				}
			})
		}
	}
	t.Run("scheme must be Bearer", func(t *testing.T) {
		r := e.do("GET", "/v1/profiles", "", "", "Authorization", "Basic "+adminKey)
		if r.status != 401 {
			t.Fatalf("got %s", r)
		}
	})
	t.Run("public endpoints", func(t *testing.T) {
		for _, p := range []string{"/healthz", "/readyz", "/metrics", "/v1/openapi.json"} {
			if r := e.do("GET", p, "", ""); r.status != 200 {
				t.Errorf("GET %s without key: %s", p, r)
			}
		}
	})
}

// TestKeys proves a key is shown once, only its SHA-256 is stored, and
// revoking it or deleting the profile makes it invalid.
func TestKeys(t *testing.T) {
	e := newEnv(t)
	e.createProfile("alice")
	var created struct {
		ID, Key, Name string
		CreatedAt     int64 `json:"created_at"`
	}
	e.must(201, &created, "POST", "/v1/profiles/alice/keys", adminKey, `{"name":"crm"}`)
	if !strings.HasPrefix(created.Key, api.KeyPrefix+"alice.") || len(created.Key) < 40 || created.Name != "crm" || created.CreatedAt == 0 {
		t.Fatalf("created key: %+v", created)
	}
	kvs, err := e.store.Scan(context.Background(), "alice", api.NSAPIKeys, "")
	if err != nil || len(kvs) != 1 {
		t.Fatalf("stored keys: %v %v", kvs, err)
	}
	sum := sha256.Sum256([]byte(created.Key))
	if kvs[0].Key != hex.EncodeToString(sum[:]) || strings.Contains(string(kvs[0].Value), created.Key) {
		t.Fatalf("stored %q=%s: want only the SHA-256 of the key", kvs[0].Key, kvs[0].Value)
	}
	r := e.must(200, nil, "GET", "/v1/profiles/alice/keys", adminKey, "")
	if strings.Contains(string(r.body), created.Key) || !strings.Contains(string(r.body), created.ID) {
		t.Fatalf("key list %s must name the key id, never the key", r.body)
	}
	e.must(200, nil, "GET", "/v1/profiles/alice", created.Key, "")
	e.must(204, nil, "DELETE", "/v1/profiles/alice/keys/"+created.ID, adminKey, "")
	if r := e.do("GET", "/v1/profiles/alice", created.Key, ""); r.status != 401 {
		t.Fatalf("revoked key: %s", r)
	}
	if r := e.do("DELETE", "/v1/profiles/alice/keys/"+created.ID, adminKey, ""); r.status != 404 || errorCode(t, r) != "key_not_found" {
		t.Fatalf("deleting twice: %s", r)
	}
}

// TestErrorShapes sends malformed and invalid requests to every kind of
// endpoint and checks status, error code and shape, and that nothing was
// half-done (no profile created, no message sent).
func TestErrorShapes(t *testing.T) {
	e := newEnv(t, func(c *api.Config) { c.MaxBodyBytes = 512; c.MaxSendBodyBytes = 2048 })
	e.createProfile("alice")
	e.sessions.paired["alice"] = true
	big := `{"id":"` + strings.Repeat("a", 600) + `"}`
	bigText := `{"to":"+15551234567","text":"` + strings.Repeat("x", 3000) + `"}`
	tests := []struct {
		name, method, path, body string
		headers                  []string
		status                   int
		code                     string
	}{
		{"malformed json", "POST", "/v1/profiles", `{"id":`, nil, 400, "invalid_json"},
		{"syntax error", "POST", "/v1/profiles", `{"id" "x"}`, nil, 400, "invalid_json"},
		{"empty body", "POST", "/v1/profiles", ``, nil, 400, "invalid_json"},
		{"array body", "POST", "/v1/profiles", `[]`, nil, 400, "invalid_json"},
		{"trailing data", "POST", "/v1/profiles", `{"id":"x1"} {"id":"x2"}`, nil, 400, "invalid_json"},
		{"unknown field", "POST", "/v1/profiles", `{"id":"x1","colour":"red"}`, nil, 400, "unknown_field"},
		{"wrong type", "POST", "/v1/profiles", `{"id":42}`, nil, 400, "invalid_field"},
		{"missing id", "POST", "/v1/profiles", `{}`, nil, 400, "invalid_profile_id"},
		{"bad id in body", "POST", "/v1/profiles", `{"id":"../etc"}`, nil, 400, "invalid_profile_id"},
		{"uppercase id in body", "POST", "/v1/profiles", `{"id":"Alice"}`, nil, 400, "invalid_profile_id"},
		{"bad webhook url", "POST", "/v1/profiles", `{"id":"x1","webhook":{"url":"ftp://x"}}`, nil, 400, "invalid_webhook"},
		{"bad webhook pattern", "POST", "/v1/profiles", `{"id":"x1","webhook":{"url":"http://x","events":["MESSAGE/*"]}}`, nil, 400, "invalid_webhook"},
		{"unknown webhook field", "POST", "/v1/profiles", `{"id":"x1","webhook":{"url":"http://x","retries":3}}`, nil, 400, "unknown_field"},
		{"body too large", "POST", "/v1/profiles", big, nil, 413, "body_too_large"},
		{"exists", "POST", "/v1/profiles", `{"id":"alice"}`, nil, 409, "profile_exists"},
		{"reserved id", "POST", "/v1/profiles", `{"id":"amarula-catalog"}`, nil, 400, "invalid_profile_id"},
		{"unknown profile", "GET", "/v1/profiles/zed", ``, nil, 404, "profile_not_found"},
		{"unknown profile send", "POST", "/v1/profiles/zed/messages", `{"to":"+15551234567","text":"x"}`, nil, 404, "profile_not_found"},
		{"unknown route", "GET", "/v1/nothing", ``, nil, 404, "not_found"},
		{"unknown sub-route", "GET", "/v1/profiles/alice/nothing", ``, nil, 404, "not_found"},
		{"wrong method", "PUT", "/v1/profiles/alice", `{}`, nil, 405, "method_not_allowed"},
		{"already paired", "GET", "/v1/profiles/alice/qr", ``, nil, 409, "already_paired"},
		{"bad phone", "POST", "/v1/profiles/alice/pair-phone", `{"phone":"call me"}`, nil, 400, "invalid_phone"},
		{"send no to", "POST", "/v1/profiles/alice/messages", `{"text":"x"}`, nil, 400, "invalid_message"},
		{"send bad to", "POST", "/v1/profiles/alice/messages", `{"to":"bob","text":"x"}`, nil, 400, "invalid_message"},
		{"send nothing", "POST", "/v1/profiles/alice/messages", `{"to":"+15551234567"}`, nil, 400, "invalid_message"},
		{"send two kinds", "POST", "/v1/profiles/alice/messages", `{"to":"+15551234567","text":"x","revoke":{"target_id":"A"}}`, nil, 400, "invalid_message"},
		{"send media url and data", "POST", "/v1/profiles/alice/messages", `{"to":"+15551234567","media":{"kind":"image","url":"http://x/a.jpg","data":"AAAA"}}`, nil, 400, "invalid_message"},
		{"send media bad kind", "POST", "/v1/profiles/alice/messages", `{"to":"+15551234567","media":{"kind":"hologram","url":"http://x/a"}}`, nil, 400, "invalid_message"},
		{"send bad base64", "POST", "/v1/profiles/alice/messages", `{"to":"+15551234567","media":{"kind":"image","data":"!!!"}}`, nil, 400, "invalid_json"},
		{"send wrong type", "POST", "/v1/profiles/alice/messages", `{"to":15551234567,"text":"x"}`, nil, 400, "invalid_field"},
		{"send nested wrong type", "POST", "/v1/profiles/alice/messages", `{"to":"+15551234567","edit":{"target_id":1,"text":"x"}}`, nil, 400, "invalid_field"},
		{"send unknown field", "POST", "/v1/profiles/alice/messages", `{"to":"+15551234567","text":"x","priority":1}`, nil, 400, "unknown_field"},
		{"send too large", "POST", "/v1/profiles/alice/messages", bigText, nil, 413, "body_too_large"},
		{"reply_to on revoke", "POST", "/v1/profiles/alice/messages", `{"to":"+15551234567","revoke":{"target_id":"A"},"reply_to":"B"}`, nil, 400, "invalid_message"},
		{"idempotency key too long", "POST", "/v1/profiles/alice/messages", `{"to":"+15551234567","text":"x"}`, []string{"Idempotency-Key", strings.Repeat("k", 300)}, 400, "invalid_idempotency_key"},
		{"message limit", "GET", "/v1/profiles/alice/messages?limit=0", ``, nil, 400, "invalid_limit"},
		{"message limit nan", "GET", "/v1/profiles/alice/messages?limit=ten", ``, nil, 400, "invalid_limit"},
		{"message before", "GET", "/v1/profiles/alice/messages?before=yesterday", ``, nil, 400, "invalid_before"},
		{"unknown message", "GET", "/v1/profiles/alice/messages/NOPE", ``, nil, 404, "message_not_found"},
		{"event limit", "GET", "/v1/profiles/alice/events?limit=5000", ``, nil, 400, "invalid_limit"},
		{"event cursor", "GET", "/v1/profiles/alice/events?after=banana", ``, nil, 400, "invalid_cursor"},
		{"ws cursor", "GET", "/v1/profiles/alice/events/ws?after=banana", ``, nil, 400, "invalid_cursor"},
		{"patch unknown field", "PATCH", "/v1/profiles/alice", `{"webhook":{"uri":"http://x"}}`, nil, 400, "unknown_field"},
		{"patch needs url", "PATCH", "/v1/profiles/alice", `{"webhook":{"events":["*"]}}`, nil, 400, "invalid_webhook"},
		{"patch wrong type", "PATCH", "/v1/profiles/alice", `{"webhook":{"url":7}}`, nil, 400, "invalid_field"},
		{"patch webhook not object", "PATCH", "/v1/profiles/alice", `{"webhook":"http://x"}`, nil, 400, "invalid_field"},
		{"stop with junk body", "POST", "/v1/profiles/alice/stop", `{"force":true}`, nil, 400, "unknown_field"},
		{"redeliver without webhook", "POST", "/v1/profiles/alice/webhook/redeliver", ``, nil, 409, "no_webhook"},
		{"move", "POST", "/v1/profiles/alice/move", `{"node":"n2"}`, nil, 501, "not_implemented"},
		{"media", "GET", "/v1/profiles/alice/media/ABC", ``, nil, 501, "not_implemented"},
		{"cluster", "GET", "/v1/cluster", ``, nil, 501, "not_implemented"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do(tc.method, tc.path, adminKey, tc.body, tc.headers...)
			if r.status != tc.status {
				t.Fatalf("got %s, want %d", r, tc.status)
			}
			if code := errorCode(t, r); code != tc.code {
				t.Fatalf("code %q, want %q (%s)", code, tc.code, r.body)
			}
		})
	}
	if n := e.sessions.sendCount(); n != 0 {
		t.Errorf("%d messages were sent by invalid requests", n)
	}
	if ps, _ := e.catalog.List(context.Background()); len(ps) != 1 {
		t.Errorf("invalid requests created profiles: %v", ps)
	}
	if r := e.do("PUT", "/v1/profiles/alice", adminKey, ""); r.header.Get("Allow") == "" {
		t.Errorf("405 without Allow header")
	}
}

// TestInvalidProfileIDs proves a bad id in the path is a 400 before auth,
// routing or storage, whatever escaping is used.
func TestInvalidProfileIDs(t *testing.T) {
	e := newEnv(t)
	e.createProfile("alice")
	bad := []string{
		"..%2fetc", "..%2F..%2Fetc", "%2e%2e", "..", "Alice", "%41lice", "al%00ice", "a%2fb", "-alice", "_x",
		strings.Repeat("a", 64), "al%20ice", "alice%0a", "ali.ce", "\u00e4lice",
	}
	for _, id := range bad {
		for _, suffix := range []string{"", "/messages", "/events", "/keys", "/events/ws"} {
			for _, key := range []string{"", adminKey} {
				path := "/v1/profiles/" + id + suffix
				t.Run(fmt.Sprintf("%s key=%v", path, key != ""), func(t *testing.T) {
					r := e.do("GET", path, key, "")
					if r.status != 400 || errorCode(t, r) != "invalid_profile_id" {
						t.Fatalf("got %s", r)
					}
				})
			}
		}
	}
	// 63 characters is the longest valid id.
	long := strings.Repeat("a", 63)
	e.must(201, nil, "POST", "/v1/profiles", adminKey, `{"id":"`+long+`"}`)
	e.must(200, nil, "GET", "/v1/profiles/"+long, adminKey, "")
}

// TestProfiles walks the profile lifecycle: create with a webhook (secret
// never shown), get, list, patch, stop, connect, QR, phone pairing, delete.
func TestProfiles(t *testing.T) {
	e := newEnv(t)
	var created map[string]any
	r := e.must(201, &created, "POST", "/v1/profiles", adminKey,
		`{"id":"alice","webhook":{"url":"https://example.test/hook","secret":"s3cret-value","events":["message.*"]}}`)
	if strings.Contains(string(r.body), "s3cret-value") {
		t.Fatalf("create answer shows the secret: %s", r.body)
	}
	if created["id"] != "alice" || created["state"] != "unassigned" {
		t.Fatalf("created: %s", r.body)
	}
	wh := created["webhook"].(map[string]any)
	if wh["url"] != "https://example.test/hook" || wh["secret_set"] != true {
		t.Fatalf("webhook view: %v", wh)
	}
	e.createProfile("bob")
	e.sessions.state["alice"] = "connected"

	var list struct {
		Profiles []map[string]any `json:"profiles"`
	}
	e.must(200, &list, "GET", "/v1/profiles", adminKey, "")
	if len(list.Profiles) != 2 || list.Profiles[0]["id"] != "alice" || list.Profiles[1]["id"] != "bob" {
		t.Fatalf("list: %v", list)
	}
	for _, f := range []string{"id", "state", "owner", "jid", "lid", "push_name", "connected_since"} {
		if _, ok := list.Profiles[0][f]; !ok {
			t.Errorf("list entry lacks %q: %v", f, list.Profiles[0])
		}
	}
	if list.Profiles[0]["state"] != "connected" || list.Profiles[0]["connected_since"] != float64(1700000000) || list.Profiles[1]["connected_since"] != nil {
		t.Errorf("list states: %v", list.Profiles)
	}

	// PATCH changes only what it names; null removes the webhook.
	var got map[string]any
	e.must(200, &got, "PATCH", "/v1/profiles/alice", adminKey, `{"webhook":{"events":["session.*","message.sent"]}}`)
	p, _ := e.catalog.Get(context.Background(), "alice")
	if p.Webhook == nil || p.Webhook.Secret != "s3cret-value" || p.Webhook.URL != "https://example.test/hook" || len(p.Webhook.Events) != 2 {
		t.Fatalf("after patch: %+v", p.Webhook)
	}
	e.must(200, nil, "PATCH", "/v1/profiles/alice", adminKey, `{"webhook":null}`)
	if p, _ := e.catalog.Get(context.Background(), "alice"); p.Webhook != nil {
		t.Fatalf("webhook not removed: %+v", p.Webhook)
	}
	e.must(200, nil, "PATCH", "/v1/profiles/alice", adminKey, `{"webhook":{"url":"http://example.test/new"}}`)
	if p, _ := e.catalog.Get(context.Background(), "alice"); p.Webhook == nil || p.Webhook.URL != "http://example.test/new" {
		t.Fatalf("webhook not set: %+v", p.Webhook)
	}

	var qr struct {
		Code      string `json:"code"`
		ExpiresAt int64  `json:"expires_at"`
	}
	e.must(200, &qr, "GET", "/v1/profiles/alice/qr", adminKey, "")
	if qr.Code != "2@qr-code-of-alice" || qr.ExpiresAt != 1700000060 {
		t.Fatalf("qr: %+v", qr)
	}
	r = e.must(200, nil, "GET", "/v1/profiles/alice/qr", adminKey, "", "Accept", "image/png")
	if r.header.Get("Content-Type") != "image/png" {
		t.Fatalf("qr as png: %v", r.header)
	}
	img, err := png.Decode(bytes.NewReader(r.body))
	if err != nil || img.Bounds().Dx() < 21*8 {
		t.Fatalf("qr png: %v %v", img.Bounds(), err)
	}
	r = e.must(200, nil, "GET", "/v1/profiles/alice/qr", adminKey, "", "Accept", "application/json, image/png;q=0.5")
	if r.header.Get("Content-Type") != "application/json" {
		t.Fatalf("json preferred: %v", r.header)
	}
	var pair map[string]string
	e.must(200, &pair, "POST", "/v1/profiles/alice/pair-phone", adminKey, `{"phone":"+15551234567"}`)
	if pair["code"] != "ABCD-EFGH" {
		t.Fatalf("pair: %v", pair)
	}
	e.must(200, &got, "POST", "/v1/profiles/alice/stop", adminKey, "")
	if got["state"] != "stopped" {
		t.Fatalf("after stop: %v", got)
	}
	e.must(202, &got, "POST", "/v1/profiles/alice/connect", adminKey, "")
	if got["state"] != "connecting" {
		t.Fatalf("after connect: %v", got)
	}

	key := e.createKey("alice")
	e.must(204, nil, "DELETE", "/v1/profiles/alice", key, "")
	// The fake session layer wipes nothing: the API itself makes sure the
	// profile's keys die with it, even if the id is created again.
	e.createProfile("alice")
	if r := e.do("GET", "/v1/profiles/alice", key, ""); r.status != 401 {
		t.Fatalf("key of a deleted profile: %s", r)
	}
	e.must(204, nil, "DELETE", "/v1/profiles/alice", adminKey, "")
	if len(e.sessions.deleted) != 2 || e.sessions.deleted[0] != "alice" {
		t.Fatalf("session delete calls: %v", e.sessions.deleted)
	}
	if r := e.do("GET", "/v1/profiles/alice", adminKey, ""); r.status != 404 {
		t.Fatalf("after delete: %s", r)
	}
}

// TestIdempotentSend proves that a retried send with the same
// Idempotency-Key returns the first answer without sending again, also
// concurrently and across an API restart over the same storage, and that a
// failed send is not recorded.
func TestIdempotentSend(t *testing.T) {
	st := newStore(t)
	e := newEnvWithStore(t, st)
	e.createProfile("alice")
	body := `{"to":"+15551234567","text":"hello"}`
	var first, again sendAnswer
	r1 := e.must(202, &first, "POST", "/v1/profiles/alice/messages", adminKey, body, "Idempotency-Key", "order-1")
	r2 := e.must(202, &again, "POST", "/v1/profiles/alice/messages", adminKey, body, "Idempotency-Key", "order-1")
	if first.ID == "" || first != again || first.Status != "sent" {
		t.Fatalf("first %+v, retry %+v", first, again)
	}
	if r1.header.Get(api.IdempotencyReplayed) != "" || r2.header.Get(api.IdempotencyReplayed) != "true" {
		t.Errorf("replay header: first %q, retry %q", r1.header.Get(api.IdempotencyReplayed), r2.header.Get(api.IdempotencyReplayed))
	}
	if n := e.sessions.sendCount(); n != 1 {
		t.Fatalf("sent %d times, want 1", n)
	}
	if k := e.sessions.sends[0].IdempotencyKey; k != "order-1" {
		t.Fatalf("Sessions.Send got idempotency key %q", k)
	}

	// Concurrent retries of a new key: one send.
	var wg sync.WaitGroup
	ids := make([]string, 8)
	for i := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var res sendAnswer
			r := e.do("POST", "/v1/profiles/alice/messages", adminKey, body, "Idempotency-Key", "order-2")
			if r.status == 202 && json.Unmarshal(r.body, &res) == nil {
				ids[i] = res.ID
			}
		}()
	}
	wg.Wait()
	for _, id := range ids {
		if id == "" || id != ids[0] {
			t.Fatalf("concurrent retries answered %v", ids)
		}
	}
	if n := e.sessions.sendCount(); n != 2 {
		t.Fatalf("sent %d times, want 2", n)
	}

	// A failed send is not recorded: the retry sends.
	e.sessions.sendErr = fmt.Errorf("whatsapp: %w", api.ErrUnavailable)
	if r := e.do("POST", "/v1/profiles/alice/messages", adminKey, body, "Idempotency-Key", "order-3"); r.status != 503 || errorCode(t, r) != "unavailable" {
		t.Fatalf("failed send: %s", r)
	}
	e.sessions.sendErr = nil
	e.must(202, nil, "POST", "/v1/profiles/alice/messages", adminKey, body, "Idempotency-Key", "order-3")
	if n := e.sessions.sendCount(); n != 3 {
		t.Fatalf("sent %d times, want 3", n)
	}

	// Without a key every request sends.
	e.must(202, nil, "POST", "/v1/profiles/alice/messages", adminKey, body)
	e.must(202, nil, "POST", "/v1/profiles/alice/messages", adminKey, body)
	if n := e.sessions.sendCount(); n != 5 {
		t.Fatalf("sent %d times, want 5", n)
	}

	// A new API over the same storage still knows order-1 within the TTL;
	// after it the key sends again and expired records are pruned.
	e2 := newEnvWithStore(t, st)
	var replay sendAnswer
	e2.must(202, &replay, "POST", "/v1/profiles/alice/messages", adminKey, body, "Idempotency-Key", "order-1")
	if replay != first || e2.sessions.sendCount() != 0 {
		t.Fatalf("after restart: %+v (sent %d)", replay, e2.sessions.sendCount())
	}
	later := time.Now().Add(25 * time.Hour)
	e3 := newEnvWithStore(t, st, func(c *api.Config) { c.Now = func() time.Time { return later } })
	var fresh sendAnswer
	e3.must(202, &fresh, "POST", "/v1/profiles/alice/messages", adminKey, body, "Idempotency-Key", "order-1")
	if e3.sessions.sendCount() != 1 {
		t.Fatalf("expired key did not send (sent %d)", e3.sessions.sendCount())
	}
	kvs, err := st.Scan(context.Background(), "alice", api.NSIdempotency, "")
	if err != nil || len(kvs) != 1 || kvs[0].Key != "order-1" {
		t.Fatalf("after pruning: %v %v", kvs, err)
	}
}

// TestSendKinds proves each documented body shape reaches Sessions.Send
// intact.
func TestSendKinds(t *testing.T) {
	e := newEnv(t)
	e.createProfile("alice")
	bodies := []string{
		`{"to":"+15551234567","text":"hi","reply_to":"3EB0AA"}`,
		`{"to":"15551234567@s.whatsapp.net","media":{"kind":"image","url":"https://x.test/a.jpg","mime":"image/jpeg","caption":"c"}}`,
		`{"to":"120363000000000000@g.us","media":{"kind":"document","data":"aGVsbG8=","mime":"application/pdf","file_name":"a.pdf"}}`,
		`{"to":"+15551234567","reaction":{"target_id":"3EB0AA","emoji":"👍"}}`,
		`{"to":"+15551234567","reaction":{"target_id":"3EB0AA","emoji":""}}`,
		`{"to":"+15551234567","edit":{"target_id":"3EB0AA","text":"fixed"}}`,
		`{"to":"+15551234567","revoke":{"target_id":"3EB0AA"}}`,
	}
	for _, b := range bodies {
		e.must(202, nil, "POST", "/v1/profiles/alice/messages", adminKey, b)
	}
	s := e.sessions.sends
	media := func(i int) *api.SendMedia { m, _ := s[i].Media.(*api.SendMedia); return m }
	if len(s) != len(bodies) || s[0].ReplyTo != "3EB0AA" || media(1).Caption != "c" || string(media(2).Data) != "hello" ||
		s[3].Reaction.Emoji != "👍" || s[5].Edit.Text != "fixed" || s[6].Revoke.TargetID != "3EB0AA" {
		t.Fatalf("sends: %+v", s)
	}
}

// TestSessionErrors proves the session package's errors reach the client
// with their documented status and code.
func TestSessionErrors(t *testing.T) {
	e := newEnv(t)
	e.createProfile("alice")
	for _, tc := range []struct {
		err    error
		status int
		code   string
	}{
		{fmt.Errorf("send: %w", session.ErrNotConnected), 409, "not_connected"},
		{session.ErrNotRunning, 503, "not_running"},
		{fmt.Errorf("%w: recipient", session.ErrInvalidRequest), 400, "invalid_message"},
		{&session.NotImplementedError{Feature: "media sending"}, 501, "not_implemented"},
		{fmt.Errorf("x: %w", storage.ErrFenced), 503, "not_owner"},
		{api.ErrRateLimited, 429, "rate_limited"},
		{errors.New("boom with internals"), 500, "internal"},
	} {
		e.sessions.sendErr = tc.err
		r := e.do("POST", "/v1/profiles/alice/messages", adminKey, `{"to":"+15551234567","text":"x"}`)
		if r.status != tc.status || errorCode(t, r) != tc.code {
			t.Errorf("%v: got %s, want %d %s", tc.err, r, tc.status, tc.code)
		}
		if tc.status == 500 && strings.Contains(string(r.body), "internals") {
			t.Errorf("500 answer leaks the error: %s", r.body)
		}
	}
	e.sessions.sendErr = nil
	// A profile without a running session is listed as unassigned, and
	// an owner from Owners is shown.
	var p map[string]any
	e.must(200, &p, "GET", "/v1/profiles/alice", adminKey, "")
	if p["state"] != "unassigned" || p["owner"] != "" {
		t.Fatalf("no session: %v", p)
	}
	e.sessions.state["alice"] = "connected"
	e.must(200, &p, "GET", "/v1/profiles/alice", adminKey, "")
	if p["state"] != "connected" || p["owner"] != "n1" {
		t.Fatalf("running: %v", p)
	}
}

// TestMessages proves paging newest first with next (and with a Unix
// "before"), the chat filter and single-message reads, over the real
// message store.
func TestMessages(t *testing.T) {
	e := newEnv(t)
	e.createProfile("alice")
	e.createProfile("bob")
	ctx := context.Background()
	for i := 1; i <= 7; i++ {
		chat := "a@s.whatsapp.net"
		if i%2 == 0 {
			chat = "b@s.whatsapp.net"
		}
		m := msgstore.Message{ID: fmt.Sprintf("M%d", i), Chat: chat, From: chat,
			Timestamp: int64(1000 + i), Type: msgstore.TypeText, Text: fmt.Sprint("text ", i)}
		if _, err := e.msgs.Put(ctx, "alice", 0, m, msgstore.Received); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.msgs.Put(ctx, "bob", 0, msgstore.Message{ID: "X", Chat: "c@s.whatsapp.net", From: "c@s.whatsapp.net", Timestamp: 5000, Type: msgstore.TypeText, Text: "bob's"}, msgstore.Received); err != nil {
		t.Fatal(err)
	}
	edit := msgstore.Message{ID: "E1", Chat: "a@s.whatsapp.net", From: "a@s.whatsapp.net", Timestamp: 2000, Type: msgstore.TypeEdit, TargetID: "M3", Text: "text 3 fixed"}
	if _, err := e.msgs.Put(ctx, "alice", 0, edit, msgstore.Received); err != nil {
		t.Fatal(err)
	}

	type page struct {
		Messages []msgstore.Message `json:"messages"`
		Next     string             `json:"next"`
	}
	var ids []string
	path := "/v1/profiles/alice/messages?limit=3"
	for i := 0; ; i++ {
		var p page
		e.must(200, &p, "GET", path, adminKey, "")
		for _, m := range p.Messages {
			ids = append(ids, m.ID)
		}
		if p.Next == "" {
			break
		}
		if i > 5 {
			t.Fatal("paging does not end")
		}
		path = "/v1/profiles/alice/messages?limit=3&before=" + p.Next
	}
	if strings.Join(ids, ",") != "M7,M6,M5,M4,M3,M2,M1" {
		t.Fatalf("pages: %v", ids)
	}
	var p page
	e.must(200, &p, "GET", "/v1/profiles/alice/messages?chat=b@s.whatsapp.net", adminKey, "")
	if len(p.Messages) != 3 || p.Messages[0].ID != "M6" || p.Next != "" {
		t.Fatalf("chat filter: %+v", p)
	}
	e.must(200, &p, "GET", "/v1/profiles/alice/messages?before=1004", adminKey, "")
	if len(p.Messages) != 3 || p.Messages[0].ID != "M3" || !p.Messages[0].Edited {
		t.Fatalf("before=1004: %+v", p)
	}
	r := e.must(200, nil, "GET", "/v1/profiles/alice/messages?chat=nobody@s.whatsapp.net", adminKey, "")
	if !strings.Contains(string(r.body), `"messages":[]`) {
		t.Fatalf("empty page must be an empty array: %s", r.body)
	}
	var m msgstore.Message
	e.must(200, &m, "GET", "/v1/profiles/alice/messages/M3", adminKey, "")
	if m.ID != "M3" || m.Text != "text 3 fixed" || !m.Edited || len(m.History) != 1 || m.History[0].Text != "text 3" {
		t.Fatalf("get edited message: %+v", m)
	}
	if r := e.do("GET", "/v1/profiles/alice/messages/X", adminKey, ""); r.status != 404 || errorCode(t, r) != "message_not_found" {
		t.Fatalf("another profile's message: %s", r)
	}
	if r := e.do("GET", "/v1/profiles/alice/messages?before=12.", adminKey, ""); r.status != 400 || errorCode(t, r) != "invalid_before" {
		t.Fatalf("bad cursor: %s", r)
	}
}

type eventJSON struct {
	ID      string          `json:"id"`
	Profile string          `json:"profile"`
	Type    string          `json:"type"`
	Time    string          `json:"time"`
	Data    json.RawMessage `json:"data"`
}

type eventPage struct {
	Events []eventJSON `json:"events"`
	Next   string      `json:"next"`
}

// TestEventsPaging proves after=0 / absent reads from the start, a cursor
// continues exactly after it, after=now only returns later events, and
// every event has the documented shape.
func TestEventsPaging(t *testing.T) {
	e := newEnv(t)
	e.createProfile("alice")
	e.createProfile("bob")
	cursors := appendEvents(t, e.store, "alice", 1, 5)
	appendEvents(t, e.store, "bob", 100, 2)

	var all []eventJSON
	path := "/v1/profiles/alice/events?after=0&limit=2"
	for i := 0; i < 10; i++ {
		var p eventPage
		e.must(200, &p, "GET", path, adminKey, "")
		if len(p.Events) == 0 {
			if p.Next != cursors[len(cursors)-1] {
				t.Fatalf("empty page next %q, want the last cursor", p.Next)
			}
			break
		}
		all = append(all, p.Events...)
		path = "/v1/profiles/alice/events?limit=2&after=" + p.Next
	}
	if len(all) != 5 {
		t.Fatalf("paged %d events, want 5", len(all))
	}
	for i, ev := range all {
		if ev.ID != cursors[i] || ev.Profile != "alice" || ev.Type != msgstore.EventMessageReceived {
			t.Errorf("event %d: %+v", i, ev)
		}
		if _, err := time.Parse(time.RFC3339, ev.Time); err != nil {
			t.Errorf("time %q is not RFC 3339", ev.Time)
		}
		var d map[string]string
		if json.Unmarshal(ev.Data, &d) != nil || d["id"] != fmt.Sprintf("m%d", i+1) {
			t.Errorf("data %s", ev.Data)
		}
	}
	var p eventPage
	e.must(200, &p, "GET", "/v1/profiles/alice/events", adminKey, "")
	if len(p.Events) != 5 {
		t.Fatalf("no after: %d events", len(p.Events))
	}
	e.must(200, &p, "GET", "/v1/profiles/alice/events?after=now", adminKey, "")
	if len(p.Events) != 0 || p.Next != cursors[4] {
		t.Fatalf("after=now: %+v", p)
	}
	later := appendEvents(t, e.store, "alice", 6, 1)
	e.must(200, &p, "GET", "/v1/profiles/alice/events?after="+p.Next, adminKey, "")
	if len(p.Events) != 1 || p.Events[0].ID != later[0] {
		t.Fatalf("after now's next: %+v", p)
	}
	r := e.must(200, nil, "GET", "/v1/profiles/alice/events?after=now", adminKey, "")
	if !strings.Contains(string(r.body), `"events":[]`) {
		t.Fatalf("empty page must be an empty array: %s", r.body)
	}
}

// TestHealthReadyMetrics proves the public endpoints answer and /readyz
// follows Readiness.
func TestHealthReadyMetrics(t *testing.T) {
	e := newEnv(t)
	e.must(200, nil, "GET", "/healthz", "", "")
	e.must(200, nil, "GET", "/readyz", "", "")
	e.ready = errors.New("lease not acquired")
	r := e.must(503, nil, "GET", "/readyz", "", "")
	if errorCode(t, r) != "not_ready" || !strings.Contains(string(r.body), "lease not acquired") {
		t.Fatalf("readyz: %s", r)
	}
	e.must(401, nil, "GET", "/v1/profiles", "", "")
	r = e.must(200, nil, "GET", "/metrics", "", "")
	if !strings.Contains(string(r.body), `amarula_http_requests_total{code="401",route="GET /v1/profiles"} 1`) {
		t.Fatalf("metrics lack the request counter:\n%s", r.body)
	}
	// Without a dashboard the page is a JSON 404; with one, / and /ui/ are
	// handed to it without auth.
	if r := e.do("GET", "/", "", ""); r.status != 404 || errorCode(t, r) != "not_found" {
		t.Fatalf("no dashboard: %s", r)
	}
	e2 := newEnv(t, func(c *api.Config) {
		c.Dashboard = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("dash:" + r.URL.Path)) })
	})
	for _, p := range []string{"/", "/ui/app.js"} {
		if r := e2.must(200, nil, "GET", p, "", ""); string(r.body) != "dash:"+p {
			t.Fatalf("%s: %s", p, r)
		}
	}
	var doc map[string]any
	e.must(200, &doc, "GET", "/v1/openapi.json", "", "")
	if doc["openapi"] == nil {
		t.Fatalf("openapi: %v", doc)
	}
}

// TestNewNeedsAdminKey proves the API refuses to start without an admin key.
func TestNewNeedsAdminKey(t *testing.T) {
	if _, err := api.New(api.Config{}); err == nil {
		t.Fatal("New without AdminKey succeeded")
	}
}

// TestWebhookDeadLettersAPI runs a real deliverer against a failing
// receiver until it parks an event, then lists and redelivers it over HTTP.
func TestWebhookDeadLettersAPI(t *testing.T) {
	e := newEnv(t)
	var fail atomic.Bool
	fail.Store(true)
	var got atomic.Int32
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := webhook.VerifyRequest(r, "hook-secret", 1<<20, time.Minute, time.Now()); err != nil {
			t.Errorf("receiver: %v", err)
		}
		if fail.Load() {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		got.Add(1)
	}))
	defer rcv.Close()
	e.must(201, nil, "POST", "/v1/profiles", adminKey,
		`{"id":"alice","webhook":{"url":"`+rcv.URL+`","secret":"hook-secret","events":["message.*"]}}`)
	key := e.createKey("alice")
	ids := appendEvents(t, e.store, "alice", 1, 1)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- webhook.Run(ctx, webhook.Config{
			Profile: "alice", Log: e.store, KV: e.store,
			Target: func(ctx context.Context) (webhook.Target, error) {
				return webhook.CatalogTarget(e.catalog)(ctx, "alice")
			},
			Backoff: webhook.Backoff{Initial: 5 * time.Millisecond, Max: 10 * time.Millisecond, Budget: 50 * time.Millisecond},
			Logger:  testLogger(t),
		})
	}()
	defer func() { cancel(); <-done }()

	var dead struct {
		Dead []map[string]any `json:"dead"`
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(dead.Dead) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("event was not parked")
		}
		time.Sleep(20 * time.Millisecond)
		e.must(200, &dead, "GET", "/v1/profiles/alice/webhook/dead", key, "")
	}
	d := dead.Dead[0]
	if d["id"] != ids[0] || d["type"] != "message.received" || d["last_status"] != float64(502) || d["parked_at"] == "" {
		t.Fatalf("dead letter %v", d)
	}
	var res webhook.RedeliverResult
	e.must(200, &res, "POST", "/v1/profiles/alice/webhook/redeliver", key, "")
	if res.Failed != 1 || res.Remaining != 1 {
		t.Fatalf("failing redeliver: %+v", res)
	}
	fail.Store(false)
	e.must(200, &res, "POST", "/v1/profiles/alice/webhook/redeliver", key, `{"ids":["`+ids[0]+`"]}`)
	if res.Redelivered != 1 || res.Remaining != 0 || got.Load() != 1 {
		t.Fatalf("redeliver: %+v, received %d", res, got.Load())
	}
	r := e.must(200, nil, "GET", "/v1/profiles/alice/webhook/dead", key, "")
	if strings.TrimSpace(string(r.body)) != `{"dead":[]}` {
		t.Fatalf("dead list after redelivery: %s", r.body)
	}
}

// TestBadInputEveryEndpoint sends malformed JSON, unknown fields, wrong
// types and oversized bodies to every endpoint that takes a body, with a
// valid key, and checks each answers its 4xx and that nothing at all was
// written or done.
func TestBadInputEveryEndpoint(t *testing.T) {
	e := newEnv(t, func(c *api.Config) { c.MaxBodyBytes = 256; c.MaxSendBodyBytes = 256 })
	e.must(201, nil, "POST", "/v1/profiles", adminKey, `{"id":"alice","webhook":{"url":"http://127.0.0.1:1/h"}}`)
	key := e.createKey("alice")
	big := `{"x":"` + strings.Repeat("y", 300) + `"}`
	endpoints := []struct {
		method, path, wrongType string
		admin                   bool
	}{
		{"POST", "/v1/profiles", `{"id":7}`, true},
		{"PATCH", "/v1/profiles/alice", `{"webhook":7}`, false},
		{"POST", "/v1/profiles/alice/pair-phone", `{"phone":15551234567}`, false},
		{"POST", "/v1/profiles/alice/connect", `[]`, false},
		{"POST", "/v1/profiles/alice/stop", `"stop"`, false},
		{"POST", "/v1/profiles/alice/keys", `{"name":["a"]}`, true},
		{"POST", "/v1/profiles/alice/messages", `{"to":["+15551234567"],"text":"x"}`, false},
		{"POST", "/v1/profiles/alice/webhook/redeliver", `{"ids":"all"}`, false},
	}
	snapshot := func() string {
		var b strings.Builder
		ps, _ := e.catalog.List(context.Background())
		for _, p := range ps {
			fmt.Fprintf(&b, "profile %s %+v\n", p.ID, p.Webhook)
		}
		for _, ns := range []string{api.NSAPIKeys, api.NSIdempotency, webhook.NSDead} {
			kvs, _ := e.store.Scan(context.Background(), "alice", ns, "")
			fmt.Fprintf(&b, "%s %d\n", ns, len(kvs))
		}
		e.sessions.mu.Lock()
		fmt.Fprintf(&b, "sends %d calls %v\n", len(e.sessions.sends), e.sessions.calls)
		e.sessions.mu.Unlock()
		return b.String()
	}
	before := snapshot()
	for _, ep := range endpoints {
		k := key
		if ep.admin {
			k = adminKey
		}
		for _, tc := range []struct {
			name, body string
			status     int
			codes      []string
		}{
			{"malformed", `{"a":`, 400, []string{"invalid_json"}},
			{"not json", `hello`, 400, []string{"invalid_json"}},
			{"unknown field", `{"surprise":true}`, 400, []string{"unknown_field"}},
			{"wrong type", ep.wrongType, 400, []string{"invalid_field", "invalid_json"}},
			{"trailing", `{} []`, 400, []string{"invalid_json"}},
			{"oversized", big, 413, []string{"body_too_large"}},
		} {
			t.Run(ep.method+" "+ep.path+" "+tc.name, func(t *testing.T) {
				r := e.do(ep.method, ep.path, k, tc.body)
				if r.status != tc.status {
					t.Fatalf("got %s, want %d", r, tc.status)
				}
				code := errorCode(t, r)
				ok := false
				for _, c := range tc.codes {
					ok = ok || code == c
				}
				if !ok {
					t.Fatalf("code %q, want one of %v (%s)", code, tc.codes, r.body)
				}
			})
		}
		// Wrong keys never reach the body.
		for _, bad := range []string{"", "amk_alice.nope", "amk_bob.nope"} {
			if r := e.do(ep.method, ep.path, bad, `{"a":`); r.status != 401 {
				t.Errorf("%s %s with key %q: %s", ep.method, ep.path, bad, r)
			}
		}
	}
	if after := snapshot(); after != before {
		t.Fatalf("bad requests changed state:\nbefore %s\nafter  %s", before, after)
	}
}

// TestMessagesHideMediaDescriptor: the media key and CDN path, which let
// anyone fetch and decrypt the file, never leave the API (list and get).
func TestMessagesHideMediaDescriptor(t *testing.T) {
	e := newEnv(t)
	e.createProfile("alice")
	m := msgstore.Message{ID: "IMG1", Chat: "a@s.whatsapp.net", From: "a@s.whatsapp.net", Timestamp: 1000, Type: msgstore.TypeMedia,
		Media: &msgstore.Media{Kind: "image", Mime: "image/jpeg", Size: 3, DirectPath: "/v/t62/secret-path", MediaKey: []byte("0123456789abcdef0123456789abcdef"),
			FileEncSHA256: []byte("enc"), FileSHA256: []byte("plain"), State: msgstore.MediaPending}}
	if _, err := e.msgs.Put(context.Background(), "alice", 0, m, msgstore.Received); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/v1/profiles/alice/messages", "/v1/profiles/alice/messages/IMG1"} {
		r := e.must(200, nil, "GET", path, adminKey, "")
		body := string(r.body)
		if !strings.Contains(body, `"image/jpeg"`) {
			t.Fatalf("%s: media descriptor missing entirely: %s", path, body)
		}
		for _, secret := range []string{"media_key", "direct_path", "secret-path", "file_enc_sha256"} {
			if strings.Contains(body, secret) {
				t.Fatalf("%s leaks %s: %s", path, secret, body)
			}
		}
	}
}
