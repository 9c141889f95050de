package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/amarula/amarula/msgstore"
	"github.com/amarula/amarula/session"
	"github.com/amarula/amarula/storage/s3"
)

// OutgoingMedia converts the request's attachment for the session
// (session.SendRequest.Media accepts any value with this method).
func (m *SendMedia) OutgoingMedia() session.OutgoingMedia {
	return session.OutgoingMedia{Kind: m.Kind, URL: m.URL, Data: m.Data, Mime: m.Mime, Caption: m.Caption, FileName: m.FileName}
}

// validMime accepts a MIME type with optional parameters ("audio/ogg;
// codecs=opus", what WhatsApp voice notes carry).
func validMime(s string) bool {
	if len(s) > 255 {
		return false
	}
	mt, _, err := mime.ParseMediaType(s)
	return err == nil && mimePattern.MatchString(mt)
}

// MediaObjects is what GET media needs from the object store (s3.Objects
// satisfies it).
type MediaObjects interface {
	Stat(ctx context.Context, key string) (s3.Info, error)
	Get(ctx context.Context, key string, rng *s3.Range) (io.ReadCloser, s3.Info, error)
	PresignGet(ctx context.Context, key string, ttl time.Duration) (string, error)
}

// PresignTTL is how long a ?redirect=1 URL stays valid.
const PresignTTL = 15 * time.Minute

// MediaHandler serves GET /v1/profiles/{id}/media/{msgid} (Config.Media):
// the stored bytes of a message's media with its content type, single
// byte ranges (206, 416), an ETag of the SHA-256; with ?redirect=1 a 302 to
// a presigned object-store URL where the store supports it (S3), else the
// bytes. While the download job runs: 404 media_pending; a failed job:
// 404 media_failed; no such message or no media: 404 not_found.
type MediaHandler struct {
	Messages Messages
	Objects  MediaObjects
	Logger   *slog.Logger
}

func (h *MediaHandler) fail(w http.ResponseWriter, status int, code, format string, args ...any) {
	writeJSON(w, status, errorBody{Error: errorDetail{Code: code, Message: fmt.Sprintf(format, args...)}})
}

// ServeHTTP implements http.Handler.
func (h *MediaHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	profile, id := r.PathValue("id"), r.PathValue("msgid")
	ctx := r.Context()
	m, err := h.Messages.Get(ctx, profile, id)
	switch {
	case errors.Is(err, msgstore.ErrNotFound):
		h.fail(w, http.StatusNotFound, "not_found", "no message %s", id)
		return
	case err != nil:
		h.internal(w, r, err)
		return
	case m.Media == nil:
		h.fail(w, http.StatusNotFound, "not_found", "message %s has no media", id)
		return
	}
	switch m.Media.State {
	case msgstore.MediaStored:
	case msgstore.MediaFailed:
		h.fail(w, http.StatusNotFound, "media_failed", "the media of %s could not be downloaded", id)
		return
	default:
		h.fail(w, http.StatusNotFound, "media_pending", "the media of %s is being downloaded; try again shortly", id)
		return
	}
	key := m.Media.ObjectKey
	if r.URL.Query().Get("redirect") == "1" {
		u, err := h.Objects.PresignGet(ctx, key, PresignTTL)
		if err == nil {
			w.Header().Set("Cache-Control", "no-store")
			http.Redirect(w, r, u, http.StatusFound)
			return
		}
		if !errors.Is(err, s3.ErrNotSupported) {
			h.internal(w, r, err)
			return
		}
		// The local store cannot presign: stream instead.
	}
	info, err := h.Objects.Stat(ctx, key)
	if errors.Is(err, s3.ErrNotFound) {
		h.fail(w, http.StatusNotFound, "not_found", "the media object of %s is gone", id)
		return
	}
	if err != nil {
		h.internal(w, r, err)
		return
	}
	ctype := m.Media.Mime
	if ctype == "" {
		ctype = info.ContentType
	}
	hd := w.Header()
	hd.Set("Content-Type", ctype)
	hd.Set("Accept-Ranges", "bytes")
	hd.Set("Cache-Control", "private, max-age=3600")
	hd.Set("X-Content-Type-Options", "nosniff")
	if info.SHA256 != "" {
		hd.Set("ETag", `"`+info.SHA256+`"`)
	}
	if m.Media.FileName != "" {
		hd.Set("Content-Disposition", mime.FormatMediaType("inline", map[string]string{"filename": m.Media.FileName}))
	}
	if inm := r.Header.Get("If-None-Match"); inm != "" && info.SHA256 != "" && strings.Contains(inm, info.SHA256) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	var rng *s3.Range
	status := http.StatusOK
	if spec := r.Header.Get("Range"); spec != "" && ifRangeMatches(r, info) {
		off, n, ok, satisfiable := parseRange(spec, info.Size)
		switch {
		case !satisfiable:
			hd.Set("Content-Range", fmt.Sprintf("bytes */%d", info.Size))
			h.fail(w, http.StatusRequestedRangeNotSatisfiable, "invalid_range", "range %q is outside the %d bytes of the file", spec, info.Size)
			return
		case ok:
			rng, status = &s3.Range{Offset: off, Length: n}, http.StatusPartialContent
			hd.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", off, off+n-1, info.Size))
		}
	}
	body, _, err := h.Objects.Get(ctx, key, rng)
	if err != nil {
		hd.Del("Content-Range")
		if errors.Is(err, s3.ErrNotFound) {
			h.fail(w, http.StatusNotFound, "not_found", "the media object of %s is gone", id)
			return
		}
		h.internal(w, r, err)
		return
	}
	defer body.Close()
	length := info.Size
	if rng != nil {
		length = rng.Length
	}
	hd.Set("Content-Length", strconv.FormatInt(length, 10))
	w.WriteHeader(status)
	if _, err := io.Copy(w, body); err != nil && ctx.Err() == nil {
		// Headers are out: the client sees a short body.
		h.logger().Warn("media stream broken", "profile", profile, "id", id, "err", err)
	}
}

func (h *MediaHandler) logger() *slog.Logger {
	if h.Logger == nil {
		return slog.Default()
	}
	return h.Logger
}

func (h *MediaHandler) internal(w http.ResponseWriter, r *http.Request, err error) {
	h.logger().Error("media request failed", "path", r.URL.Path, "err", err)
	h.fail(w, http.StatusInternalServerError, "internal", "internal error")
}

// ifRangeMatches applies If-Range (an ETag): a stale validator means the
// whole file.
func ifRangeMatches(r *http.Request, info s3.Info) bool {
	ir := r.Header.Get("If-Range")
	return ir == "" || (info.SHA256 != "" && strings.Trim(ir, `"`) == info.SHA256)
}

// parseRange parses one "bytes=" range of a file of size bytes. ok=false
// with satisfiable=true means "serve the whole file" (a malformed header
// or several ranges, which RFC 9110 lets a server ignore).
func parseRange(spec string, size int64) (off, n int64, ok, satisfiable bool) {
	rest, found := strings.CutPrefix(spec, "bytes=")
	if !found || strings.Contains(rest, ",") {
		return 0, 0, false, true
	}
	first, last, found := strings.Cut(strings.TrimSpace(rest), "-")
	if !found {
		return 0, 0, false, true
	}
	if first == "" { // suffix: the last N bytes
		k, err := strconv.ParseInt(last, 10, 64)
		if err != nil || k < 0 {
			return 0, 0, false, true
		}
		if k == 0 || size == 0 {
			return 0, 0, false, false
		}
		k = min(k, size)
		return size - k, k, true, true
	}
	start, err := strconv.ParseInt(first, 10, 64)
	if err != nil || start < 0 {
		return 0, 0, false, true
	}
	if start >= size {
		return 0, 0, false, false
	}
	end := size - 1
	if last != "" {
		e, err := strconv.ParseInt(last, 10, 64)
		if err != nil || e < start {
			return 0, 0, false, true
		}
		end = min(e, size-1)
	}
	return start, end - start + 1, true, true
}
