package msgstore_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"

	"github.com/amarula/amarula/msgstore"
	"github.com/amarula/amarula/storage"
)

const (
	prof  = "alice"
	token = storage.Token(1)
	chatA = "15550001111@s.whatsapp.net"
	chatB = "120363000000000001@g.us"
	bob   = "15550001111@s.whatsapp.net"
	carol = "15550002222@s.whatsapp.net"
)

// eachBackend runs fn against every real storage adapter.
func eachBackend(t *testing.T, fn func(t *testing.T, b backend)) {
	for _, nb := range backends {
		t.Run(nb.name, func(t *testing.T) { fn(t, nb.open(t)) })
	}
}

// backend is what the tests need: msgstore's Backend plus the event log.
type backend interface {
	msgstore.Backend
	Read(ctx context.Context, profile, after string, limit int) ([]storage.Event, error)
	RaiseFence(ctx context.Context, profile string, token storage.Token) error
}

func text(id, chat string, ts int64, body string) msgstore.Message {
	return msgstore.Message{ID: id, Chat: chat, From: bob, Timestamp: ts, Type: msgstore.TypeText, Text: body}
}

func op(id, typ, target string, ts int64) msgstore.Message {
	return msgstore.Message{ID: id, Chat: chatA, From: bob, Timestamp: ts, Type: typ, TargetID: target}
}

func events(t *testing.T, b backend) []storage.Event {
	t.Helper()
	evs, err := b.Read(context.Background(), prof, "0", 1000)
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

func eventTypes(evs []storage.Event) []string {
	out := []string{}
	for _, e := range evs {
		out = append(out, e.Type)
	}
	return out
}

func mustPut(t *testing.T, s *msgstore.Store, m msgstore.Message, o msgstore.Origin) msgstore.Result {
	t.Helper()
	res, err := s.Put(context.Background(), prof, token, m, o)
	if err != nil {
		t.Fatalf("Put %s: %v", m.ID, err)
	}
	return res
}

func mustGet(t *testing.T, s *msgstore.Store, id string) msgstore.Message {
	t.Helper()
	m, err := s.Get(context.Background(), prof, id)
	if err != nil {
		t.Fatalf("Get %s: %v", id, err)
	}
	return m
}

func TestPutDedup(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		s := msgstore.New(b)
		first := mustPut(t, s, text("M1", chatA, 100, "hello"), msgstore.Received)
		if first.Duplicate || first.Event != msgstore.EventMessageReceived || first.Cursor == "" {
			t.Fatalf("first delivery: %+v", first)
		}
		// Redelivery (WhatsApp resends after a missing ack) with other content.
		again := mustPut(t, s, text("M1", chatA, 100, "changed"), msgstore.Received)
		if !again.Duplicate || again.Event != "" {
			t.Fatalf("second delivery not reported as duplicate: %+v", again)
		}
		if got := mustGet(t, s, "M1"); got.Text != "hello" || got.Profile != prof {
			t.Fatalf("stored message changed by duplicate: %+v", got)
		}
		evs := events(t, b)
		if !reflect.DeepEqual(eventTypes(evs), []string{msgstore.EventMessageReceived}) {
			t.Fatalf("events = %v, want one message.received", eventTypes(evs))
		}
		var data msgstore.EventData
		if err := json.Unmarshal(evs[0].Data, &data); err != nil || data.ID != "M1" || data.Text != "hello" || data.Profile != prof {
			t.Fatalf("event data = %s (%v)", evs[0].Data, err)
		}
		page, err := s.List(context.Background(), prof, msgstore.Query{Chat: chatA})
		if err != nil || len(page.Messages) != 1 {
			t.Fatalf("list after duplicate: %d messages, %v", len(page.Messages), err)
		}
	})
}

func TestApplyOps(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		s := msgstore.New(b)
		mustPut(t, s, text("O1", chatA, 100, "helo"), msgstore.Received)

		edit := op("E1", msgstore.TypeEdit, "O1", 110)
		edit.Text = "hello"
		res := mustPut(t, s, edit, msgstore.Received)
		if res.Event != msgstore.EventMessageEdited || res.Target == nil || res.Target.Text != "hello" {
			t.Fatalf("edit result: %+v", res)
		}
		edit2 := op("E2", msgstore.TypeEdit, "O1", 120)
		edit2.Text = "hello!"
		mustPut(t, s, edit2, msgstore.Received)

		got := mustGet(t, s, "O1")
		wantHist := []msgstore.Revision{{Text: "helo", Timestamp: 100}, {Text: "hello", Timestamp: 110}}
		if !got.Edited || got.Text != "hello!" || !reflect.DeepEqual(got.History, wantHist) || got.EditedAt != 120 {
			t.Fatalf("after two edits: %+v", got)
		}

		r1 := op("R1", msgstore.TypeReaction, "O1", 130)
		r1.Reaction = "👍"
		r2 := op("R2", msgstore.TypeReaction, "O1", 131)
		r2.From, r2.Reaction = carol, "❤️"
		r3 := op("R3", msgstore.TypeReaction, "O1", 132)
		r3.Reaction = "😂" // bob changes his reaction
		for _, r := range []msgstore.Message{r1, r2, r3} {
			if res := mustPut(t, s, r, msgstore.Received); res.Event != msgstore.EventMessageReaction {
				t.Fatalf("reaction event %q", res.Event)
			}
		}
		if got := mustGet(t, s, "O1"); !reflect.DeepEqual(got.Reactions, map[string]string{bob: "😂", carol: "❤️"}) {
			t.Fatalf("reactions = %v", got.Reactions)
		}
		r4 := op("R4", msgstore.TypeReaction, "O1", 133) // empty emoji removes bob's
		mustPut(t, s, r4, msgstore.Received)
		if got := mustGet(t, s, "O1"); !reflect.DeepEqual(got.Reactions, map[string]string{carol: "❤️"}) {
			t.Fatalf("reactions after removal = %v", got.Reactions)
		}

		res = mustPut(t, s, op("V1", msgstore.TypeRevoke, "O1", 140), msgstore.Received)
		if res.Event != msgstore.EventMessageRevoked || res.Target == nil || !res.Target.Revoked {
			t.Fatalf("revoke result: %+v", res)
		}
		got = mustGet(t, s, "O1")
		if !got.Revoked || got.Text != "" || got.History != nil {
			t.Fatalf("after revoke: %+v", got)
		}
		// A late edit cannot resurrect a revoked message.
		late := op("E3", msgstore.TypeEdit, "O1", 150)
		late.Text = "zombie"
		mustPut(t, s, late, msgstore.Received)
		if got := mustGet(t, s, "O1"); got.Text != "" || !got.Revoked {
			t.Fatalf("edit after revoke applied: %+v", got)
		}
		// The ops are stored by id but not listed.
		if m := mustGet(t, s, "R2"); m.Type != msgstore.TypeReaction || m.TargetID != "O1" {
			t.Fatalf("op by id: %+v", m)
		}
		page, err := s.List(context.Background(), prof, msgstore.Query{Chat: chatA})
		if err != nil || len(page.Messages) != 1 || page.Messages[0].ID != "O1" {
			t.Fatalf("list shows ops: %+v %v", page.Messages, err)
		}
		want := []string{"message.received", "message.edited", "message.edited", "message.reaction", "message.reaction",
			"message.reaction", "message.reaction", "message.revoked", "message.edited"}
		if got := eventTypes(events(t, b)); !reflect.DeepEqual(got, want) {
			t.Fatalf("events\n got %v\nwant %v", got, want)
		}
	})
}

func TestOpsBeforeOriginal(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		s := msgstore.New(b)
		edit := op("E1", msgstore.TypeEdit, "O1", 120)
		edit.Text = "second"
		res := mustPut(t, s, edit, msgstore.Received)
		if !res.Pending || res.Target != nil || res.Event != msgstore.EventMessageEdited {
			t.Fatalf("early edit: %+v", res)
		}
		react := op("R1", msgstore.TypeReaction, "O1", 125)
		react.Reaction = "🔥"
		mustPut(t, s, react, msgstore.Received)
		// Redelivery of a pending op is still a duplicate.
		if res := mustPut(t, s, react, msgstore.Received); !res.Duplicate {
			t.Fatalf("pending op redelivered: %+v", res)
		}
		res = mustPut(t, s, text("O1", chatA, 100, "first"), msgstore.Received)
		m := res.Message
		if m.Text != "second" || !m.Edited || len(m.History) != 1 || m.History[0].Text != "first" || m.Reactions[bob] != "🔥" {
			t.Fatalf("original after pending ops: %+v", m)
		}
		if got := mustGet(t, s, "O1"); !reflect.DeepEqual(got, m) {
			t.Fatalf("stored %+v\nresult %+v", got, m)
		}
		// The pending list is consumed: a later op applies on top only once.
		if _, err := b.Get(context.Background(), prof, msgstore.NSPending, "O1"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("pending entry left behind: %v", err)
		}
		var data msgstore.EventData
		evs := events(t, b)
		if err := json.Unmarshal(evs[len(evs)-1].Data, &data); err != nil || data.Text != "second" {
			t.Fatalf("message.received data carries the applied state: %s", evs[len(evs)-1].Data)
		}
	})
}

func TestListOrderAndPaging(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		s := msgstore.New(b)
		ctx := context.Background()
		// 25 messages in chat A (two share a timestamp), 5 in chat B.
		for i := 0; i < 25; i++ {
			ts := int64(1000 + i)
			if i == 24 {
				ts = 1023
			}
			mustPut(t, s, text(fmt.Sprintf("A%02d", i), chatA, ts, "x"), msgstore.Received)
		}
		for i := 0; i < 5; i++ {
			mustPut(t, s, text(fmt.Sprintf("B%02d", i), chatB, int64(2000+i), "y"), msgstore.Received)
		}
		var got []string
		cursor := ""
		for pages := 0; ; pages++ {
			if pages > 10 {
				t.Fatal("paging does not end")
			}
			page, err := s.List(ctx, prof, msgstore.Query{Chat: chatA, Limit: 10, Cursor: cursor})
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range page.Messages {
				if m.Chat != chatA {
					t.Fatalf("message of chat %s in chat A list", m.Chat)
				}
				got = append(got, m.ID)
			}
			if page.Next == "" {
				break
			}
			cursor = page.Next
		}
		want := []string{"A24", "A23"} // ts 1023 twice: store order breaks the tie, later first
		for i := 22; i >= 0; i-- {
			want = append(want, fmt.Sprintf("A%02d", i))
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("pages\n got %v\nwant %v", got, want)
		}
		page, err := s.List(ctx, prof, msgstore.Query{Chat: chatA, Before: 1003})
		if err != nil || len(page.Messages) != 3 || page.Messages[0].ID != "A02" || page.Next != "" {
			t.Fatalf("before=1003: %+v %v", page, err)
		}
		all, err := s.List(ctx, prof, msgstore.Query{Limit: 3})
		if err != nil || len(all.Messages) != 3 || all.Messages[0].ID != "B04" || all.Next == "" {
			t.Fatalf("profile-wide: %+v %v", all, err)
		}
		// Same second, ids in the opposite order of arrival: arrival wins.
		mustPut(t, s, text("ZZ", chatB, 3000, "first"), msgstore.Received)
		mustPut(t, s, text("AA", chatB, 3000, "second"), msgstore.Received)
		if p, err := s.List(ctx, prof, msgstore.Query{Chat: chatB, Limit: 2}); err != nil || p.Messages[0].ID != "AA" || p.Messages[1].ID != "ZZ" {
			t.Fatalf("same-second order: %+v %v", p.Messages, err)
		}
		if _, err := s.List(ctx, prof, msgstore.Query{Cursor: "garbage"}); !errors.Is(err, msgstore.ErrInvalid) {
			t.Fatalf("bad cursor: %v", err)
		}
	})
}

func TestAckAndStatus(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		s := msgstore.New(b)
		ctx := context.Background()
		own := text("S1", chatA, 100, "out")
		own.FromMe, own.Status = true, msgstore.StatusSent
		res, err := s.PutSent(ctx, prof, token, own, "idem-1")
		if err != nil || res.Event != msgstore.EventMessageSent {
			t.Fatalf("PutSent: %+v %v", res, err)
		}
		read := msgstore.AckData{ID: "S1", Chat: chatA, From: bob, Status: msgstore.StatusRead, Timestamp: 105}
		delivered := msgstore.AckData{ID: "S1", Chat: chatA, From: bob, Status: msgstore.StatusDelivered, Timestamp: 104}
		unknown := msgstore.AckData{ID: "NOPE", Chat: chatA, Status: msgstore.StatusDelivered, Timestamp: 104}
		if _, err := s.Ack(ctx, prof, token, []msgstore.AckData{read, delivered, unknown}); err != nil {
			t.Fatal(err)
		}
		if got := mustGet(t, s, "S1"); got.Status != msgstore.StatusRead {
			t.Fatalf("status went backwards or not forward: %q", got.Status)
		}
		want := []string{"message.sent", "message.ack", "message.ack", "message.ack"}
		if got := eventTypes(events(t, b)); !reflect.DeepEqual(got, want) {
			t.Fatalf("events %v", got)
		}
		// A receipt can overtake the store write of the send it is about.
		early := msgstore.AckData{ID: "S9", Chat: chatA, From: bob, Status: msgstore.StatusDelivered, Timestamp: 106}
		if _, err := s.Ack(ctx, prof, token, []msgstore.AckData{early}); err != nil {
			t.Fatal(err)
		}
		late := text("S9", chatA, 105, "raced")
		late.FromMe, late.Status = true, msgstore.StatusSent
		if res, err := s.PutSent(ctx, prof, token, late, ""); err != nil || res.Message.Status != msgstore.StatusDelivered {
			t.Fatalf("send stored after its receipt: %+v %v", res.Message, err)
		}
		if got := mustGet(t, s, "S9"); got.Status != msgstore.StatusDelivered {
			t.Fatalf("stored status %q", got.Status)
		}
		// Idempotency: a retried send finds the finished reservation.
		r, created, err := s.Reserve(ctx, prof, token, "idem-1", "OTHER")
		if err != nil || created || r.ID != "S1" || !r.Done {
			t.Fatalf("Reserve after send: %+v created=%v %v", r, created, err)
		}
		r, created, err = s.Reserve(ctx, prof, token, "idem-2", "S2")
		if err != nil || !created || r.ID != "S2" || r.Done {
			t.Fatalf("fresh Reserve: %+v created=%v %v", r, created, err)
		}
	})
}

func TestFencedPutWritesNothing(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		s := msgstore.New(b)
		ctx := context.Background()
		if err := b.RaiseFence(ctx, prof, token+1); err != nil {
			t.Fatal(err)
		}
		_, err := s.Put(ctx, prof, token, text("F1", chatA, 1, "x"), msgstore.Received)
		if !errors.Is(err, storage.ErrFenced) {
			t.Fatalf("Put with old token: %v, want ErrFenced", err)
		}
		if _, err := s.Get(ctx, prof, "F1"); !errors.Is(err, msgstore.ErrNotFound) {
			t.Fatalf("fenced message stored: %v", err)
		}
		if evs := events(t, b); len(evs) != 0 {
			t.Fatalf("fenced put appended %d events", len(evs))
		}
		if _, err := s.Put(ctx, prof, token+1, text("F1", chatA, 1, "x"), msgstore.Received); err != nil {
			t.Fatalf("Put with current token: %v", err)
		}
	})
}

func TestInvalid(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		s := msgstore.New(b)
		for _, m := range []msgstore.Message{
			{Chat: chatA, Type: msgstore.TypeText},
			{ID: string(make([]byte, msgstore.MaxIDLen+1)), Type: msgstore.TypeText},
			{ID: "X", Chat: "a|b", Type: msgstore.TypeText},
			{ID: "X", Chat: chatA, Type: msgstore.TypeReaction},
		} {
			if _, err := s.Put(context.Background(), prof, token, m, msgstore.Received); !errors.Is(err, msgstore.ErrInvalid) {
				t.Fatalf("Put(%+v) = %v, want ErrInvalid", m, err)
			}
		}
		if _, err := s.Get(context.Background(), prof, "missing"); !errors.Is(err, msgstore.ErrNotFound) {
			t.Fatalf("Get missing: %v", err)
		}
	})
}

// TestPutBatch: a history batch larger than one transaction is stored
// deduplicated, with one summary event and no per-message events.
func TestPutBatch(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		s := msgstore.New(b)
		ctx := context.Background()
		mustPut(t, s, text("H0007", chatA, 7, "live"), msgstore.Received)
		var msgs []msgstore.Message
		for i := 0; i < msgstore.BatchSize+20; i++ {
			msgs = append(msgs, text(fmt.Sprintf("H%04d", i), chatA, int64(i), "old"))
		}
		msgs = append(msgs, msgs[3]) // the same id twice in one blob
		stored, dup, err := s.PutBatch(ctx, prof, token, msgs, msgstore.History, msgstore.EventHistorySynced,
			func(stored, dup int) ([]byte, error) { return json.Marshal([]int{stored, dup}) })
		if err != nil || stored != msgstore.BatchSize+19 || dup != 2 {
			t.Fatalf("PutBatch: stored %d dup %d err %v", stored, dup, err)
		}
		evs := events(t, b)
		if got := eventTypes(evs); !reflect.DeepEqual(got, []string{"message.received", "history.synced"}) {
			t.Fatalf("events %v", got)
		}
		if string(evs[1].Data) != fmt.Sprintf("[%d,2]", msgstore.BatchSize+19) {
			t.Fatalf("summary %s", evs[1].Data)
		}
		if m := mustGet(t, s, "H0007"); m.Text != "live" {
			t.Fatalf("history overwrote a live message: %+v", m)
		}
		page, err := s.List(ctx, prof, msgstore.Query{Chat: chatA, Limit: msgstore.MaxLimit})
		if err != nil || len(page.Messages) != msgstore.MaxLimit || page.Next == "" {
			t.Fatalf("list: %d %q %v", len(page.Messages), page.Next, err)
		}
	})
}

// TestHookAndUpdate: a hook records work (a media job) in the transaction
// of a new message only — not for a duplicate or an op —, a failing hook
// stores nothing; UpdateMessage rewrites a stored message atomically with
// the caller's own writes and sees nil for an unknown id.
func TestHookAndUpdate(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		var calls []string
		fail := false
		s := msgstore.New(b, func(tx storage.Tx, m msgstore.Message, origin msgstore.Origin) error {
			if fail {
				return errors.New("job store refused")
			}
			calls = append(calls, m.ID)
			if m.Media != nil && m.Profile == prof && origin == msgstore.Received {
				tx.Put("media_jobs", m.ID, []byte(m.Media.Kind))
			}
			return nil
		})
		img := text("IMG1", chatA, 10, "")
		img.Type, img.Media = msgstore.TypeMedia, &msgstore.Media{Kind: "image", State: msgstore.MediaPending, DirectPath: "/p"}
		mustPut(t, s, img, msgstore.Received)
		mustPut(t, s, img, msgstore.Received) // duplicate: no hook
		r := op("R1", msgstore.TypeReaction, "IMG1", 11)
		r.Reaction = "👍"
		mustPut(t, s, r, msgstore.Received) // op: no hook
		if !reflect.DeepEqual(calls, []string{"IMG1"}) {
			t.Fatalf("hook calls %v", calls)
		}
		if v, err := b.Get(ctx, prof, "media_jobs", "IMG1"); err != nil || string(v) != "image" {
			t.Fatalf("job: %q %v", v, err)
		}
		fail = true
		if _, err := s.Put(ctx, prof, token, text("T2", chatA, 12, "x"), msgstore.Received); err == nil {
			t.Fatal("a failing hook did not abort the put")
		}
		if _, err := s.Get(ctx, prof, "T2"); !errors.Is(err, msgstore.ErrNotFound) {
			t.Fatalf("message stored despite the hook failing: %v", err)
		}
		fail = false

		err := s.UpdateMessage(ctx, prof, token, "IMG1", func(tx storage.Tx, m *msgstore.Message) error {
			if m == nil {
				return errors.New("IMG1 not found")
			}
			m.Media.State, m.Media.ObjectKey = msgstore.MediaStored, "media/alice/IMG1"
			m.Timestamp = 999 // ignored: the indexes would not follow
			tx.Delete("media_jobs", "IMG1")
			tx.Append(msgstore.EventMediaStored, []byte(`{"id":"IMG1"}`))
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		got := mustGet(t, s, "IMG1")
		if got.Media.State != msgstore.MediaStored || got.Media.ObjectKey != "media/alice/IMG1" || got.Timestamp != 10 || got.Reactions[bob] != "👍" {
			t.Fatalf("after update: %+v %+v", got, got.Media)
		}
		if _, err := b.Get(ctx, prof, "media_jobs", "IMG1"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("job left: %v", err)
		}
		var sawNil bool
		if err := s.UpdateMessage(ctx, prof, token, "NOPE", func(tx storage.Tx, m *msgstore.Message) error { sawNil = m == nil; return nil }); err != nil || !sawNil {
			t.Fatalf("unknown id: nil=%v %v", sawNil, err)
		}
	})
}

// TestConcurrentWritersAcrossInstances: reactions stored through two Store
// instances (the session's and the media worker's, say) while a third
// rewrites the original with UpdateMessage: no update is lost.
func TestConcurrentWritersAcrossInstances(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		s1, s2 := msgstore.New(b), msgstore.New(b)
		mustPut(t, s1, text("O", chatA, 1, "x"), msgstore.Received)
		const n = 15
		var wg sync.WaitGroup
		errs := make(chan error, 3*n)
		for i := 0; i < n; i++ {
			for j, s := range []*msgstore.Store{s1, s2} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					r := op(fmt.Sprintf("R%d-%d", j, i), msgstore.TypeReaction, "O", int64(2+i))
					r.From, r.Reaction = fmt.Sprintf("%d%02d@s.whatsapp.net", j+1, i), "👍"
					if _, err := s.Put(ctx, prof, token, r, msgstore.Received); err != nil {
						errs <- err
					}
				}()
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs <- s2.UpdateMessage(ctx, prof, token, "O", func(_ storage.Tx, m *msgstore.Message) error {
					m.Status = fmt.Sprint(i)
					return nil
				})
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		if got := mustGet(t, s1, "O"); len(got.Reactions) != 2*n {
			t.Fatalf("%d reactions survived, want %d", len(got.Reactions), 2*n)
		}
	})
}

// TestListAcrossBuckets: pages walk time buckets (about 28 h each) with
// long gaps between them, newest first, with before= and cursors landing
// anywhere; a corrupt bucket list falls back to a full scan.
func TestListAcrossBuckets(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		s := msgstore.New(b)
		ctx := context.Background()
		// 3 messages a day apart, a year's gap, 4 more, another gap, 2 more.
		var stamps []int64
		for _, base := range []int64{1_600_000_000, 1_631_536_000, 1_700_000_000} {
			for i := int64(0); i < 3; i++ {
				stamps = append(stamps, base+i*86_400)
			}
		}
		stamps = append(stamps, 1_700_000_000+3*86_400)
		for i, ts := range stamps {
			mustPut(t, s, text(fmt.Sprintf("K%02d", i), chatA, ts, "x"), msgstore.Received)
		}
		mustPut(t, s, text("OTHER", chatB, 1_650_000_000, "y"), msgstore.Received)
		want := []string{}
		for i := len(stamps) - 1; i >= 0; i-- {
			want = append(want, fmt.Sprintf("K%02d", i))
		}
		for _, limit := range []int{1, 2, 3, 4, 10, 50} {
			var got []string
			cursor := ""
			for pages := 0; pages < 20; pages++ {
				page, err := s.List(ctx, prof, msgstore.Query{Chat: chatA, Limit: limit, Cursor: cursor})
				if err != nil {
					t.Fatal(err)
				}
				for _, m := range page.Messages {
					got = append(got, m.ID)
				}
				if page.Next == "" {
					break
				}
				cursor = page.Next
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("limit %d:\n got %v\nwant %v", limit, got, want)
			}
		}
		page, err := s.List(ctx, prof, msgstore.Query{Chat: chatA, Before: 1_631_536_000 + 1, Limit: 2})
		if err != nil || len(page.Messages) != 2 || page.Messages[0].ID != "K03" || page.Messages[1].ID != "K02" || page.Next == "" {
			t.Fatalf("before: %+v %v", page, err)
		}
		all, err := s.List(ctx, prof, msgstore.Query{Limit: 100})
		if err != nil || len(all.Messages) != len(stamps)+1 || all.Next != "" {
			t.Fatalf("profile-wide: %d messages, next %q, %v", len(all.Messages), all.Next, err)
		}
		if _, err := b.Txn(ctx, prof, token, func(tx storage.Tx) error {
			tx.Put(msgstore.NSBuckets, chatA, []byte("{not json"))
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		mustPut(t, s, text("LATE", chatA, 1_800_000_000, "z"), msgstore.Received)
		page, err = s.List(ctx, prof, msgstore.Query{Chat: chatA, Limit: 100})
		if err != nil || len(page.Messages) != len(stamps)+1 || page.Messages[0].ID != "LATE" {
			t.Fatalf("corrupt bucket list: %d messages %v", len(page.Messages), err)
		}
	})
}

// TestEventsCarryNoMediaKeys: message events go to webhooks; they carry
// the media's public fields, never the key or paths to fetch it.
func TestEventsCarryNoMediaKeys(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		s := msgstore.New(b)
		m := text("IMG", chatA, 1, "")
		m.Type, m.Media = msgstore.TypeMedia, &msgstore.Media{Kind: "image", Mime: "image/jpeg", Size: 3, SHA256: "abc",
			State: msgstore.MediaPending, URL: "https://mmg/x", DirectPath: "/v/x", MediaKey: []byte("secret-key"),
			FileEncSHA256: []byte{1}, FileSHA256: []byte{2}, FileLength: 3}
		mustPut(t, s, m, msgstore.Received)
		r := op("R", msgstore.TypeReaction, "IMG", 2)
		r.Reaction = "👍"
		mustPut(t, s, r, msgstore.Received)
		for _, ev := range events(t, b) {
			var d msgstore.EventData
			if err := json.Unmarshal(ev.Data, &d); err != nil {
				t.Fatal(err)
			}
			for _, md := range []*msgstore.Media{d.Media, func() *msgstore.Media {
				if d.Target != nil {
					return d.Target.Media
				}
				return nil
			}()} {
				if md != nil && (md.MediaKey != nil || md.DirectPath != "" || md.URL != "" || md.FileEncSHA256 != nil || md.Kind != "image" || md.SHA256 != "abc") {
					t.Fatalf("%s event media %+v", ev.Type, md)
				}
			}
		}
		if got := mustGet(t, s, "IMG"); string(got.Media.MediaKey) != "secret-key" || got.Media.DirectPath != "/v/x" {
			t.Fatalf("stored descriptor lost: %+v", got.Media)
		}
	})
}
