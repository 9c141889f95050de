package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/amarula/amarula/session"
)

// Groups is the group side of Sessions, optional: the session registry
// has it, and a Sessions without it makes the group endpoints answer 501.
type Groups interface {
	// Groups lists the groups the profile's account is in.
	Groups(ctx context.Context, profile string) ([]session.Group, error)
	// Group returns one of them; errors wrap session.ErrInvalidRequest
	// (malformed JID), session.ErrGroupNotFound or session.ErrNotInGroup.
	Group(ctx context.Context, profile, jid string) (session.Group, error)
}

// groupView is a group in API answers.
type groupView struct {
	JID          string            `json:"jid"`
	Subject      string            `json:"subject"`
	Topic        string            `json:"topic,omitempty"`
	Owner        string            `json:"owner,omitempty"`
	Created      int64             `json:"created,omitempty"`
	Participants []participantView `json:"participants"`
}

type participantView struct {
	JID        string `json:"jid"`
	Admin      bool   `json:"admin"`
	SuperAdmin bool   `json:"super_admin,omitempty"`
}

func viewGroup(g session.Group) groupView {
	v := groupView{JID: g.JID, Subject: g.Subject, Topic: g.Topic, Owner: g.Owner, Created: g.Created,
		Participants: make([]participantView, 0, len(g.Participants))}
	for _, p := range g.Participants {
		v.Participants = append(v.Participants, participantView{JID: p.JID, Admin: p.Admin || p.SuperAdmin, SuperAdmin: p.SuperAdmin})
	}
	return v
}

func (s *Server) groupsDep() (Groups, error) {
	g, ok := s.cfg.Sessions.(Groups)
	if !ok {
		return nil, notImplemented("groups")
	}
	return g, nil
}

// listGroups handles GET /v1/profiles/{id}/groups.
func (s *Server) listGroups(w http.ResponseWriter, r *http.Request) error {
	dep, err := s.groupsDep()
	if err != nil {
		return err
	}
	profile := r.PathValue("id")
	gs, err := dep.Groups(r.Context(), profile)
	if err != nil {
		return fmt.Errorf("list groups of %s: %w", profile, err)
	}
	out := make([]groupView, 0, len(gs))
	for _, g := range gs {
		out = append(out, viewGroup(g))
	}
	writeJSON(w, http.StatusOK, map[string]any{"groups": out})
	return nil
}

// getGroup handles GET /v1/profiles/{id}/groups/{jid}.
func (s *Server) getGroup(w http.ResponseWriter, r *http.Request) error {
	dep, err := s.groupsDep()
	if err != nil {
		return err
	}
	profile, raw := r.PathValue("id"), r.PathValue("jid")
	jid, err := session.ParseGroupJID(raw)
	if err != nil {
		return badRequest("invalid_group_jid", "%q is not a group JID (digits@g.us)", raw)
	}
	g, err := dep.Group(r.Context(), profile, jid.String())
	switch {
	case errors.Is(err, session.ErrNotInGroup):
		return newError(http.StatusForbidden, "not_in_group", "profile %s is not a participant of group %s", profile, jid)
	case errors.Is(err, session.ErrGroupNotFound):
		return newError(http.StatusNotFound, "group_not_found", "group %s does not exist", jid)
	case err != nil:
		return fmt.Errorf("group %s of %s: %w", jid, profile, err)
	}
	writeJSON(w, http.StatusOK, viewGroup(g))
	return nil
}
