package session_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.mau.fi/whatsmeow/types"

	"github.com/amarula/amarula/session"
)

func TestParseGroupJID(t *testing.T) {
	for _, c := range []struct {
		in, want string
	}{
		{"120363100000000001@g.us", "120363100000000001@g.us"},
		{"120363100000000001", "120363100000000001@g.us"},
		{"15550001111-1600000000@g.us", "15550001111-1600000000@g.us"},
		{"", ""},
		{"@g.us", ""},
		{"abc@g.us", ""},
		{"12-@g.us", ""},
		{"1203631@s.whatsapp.net", ""},
		{"1203631@g.us/x", ""},
		{"1203631:2@g.us", ""},
		{"12345678901234567890123456789@g.us", ""},
	} {
		got, err := session.ParseGroupJID(c.in)
		if c.want == "" {
			if !errors.Is(err, session.ErrInvalidRequest) {
				t.Errorf("ParseGroupJID(%q) = %v, %v; want ErrInvalidRequest", c.in, got, err)
			}
			continue
		}
		if err != nil || got.String() != c.want {
			t.Errorf("ParseGroupJID(%q) = %v, %v; want %s", c.in, got, err, c.want)
		}
	}
	// Sends go through the same check.
	if _, err := session.ParseRecipient("not-a-group@g.us"); !errors.Is(err, session.ErrInvalidRequest) {
		t.Errorf("ParseRecipient of a malformed group: %v", err)
	}
	if j, err := session.ParseRecipient("120363100000000001@g.us"); err != nil || j.String() != "120363100000000001@g.us" {
		t.Errorf("ParseRecipient of a group: %v %v", j, err)
	}
}

// TestGroupEventsAndCache: group notifications become group.* events and
// keep the group cache current (join, subject, the account's own removal
// drops the group); ListGroups and GroupInfo answer live while connected
// and from the cache once the session stopped.
func TestGroupEventsAndCache(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		s, _ := e.pairQR(1)
		ctx := context.Background()
		carol, err := e.Srv.CreatePhone("15550003333", "Carol")
		if err != nil {
			t.Fatal(err)
		}
		gid, err := e.Srv.CreateGroup("team", e.peer, e.own)
		if err != nil {
			t.Fatal(err)
		}
		cached := func() session.Group {
			g, err := session.CachedGroup(ctx, e.st, profile, gid)
			if err != nil {
				return session.Group{}
			}
			return g
		}
		waitFor(t, "group.joined and the cache", 20*time.Second, func() error {
			if e.countEvents(session.EventGroupJoined, "") != 1 || len(cached().Participants) != 2 {
				return errNotYet
			}
			return nil
		})
		if err := e.Srv.AddParticipants(gid, nil, carol); err != nil {
			t.Fatal(err)
		}
		if err := e.Srv.SetGroupSubject(gid, nil, "renamed"); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the cache to follow", 20*time.Second, func() error {
			if g := cached(); len(g.Participants) != 3 || g.Subject != "renamed" ||
				e.countEvents(session.EventGroupParticipantsChanged, "") != 1 || e.countEvents(session.EventGroupUpdated, "") != 1 {
				return errNotYet
			}
			return nil
		})
		live, err := s.ListGroups(ctx)
		if err != nil || len(live) != 1 || live[0].JID != gid.String() || live[0].Subject != "renamed" || len(live[0].Participants) != 3 {
			t.Fatalf("ListGroups %+v %v", live, err)
		}
		if _, err := s.GroupInfo(ctx, types.NewJID("1203639999", types.GroupServer)); !errors.Is(err, session.ErrGroupNotFound) {
			t.Fatalf("GroupInfo of an unknown group: %v", err)
		}

		// The account is removed: the group leaves the cache.
		if err := e.Srv.RemoveParticipants(gid, nil, e.own); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the group to leave the cache", 20*time.Second, func() error {
			if _, err := session.CachedGroup(ctx, e.st, profile, gid); !errors.Is(err, session.ErrNotInGroup) {
				return errNotYet
			}
			return nil
		})
		if _, err := s.GroupInfo(ctx, gid); !errors.Is(err, session.ErrNotInGroup) {
			t.Fatalf("GroupInfo after the removal: %v", err)
		}
		_, err = s.Send(ctx, session.SendRequest{To: gid.String(), Text: "still here?"})
		if !errors.Is(err, session.ErrNotInGroup) {
			t.Fatalf("send to a group the account left: %v", err)
		}

		// Stopped: answers from the cache.
		gid2, _ := e.Srv.CreateGroup("second", e.peer, e.own)
		waitFor(t, "the second group cached", 20*time.Second, func() error {
			if cached := func() error { _, err := session.CachedGroup(ctx, e.st, profile, gid2); return err }(); cached != nil {
				return cached
			}
			return nil
		})
		sctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		if err := s.Stop(sctx); err != nil {
			t.Fatal(err)
		}
		gs, err := s.ListGroups(ctx)
		if err != nil || len(gs) != 1 || gs[0].JID != gid2.String() || gs[0].Subject != "second" {
			t.Fatalf("ListGroups from the cache: %+v %v", gs, err)
		}
	})
}

// FuzzParseGroupJID: whatever the API passes in, ParseGroupJID either
// refuses it with ErrInvalidRequest or returns a group JID that parses
// back to itself.
func FuzzParseGroupJID(f *testing.F) {
	for _, s := range []string{"120363100000000001@g.us", "1-2", "abc@g.us", "@", "", "1@g.us@g.us", "١٢٣@g.us"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		j, err := session.ParseGroupJID(s)
		if err != nil {
			if !errors.Is(err, session.ErrInvalidRequest) {
				t.Fatalf("%q: %v", s, err)
			}
			return
		}
		if j.Server != types.GroupServer || j.Device != 0 {
			t.Fatalf("%q → %v", s, j)
		}
		again, err := session.ParseGroupJID(j.String())
		if err != nil || again != j {
			t.Fatalf("%q → %v → %v %v", s, j, again, err)
		}
	})
}
