package node

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/amarula/amarula/wasim"
)

// TestE2EHistorySync1000: after a live message, the phone pushes a
// bootstrap history sync of 1,000 messages, one of them with the live
// message's id. Every history message is stored once, the live one is not
// overwritten, one history.synced summary is logged (no message.received
// per history message, so webhooks are not flooded), and pushing the same
// history again stores nothing.
func TestE2EHistorySync1000(t *testing.T) {
	const total = 1000
	forEachStore(t, func(t *testing.T, b backendEnv) {
		s := startSim(t)
		n := startNode(t, nodeConfig(s, b, "history"))
		c := n.api
		const profile = "archive"
		c.createProfile(profile, nil)
		device, _ := c.pair(s, profile)

		live, err := s.peer.SendText(s.own.JID(), "live message")
		if err != nil {
			t.Fatal(err)
		}
		c.waitMessage(profile, live, nil)
		cursor := c.lastCursor(profile)

		hist := make([]wasim.HistoryMessage, 0, total)
		base := time.Now().Add(-30 * 24 * time.Hour).Unix()
		for i := range total - 1 {
			hist = append(hist, wasim.HistoryMessage{Chat: s.peerJID(), ID: fmt.Sprintf("3AHIST%08d", i), FromMe: i%3 == 0,
				Text: fmt.Sprintf("old %d", i), Timestamp: base + int64(i)*60})
		}
		hist = append(hist, wasim.HistoryMessage{Chat: s.peerJID(), ID: live, Text: "live message, as history", Timestamp: time.Now().Unix()})
		push := func() map[string]int {
			t.Helper()
			start := time.Now()
			if _, err := s.own.SendHistorySync(userJID(t, device), hist); err != nil {
				t.Fatal(err)
			}
			var e event
			waitFor(t, "history.synced", 60*time.Second, func() error {
				for _, ev := range c.events(profile, cursor) {
					if ev.Type == "history.synced" {
						e, cursor = ev, ev.ID
						return nil
					}
				}
				return fmt.Errorf("no history.synced yet")
			})
			var d map[string]any
			if err := json.Unmarshal(e.Data, &d); err != nil {
				t.Fatal(err)
			}
			out := map[string]int{}
			for _, k := range []string{"messages", "stored", "duplicates"} {
				v, _ := d[k].(float64)
				out[k] = int(v)
			}
			t.Logf("history push of %d: %v in %s", total, out, time.Since(start).Round(time.Millisecond))
			return out
		}
		evCursor := cursor
		first := push()
		if first["messages"] != total || first["stored"] != total-1 || first["duplicates"] != 1 {
			t.Fatalf("first history sync: %v, want %d messages, %d stored, 1 duplicate", first, total, total-1)
		}
		if m, _ := c.message(profile, live); m.Text != "live message" || m.HistorySync {
			t.Fatalf("live message overwritten by history: %+v", m)
		}
		all := c.messages(profile)
		seen := map[string]int{}
		for _, m := range all {
			seen[m.ID]++
		}
		dups := 0
		for _, k := range seen {
			if k > 1 {
				dups++
			}
		}
		if len(all) != total || len(seen) != total || dups != 0 {
			t.Fatalf("listed %d messages, %d ids, %d listed twice; want %d", len(all), len(seen), dups, total)
		}
		second := push()
		if second["stored"] != 0 || second["duplicates"] != total {
			t.Fatalf("second identical history sync: %v, want 0 stored, %d duplicates", second, total)
		}
		if again := c.messages(profile); len(again) != total {
			t.Fatalf("after the second push: %d messages", len(again))
		}
		evs := c.events(profile, evCursor)
		if got := countEvents(evs, "history.synced", ""); got != 2 {
			t.Fatalf("%d history.synced events for 2 pushes", got)
		}
		if got := countEvents(evs, "message.received", ""); got != 0 {
			t.Fatalf("history produced %d message.received events", got)
		}
		if got := countEvents(evs, "media.stored", ""); got != 0 {
			t.Fatalf("history of texts produced %d media events", got)
		}
		t.Logf("1,000-message history after a live message with the same id: %d stored once, live kept, %d events (2 history.synced, 0 message.received), second push 0 stored / %d duplicates",
			total-1, len(evs), second["duplicates"])
	})
}
