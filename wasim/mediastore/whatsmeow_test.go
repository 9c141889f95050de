package mediastore_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"testing"
	"time"
	"unsafe"

	"go.mau.fi/whatsmeow"
	"go.mau.fi/whatsmeow/proto/waMmsRetry"
	"go.mau.fi/whatsmeow/store"
	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/types/events"
	"go.mau.fi/whatsmeow/util/gcmutil"
	"go.mau.fi/whatsmeow/util/hkdfutil"
	waLog "go.mau.fi/whatsmeow/util/log"
	"google.golang.org/protobuf/proto"

	"github.com/amarula/amarula/wasim/mediastore"
	"github.com/amarula/amarula/wasim/phone"
)

// redirect sends every request, whatever its https host, to the test
// server over plain HTTP, like the dialer redirect wasim's clients install.
type redirect struct {
	target *url.URL
	hosts  chan string
}

func (r redirect) RoundTrip(req *http.Request) (*http.Response, error) {
	out := req.Clone(req.Context())
	out.URL.Scheme = r.target.Scheme
	out.URL.Host = r.target.Host
	select {
	case r.hosts <- req.URL.Host:
	default:
	}
	return http.DefaultTransport.RoundTrip(out)
}

// mediaClient is an unconnected whatsmeow client whose media HTTP goes to
// srv and whose media_conn cache is preloaded from s. whatsmeow only fills
// that cache from a media_conn iq over a live connection, so the test sets
// the unexported field directly; the rest of Upload and Download is
// whatsmeow's unmodified code.
func mediaClient(t *testing.T, s *mediastore.Store, srv *httptest.Server) (*whatsmeow.Client, chan string) {
	t.Helper()
	cli := whatsmeow.NewClient(&store.Device{}, waLog.Noop)
	target, _ := url.Parse(srv.URL)
	hosts := make(chan string, 100)
	cli.SetMediaHTTPClient(&http.Client{Transport: redirect{target: target, hosts: hosts}, Timeout: 10 * time.Second})
	mc := s.MediaConn()
	conn := &whatsmeow.MediaConn{
		Auth:       mc.Auth,
		TTL:        int(mc.TTL.Seconds()),
		AuthTTL:    int(mc.AuthTTL.Seconds()),
		MaxBuckets: mc.MaxBuckets,
		FetchedAt:  time.Now(),
	}
	for _, h := range mc.Hosts {
		conn.Hosts = append(conn.Hosts, whatsmeow.MediaConnHost{Hostname: h})
	}
	f := reflect.ValueOf(cli).Elem().FieldByName("mediaConnCache")
	if !f.IsValid() || f.Type() != reflect.TypeOf(conn) {
		t.Fatalf("whatsmeow.Client has no mediaConnCache *MediaConn field in this version")
	}
	reflect.NewAt(f.Type(), unsafe.Pointer(f.UnsafeAddr())).Elem().Set(reflect.ValueOf(conn))
	t.Cleanup(http.DefaultTransport.(*http.Transport).CloseIdleConnections)
	return cli, hosts
}

func TestWhatsmeowMedia(t *testing.T) {
	tests := []struct {
		name      string
		mediaType whatsmeow.MediaType
		size      int
	}{
		{"image small", whatsmeow.MediaImage, 1},
		{"image block aligned", whatsmeow.MediaImage, 4096},
		{"document", whatsmeow.MediaDocument, 100_003},
		{"video", whatsmeow.MediaVideo, 300_000},
		{"audio empty", whatsmeow.MediaAudio, 0},
	}
	s, srv := newServer(t, mediastore.Config{})
	cli, hosts := mediaClient(t, s, srv)
	ctx := context.Background()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			data := randBytes(tc.size)

			// whatsmeow uploads; the phone decrypts what the store holds.
			resp, err := cli.Upload(ctx, data, tc.mediaType)
			if err != nil {
				t.Fatalf("whatsmeow Upload to mediastore: %v", err)
			}
			if host := <-hosts; host != "mmg.whatsapp.net" {
				t.Fatalf("upload went to host %q", host)
			}
			blob := uploaded(t, s, resp)
			got, err := phone.DecryptMedia(blob, resp.MediaKey, tc.mediaType, resp.FileEncSHA256, resp.FileSHA256)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("phone.DecryptMedia of whatsmeow upload: %v", err)
			}

			// The phone encrypts and uploads directly; whatsmeow downloads
			// by url and by direct path.
			mb, err := phone.EncryptMedia(data, tc.mediaType)
			if err != nil {
				t.Fatal(err)
			}
			up, err := s.Put(phone.MMSType(tc.mediaType), mb.Encrypted)
			if err != nil {
				t.Fatal(err)
			}
			byURL, err := cli.DownloadMediaWithPath(ctx, up.DirectPath, mb.FileEncSHA256, mb.FileSHA256, mb.MediaKey, int(mb.FileLength), tc.mediaType, "")
			if err != nil || !bytes.Equal(byURL, data) {
				t.Fatalf("whatsmeow DownloadMediaWithPath of phone media: %v", err)
			}
			if tc.mediaType == whatsmeow.MediaImage {
				msg := phone.Image(mb, phone.Uploaded{URL: up.URL, DirectPath: up.DirectPath}, "image/jpeg", "")
				got, err := cli.Download(ctx, msg.GetImageMessage())
				if err != nil || !bytes.Equal(got, data) {
					t.Fatalf("whatsmeow Download(ImageMessage) of phone media: %v", err)
				}
			}
			drain(hosts)
		})
	}
}

// uploaded returns the stored bytes of a whatsmeow upload, checking that
// whatsmeow got back the url and direct_path the store announced.
func uploaded(t *testing.T, s *mediastore.Store, resp whatsmeow.UploadResponse) []byte {
	t.Helper()
	id := base64.RawURLEncoding.EncodeToString(resp.FileEncSHA256)
	if resp.DirectPath != mediastore.DirectPath(id) || resp.URL != "https://mmg.whatsapp.net"+resp.DirectPath {
		t.Fatalf("upload response url=%q direct_path=%q", resp.URL, resp.DirectPath)
	}
	b, err := s.Get(id)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func drain(c chan string) {
	for {
		select {
		case <-c:
		default:
			return
		}
	}
}

func TestWhatsmeowExpiredMedia(t *testing.T) {
	s, srv := newServer(t, mediastore.Config{})
	cli, _ := mediaClient(t, s, srv)
	ctx := context.Background()
	data := randBytes(5000)
	mb, err := phone.EncryptMedia(data, whatsmeow.MediaImage)
	if err != nil {
		t.Fatal(err)
	}
	up, err := s.Put("image", mb.Encrypted)
	if err != nil {
		t.Fatal(err)
	}
	msg := phone.Image(mb, phone.Uploaded{URL: up.URL, DirectPath: up.DirectPath}, "image/jpeg", "").GetImageMessage()
	if err := s.Expire(up.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Download(ctx, msg); !errors.Is(err, whatsmeow.ErrMediaDownloadFailedWith404) {
		t.Fatalf("download of expired media: %v, want ErrMediaDownloadFailedWith404", err)
	}

	// The client's media retry receipt, as whatsmeow's SendMediaRetryReceipt
	// encrypts it (encryptMediaRetryReceipt, copied: it is unexported).
	const msgID = "3EB0123456789ABCDEF012"
	key := hkdfutil.SHA256(mb.MediaKey, nil, []byte("WhatsApp Media Retry Notification"), 32)
	iv := randBytes(12)
	plain, _ := proto.Marshal(&waMmsRetry.ServerErrorReceipt{StanzaID: proto.String(msgID)})
	ct, err := gcmutil.Encrypt(key, iv, plain, []byte(msgID))
	if err != nil {
		t.Fatal(err)
	}
	stanza, err := phone.DecryptMediaRetryReceipt(mb.MediaKey, ct, iv, msgID)
	if err != nil || stanza != msgID {
		t.Fatalf("phone opens the retry receipt: %q %v", stanza, err)
	}
	if _, err := phone.DecryptMediaRetryReceipt(mb.MediaKey, ct, iv, "3EB0OTHER"); err == nil {
		t.Fatal("retry receipt opened under another message id")
	}

	// The phone re-uploads and answers; whatsmeow decrypts the notification.
	again, err := phone.EncryptMediaWithKey(data, mb.MediaKey, whatsmeow.MediaImage)
	if err != nil {
		t.Fatal(err)
	}
	reup, err := s.Put("image", again.Encrypted)
	if err != nil {
		t.Fatal(err)
	}
	nct, niv, err := phone.EncryptMediaRetryNotification(mb.MediaKey, msgID, reup.DirectPath, waMmsRetry.MediaRetryNotification_SUCCESS)
	if err != nil {
		t.Fatal(err)
	}
	notif, err := whatsmeow.DecryptMediaRetryNotification(&events.MediaRetry{Ciphertext: nct, IV: niv, MessageID: msgID, ChatID: types.EmptyJID}, mb.MediaKey)
	if err != nil {
		t.Fatalf("whatsmeow DecryptMediaRetryNotification: %v", err)
	}
	if notif.GetResult() != waMmsRetry.MediaRetryNotification_SUCCESS || notif.GetDirectPath() != reup.DirectPath || notif.GetStanzaID() != msgID {
		t.Fatalf("notification %v", notif)
	}
	msg.DirectPath = proto.String(notif.GetDirectPath())
	got, err := cli.Download(ctx, msg)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("download after re-upload: %v", err)
	}
}
