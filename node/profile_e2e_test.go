package node

import (
	"context"
	"net/http"
	"strings"
	"testing"

	goredis "github.com/redis/go-redis/v9"
)

// TestE2EDelete: DELETE logs the device out on WhatsApp and wipes
// everything of the profile (Redis: no key but the fence is left): a
// profile created again under the same id starts empty and pairs anew.
func TestE2EDelete(t *testing.T) {
	const id = "alice"
	forEachStore(t, func(t *testing.T, b backendEnv) {
		s := startSim(t)
		n := startNode(t, nodeConfig(s, b, "n1"))
		c := n.api
		c.createProfile(id, map[string]any{"url": "http://127.0.0.1:1/hook", "secret": "s"})
		device, _ := c.pair(s, id)
		in := s.send(t, peerNumber, map[string]any{"to": s.ownJID(), "text": "kept until delete"})
		c.waitMessage(id, in, nil)
		c.json(http.MethodPost, "/v1/profiles/"+id+"/keys", nil, http.StatusCreated, nil)

		if st, raw, _ := c.do(http.MethodDelete, "/v1/profiles/"+id, nil, nil); st != http.StatusNoContent {
			t.Fatalf("DELETE: %d %s", st, raw)
		}
		if d := s.device(t, device); !d.Removed || d.Connected {
			t.Fatalf("DELETE did not log the device out on WhatsApp: %+v", d)
		}
		if st, _, _ := c.do(http.MethodGet, "/v1/profiles/"+id, nil, nil); st != http.StatusNotFound {
			t.Fatalf("GET after DELETE: %d", st)
		}
		if b.redis != nil {
			if left := redisKeysOf(t, b, id); len(left) != 1 || !strings.HasSuffix(left[0], ":fence") {
				t.Fatalf("Redis keys of %s left after DELETE: %v (only the fence may stay)", id, left)
			}
		}
		c.createProfile(id, nil)
		var keys struct {
			Keys []any `json:"keys"`
		}
		c.json(http.MethodGet, "/v1/profiles/"+id+"/keys", nil, http.StatusOK, &keys)
		if m, e := len(c.messages(id)), c.events(id, "0"); m != 0 || len(e) != countEvents(e, "session.qr", "") || len(keys.Keys) != 0 {
			t.Fatalf("re-created profile inherits %d messages, %d events, %d keys", m, len(e), len(keys.Keys))
		}
		if _, st := c.message(id, in); st != http.StatusNotFound {
			t.Fatalf("message of the deleted profile still served: %d", st)
		}
		c.waitQR(id)
		device2, _ := c.pair(s, id)
		if device2 == device {
			t.Fatalf("re-created profile paired as the deleted device %s", device)
		}
	})
}

// redisKeysOf lists the Redis keys of a profile.
func redisKeysOf(t testing.TB, b backendEnv, profile string) []string {
	t.Helper()
	rc := goredis.NewClient(&goredis.Options{Addr: b.redis.Addr})
	defer rc.Close()
	keys, err := rc.Keys(context.Background(), "amarula:{p:"+profile+"}:*").Result()
	if err != nil {
		t.Fatal(err)
	}
	return keys
}
