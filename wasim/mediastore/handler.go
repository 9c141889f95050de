package mediastore

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
)

// Handler returns the HTTP handler for media URLs. Mount it wherever
// requests for the media host arrive (wasim routes by Host or by path):
//
//	POST /mms/<mmsType>/<token>?auth=<auth>&token=<token>   upload (§8.3)
//	GET  /v/t62.7118-24/<id>.enc?…                          download (§8.4)
//
// Uploads answer 200 with {"url","direct_path","handle","object_id"}, 401
// for a wrong auth, 400 for a token that is not the body's hash, 413 above
// MaxBlobBytes. Downloads answer 200 with the blob or 404 (unknown,
// evicted or expired). 404 is deliberate: whatsmeow stops trying other
// hosts on it and reports ErrMediaDownloadFailedWith404, which triggers a
// media retry request.
func (s *Store) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /mms/{type}/{token}", s.serveUpload)
	mux.HandleFunc("GET /v/{bucket}/{file}", s.serveDownload)
	return mux
}

type uploadResponse struct {
	URL        string `json:"url"`
	DirectPath string `json:"direct_path"`
	Handle     string `json:"handle"`
	ObjectID   string `json:"object_id"`
}

func (s *Store) serveUpload(w http.ResponseWriter, r *http.Request) {
	mmsType := r.PathValue("type")
	if subtle.ConstantTimeCompare([]byte(r.URL.Query().Get("auth")), []byte(s.cfg.Auth)) != 1 {
		http.Error(w, "bad auth", http.StatusUnauthorized)
		return
	}
	token := r.URL.Query().Get("token")
	if token == "" {
		token = r.PathValue("token")
	}
	if r.ContentLength > s.cfg.MaxBlobBytes {
		http.Error(w, "too large", http.StatusRequestEntityTooLarge)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBlobBytes))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			http.Error(w, "too large", http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "read body", http.StatusBadRequest)
		return
	}
	sum := sha256.Sum256(body)
	if !tokenMatches(token, sum[:]) {
		http.Error(w, ErrBadToken.Error(), http.StatusBadRequest)
		return
	}
	up, err := s.Put(mmsType, body)
	if err != nil {
		if errors.Is(err, ErrTooLarge) {
			http.Error(w, "too large", http.StatusRequestEntityTooLarge)
			return
		}
		slog.Warn("mediastore: upload failed", "type", mmsType, "err", err)
		http.Error(w, "store", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(uploadResponse{
		URL:        up.URL,
		DirectPath: up.DirectPath,
		Handle:     up.Handle,
		ObjectID:   up.ObjectID,
	})
}

// tokenMatches accepts the token in whatsmeow's padded base64url form and,
// leniently, unpadded.
func tokenMatches(token string, sum []byte) bool {
	got, err := base64.URLEncoding.DecodeString(token)
	if err != nil {
		got, err = base64.RawURLEncoding.DecodeString(token)
		if err != nil {
			return false
		}
	}
	return subtle.ConstantTimeCompare(got, sum) == 1
}

func (s *Store) serveDownload(w http.ResponseWriter, r *http.Request) {
	id, ok := strings.CutSuffix(r.PathValue("file"), ".enc")
	if !ok || id == "" {
		http.NotFound(w, r)
		return
	}
	data, err := s.Get(id)
	if err != nil {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	_, _ = w.Write(data)
}
