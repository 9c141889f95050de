package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"

	"github.com/amarula/amarula/catalog"
	"github.com/amarula/amarula/msgstore"
	"github.com/amarula/amarula/session"
	"github.com/amarula/amarula/storage"
	"github.com/amarula/amarula/webhook"
)

// Sentinel errors that dependencies (or the glue in package node) may wrap
// to choose the answer's status.
var (
	ErrNotFound       = errors.New("api: not found")                   // 404 not_found
	ErrExists         = errors.New("api: already exists")              // 409 already_exists
	ErrConflict       = errors.New("api: state conflict")              // 409 conflict
	ErrAlreadyPaired  = errors.New("api: already paired")              // 409 already_paired
	ErrRateLimited    = errors.New("api: rate limited")                // 429 rate_limited
	ErrNotImplemented = errors.New("api: not implemented")             // 501 not_implemented
	ErrUnavailable    = errors.New("api: no owner reachable or ready") // 503 unavailable
)

// Error is an API error answer: {"error":{"code":…,"message":…}} with
// Status. Dependencies may return (or wrap) one to control the answer.
type Error struct {
	Status  int
	Code    string
	Message string
}

func (e *Error) Error() string { return fmt.Sprintf("%d %s: %s", e.Status, e.Code, e.Message) }

func newError(status int, code, format string, args ...any) *Error {
	return &Error{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

func badRequest(code, format string, args ...any) *Error {
	return newError(http.StatusBadRequest, code, format, args...)
}

func notImplemented(what string) *Error {
	return newError(http.StatusNotImplemented, "not_implemented", "%s is not available on this node", what)
}

type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// builtinErrors maps the sentinels this package knows.
var builtinErrors = []ErrorMapping{
	{catalog.ErrNotFound, http.StatusNotFound, "profile_not_found"},
	{catalog.ErrExists, http.StatusConflict, "profile_exists"},
	{catalog.ErrInvalid, http.StatusBadRequest, "invalid_profile"},
	{msgstore.ErrNotFound, http.StatusNotFound, "message_not_found"},
	{session.ErrAlreadyPaired, http.StatusConflict, "already_paired"},
	{session.ErrNoQR, http.StatusConflict, "no_qr"},
	{session.ErrNotConnected, http.StatusConflict, "not_connected"},
	{session.ErrInvalidRequest, http.StatusBadRequest, "invalid_message"},
	{session.ErrNotInGroup, http.StatusForbidden, "not_in_group"},
	{session.ErrGroupNotFound, http.StatusNotFound, "group_not_found"},
	{session.ErrNotRunning, http.StatusServiceUnavailable, "not_running"},
	{session.ErrLeaseLost, http.StatusServiceUnavailable, "not_owner"},
	{msgstore.ErrInvalid, http.StatusBadRequest, "invalid_argument"},
	{ErrNotFound, http.StatusNotFound, "not_found"},
	{storage.ErrNotFound, http.StatusNotFound, "not_found"},
	{ErrExists, http.StatusConflict, "already_exists"},
	{ErrAlreadyPaired, http.StatusConflict, "already_paired"},
	{ErrConflict, http.StatusConflict, "conflict"},
	{webhook.ErrNoTarget, http.StatusConflict, "no_webhook"},
	{ErrRateLimited, http.StatusTooManyRequests, "rate_limited"},
	{ErrNotImplemented, http.StatusNotImplemented, "not_implemented"},
	{ErrUnavailable, http.StatusServiceUnavailable, "unavailable"},
	{storage.ErrInvalidProfile, http.StatusBadRequest, "invalid_profile_id"},
	{storage.ErrInvalidArgument, http.StatusBadRequest, "invalid_argument"},
	{storage.ErrFenced, http.StatusServiceUnavailable, "not_owner"},
	{storage.ErrClosed, http.StatusServiceUnavailable, "unavailable"},
	{context.DeadlineExceeded, http.StatusServiceUnavailable, "timeout"},
}

// toError turns any error into the answer to give. Unknown errors are 500
// with a generic message (the detail goes to the log, not to the client).
func (s *Server) toError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	var ni *session.NotImplementedError
	if errors.As(err, &ni) {
		return &Error{Status: http.StatusNotImplemented, Code: "not_implemented", Message: ni.Feature + " is not implemented yet"}
	}
	for _, tables := range [][]ErrorMapping{s.cfg.Errors, builtinErrors} {
		for _, m := range tables {
			if m.Err != nil && errors.Is(err, m.Err) {
				return &Error{Status: m.Status, Code: m.Code, Message: err.Error()}
			}
		}
	}
	// A backend that cannot be reached (Redis down, a refused or timed-out
	// connection) is a 503 the client may retry, like /readyz says, not an
	// internal error. The detail (addresses) stays in the log.
	var ne net.Error
	if errors.As(err, &ne) {
		return &Error{Status: http.StatusServiceUnavailable, Code: "unavailable", Message: "a backend is unreachable; retry later"}
	}
	return &Error{Status: http.StatusInternalServerError, Code: "internal", Message: "internal error"}
}

// isNotFound reports whether err means "no such thing".
func (s *Server) isNotFound(err error) bool {
	return err != nil && s.toError(err).Status == http.StatusNotFound
}

func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	e := s.toError(err)
	switch {
	case e.Status == http.StatusInternalServerError:
		s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "status", e.Status, "err", err)
	case e.Status > http.StatusNotImplemented:
		s.log.Warn("request failed", "method", r.Method, "path", r.URL.Path, "status", e.Status, "err", err)
	}
	if e.Status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="amarula"`)
	}
	writeJSON(w, e.Status, errorBody{Error: errorDetail{Code: e.Code, Message: e.Message}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b = []byte(`{"error":{"code":"internal","message":"encoding the answer failed"}}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// WriteError answers status with the API's JSON error body
// {"error":{"code":…,"message":…}}, for handlers outside this package
// (cluster routing, /v1/cluster, move) that must speak the same shape.
func WriteError(w http.ResponseWriter, status int, code, message string) {
	writeJSON(w, status, errorBody{Error: errorDetail{Code: code, Message: message}})
}
