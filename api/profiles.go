package api

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"time"

	"github.com/amarula/amarula/catalog"
	"github.com/amarula/amarula/storage"
	"github.com/amarula/amarula/webhook"
)

// profileView is the JSON of a profile: api.md's list fields, plus the
// webhook configuration (secret omitted) where one profile is shown.
type profileView struct {
	ID             string       `json:"id"`
	State          string       `json:"state"`
	Owner          string       `json:"owner"`
	JID            string       `json:"jid"`
	LID            string       `json:"lid"`
	PushName       string       `json:"push_name"`
	ConnectedSince *int64       `json:"connected_since"` // Unix seconds, null when not connected
	CreatedAt      int64        `json:"created_at"`
	Webhook        *webhookView `json:"webhook,omitempty"`
}

type webhookView struct {
	URL       string   `json:"url"`
	Events    []string `json:"events"`
	SecretSet bool     `json:"secret_set"`
}

// view builds the JSON of p with its live session state.
func (s *Server) view(ctx context.Context, p catalog.Profile, withWebhook bool) profileView {
	v := profileView{ID: p.ID, State: "unassigned", CreatedAt: unix(p.CreatedAt)}
	if s.cfg.Sessions != nil {
		info, err := s.cfg.Sessions.Info(ctx, p.ID)
		switch {
		case err == nil:
			v.State, v.JID, v.LID, v.PushName = string(info.State), info.JID, info.LID, info.PushName
			if !info.ConnectedSince.IsZero() {
				t := info.ConnectedSince.Unix()
				v.ConnectedSince = &t
			}
		case s.noSession(err):
		default:
			s.log.Warn("session info failed", "profile", p.ID, "err", err)
			v.State = "unknown"
		}
	}
	if s.cfg.Owners != nil {
		owner, err := s.cfg.Owners.Whereis(ctx, p.ID)
		if err != nil {
			s.log.Warn("owner lookup failed", "profile", p.ID, "err", err)
		}
		v.Owner = owner
	}
	if v.State == "" {
		v.State = "unassigned"
	}
	if p.Stopped && v.State == "unassigned" {
		v.State = "stopped"
	}
	if withWebhook && p.Webhook != nil {
		ev := p.Webhook.Events
		if ev == nil {
			ev = []string{}
		}
		v.Webhook = &webhookView{URL: p.Webhook.URL, Events: ev, SecretSet: p.Webhook.Secret != ""}
	}
	return v
}

// noSession reports whether an Info error means "no session runs here".
func (s *Server) noSession(err error) bool {
	st := s.toError(err).Status
	return st == http.StatusNotFound || st == http.StatusServiceUnavailable
}

func unix(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.Unix()
}

func (s *Server) createProfile(w http.ResponseWriter, r *http.Request) error {
	if s.cfg.Profiles == nil {
		return notImplemented("the profile catalogue")
	}
	r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes)
	req, e := DecodeCreateProfile(r.Body)
	if e != nil {
		return e
	}
	p := catalog.Profile{ID: req.ID, CreatedAt: s.cfg.Now().UTC().Truncate(time.Second)}
	if req.Webhook != nil {
		p.Webhook = &catalog.Webhook{URL: req.Webhook.URL, Secret: req.Webhook.Secret, Events: req.Webhook.Events}
	}
	if err := s.cfg.Profiles.Create(r.Context(), p); err != nil {
		switch e := s.toError(err); e.Status {
		case http.StatusConflict:
			return newError(http.StatusConflict, "profile_exists", "profile %q already exists", p.ID)
		case http.StatusBadRequest:
			return newError(http.StatusBadRequest, "invalid_profile_id", "profile id %q cannot be used: %s", p.ID, err.Error())
		}
		return fmt.Errorf("create profile %s: %w", p.ID, err)
	}
	s.log.Info("profile created", "profile", p.ID)
	writeJSON(w, http.StatusCreated, s.view(r.Context(), p, true))
	return nil
}

func (s *Server) listProfiles(w http.ResponseWriter, r *http.Request) error {
	if s.cfg.Profiles == nil {
		return notImplemented("the profile catalogue")
	}
	ps, err := s.cfg.Profiles.List(r.Context())
	if err != nil {
		return fmt.Errorf("list profiles: %w", err)
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i].ID < ps[j].ID })
	out := make([]profileView, 0, len(ps))
	for _, p := range ps {
		out = append(out, s.view(r.Context(), p, false))
	}
	writeJSON(w, http.StatusOK, map[string]any{"profiles": out})
	return nil
}

func (s *Server) getProfile(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, s.view(r.Context(), profileFrom(r.Context()), true))
	return nil
}

func (s *Server) patchProfile(w http.ResponseWriter, r *http.Request) error {
	var req patchProfileRequest
	if e := s.decodeBody(w, r, &req, s.cfg.MaxBodyBytes); e != nil {
		return e
	}
	id := r.PathValue("id")
	var updated catalog.Profile
	err := s.cfg.Profiles.Update(r.Context(), id, func(p *catalog.Profile) error {
		wh, e := req.apply(p.Webhook)
		if e != nil {
			return e
		}
		p.Webhook = wh
		updated = *p
		return nil
	})
	if err != nil {
		return fmt.Errorf("update profile %s: %w", id, err)
	}
	p := updated
	s.log.Info("profile updated", "profile", p.ID, "webhook", p.Webhook != nil)
	writeJSON(w, http.StatusOK, s.view(r.Context(), p, true))
	return nil
}

func (s *Server) deleteProfile(w http.ResponseWriter, r *http.Request) error {
	if s.cfg.Sessions == nil {
		return notImplemented("sessions")
	}
	id := r.PathValue("id")
	// Log out and wipe first: if that fails the profile stays listed and
	// the call can be repeated.
	if err := s.cfg.Sessions.Delete(r.Context(), id); err != nil && !s.isNotFound(err) {
		return fmt.Errorf("delete session %s: %w", id, err)
	}
	// The session wipe covers every namespace; clearing the API's own ones
	// again makes sure no key outlives its profile whatever the session
	// layer did.
	if s.cfg.KV != nil && s.cfg.Fences != nil {
		for _, ns := range []string{NSAPIKeys, NSIdempotency, webhook.NSDead, webhook.NSState} {
			if err := s.fenced(r.Context(), id, func(tok storage.Token) error {
				return s.cfg.KV.ClearNamespace(r.Context(), id, tok, ns)
			}); err != nil {
				return fmt.Errorf("wipe %s of %s: %w", ns, id, err)
			}
		}
	}
	if err := s.cfg.Profiles.Delete(r.Context(), id); err != nil && !s.isNotFound(err) {
		return fmt.Errorf("delete profile %s: %w", id, err)
	}
	s.log.Info("profile deleted", "profile", id)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) qr(w http.ResponseWriter, r *http.Request) error {
	if s.cfg.Sessions == nil {
		return notImplemented("sessions")
	}
	id := r.PathValue("id")
	q, err := s.cfg.Sessions.QR(r.Context(), id)
	if err != nil {
		return fmt.Errorf("qr of %s: %w", id, err)
	}
	if acceptsPNG(r) {
		png, err := qrPNG(q.Code)
		if err != nil {
			return fmt.Errorf("render qr of %s: %w", id, err)
		}
		w.Header().Set("Content-Type", "image/png")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write(png)
		return nil
	}
	writeJSON(w, http.StatusOK, map[string]any{"code": q.Code, "expires_at": unix(q.ExpiresAt)})
	return nil
}

func (s *Server) pairPhone(w http.ResponseWriter, r *http.Request) error {
	if s.cfg.Sessions == nil {
		return notImplemented("sessions")
	}
	var req pairPhoneRequest
	if e := s.decodeBody(w, r, &req, s.cfg.MaxBodyBytes); e != nil {
		return e
	}
	if e := req.validate(); e != nil {
		return e
	}
	id := r.PathValue("id")
	code, err := s.cfg.Sessions.PairPhone(r.Context(), id, req.Phone)
	if err != nil {
		return fmt.Errorf("pair %s by phone: %w", id, err)
	}
	writeJSON(w, http.StatusOK, map[string]string{"code": code})
	return nil
}

func (s *Server) connect(w http.ResponseWriter, r *http.Request) error {
	return s.lifecycle(w, r, "connect", http.StatusAccepted, func(ctx context.Context, id string) error {
		return s.cfg.Sessions.Connect(ctx, id)
	})
}

func (s *Server) stop(w http.ResponseWriter, r *http.Request) error {
	return s.lifecycle(w, r, "stop", http.StatusOK, func(ctx context.Context, id string) error {
		return s.cfg.Sessions.Stop(ctx, id)
	})
}

// lifecycle runs a body-less session command and answers the profile.
func (s *Server) lifecycle(w http.ResponseWriter, r *http.Request, what string, status int, do func(context.Context, string) error) error {
	if s.cfg.Sessions == nil {
		return notImplemented("sessions")
	}
	var empty struct{}
	if e := s.decodeOptionalBody(w, r, &empty); e != nil {
		return e
	}
	id := r.PathValue("id")
	if err := do(r.Context(), id); err != nil {
		return fmt.Errorf("%s %s: %w", what, id, err)
	}
	s.log.Info("profile "+what, "profile", id)
	writeJSON(w, status, s.view(r.Context(), profileFrom(r.Context()), true))
	return nil
}
