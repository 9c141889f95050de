package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/amarula/amarula/msgstore"
	"github.com/amarula/amarula/storage"
)

// idemRecord is the stored first answer of an idempotent send.
type idemRecord struct {
	Status    int             `json:"status"`
	Body      json.RawMessage `json:"body"`
	CreatedAt int64           `json:"created_at"`
}

// IdempotencyReplayed is set to "true" on an answer replayed from an
// earlier send with the same Idempotency-Key.
const IdempotencyReplayed = "Idempotency-Replayed"

// sendMessage handles POST /v1/profiles/{id}/messages. With an
// Idempotency-Key, the first successful answer is stored in the profile's
// "idempotency" namespace and returned again for every later request with
// that key, without sending again. Sends with the same key are serialised on
// this node (the owner serves every send of its profiles).
func (s *Server) sendMessage(w http.ResponseWriter, r *http.Request) error {
	if s.cfg.Sessions == nil {
		return notImplemented("sessions")
	}
	profile := r.PathValue("id")
	idemKey := r.Header.Get("Idempotency-Key")
	if _, present := r.Header["Idempotency-Key"]; present {
		if idemKey == "" || len(idemKey) > maxIdemKeyLen || !printableASCII(idemKey) {
			return badRequest("invalid_idempotency_key", "Idempotency-Key must be 1..%d printable ASCII characters", maxIdemKeyLen)
		}
		if s.cfg.KV == nil {
			return notImplemented("idempotent sends (storage)")
		}
	}
	r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxSendBodyBytes)
	req, e := DecodeSendRequest(r.Body)
	if e != nil {
		return e
	}
	req.IdempotencyKey = idemKey
	if idemKey == "" {
		res, err := s.send(r, profile, req)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusAccepted, res)
		return nil
	}

	unlock := s.idem.lock(profile + "\x00" + idemKey)
	defer unlock()
	raw, err := s.cfg.KV.Get(r.Context(), profile, NSIdempotency, idemKey)
	switch {
	case err == nil:
		var rec idemRecord
		if json.Unmarshal(raw, &rec) == nil && rec.Status != 0 && !s.idemExpired(rec) {
			w.Header().Set(IdempotencyReplayed, "true")
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(rec.Status)
			_, _ = w.Write(append(rec.Body, '\n'))
			return nil
		}
		// A corrupt or expired record is treated as absent.
	case !errors.Is(err, storage.ErrNotFound):
		return fmt.Errorf("read idempotency record of %s: %w", profile, err)
	}
	res, err := s.send(r, profile, req)
	if err != nil {
		// Failures are not recorded: the client may retry with the same key.
		return err
	}
	body, err := json.Marshal(res)
	if err != nil {
		return fmt.Errorf("encode send result: %w", err)
	}
	rec, err := json.Marshal(idemRecord{Status: http.StatusAccepted, Body: body, CreatedAt: s.cfg.Now().Unix()})
	if err != nil {
		return fmt.Errorf("encode idempotency record: %w", err)
	}
	if err := s.fenced(r.Context(), profile, func(tok storage.Token) error {
		return s.cfg.KV.Put(r.Context(), profile, tok, NSIdempotency, idemKey, rec)
	}); err != nil {
		// The message went out; answer it, but a retry could send again.
		s.log.Error("storing idempotency record failed", "profile", profile, "message", res.ID, "err", err)
	}
	writeJSON(w, http.StatusAccepted, res)
	s.pruneIdempotency(r.Context(), profile)
	return nil
}

func (s *Server) idemExpired(rec idemRecord) bool {
	return s.cfg.Now().Sub(time.Unix(rec.CreatedAt, 0)) > s.cfg.IdempotencyTTL
}

// pruneIdempotency deletes the profile's expired idempotency records, at
// most once per TTL/24 per profile, so the namespace stays bounded by the
// send rate times the TTL.
func (s *Server) pruneIdempotency(ctx context.Context, profile string) {
	now := s.cfg.Now()
	s.pruneMu.Lock()
	if now.Sub(s.lastPrune[profile]) < s.cfg.IdempotencyTTL/24 {
		s.pruneMu.Unlock()
		return
	}
	s.lastPrune[profile] = now
	s.pruneMu.Unlock()
	kvs, err := s.cfg.KV.Scan(ctx, profile, NSIdempotency, "")
	if err != nil {
		s.log.Warn("idempotency prune: scan failed", "profile", profile, "err", err)
		return
	}
	pruned := 0
	for _, kv := range kvs {
		var rec idemRecord
		if json.Unmarshal(kv.Value, &rec) == nil && !s.idemExpired(rec) {
			continue
		}
		if err := s.fenced(ctx, profile, func(tok storage.Token) error {
			return s.cfg.KV.Delete(ctx, profile, tok, NSIdempotency, kv.Key)
		}); err != nil {
			s.log.Warn("idempotency prune: delete failed", "profile", profile, "err", err)
			return
		}
		pruned++
	}
	if pruned > 0 {
		s.log.Debug("idempotency records pruned", "profile", profile, "count", pruned)
	}
}

func (s *Server) send(r *http.Request, profile string, req SendRequest) (sendAnswer, error) {
	res, err := s.cfg.Sessions.Send(r.Context(), profile, req.sessionRequest())
	if err != nil {
		return sendAnswer{}, fmt.Errorf("send from %s: %w", profile, err)
	}
	// The API answers "sent" once WhatsApp accepted the message, whatever
	// receipt the store may already hold.
	s.log.Info("message sent", "profile", profile, "message", res.ID, "replayed", res.Replayed)
	return sendAnswer{ID: res.ID, Status: "sent", Timestamp: res.Timestamp}, nil
}

// queryInt parses an optional positive integer query parameter.
func queryInt(r *http.Request, name string, def, max int) (int, *Error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > max {
		return 0, badRequest("invalid_"+name, "query parameter %q must be an integer from 1 to %d", name, max)
	}
	return n, nil
}

// listMessages handles GET .../messages?chat=&before=&limit=. "before" is
// either Unix seconds (messages strictly older) or the "next" of a previous
// page.
func (s *Server) listMessages(w http.ResponseWriter, r *http.Request) error {
	if s.cfg.Messages == nil {
		return notImplemented("the message store")
	}
	limit, e := queryInt(r, "limit", msgstore.DefaultLimit, msgstore.MaxLimit)
	if e != nil {
		return e
	}
	q := r.URL.Query()
	mq := msgstore.Query{Chat: q.Get("chat"), Limit: limit}
	if len(mq.Chat) > 256 || !printableASCII(mq.Chat) && mq.Chat != "" {
		return badRequest("invalid_chat", "query parameter \"chat\" must be a JID")
	}
	if before := q.Get("before"); before != "" {
		ts, err := strconv.ParseInt(before, 10, 64)
		switch {
		case err == nil && ts > 0:
			mq.Before = ts
		case len(before) <= maxCursorLen && printableASCII(before) && strings.Contains(before, "."):
			mq.Cursor = before
		default:
			return badRequest("invalid_before", "query parameter \"before\" must be Unix seconds or the \"next\" of a previous page")
		}
	}
	profile := r.PathValue("id")
	page, err := s.cfg.Messages.List(r.Context(), profile, mq)
	if err != nil {
		if errors.Is(err, msgstore.ErrInvalid) || errors.Is(err, storage.ErrInvalidArgument) {
			return badRequest("invalid_before", "%s", err.Error())
		}
		return fmt.Errorf("list messages of %s: %w", profile, err)
	}
	// Public: the media key and download path stay inside the node.
	msgs := make([]msgstore.Message, 0, len(page.Messages))
	for _, m := range page.Messages {
		msgs = append(msgs, m.Public())
	}
	writeJSON(w, http.StatusOK, map[string]any{"messages": msgs, "next": page.Next})
	return nil
}

func (s *Server) getMessage(w http.ResponseWriter, r *http.Request) error {
	if s.cfg.Messages == nil {
		return notImplemented("the message store")
	}
	profile, id := r.PathValue("id"), r.PathValue("msgid")
	if len(id) > maxIDLen || !printableASCII(id) {
		return badRequest("invalid_message_id", "message id must be printable ASCII of at most %d bytes", maxIDLen)
	}
	m, err := s.cfg.Messages.Get(r.Context(), profile, id)
	if err != nil {
		if s.isNotFound(err) {
			return newError(http.StatusNotFound, "message_not_found", "message %q not found", id)
		}
		return fmt.Errorf("get message %s of %s: %w", id, profile, err)
	}
	writeJSON(w, http.StatusOK, m.Public())
	return nil
}
