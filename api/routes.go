package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/amarula/amarula/catalog"
	"github.com/amarula/amarula/storage"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// handlerFunc is a route handler; a returned error becomes the JSON error
// answer (nothing must have been written yet).
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

type ctxKey int

const profileKey ctxKey = iota

// profileFrom returns the catalogue entry loaded for the path's profile.
func profileFrom(ctx context.Context) catalog.Profile {
	p, _ := ctx.Value(profileKey).(catalog.Profile)
	return p
}

// route is one endpoint.
type route struct {
	pattern string
	sc      scope
	// loads says the path's profile must exist in the catalogue.
	loads bool
	h     handlerFunc
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	for _, rt := range s.routeTable() {
		mux.Handle(rt.pattern, s.wrap(rt.pattern, rt.sc, rt.loads, rt.h))
	}
	return s.front(mux)
}

// routeTable lists every endpoint (also checked against openapi.json).
func (s *Server) routeTable() []route {
	return []route{
		{"GET /healthz", scopePublic, false, s.healthz},
		{"GET /readyz", scopePublic, false, s.readyz},
		{"GET /metrics", scopePublic, false, s.metricsHandler},
		{"GET /v1/openapi.json", scopePublic, false, s.openAPI},
		{"GET /{$}", scopePublic, false, s.dashboard},
		{"GET /ui/", scopePublic, false, s.dashboard},
		{"GET /v1/cluster", scopeAdmin, false, s.optional(s.cfg.Cluster, "the cluster view")},

		{"POST /v1/profiles", scopeAdmin, false, s.createProfile},
		{"GET /v1/profiles", scopeAdmin, false, s.listProfiles},
		{"GET /v1/profiles/{id}", scopeProfile, true, s.getProfile},
		{"PATCH /v1/profiles/{id}", scopeProfile, true, s.patchProfile},
		{"DELETE /v1/profiles/{id}", scopeProfile, true, s.deleteProfile},
		{"GET /v1/profiles/{id}/qr", scopeProfile, true, s.qr},
		{"POST /v1/profiles/{id}/pair-phone", scopeProfile, true, s.pairPhone},
		{"POST /v1/profiles/{id}/connect", scopeProfile, true, s.connect},
		{"POST /v1/profiles/{id}/stop", scopeProfile, true, s.stop},
		{"POST /v1/profiles/{id}/move", scopeAdmin, true, s.optional(s.cfg.Move, "moving a profile")},

		{"POST /v1/profiles/{id}/keys", scopeAdmin, true, s.createKey},
		{"GET /v1/profiles/{id}/keys", scopeAdmin, true, s.listKeys},
		{"DELETE /v1/profiles/{id}/keys/{keyid}", scopeAdmin, true, s.deleteKey},

		{"POST /v1/profiles/{id}/messages", scopeProfile, true, s.sendMessage},
		{"GET /v1/profiles/{id}/messages", scopeProfile, true, s.listMessages},
		{"GET /v1/profiles/{id}/messages/{msgid}", scopeProfile, true, s.getMessage},
		{"GET /v1/profiles/{id}/media/{msgid}", scopeProfile, true, s.optional(s.cfg.Media, "media download")},
		{"GET /v1/profiles/{id}/groups", scopeProfile, true, s.listGroups},
		{"GET /v1/profiles/{id}/groups/{jid}", scopeProfile, true, s.getGroup},

		{"GET /v1/profiles/{id}/events", scopeProfile, true, s.listEvents},
		{"GET /v1/profiles/{id}/events/ws", scopeProfile, true, s.eventsWS},
		{"GET /v1/profiles/{id}/webhook/dead", scopeProfile, true, s.deadLetters},
		{"POST /v1/profiles/{id}/webhook/redeliver", scopeProfile, true, s.redeliver},
	}
}

// optional serves an endpoint implemented by another package, or 501.
func (s *Server) optional(h http.Handler, what string) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		if h == nil {
			return notImplemented(what)
		}
		h.ServeHTTP(w, r)
		return nil
	}
}

// front runs before routing: it rejects a bad profile id in the path before
// anything else looks at the request, answers unknown routes and methods in
// JSON, and recovers panics.
func (s *Server) front(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.log.Error("panic serving request", "method", r.Method, "path", r.URL.Path, "panic", fmt.Sprint(v))
				s.writeError(w, r, fmt.Errorf("panic: %v", v))
			}
		}()
		if e := checkPathProfile(r); e != nil {
			s.metrics.observe("invalid", e.Status, 0)
			s.writeError(w, r, e)
			return
		}
		h, pattern := mux.Handler(r)
		if pattern == "" {
			// The mux's own 404/405/redirect: keep its status and headers,
			// answer in JSON.
			rec := &headerRecorder{header: http.Header{}}
			h.ServeHTTP(rec, r)
			switch rec.status {
			case http.StatusNotFound:
				s.metrics.observe("unmatched", rec.status, 0)
				s.writeError(w, r, newError(http.StatusNotFound, "not_found", "no route for %s %s", r.Method, r.URL.EscapedPath()))
				return
			case http.StatusMethodNotAllowed:
				s.metrics.observe("unmatched", rec.status, 0)
				w.Header().Set("Allow", rec.header.Get("Allow"))
				s.writeError(w, r, newError(http.StatusMethodNotAllowed, "method_not_allowed", "%s is not allowed here; allowed: %s", r.Method, rec.header.Get("Allow")))
				return
			}
		}
		mux.ServeHTTP(w, r)
	})
}

// checkPathProfile validates the {id} segment of /v1/profiles/{id}/… from
// the raw (escaped) path, so "..%2f", "%41lice" and friends are refused as
// what they decode to, before routing or path cleaning.
func checkPathProfile(r *http.Request) *Error {
	rest, ok := strings.CutPrefix(r.URL.EscapedPath(), "/v1/profiles/")
	if !ok {
		return nil
	}
	seg, _, _ := strings.Cut(rest, "/")
	id, err := url.PathUnescape(seg)
	if err != nil {
		return badRequest("invalid_profile_id", "profile id in the path is not valid URL escaping")
	}
	if err := storage.ValidateProfile(id); err != nil {
		return badRequest("invalid_profile_id", "%s", err.Error())
	}
	return nil
}

// headerRecorder captures the status and headers of the mux's fallback
// handlers; the body is dropped.
type headerRecorder struct {
	header http.Header
	status int
}

func (h *headerRecorder) Header() http.Header { return h.header }
func (h *headerRecorder) Write(b []byte) (int, error) {
	if h.status == 0 {
		h.status = http.StatusOK
	}
	return len(b), nil
}
func (h *headerRecorder) WriteHeader(code int) {
	if h.status == 0 {
		h.status = code
	}
}

// wrap adds auth, the profile lookup, metrics and error answers to a route.
func (s *Server) wrap(pattern string, sc scope, loads bool, h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		err := s.serve(sw, r, sc, loads, h)
		if err != nil {
			if sw.status != 0 {
				// Too late for an error answer (streaming, hijacked).
				s.log.Warn("request failed after answering", "route", pattern, "err", err)
			} else {
				s.writeError(sw, r, err)
			}
		}
		status := sw.status
		if status == 0 {
			status = http.StatusOK
		}
		s.metrics.observe(pattern, status, time.Since(start))
		s.log.Debug("request", "route", pattern, "profile", r.PathValue("id"), "status", status, "duration", time.Since(start))
	})
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request, sc scope, loads bool, h handlerFunc) error {
	id := r.PathValue("id")
	if e := s.authorize(r, sc, id); e != nil {
		return e
	}
	if loads {
		if s.cfg.Profiles == nil {
			return notImplemented("the profile catalogue")
		}
		// Bounded: an unreachable catalogue (etcd cut off) answers 503
		// instead of holding the request until the client gives up.
		gctx, cancel := context.WithTimeout(r.Context(), catalogTimeout)
		p, err := s.cfg.Profiles.Get(gctx, id)
		cancel()
		if err != nil {
			if s.isNotFound(err) {
				return newError(http.StatusNotFound, "profile_not_found", "profile %q does not exist", id)
			}
			return fmt.Errorf("load profile %s: %w", id, err)
		}
		r = r.WithContext(context.WithValue(r.Context(), profileKey, p))
	}
	return h(w, r)
}

// catalogTimeout bounds the catalogue read that precedes every profile
// route.
const catalogTimeout = 3 * time.Second

// decodeBody decodes a bounded JSON body into dst.
func (s *Server) decodeBody(w http.ResponseWriter, r *http.Request, dst any, limit int64) *Error {
	return decodeJSON(http.MaxBytesReader(w, r.Body, limit), dst)
}

// decodeOptionalBody decodes a body that may be absent or empty.
func (s *Server) decodeOptionalBody(w http.ResponseWriter, r *http.Request, dst any) *Error {
	body := http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes)
	var buf [1]byte
	n, err := io.ReadFull(body, buf[:])
	if n == 0 && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)) {
		return nil
	}
	return decodeJSON(io.MultiReader(strings.NewReader(string(buf[:n])), body), dst)
}

// statusWriter remembers the status written, and passes through the
// interfaces the WebSocket upgrade and streaming need.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController (and coder/websocket's hijack) reach
// the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Flush passes a flush through.
func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	return nil
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) error {
	if s.cfg.Readiness != nil {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		if err := s.cfg.Readiness.Ready(ctx); err != nil {
			return newError(http.StatusServiceUnavailable, "not_ready", "%s", err.Error())
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	return nil
}

func (s *Server) metricsHandler(w http.ResponseWriter, r *http.Request) error {
	if s.cfg.Gatherer == nil {
		return notImplemented("metrics")
	}
	promhttp.HandlerFor(s.cfg.Gatherer, promhttp.HandlerOpts{}).ServeHTTP(w, r)
	return nil
}

// httpMetrics counts requests by route pattern and status.
type httpMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newHTTPMetrics(reg prometheus.Registerer) (*httpMetrics, error) {
	if reg == nil {
		return nil, nil
	}
	m := &httpMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "amarula_http_requests_total",
			Help: "HTTP API requests by route pattern and status code.",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "amarula_http_request_seconds",
			Help:    "HTTP API request duration by route pattern (WebSocket streams excluded).",
			Buckets: prometheus.DefBuckets,
		}, []string{"route"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("api metrics: %w", err)
		}
	}
	return m, nil
}

func (m *httpMetrics) observe(route string, code int, d time.Duration) {
	if m == nil {
		return
	}
	m.requests.WithLabelValues(route, fmt.Sprint(code)).Inc()
	if d > 0 && !strings.HasSuffix(route, "/ws") {
		m.duration.WithLabelValues(route).Observe(d.Seconds())
	}
}
