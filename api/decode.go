package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/amarula/amarula/catalog"
	"github.com/amarula/amarula/storage"
	"github.com/amarula/amarula/webhook"
)

// Limits of request fields.
const (
	maxTextLen      = 65536
	maxIDLen        = 128 // message ids, target ids
	maxURLLen       = 2048
	maxSecretLen    = 256
	maxCaptionLen   = 4096
	maxFileNameLen  = 255
	maxKeyNameLen   = 64
	maxCursorLen    = 256
	maxIdemKeyLen   = 255
	maxPhoneDigits  = 15
	minPhoneDigits  = 6
	maxRedeliverIDs = 1000
)

var (
	phonePattern = regexp.MustCompile(`^\+?[0-9]{6,15}$`)
	jidPattern   = regexp.MustCompile(`^[0-9A-Za-z._:+-]{1,64}@(s\.whatsapp\.net|g\.us|lid|broadcast|newsletter|c\.us)$`)
	mimePattern  = regexp.MustCompile(`^[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,127}$`)
	mediaKinds   = map[string]bool{"image": true, "video": true, "audio": true, "voice": true, "document": true, "sticker": true}
)

// decodeJSON decodes exactly one JSON value from r into dst, refusing
// unknown fields and trailing data. Errors are 400s that name the problem,
// or 413 when r was cut by http.MaxBytesReader.
func decodeJSON(r io.Reader, dst any) *Error {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return jsonError(err)
	}
	var extra json.RawMessage
	if err := dec.Decode(&extra); err != io.EOF {
		if err != nil {
			if e := jsonError(err); e.Status == http.StatusRequestEntityTooLarge {
				return e
			}
		}
		return badRequest("invalid_json", "request body must hold a single JSON object; found data after it")
	}
	return nil
}

func jsonError(err error) *Error {
	var (
		maxErr  *http.MaxBytesError
		synErr  *json.SyntaxError
		typeErr *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &maxErr):
		return newError(http.StatusRequestEntityTooLarge, "body_too_large", "request body exceeds %d bytes", maxErr.Limit)
	case errors.Is(err, io.EOF):
		return badRequest("invalid_json", "request body is empty; expected a JSON object")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return badRequest("invalid_json", "malformed JSON: unexpected end of input")
	case errors.As(err, &synErr):
		return badRequest("invalid_json", "malformed JSON at byte %d: %s", synErr.Offset, synErr.Error())
	case errors.As(err, &typeErr):
		if typeErr.Field == "" {
			return badRequest("invalid_json", "request body must be a JSON object, not %s", typeErr.Value)
		}
		return badRequest("invalid_field", "field %q must be %s, not %s", typeErr.Field, jsonTypeName(typeErr.Type.String()), typeErr.Value)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return badRequest("unknown_field", "unknown field %s", strings.TrimPrefix(err.Error(), "json: unknown field "))
	default:
		var e *Error
		if errors.As(err, &e) {
			return e
		}
		// e.g. illegal base64 data in a []byte field.
		return badRequest("invalid_json", "invalid JSON value: %s", strings.TrimPrefix(err.Error(), "json: "))
	}
}

func jsonTypeName(goType string) string {
	switch {
	case goType == "string":
		return "a string"
	case goType == "bool":
		return "a boolean"
	case strings.HasPrefix(goType, "int"), strings.HasPrefix(goType, "uint"), strings.HasPrefix(goType, "float"):
		return "a number"
	case goType == "[]uint8":
		return "a base64 string"
	case strings.HasPrefix(goType, "[]"):
		return "an array"
	default:
		return "an object"
	}
}

// CreateProfileRequest is the body of POST /v1/profiles.
type CreateProfileRequest struct {
	ID      string         `json:"id"`
	Webhook *WebhookConfig `json:"webhook,omitempty"`
}

// WebhookConfig is the webhook part of a profile request.
type WebhookConfig struct {
	URL    string   `json:"url"`
	Secret string   `json:"secret,omitempty"`
	Events []string `json:"events,omitempty"`
}

// DecodeCreateProfile decodes and validates a POST /v1/profiles body.
func DecodeCreateProfile(r io.Reader) (CreateProfileRequest, *Error) {
	var req CreateProfileRequest
	if e := decodeJSON(r, &req); e != nil {
		return req, e
	}
	if req.ID == "" {
		return req, badRequest("invalid_profile_id", `field "id" is required`)
	}
	if err := storage.ValidateProfile(req.ID); err != nil {
		return req, badRequest("invalid_profile_id", "%s", err.Error())
	}
	if req.Webhook != nil {
		if e := validateWebhook(*req.Webhook); e != nil {
			return req, e
		}
		if len(req.Webhook.Events) == 0 {
			req.Webhook.Events = nil // [] and absent both select every event
		}
	}
	return req, nil
}

func validateWebhook(w WebhookConfig) *Error {
	if w.URL == "" {
		return badRequest("invalid_webhook", `field "webhook.url" is required`)
	}
	if len(w.URL) > maxURLLen {
		return badRequest("invalid_webhook", `field "webhook.url" is longer than %d bytes`, maxURLLen)
	}
	u, err := url.Parse(w.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return badRequest("invalid_webhook", `field "webhook.url" must be an absolute http or https URL`)
	}
	if len(w.Secret) > maxSecretLen {
		return badRequest("invalid_webhook", `field "webhook.secret" is longer than %d bytes`, maxSecretLen)
	}
	if err := webhook.ValidatePatterns(w.Events); err != nil {
		return badRequest("invalid_webhook", `field "webhook.events": %s`, err.Error())
	}
	return nil
}

// patchProfileRequest is the body of PATCH /v1/profiles/{id}: "webhook"
// absent keeps the configuration, null removes it, an object updates the
// fields it names.
type patchProfileRequest struct {
	Webhook optionalWebhook `json:"webhook"`
}

type optionalWebhook struct {
	set, null bool
	v         webhookPatch
}

type webhookPatch struct {
	URL    *string   `json:"url"`
	Secret *string   `json:"secret"`
	Events *[]string `json:"events"`
}

// UnmarshalJSON records presence and null-ness of "webhook".
func (o *optionalWebhook) UnmarshalJSON(b []byte) error {
	o.set = true
	if string(bytes.TrimSpace(b)) == "null" {
		o.null = true
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&o.v); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) {
			if typeErr.Field == "" {
				return badRequest("invalid_field", `field "webhook" must be an object or null`)
			}
			typeErr.Field = "webhook." + typeErr.Field
		}
		if strings.HasPrefix(err.Error(), "json: unknown field ") {
			return badRequest("unknown_field", "unknown field webhook.%s", strings.TrimPrefix(err.Error(), "json: unknown field "))
		}
		return err
	}
	return nil
}

// apply merges the patch into the current configuration.
func (p patchProfileRequest) apply(cur *catalog.Webhook) (*catalog.Webhook, *Error) {
	if !p.Webhook.set {
		return cur, nil
	}
	if p.Webhook.null {
		return nil, nil
	}
	next := catalog.Webhook{}
	if cur != nil {
		next = *cur
		next.Events = append([]string(nil), cur.Events...)
	}
	v := p.Webhook.v
	if v.URL != nil {
		next.URL = *v.URL
	}
	if v.Secret != nil {
		next.Secret = *v.Secret
	}
	if v.Events != nil {
		next.Events = *v.Events
	}
	if e := validateWebhook(WebhookConfig{URL: next.URL, Secret: next.Secret, Events: next.Events}); e != nil {
		return nil, e
	}
	return &next, nil
}

// DecodeSendRequest decodes and validates a POST .../messages body.
func DecodeSendRequest(r io.Reader) (SendRequest, *Error) {
	var req SendRequest
	if e := decodeJSON(r, &req); e != nil {
		return req, e
	}
	return req, req.validate()
}

func invalidMessage(format string, args ...any) *Error {
	return badRequest("invalid_message", format, args...)
}

func (req SendRequest) validate() *Error {
	if req.To == "" {
		return invalidMessage(`field "to" is required`)
	}
	if !phonePattern.MatchString(req.To) && !jidPattern.MatchString(req.To) {
		return invalidMessage(`field "to" must be a phone number in international format (+15551234567) or a JID (…@s.whatsapp.net, …@g.us)`)
	}
	kinds := 0
	for _, set := range []bool{req.Text != "", req.Media != nil, req.Reaction != nil, req.Edit != nil, req.Revoke != nil} {
		if set {
			kinds++
		}
	}
	if kinds != 1 {
		return invalidMessage(`exactly one of "text", "media", "reaction", "edit", "revoke" is required, got %d`, kinds)
	}
	if e := checkText("text", req.Text); e != nil {
		return e
	}
	if req.ReplyTo != "" {
		if req.Text == "" && req.Media == nil {
			return invalidMessage(`"reply_to" goes with "text" or "media"`)
		}
		if e := checkID("reply_to", req.ReplyTo); e != nil {
			return e
		}
	}
	switch {
	case req.Media != nil:
		return req.Media.validate()
	case req.Reaction != nil:
		if e := checkID("reaction.target_id", req.Reaction.TargetID); e != nil {
			return e
		}
		if len(req.Reaction.Emoji) > 32 || !utf8.ValidString(req.Reaction.Emoji) {
			return invalidMessage(`field "reaction.emoji" must be one emoji ("" removes the reaction)`)
		}
	case req.Edit != nil:
		if e := checkID("edit.target_id", req.Edit.TargetID); e != nil {
			return e
		}
		if req.Edit.Text == "" {
			return invalidMessage(`field "edit.text" is required`)
		}
		return checkText("edit.text", req.Edit.Text)
	case req.Revoke != nil:
		return checkID("revoke.target_id", req.Revoke.TargetID)
	}
	return nil
}

func (m SendMedia) validate() *Error {
	if !mediaKinds[m.Kind] {
		return invalidMessage(`field "media.kind" must be one of image, video, audio, voice, document, sticker`)
	}
	if (m.URL == "") == (len(m.Data) == 0) {
		return invalidMessage(`exactly one of "media.url" and "media.data" is required`)
	}
	if m.URL != "" {
		u, err := url.Parse(m.URL)
		if len(m.URL) > maxURLLen || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return invalidMessage(`field "media.url" must be an absolute http or https URL of at most %d bytes`, maxURLLen)
		}
	}
	if m.Mime != "" && !validMime(m.Mime) {
		return invalidMessage(`field "media.mime" must be a MIME type such as image/jpeg or audio/ogg; codecs=opus`)
	}
	if len(m.Caption) > maxCaptionLen || !utf8.ValidString(m.Caption) {
		return invalidMessage(`field "media.caption" must be UTF-8 of at most %d bytes`, maxCaptionLen)
	}
	if len(m.FileName) > maxFileNameLen || strings.ContainsAny(m.FileName, "/\\\x00") {
		return invalidMessage(`field "media.file_name" must be a plain file name of at most %d bytes`, maxFileNameLen)
	}
	return nil
}

func checkText(field, s string) *Error {
	if len(s) > maxTextLen {
		return invalidMessage("field %q is longer than %d bytes", field, maxTextLen)
	}
	if !utf8.ValidString(s) {
		return invalidMessage("field %q is not valid UTF-8", field)
	}
	return nil
}

func checkID(field, id string) *Error {
	if id == "" {
		return invalidMessage("field %q is required", field)
	}
	if len(id) > maxIDLen || !printableASCII(id) {
		return invalidMessage("field %q must be a message id (printable ASCII, at most %d bytes)", field, maxIDLen)
	}
	return nil
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// pairPhoneRequest is the body of POST .../pair-phone.
type pairPhoneRequest struct {
	Phone string `json:"phone"`
}

func (p pairPhoneRequest) validate() *Error {
	if !phonePattern.MatchString(p.Phone) {
		return badRequest("invalid_phone", `field "phone" must be a phone number in international format, e.g. +15551234567`)
	}
	return nil
}

// createKeyRequest is the (optional) body of POST .../keys.
type createKeyRequest struct {
	Name string `json:"name"`
}

func (k createKeyRequest) validate() *Error {
	if len(k.Name) > maxKeyNameLen || !utf8.ValidString(k.Name) || strings.ContainsAny(k.Name, "\x00\r\n") {
		return badRequest("invalid_request", `field "name" must be a single line of at most %d bytes`, maxKeyNameLen)
	}
	return nil
}

// redeliverRequest is the (optional) body of POST .../webhook/redeliver.
type redeliverRequest struct {
	IDs []string `json:"ids"`
}

func (r redeliverRequest) validate() *Error {
	if len(r.IDs) > maxRedeliverIDs {
		return badRequest("invalid_request", `field "ids" holds more than %d ids`, maxRedeliverIDs)
	}
	for _, id := range r.IDs {
		if id == "" || len(id) > maxCursorLen {
			return badRequest("invalid_request", `field "ids" must hold event ids`)
		}
	}
	return nil
}
