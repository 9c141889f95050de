package api_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"

	"github.com/amarula/amarula/api"
	"github.com/amarula/amarula/session"
)

// groupSessions adds the optional Groups side to the fake sessions.
type groupSessions struct {
	*fakeSessions
	groups map[string]session.Group // by jid
}

func (g *groupSessions) Groups(_ context.Context, profile string) ([]session.Group, error) {
	out := []session.Group{}
	for _, gr := range g.groups {
		out = append(out, gr)
	}
	return out, nil
}

func (g *groupSessions) Group(_ context.Context, profile, jid string) (session.Group, error) {
	if gr, ok := g.groups[jid]; ok {
		return gr, nil
	}
	if jid == "1203639999@g.us" {
		return session.Group{}, fmt.Errorf("wrapped: %w", session.ErrGroupNotFound)
	}
	return session.Group{}, fmt.Errorf("wrapped: %w", session.ErrNotInGroup)
}

func TestGroupsEndpoints(t *testing.T) {
	team := session.Group{JID: "120363100000000001@g.us", Subject: "team", Participants: []session.Participant{
		{JID: "15550001111@s.whatsapp.net", SuperAdmin: true}, {JID: "15550002222@s.whatsapp.net"},
	}}
	gs := &groupSessions{fakeSessions: newFakeSessions(), groups: map[string]session.Group{team.JID: team}}
	e := newEnv(t, func(c *api.Config) { c.Sessions = gs })
	e.createProfile("alice")

	var list struct {
		Groups []struct {
			JID          string `json:"jid"`
			Subject      string `json:"subject"`
			Participants []struct {
				JID   string `json:"jid"`
				Admin bool   `json:"admin"`
			} `json:"participants"`
		} `json:"groups"`
	}
	e.must(http.StatusOK, &list, "GET", "/v1/profiles/alice/groups", adminKey, "")
	if len(list.Groups) != 1 || list.Groups[0].Subject != "team" || len(list.Groups[0].Participants) != 2 ||
		!list.Groups[0].Participants[0].Admin || list.Groups[0].Participants[1].Admin {
		t.Fatalf("groups %+v", list)
	}
	var one struct {
		JID     string `json:"jid"`
		Subject string `json:"subject"`
	}
	e.must(http.StatusOK, &one, "GET", "/v1/profiles/alice/groups/120363100000000001@g.us", adminKey, "")
	if one.JID != team.JID || one.Subject != "team" {
		t.Fatalf("group %+v", one)
	}
	e.must(http.StatusOK, &one, "GET", "/v1/profiles/alice/groups/120363100000000001", adminKey, "")
	for _, c := range []struct {
		path   string
		status int
		code   string
	}{
		{"/v1/profiles/alice/groups/notagroup", 400, "invalid_group_jid"},
		{"/v1/profiles/alice/groups/15550001111@s.whatsapp.net", 400, "invalid_group_jid"},
		{"/v1/profiles/alice/groups/12-ab@g.us", 400, "invalid_group_jid"},
		{"/v1/profiles/alice/groups/1203630000@g.us", 403, "not_in_group"},
		{"/v1/profiles/alice/groups/1203639999@g.us", 404, "group_not_found"},
		{"/v1/profiles/nobody/groups", 404, "profile_not_found"},
	} {
		r := e.do("GET", c.path, adminKey, "")
		if r.status != c.status || errorCode(t, r) != c.code {
			t.Errorf("GET %s: %s, want %d %s", c.path, r, c.status, c.code)
		}
	}
	// A key of another profile may not read them.
	e.createProfile("bob")
	bobKey := e.createKey("bob")
	if r := e.do("GET", "/v1/profiles/alice/groups", bobKey, ""); r.status != http.StatusForbidden {
		t.Fatalf("other profile's key: %s", r)
	}

	// Sessions without the group side: 501.
	plain := newEnv(t)
	plain.createProfile("alice")
	if r := plain.do("GET", "/v1/profiles/alice/groups", adminKey, ""); r.status != http.StatusNotImplemented {
		t.Fatalf("without Groups: %s", r)
	}
}

// TestSendToForeignGroup: a send the session refuses because the profile
// is not in the group (or the group does not exist) answers 403/404.
func TestSendToForeignGroup(t *testing.T) {
	e := newEnv(t)
	e.createProfile("alice")
	for _, c := range []struct {
		err    error
		status int
		code   string
	}{
		{fmt.Errorf("send: failed to get group members: %w", session.ErrNotInGroup), 403, "not_in_group"},
		{fmt.Errorf("send: failed to get group members: %w", session.ErrGroupNotFound), 404, "group_not_found"},
	} {
		e.sessions.mu.Lock()
		e.sessions.sendErr = c.err
		e.sessions.mu.Unlock()
		r := e.do("POST", "/v1/profiles/alice/messages", adminKey, `{"to":"1203630000@g.us","text":"hi"}`)
		if r.status != c.status || errorCode(t, r) != c.code {
			t.Errorf("%v: %s", c.err, r)
		}
	}
}
