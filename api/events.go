package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/amarula/amarula/storage"
	"github.com/amarula/amarula/webhook"
	"github.com/coder/websocket"
)

const (
	defaultEventLimit = 100
	maxEventLimit     = 1000
	wsBatch           = 100
)

// resolveAfter turns the "after" query parameter into a log cursor: absent
// or "0" is the start of the retained log, "now" the newest event (so only
// later events follow). The cursor is checked by reading one event, so a
// malformed one is a 400 before anything else happens.
func (s *Server) resolveAfter(ctx context.Context, profile, after string) (string, error) {
	switch after {
	case "", "0":
		return "0", nil
	case "now":
		c, err := s.cfg.Events.LastCursor(ctx, profile)
		if err != nil {
			return "", fmt.Errorf("last cursor of %s: %w", profile, err)
		}
		return c, nil
	}
	if len(after) > maxCursorLen || !printableASCII(after) {
		return "", badRequest("invalid_cursor", "query parameter \"after\" must be an event id, \"0\" or \"now\"")
	}
	return after, nil
}

func cursorError(err error) error {
	if errors.Is(err, storage.ErrInvalidArgument) {
		return badRequest("invalid_cursor", "query parameter \"after\" is not a valid event id")
	}
	return err
}

// listEvents handles GET /v1/profiles/{id}/events?after=&limit=. "next" is
// the id of the last event returned, or the resolved "after" when there is
// none yet, so polling with next never skips or repeats an event.
func (s *Server) listEvents(w http.ResponseWriter, r *http.Request) error {
	if s.cfg.Events == nil {
		return notImplemented("the event log")
	}
	limit, e := queryInt(r, "limit", defaultEventLimit, maxEventLimit)
	if e != nil {
		return e
	}
	profile := r.PathValue("id")
	after, err := s.resolveAfter(r.Context(), profile, r.URL.Query().Get("after"))
	if err != nil {
		return err
	}
	evs, err := s.cfg.Events.Read(r.Context(), profile, after, limit)
	if err != nil {
		return fmt.Errorf("read events of %s: %w", profile, cursorError(err))
	}
	out := make([]webhook.Envelope, 0, len(evs))
	next := after
	for _, ev := range evs {
		out = append(out, webhook.NewEnvelope(profile, ev))
		next = ev.Cursor
	}
	writeJSON(w, http.StatusOK, map[string]any{"events": out, "next": next})
	return nil
}

// eventsWS handles GET /v1/profiles/{id}/events/ws?after=: one JSON event
// per text message, replayed from the cursor and then streamed live. The
// server pings every PingInterval; a peer that does not answer within
// WriteTimeout is dropped. Server.Close ends the stream with 1001.
func (s *Server) eventsWS(w http.ResponseWriter, r *http.Request) error {
	if s.cfg.Events == nil {
		return notImplemented("the event log")
	}
	profile := r.PathValue("id")
	after, err := s.resolveAfter(r.Context(), profile, r.URL.Query().Get("after"))
	if err != nil {
		return err
	}
	if _, err := s.cfg.Events.Read(r.Context(), profile, after, 1); err != nil {
		return fmt.Errorf("read events of %s: %w", profile, cursorError(err))
	}
	if !s.track() {
		return newError(http.StatusServiceUnavailable, "shutting_down", "the server is shutting down")
	}
	defer s.streams.Done()

	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{OriginPatterns: s.cfg.WSOriginPatterns})
	if err != nil {
		// Accept has answered the request already.
		s.log.Debug("websocket accept failed", "profile", profile, "err", err)
		return nil
	}
	defer c.CloseNow()

	// connCtx ends when the peer closes or the connection fails (the
	// CloseRead goroutine also answers pings and close frames). The stream
	// additionally ends when the server closes. Writes and pings use
	// connCtx: cancelling a coder/websocket call's context kills the
	// connection, and a shutdown must end with a close frame instead.
	connCtx := c.CloseRead(context.Background())
	ctx, cancel := context.WithCancel(connCtx)
	defer cancel()
	stopOnClose := context.AfterFunc(s.baseCtx, cancel)
	defer stopOnClose()

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.pingLoop(ctx, connCtx, c, cancel)
	}()
	s.log.Debug("websocket stream opened", "profile", profile)
	streamErr := s.stream(ctx, connCtx, c, profile, after)
	cancel()
	wg.Wait()

	switch {
	case s.baseCtx.Err() != nil:
		_ = c.Close(websocket.StatusGoingAway, "server shutting down")
	case connCtx.Err() != nil:
		// The peer went away or stopped answering.
	case streamErr != nil && !errors.Is(streamErr, context.Canceled):
		s.log.Info("websocket stream ended", "profile", profile, "err", streamErr)
		_ = c.Close(websocket.StatusInternalError, "event stream failed")
	}
	return nil
}

// stream writes every event after cursor, then waits for new ones.
func (s *Server) stream(ctx, connCtx context.Context, c *websocket.Conn, profile, cursor string) error {
	for {
		evs, err := s.cfg.Events.Tail(ctx, profile, cursor, wsBatch)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("tail events of %s: %w", profile, err)
		}
		for _, ev := range evs {
			b, err := json.Marshal(webhook.NewEnvelope(profile, ev))
			if err != nil {
				return fmt.Errorf("encode event: %w", err)
			}
			wctx, cancel := context.WithTimeout(connCtx, s.cfg.WriteTimeout)
			err = c.Write(wctx, websocket.MessageText, b)
			cancel()
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				return fmt.Errorf("write event: %w", err)
			}
			cursor = ev.Cursor
		}
	}
}

// pingLoop keeps the connection alive and detects dead peers.
func (s *Server) pingLoop(ctx, connCtx context.Context, c *websocket.Conn, cancel context.CancelFunc) {
	t := time.NewTicker(s.cfg.PingInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, pcancel := context.WithTimeout(connCtx, s.cfg.WriteTimeout)
		err := c.Ping(pctx)
		pcancel()
		if err != nil {
			cancel()
			return
		}
	}
}

func (s *Server) deadLetters(w http.ResponseWriter, r *http.Request) error {
	if s.cfg.Webhooks == nil {
		return notImplemented("webhook dead letters")
	}
	profile := r.PathValue("id")
	dead, err := s.cfg.Webhooks.Dead(r.Context(), profile)
	if err != nil {
		return fmt.Errorf("dead letters of %s: %w", profile, err)
	}
	if dead == nil {
		dead = []webhook.DeadLetter{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"dead": dead})
	return nil
}

func (s *Server) redeliver(w http.ResponseWriter, r *http.Request) error {
	if s.cfg.Webhooks == nil {
		return notImplemented("webhook redelivery")
	}
	var req redeliverRequest
	if e := s.decodeOptionalBody(w, r, &req); e != nil {
		return e
	}
	if e := req.validate(); e != nil {
		return e
	}
	profile := r.PathValue("id")
	res, err := s.cfg.Webhooks.Redeliver(r.Context(), profile, req.IDs)
	if err != nil {
		if errors.Is(err, webhook.ErrNoTarget) {
			return newError(http.StatusConflict, "no_webhook", "profile %q has no webhook configured", profile)
		}
		return fmt.Errorf("redeliver %s: %w", profile, err)
	}
	s.log.Info("webhook redelivery", "profile", profile, "redelivered", res.Redelivered, "failed", res.Failed)
	writeJSON(w, http.StatusOK, res)
	return nil
}
