package wasim

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"go.mau.fi/whatsmeow/types"

	"github.com/amarula/amarula/wasim/mediastore"
)

const maxAdminBody = 64 << 20

func (s *Server) adminRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /admin/root-key", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, s.RootKeyHex())
	})
	mux.HandleFunc("POST /admin/phones", s.adminCreatePhone)
	mux.HandleFunc("POST /admin/phones/{phone}/link", s.adminLink)
	mux.HandleFunc("POST /admin/phones/{phone}/link-code", s.adminLink)
	mux.HandleFunc("POST /admin/phones/{phone}/messages", s.adminSend)
	mux.HandleFunc("GET /admin/phones/{phone}/messages", s.adminMessages)
	mux.HandleFunc("POST /admin/phones/{phone}/history-sync", s.adminHistorySync)
	mux.HandleFunc("POST /admin/phones/{phone}/read", s.adminRead)
	mux.HandleFunc("DELETE /admin/phones/{phone}/devices/{device}", s.adminUnlink)
	mux.HandleFunc("POST /admin/media/expire", s.adminExpire)
	mux.HandleFunc("POST /admin/groups", s.adminCreateGroup)
	s.groupAdminRoutes(mux)
	mux.HandleFunc("GET /admin/devices", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.Devices())
	})
	mux.HandleFunc("GET /admin/stats", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.Stats())
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeErr(w http.ResponseWriter, err error) {
	status := http.StatusInternalServerError
	switch {
	case errors.Is(err, ErrInvalidRequest), errors.Is(err, ErrQRMismatch):
		status = http.StatusBadRequest
	case errors.Is(err, ErrUnknownPhone), errors.Is(err, ErrUnknownDevice), errors.Is(err, ErrUnknownRef), errors.Is(err, ErrUnknownMessage),
		errors.Is(err, ErrNoCodePairing), errors.Is(err, mediastore.ErrNotFound):
		status = http.StatusNotFound
	case errors.Is(err, ErrPhoneExists):
		status = http.StatusConflict
	case errors.Is(err, ErrPairTimeout), errors.Is(err, context.DeadlineExceeded):
		status = http.StatusGatewayTimeout
	case errors.Is(err, ErrPairRejected):
		status = http.StatusUnprocessableEntity
	}
	writeJSON(w, status, map[string]string{"error": err.Error()})
}

func decodeBody(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxAdminBody))
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		return errors.Join(ErrInvalidRequest, err)
	}
	return nil
}

func (s *Server) phoneFromPath(r *http.Request) (*Phone, error) {
	p := s.Phone(r.PathValue("phone"))
	if p == nil {
		return nil, ErrUnknownPhone
	}
	return p, nil
}

func (s *Server) adminCreatePhone(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Phone string `json:"phone"`
		Name  string `json:"name"`
	}
	if err := decodeBody(r, &req); err != nil {
		writeErr(w, err)
		return
	}
	p, err := s.CreatePhone(req.Phone, req.Name)
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, map[string]string{"jid": p.JID().String(), "lid": p.LID().String()})
}

func (s *Server) adminLink(w http.ResponseWriter, r *http.Request) {
	p, err := s.phoneFromPath(r)
	if err != nil {
		writeErr(w, err)
		return
	}
	var req struct {
		QR   string `json:"qr"`
		Code string `json:"code"`
	}
	if err := decodeBody(r, &req); err != nil {
		writeErr(w, err)
		return
	}
	var jid types.JID
	if req.Code != "" {
		jid, err = p.LinkCode(r.Context(), req.Code)
	} else if req.QR != "" {
		jid, err = p.LinkQR(r.Context(), req.QR)
	} else {
		err = errors.Join(ErrInvalidRequest, errors.New("qr or code required"))
	}
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"device_jid": jid.String()})
}

// SendRequest is the body of POST /admin/phones/{phone}/messages.
type SendRequest struct {
	To       string        `json:"to"`
	Text     string        `json:"text,omitempty"`
	Media    *MediaRequest `json:"media,omitempty"`
	Reaction *string       `json:"reaction,omitempty"`
	Edit     *string       `json:"edit,omitempty"`
	Revoke   bool          `json:"revoke,omitempty"`
	TargetID string        `json:"target_id,omitempty"`
}

// MediaRequest is the media part of a SendRequest.
type MediaRequest struct {
	Kind     string `json:"kind"`
	Mime     string `json:"mime"`
	Data     string `json:"data"` // base64 (standard)
	Caption  string `json:"caption,omitempty"`
	FileName string `json:"file_name,omitempty"`
}

func (s *Server) adminSend(w http.ResponseWriter, r *http.Request) {
	p, err := s.phoneFromPath(r)
	if err != nil {
		writeErr(w, err)
		return
	}
	var req SendRequest
	if err := decodeBody(r, &req); err != nil {
		writeErr(w, err)
		return
	}
	id, err := p.sendRequest(req)
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"id": id})
}

func (p *Phone) sendRequest(req SendRequest) (string, error) {
	to, err := types.ParseJID(req.To)
	if err != nil || to.User == "" {
		return "", errors.Join(ErrInvalidRequest, errors.New("bad to"))
	}
	if to.Server == "" {
		to.Server = types.DefaultUserServer
	}
	needTarget := req.Reaction != nil || req.Edit != nil || req.Revoke
	if needTarget && req.TargetID == "" {
		return "", errors.Join(ErrInvalidRequest, errors.New("target_id required"))
	}
	switch {
	case req.Media != nil:
		data, err := base64.StdEncoding.DecodeString(req.Media.Data)
		if err != nil || len(data) == 0 {
			return "", errors.Join(ErrInvalidRequest, errors.New("media.data must be non-empty base64"))
		}
		return p.SendMedia(to, req.Media.Kind, req.Media.Mime, data, req.Media.Caption, req.Media.FileName)
	case req.Reaction != nil:
		return p.SendReaction(to, req.TargetID, *req.Reaction)
	case req.Edit != nil:
		return p.SendEdit(to, req.TargetID, *req.Edit)
	case req.Revoke:
		return p.SendRevoke(to, req.TargetID)
	case req.Text != "":
		return p.SendText(to, req.Text)
	}
	return "", errors.Join(ErrInvalidRequest, errors.New("one of text, media, reaction, edit, revoke required"))
}

func (s *Server) adminMessages(w http.ResponseWriter, r *http.Request) {
	p, err := s.phoneFromPath(r)
	if err != nil {
		writeErr(w, err)
		return
	}
	var after int64
	if a := r.URL.Query().Get("after"); a != "" {
		if after, err = strconv.ParseInt(a, 10, 64); err != nil {
			writeErr(w, errors.Join(ErrInvalidRequest, err))
			return
		}
	}
	writeJSON(w, http.StatusOK, p.Messages(after))
}

func (s *Server) adminUnlink(w http.ResponseWriter, r *http.Request) {
	p, err := s.phoneFromPath(r)
	if err != nil {
		writeErr(w, err)
		return
	}
	jid, err := types.ParseJID(r.PathValue("device"))
	if err != nil {
		writeErr(w, errors.Join(ErrInvalidRequest, err))
		return
	}
	if err := p.Unlink(jid); err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"removed": jid.String()})
}

func (s *Server) adminExpire(w http.ResponseWriter, r *http.Request) {
	var req struct {
		ID string `json:"id"`
	}
	if err := decodeBody(r, &req); err != nil {
		writeErr(w, err)
		return
	}
	n, err := s.ExpireMedia(req.ID)
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]int{"expired": n})
}

// ExpireMedia makes media answer 404 until re-uploaded: one blob (by blob
// id, or by the id of a message that carried it) or, with id "", all.
func (s *Server) ExpireMedia(id string) (int, error) {
	if id == "" {
		return s.media.store.ExpireAll(), nil
	}
	if err := s.media.store.Expire(s.media.resolve(id)); err != nil {
		return 0, err
	}
	return 1, nil
}

func (s *Server) adminHistorySync(w http.ResponseWriter, r *http.Request) {
	p, err := s.phoneFromPath(r)
	if err != nil {
		writeErr(w, err)
		return
	}
	var req struct {
		DeviceJID string           `json:"device_jid"`
		Messages  []HistoryMessage `json:"messages"`
	}
	if err := decodeBody(r, &req); err != nil {
		writeErr(w, err)
		return
	}
	jid, err := types.ParseJID(req.DeviceJID)
	if err != nil {
		writeErr(w, errors.Join(ErrInvalidRequest, err))
		return
	}
	id, err := p.SendHistorySync(jid, req.Messages)
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"id": id})
}

func (s *Server) adminRead(w http.ResponseWriter, r *http.Request) {
	p, err := s.phoneFromPath(r)
	if err != nil {
		writeErr(w, err)
		return
	}
	var req struct {
		ID string `json:"id"`
	}
	if err := decodeBody(r, &req); err != nil {
		writeErr(w, err)
		return
	}
	if err := p.MarkRead(req.ID); err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"read": req.ID})
}

func (s *Server) adminCreateGroup(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Subject string   `json:"subject"`
		Creator string   `json:"creator"`
		Members []string `json:"members"`
	}
	if err := decodeBody(r, &req); err != nil {
		writeErr(w, err)
		return
	}
	creator := s.Phone(req.Creator)
	if creator == nil {
		writeErr(w, ErrUnknownPhone)
		return
	}
	members := make([]*Phone, 0, len(req.Members))
	for _, m := range req.Members {
		p := s.Phone(m)
		if p == nil {
			writeErr(w, fmt.Errorf("%w: %s", ErrUnknownPhone, m))
			return
		}
		members = append(members, p)
	}
	jid, err := s.CreateGroup(req.Subject, creator, members...)
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, map[string]string{"jid": jid.String()})
}
