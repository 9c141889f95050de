package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestE2ECrashWhileSending runs the real binary, sends texts through the
// API with an Idempotency-Key each, kills the node with SIGKILL mid-way and
// retries every key after the restart: each key answers one message id
// (the first answer's, where there was one), the store and the event log
// hold each sent message once, and the phone receives every one.
func TestE2ECrashWhileSending(t *testing.T) {
	const (
		total   = 60
		killAt  = 20
		profile = "sender"
	)
	forEachStore(t, func(t *testing.T, b backendEnv) {
		s := startSim(t)
		env := binaryEnv(s, b, "sendcrash")
		p := startNodeBinary(t, env)
		c := newAPIClient(t, p.url)
		c.createProfile(profile, nil)
		c.pair(s, profile)

		type answer struct {
			id  string
			err error
		}
		answers := make([]answer, total)
		progress := make(chan int, total)
		done := make(chan struct{})
		go func() {
			defer close(done)
			for i := range total {
				st, raw, err := postRaw(p.url+"/v1/profiles/"+profile+"/messages", fmt.Sprintf("send-crash-%03d", i),
					fmt.Sprintf(`{"to":%q,"text":"api %03d"}`, s.peerJID(), i))
				switch {
				case err != nil:
					answers[i].err = err
				case st != http.StatusAccepted:
					answers[i].err = fmt.Errorf("status %d: %s", st, raw)
				default:
					answers[i].id = raw
				}
				progress <- i + 1
				if err != nil {
					return // the node is gone
				}
			}
		}()
		waitFor(t, fmt.Sprintf("%d sends", killAt), 30*time.Second, func() error {
			if n := len(progress); n < killAt {
				return fmt.Errorf("%d sent", n)
			}
			return nil
		})
		p.kill()
		<-done
		sentBefore := 0
		for _, a := range answers {
			if a.id != "" {
				sentBefore++
			}
		}

		p = startNodeBinary(t, env)
		c = newAPIClient(t, p.url)
		c.waitState(profile, "connected", 30*time.Second)
		ids := map[string]int{}
		changed := 0
		for i := range total {
			key := fmt.Sprintf("send-crash-%03d", i)
			var r sendResult
			status, raw, _ := c.do(http.MethodPost, "/v1/profiles/"+profile+"/messages",
				map[string]any{"to": s.peerJID(), "text": fmt.Sprintf("api %03d", i)}, map[string]string{"Idempotency-Key": key})
			if status != http.StatusAccepted || json.Unmarshal(raw, &r) != nil || r.ID == "" {
				t.Fatalf("retry of %s after the restart: %d %s", key, status, raw)
			}
			if first := answers[i].id; first != "" && first != r.ID {
				changed++
				t.Errorf("key %s answered %s before the crash and %s after", key, first, r.ID)
			}
			ids[r.ID]++
		}
		if len(ids) != total {
			t.Fatalf("%d keys answered %d distinct ids", total, len(ids))
		}
		var phoneCopies map[string]int
		waitFor(t, "the phone to receive every message", 30*time.Second, func() error {
			phoneCopies = map[string]int{}
			for _, m := range s.received(t, peerNumber, 0) {
				phoneCopies[m.ID]++
			}
			for id := range ids {
				if phoneCopies[id] == 0 {
					return fmt.Errorf("%s not received", id)
				}
			}
			return nil
		})
		dupAtPhone := 0
		for id := range ids {
			dupAtPhone += phoneCopies[id] - 1
		}
		msgs := c.messages(profile)
		stored := map[string]int{}
		for _, m := range msgs {
			if m.FromMe {
				stored[m.ID]++
			}
		}
		evs := c.events(profile, "0")
		for id := range ids {
			if stored[id] != 1 || countEvents(evs, "message.sent", id) != 1 {
				t.Fatalf("message %s: stored %d times, message.sent %d times", id, stored[id], countEvents(evs, "message.sent", id))
			}
		}
		t.Logf("kill -9 after %d answered sends (send %d interrupted); after restart %d keys → %d distinct ids, %d changed, stored and announced once each; phone got all, %d same-id re-sends",
			sentBefore, len(progress), total, len(ids), changed, dupAtPhone)
	})
}

// postRaw posts body with the admin key and an Idempotency-Key and returns
// the message id of a 202 (the body otherwise). A transport error (the node
// died) is returned, not fatal: it runs outside the test goroutine.
func postRaw(u, key, body string) (int, string, error) {
	req, err := http.NewRequest(http.MethodPost, u, strings.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Authorization", "Bearer "+e2eAdminKey)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", key)
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, "", err
	}
	if resp.StatusCode != http.StatusAccepted {
		return resp.StatusCode, string(raw), nil
	}
	var r sendResult
	if err := json.Unmarshal(raw, &r); err != nil || r.ID == "" {
		return resp.StatusCode, string(raw), errors.Join(errors.New("bad answer"), err)
	}
	return resp.StatusCode, r.ID, nil
}
