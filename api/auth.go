package api

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"

	"github.com/amarula/amarula/storage"
)

// Storage namespaces owned by this package (in each profile's KV).
const (
	// NSAPIKeys maps hex(SHA-256(key)) to a keyRecord. The key itself is
	// never stored.
	NSAPIKeys = "api_keys"
	// NSIdempotency maps an Idempotency-Key header value to the first
	// answer of that send.
	NSIdempotency = "idempotency"
)

// KeyPrefix starts every profile API key: "amk_<profile>.<43 base64url chars>".
// Carrying the profile lets the API tell a valid key used on the wrong
// profile (403) from an invalid key (401) without a global index.
const KeyPrefix = "amk_"

// scope is who may call a route.
type scope int

const (
	scopePublic  scope = iota // no auth
	scopeAdmin                // the admin key only
	scopeProfile              // the admin key or a key of the path's profile
)

// principal is the authenticated caller.
type principal struct {
	admin   bool
	profile string // for profile keys
}

type keyRecord struct {
	ID        string `json:"id"`
	Name      string `json:"name,omitempty"`
	CreatedAt int64  `json:"created_at"`
}

func hashKey(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}

// keyID is the public handle of a key: a prefix of its hash.
func keyID(hash string) string { return hash[:16] }

// bearer extracts the token of an "Authorization: Bearer <token>" header.
func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}

// authorize authenticates the request and checks it may act in sc on
// profile (the path's profile id, "" for non-profile routes).
func (s *Server) authorize(r *http.Request, sc scope, profile string) *Error {
	if sc == scopePublic {
		return nil
	}
	tok, ok := bearer(r)
	if !ok {
		return newError(http.StatusUnauthorized, "unauthorized", "missing bearer token (Authorization: Bearer <key>)")
	}
	p, e := s.authenticate(r.Context(), tok)
	if e != nil {
		return e
	}
	switch {
	case p.admin:
		return nil
	case sc == scopeAdmin:
		return newError(http.StatusForbidden, "forbidden", "this endpoint needs the admin key")
	case p.profile != profile:
		return newError(http.StatusForbidden, "forbidden", "this API key belongs to another profile")
	}
	return nil
}

func (s *Server) authenticate(ctx context.Context, tok string) (principal, *Error) {
	given := sha256.Sum256([]byte(tok))
	admin := sha256.Sum256([]byte(s.cfg.AdminKey))
	if subtle.ConstantTimeCompare(given[:], admin[:]) == 1 {
		return principal{admin: true}, nil
	}
	invalid := newError(http.StatusUnauthorized, "unauthorized", "invalid API key")
	rest, ok := strings.CutPrefix(tok, KeyPrefix)
	if !ok || s.cfg.KV == nil {
		return principal{}, invalid
	}
	profile, _, ok := strings.Cut(rest, ".")
	if !ok || storage.ValidateProfile(profile) != nil {
		return principal{}, invalid
	}
	// The lookup by hash is the comparison: a hash of an unknown key is
	// simply absent, so no secret-dependent comparison happens here.
	_, err := s.cfg.KV.Get(ctx, profile, NSAPIKeys, hex.EncodeToString(given[:]))
	switch {
	case err == nil:
		return principal{profile: profile}, nil
	case errors.Is(err, storage.ErrNotFound):
		return principal{}, invalid
	default:
		s.log.Error("api key lookup failed", "profile", profile, "err", err)
		return principal{}, newError(http.StatusServiceUnavailable, "unavailable", "cannot check the API key now")
	}
}

// fenced runs a write of profile's API-side data at the profile's current
// fence, retrying when the fence moved between reading and writing.
func (s *Server) fenced(ctx context.Context, profile string, write func(storage.Token) error) error {
	if s.cfg.KV == nil || s.cfg.Fences == nil {
		return notImplemented("storage")
	}
	for attempt := 0; ; attempt++ {
		tok, err := s.cfg.Fences.Fence(ctx, profile)
		if err != nil {
			return fmt.Errorf("read fence of %s: %w", profile, err)
		}
		err = write(tok)
		if errors.Is(err, storage.ErrFenced) && attempt < 3 {
			continue
		}
		return err
	}
}

// createKey handles POST /v1/profiles/{id}/keys: the key is returned once.
func (s *Server) createKey(w http.ResponseWriter, r *http.Request) error {
	profile := r.PathValue("id")
	var req createKeyRequest
	if e := s.decodeOptionalBody(w, r, &req); e != nil {
		return e
	}
	if e := req.validate(); e != nil {
		return e
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return fmt.Errorf("generate key: %w", err)
	}
	key := KeyPrefix + profile + "." + base64.RawURLEncoding.EncodeToString(raw[:])
	hash := hashKey(key)
	rec := keyRecord{ID: keyID(hash), Name: req.Name, CreatedAt: s.cfg.Now().Unix()}
	b, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("encode key record: %w", err)
	}
	if err := s.fenced(r.Context(), profile, func(tok storage.Token) error {
		return s.cfg.KV.Put(r.Context(), profile, tok, NSAPIKeys, hash, b)
	}); err != nil {
		return fmt.Errorf("store key of %s: %w", profile, err)
	}
	s.log.Info("api key created", "profile", profile, "key_id", rec.ID)
	writeJSON(w, http.StatusCreated, struct {
		keyRecord
		Key string `json:"key"`
	}{rec, key})
	return nil
}

// listKeys handles GET /v1/profiles/{id}/keys (ids and names, never keys).
func (s *Server) listKeys(w http.ResponseWriter, r *http.Request) error {
	if s.cfg.KV == nil {
		return notImplemented("storage")
	}
	profile := r.PathValue("id")
	kvs, err := s.cfg.KV.Scan(r.Context(), profile, NSAPIKeys, "")
	if err != nil {
		return fmt.Errorf("list keys of %s: %w", profile, err)
	}
	keys := make([]keyRecord, 0, len(kvs))
	for _, kv := range kvs {
		var rec keyRecord
		if json.Unmarshal(kv.Value, &rec) != nil {
			continue
		}
		keys = append(keys, rec)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].CreatedAt < keys[j].CreatedAt })
	writeJSON(w, http.StatusOK, map[string]any{"keys": keys})
	return nil
}

// deleteKey handles DELETE /v1/profiles/{id}/keys/{keyid}.
func (s *Server) deleteKey(w http.ResponseWriter, r *http.Request) error {
	if s.cfg.KV == nil {
		return notImplemented("storage")
	}
	profile, id := r.PathValue("id"), r.PathValue("keyid")
	if len(id) != 16 || strings.Trim(id, "0123456789abcdef") != "" {
		return newError(http.StatusNotFound, "key_not_found", "no such API key")
	}
	kvs, err := s.cfg.KV.Scan(r.Context(), profile, NSAPIKeys, id)
	if err != nil {
		return fmt.Errorf("find key of %s: %w", profile, err)
	}
	if len(kvs) == 0 {
		return newError(http.StatusNotFound, "key_not_found", "no such API key")
	}
	for _, kv := range kvs {
		if err := s.fenced(r.Context(), profile, func(tok storage.Token) error {
			return s.cfg.KV.Delete(r.Context(), profile, tok, NSAPIKeys, kv.Key)
		}); err != nil {
			return fmt.Errorf("delete key of %s: %w", profile, err)
		}
	}
	s.log.Info("api key deleted", "profile", profile, "key_id", id)
	w.WriteHeader(http.StatusNoContent)
	return nil
}
