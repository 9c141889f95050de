package session

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"strings"
	"time"

	"go.mau.fi/whatsmeow"
	"go.mau.fi/whatsmeow/proto/waE2E"
	"go.mau.fi/whatsmeow/types"
	"google.golang.org/protobuf/proto"

	"github.com/amarula/amarula/media"
	"github.com/amarula/amarula/msgstore"
)

// Errors of media sending. Each wraps ErrInvalidRequest (the caller's input
// is at fault), so a caller that only knows ErrInvalidRequest answers 400.
var (
	// ErrMediaFetch: the media URL could not be fetched (unreachable host,
	// timeout, an answer other than 200).
	ErrMediaFetch = fmt.Errorf("%w: media url could not be fetched", ErrInvalidRequest)
	// ErrMediaTooLarge: the file exceeds MediaSending.MaxBytes.
	ErrMediaTooLarge = fmt.Errorf("%w: media too large", ErrInvalidRequest)
	// ErrMediaType: the file (declared, served or sniffed content type)
	// does not fit the media kind.
	ErrMediaType = fmt.Errorf("%w: media type does not fit the kind", ErrInvalidRequest)
)

// DefaultMediaMaxBytes is MediaSending.MaxBytes when unset (100 MiB,
// AMARULA_MEDIA_MAX_BYTES).
const DefaultMediaMaxBytes = 100 << 20

// MediaSending configures media sending.
type MediaSending struct {
	// Objects, if set, keeps a copy of every sent file under
	// media.ObjectKey(profile, id), so GET media serves sent files like
	// received ones; the stored message then records it (state stored).
	Objects media.Objects
	// MaxBytes bounds a file to send (inline or fetched). Default
	// DefaultMediaMaxBytes.
	MaxBytes int64
	// Fetch fetches media URLs. Default: a client with a 60 s timeout.
	Fetch *http.Client
}

// OutgoingMedia is an attachment to send: fetched from URL or given inline
// as Data (exactly one). SendRequest.Media holds one, a pointer to one, or
// a value with an OutgoingMedia() method (the API's request type).
type OutgoingMedia struct {
	Kind     string // image, video, audio, voice, document, sticker
	URL      string
	Data     []byte
	Mime     string // optional: taken from the URL's answer or sniffed
	Caption  string
	FileName string // documents
}

// NewMediaHTTPClient returns the HTTP client for WhatsApp media CDN
// downloads: the simulator redirect when whatsAppURL (Config.WhatsAppURL)
// is set, http.DefaultClient for real WhatsApp. The node's media worker
// uses it (media.CDN.Client).
func NewMediaHTTPClient(whatsAppURL string) (*http.Client, error) {
	if whatsAppURL == "" {
		return http.DefaultClient, nil
	}
	addr, err := simulatorAddr(whatsAppURL)
	if err != nil {
		return nil, err
	}
	return loopbackHTTPClient(addr), nil
}

func outgoingOf(v any) (OutgoingMedia, bool) {
	switch m := v.(type) {
	case OutgoingMedia:
		return m, true
	case *OutgoingMedia:
		if m != nil {
			return *m, true
		}
	case interface{ OutgoingMedia() OutgoingMedia }:
		return m.OutgoingMedia(), true
	}
	return OutgoingMedia{}, false
}

// mediaKinds maps a kind to whatsmeow's upload type.
var mediaKinds = map[string]whatsmeow.MediaType{
	msgstore.KindImage: whatsmeow.MediaImage, msgstore.KindSticker: whatsmeow.MediaImage,
	msgstore.KindVideo: whatsmeow.MediaVideo, msgstore.KindAudio: whatsmeow.MediaAudio,
	msgstore.KindVoice: whatsmeow.MediaAudio, msgstore.KindDocument: whatsmeow.MediaDocument,
}

// outgoing is a prepared media send: uploaded to WhatsApp, the message
// built, the plaintext still readable for the object-store copy.
type outgoing struct {
	msg     *waE2E.Message
	src     io.ReadSeeker
	cleanup func()
	mime    string
	up      whatsmeow.UploadResponse
}

func (o *outgoing) close() {
	if o.cleanup != nil {
		o.cleanup()
	}
}

// prepareMedia fetches (or takes) the file, checks size and type,
// uploads it to WhatsApp and builds the message. The caller closes it.
func (s *Session) prepareMedia(ctx context.Context, cli *whatsmeow.Client, own types.JID, req SendRequest) (*outgoing, error) {
	om, ok := outgoingOf(req.Media)
	if !ok {
		return nil, fmt.Errorf("%w: media of type %T", ErrInvalidRequest, req.Media)
	}
	mt, ok := mediaKinds[om.Kind]
	if !ok {
		return nil, fmt.Errorf("%w: unknown media kind %q", ErrInvalidRequest, om.Kind)
	}
	if (om.URL == "") == (len(om.Data) == 0) {
		return nil, fmt.Errorf("%w: exactly one of media url and data is required", ErrInvalidRequest)
	}
	limit := s.cfg.Media.MaxBytes
	if limit <= 0 {
		limit = DefaultMediaMaxBytes
	}
	o := &outgoing{}
	served := ""
	if om.URL != "" {
		f, ct, err := s.fetchMedia(ctx, om.URL, limit)
		if err != nil {
			return nil, err
		}
		o.src, served = f, ct
		o.cleanup = func() { _ = f.Close(); _ = os.Remove(f.Name()) }
	} else {
		if int64(len(om.Data)) > limit {
			return nil, fmt.Errorf("%w: %d bytes, the limit is %d", ErrMediaTooLarge, len(om.Data), limit)
		}
		o.src = bytes.NewReader(om.Data)
	}
	ok = false
	defer func() {
		if !ok {
			o.close()
		}
	}()
	var head [512]byte
	n, err := io.ReadFull(o.src, head[:])
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("session %s: read media: %w", s.cfg.Profile, err)
	}
	if n == 0 {
		return nil, fmt.Errorf("%w: the media file is empty", ErrInvalidRequest)
	}
	if _, err := o.src.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("session %s: read media: %w", s.cfg.Profile, err)
	}
	if o.mime, err = mediaMime(om.Kind, om.Mime, served, http.DetectContentType(head[:n])); err != nil {
		return nil, err
	}
	if o.up, err = cli.UploadReader(ctx, o.src, nil, mt); err != nil {
		return nil, fmt.Errorf("session %s: upload media: %w", s.cfg.Profile, err)
	}
	o.msg = mediaMessage(om, o.mime, o.up, s.quote(ctx, own, req.ReplyTo))
	ok = true
	return o, nil
}

// fetchMedia downloads url into a temporary file, at most limit bytes, and
// returns it with the served content type.
func (s *Session) fetchMedia(ctx context.Context, url string, limit int64) (*os.File, string, error) {
	hc := s.cfg.Media.Fetch
	if hc == nil {
		hc = &http.Client{Timeout: 60 * time.Second}
	}
	r, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, "", fmt.Errorf("%w: %v", ErrMediaFetch, err)
	}
	resp, err := hc.Do(r)
	if err != nil {
		if ctx.Err() != nil {
			return nil, "", ctx.Err()
		}
		return nil, "", fmt.Errorf("%w: %s", ErrMediaFetch, redactURLError(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, "", fmt.Errorf("%w: the server answered %s", ErrMediaFetch, resp.Status)
	}
	if resp.ContentLength > limit {
		return nil, "", fmt.Errorf("%w: %d bytes announced, the limit is %d", ErrMediaTooLarge, resp.ContentLength, limit)
	}
	f, err := os.CreateTemp("", "amarula-send-*")
	if err != nil {
		return nil, "", fmt.Errorf("session %s: spool media: %w", s.cfg.Profile, err)
	}
	n, err := io.Copy(f, io.LimitReader(resp.Body, limit+1))
	if err == nil && n > limit {
		err = fmt.Errorf("%w: more than %d bytes", ErrMediaTooLarge, limit)
	} else if err != nil {
		err = fmt.Errorf("%w: reading the body: %s", ErrMediaFetch, redactURLError(err))
	}
	if err == nil {
		_, err = f.Seek(0, io.SeekStart)
	}
	if err != nil {
		_ = f.Close()
		_ = os.Remove(f.Name())
		return nil, "", err
	}
	return f, resp.Header.Get("Content-Type"), nil
}

// redactURLError drops the URL from a client error (it may carry a token
// in its query); the caller knows which URL it sent.
func redactURLError(err error) string {
	var ue interface{ Unwrap() error }
	if errors.As(err, &ue) && ue.Unwrap() != nil {
		return ue.Unwrap().Error()
	}
	return err.Error()
}

// mediaMime picks the file's MIME type (declared, else served, else
// sniffed) and checks that every known one fits kind: a page of HTML is
// not an image, whatever the request says.
func mediaMime(kind, declared, served, sniffed string) (string, error) {
	base := func(t string) string {
		mt, _, err := mime.ParseMediaType(t)
		if err != nil {
			return ""
		}
		return mt
	}
	rawDeclared, rawServed := declared, served
	declared, served, sniffed = base(declared), base(served), base(sniffed)
	// The declared or served type is sent with its parameters
	// ("audio/ogg; codecs=opus"); the checks use the bare type.
	pick, raw := declared, rawDeclared
	if pick == "" && served != "application/octet-stream" {
		pick, raw = served, rawServed
	}
	if pick == "" {
		pick, raw = sniffed, sniffed
	}
	if kind == msgstore.KindDocument {
		if pick == "" {
			return "application/octet-stream", nil
		}
		return raw, nil
	}
	for _, c := range []struct{ what, t string }{{"declared", declared}, {"served", served}, {"detected", sniffed}} {
		if c.t == "" || c.t == "application/octet-stream" {
			continue
		}
		if !fitsKind(kind, c.t) {
			return "", fmt.Errorf("%w: %s type %s is not a %s", ErrMediaType, c.what, c.t, kind)
		}
	}
	if pick == "" || pick == "application/octet-stream" {
		return map[string]string{msgstore.KindImage: "image/jpeg", msgstore.KindSticker: "image/webp", msgstore.KindVideo: "video/mp4",
			msgstore.KindAudio: "audio/mpeg", msgstore.KindVoice: "audio/ogg; codecs=opus"}[kind], nil
	}
	return raw, nil
}

func fitsKind(kind, t string) bool {
	switch kind {
	case msgstore.KindImage:
		return strings.HasPrefix(t, "image/")
	case msgstore.KindSticker:
		return t == "image/webp"
	case msgstore.KindVideo:
		return strings.HasPrefix(t, "video/") || t == "image/gif"
	case msgstore.KindAudio, msgstore.KindVoice:
		return strings.HasPrefix(t, "audio/") || t == "application/ogg"
	}
	return true
}

// mediaMessage builds the WhatsApp message for an uploaded file.
func mediaMessage(om OutgoingMedia, mimeType string, up whatsmeow.UploadResponse, ci *waE2E.ContextInfo) *waE2E.Message {
	caption := func() *string {
		if om.Caption == "" {
			return nil
		}
		return proto.String(om.Caption)
	}
	switch om.Kind {
	case msgstore.KindImage:
		return &waE2E.Message{ImageMessage: &waE2E.ImageMessage{URL: &up.URL, DirectPath: &up.DirectPath, MediaKey: up.MediaKey,
			FileEncSHA256: up.FileEncSHA256, FileSHA256: up.FileSHA256, FileLength: &up.FileLength,
			Mimetype: proto.String(mimeType), Caption: caption(), ContextInfo: ci}}
	case msgstore.KindSticker:
		return &waE2E.Message{StickerMessage: &waE2E.StickerMessage{URL: &up.URL, DirectPath: &up.DirectPath, MediaKey: up.MediaKey,
			FileEncSHA256: up.FileEncSHA256, FileSHA256: up.FileSHA256, FileLength: &up.FileLength,
			Mimetype: proto.String(mimeType), ContextInfo: ci}}
	case msgstore.KindVideo:
		return &waE2E.Message{VideoMessage: &waE2E.VideoMessage{URL: &up.URL, DirectPath: &up.DirectPath, MediaKey: up.MediaKey,
			FileEncSHA256: up.FileEncSHA256, FileSHA256: up.FileSHA256, FileLength: &up.FileLength,
			Mimetype: proto.String(mimeType), Caption: caption(), ContextInfo: ci}}
	case msgstore.KindAudio, msgstore.KindVoice:
		return &waE2E.Message{AudioMessage: &waE2E.AudioMessage{URL: &up.URL, DirectPath: &up.DirectPath, MediaKey: up.MediaKey,
			FileEncSHA256: up.FileEncSHA256, FileSHA256: up.FileSHA256, FileLength: &up.FileLength,
			Mimetype: proto.String(mimeType), PTT: proto.Bool(om.Kind == msgstore.KindVoice), ContextInfo: ci}}
	}
	name := om.FileName
	if name == "" {
		name = "file"
	}
	return &waE2E.Message{DocumentMessage: &waE2E.DocumentMessage{URL: &up.URL, DirectPath: &up.DirectPath, MediaKey: up.MediaKey,
		FileEncSHA256: up.FileEncSHA256, FileSHA256: up.FileSHA256, FileLength: &up.FileLength,
		Mimetype: proto.String(mimeType), FileName: proto.String(name), Title: proto.String(name), Caption: caption(), ContextInfo: ci}}
}

// quote is the ContextInfo of a reply to stored message id (nil without
// one); an unknown id is still quoted by id.
func (s *Session) quote(ctx context.Context, own types.JID, id string) *waE2E.ContextInfo {
	if id == "" {
		return nil
	}
	ci := &waE2E.ContextInfo{StanzaID: proto.String(id)}
	if q, err := s.msgs.Get(ctx, s.cfg.Profile, id); err == nil {
		participant := q.From
		if q.FromMe {
			participant = own.String()
		}
		ci.Participant = proto.String(participant)
		ci.QuotedMessage = &waE2E.Message{Conversation: proto.String(q.Text)}
	}
	return ci
}

// keep copies the sent file into the object store under the message's key
// and records it on m (state stored). Without Objects the message keeps
// its descriptor only (state pending: the media worker downloads it from
// the CDN like a received file).
func (o *outgoing) keep(ctx context.Context, objs media.Objects, profile, id string, m *msgstore.Message) error {
	if m.Media == nil {
		return nil
	}
	if objs == nil {
		return nil
	}
	if _, err := o.src.Seek(0, io.SeekStart); err != nil {
		return err
	}
	sum := fmt.Sprintf("%x", o.up.FileSHA256)
	key := media.ObjectKey(profile, id)
	info, err := objs.Put(ctx, key, o.src, int64(o.up.FileLength), o.mime, sum)
	if err != nil {
		return fmt.Errorf("keep sent media %s: %w", id, err)
	}
	m.Media.ObjectKey, m.Media.Size, m.Media.SHA256, m.Media.State = key, info.Size, sum, msgstore.MediaStored
	return nil
}
