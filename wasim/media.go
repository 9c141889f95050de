package wasim

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"sync"

	"github.com/amarula/amarula/wasim/mediastore"
	"github.com/amarula/amarula/wasim/phone"
)

// mediaStore adapts package mediastore to the server: HTTP routes, the
// media_conn values, and in-process access for simulated phones.
type mediaStore struct {
	store *mediastore.Store
	auth  string

	mu        sync.Mutex
	byMessage map[string]string // message id → blob id
}

func newMediaStore(s *Server) *mediaStore {
	st := mediastore.New(mediastore.Config{Host: s.cfg.MediaHost})
	return &mediaStore{store: st, auth: st.Config().Auth, byMessage: map[string]string{}}
}

func (m *mediaStore) routes(mux *http.ServeMux) {
	h := m.store.Handler()
	mux.Handle("POST /mms/", h)
	mux.Handle("GET /v/", h)
}

func blobID(fileEncSHA256 []byte) string {
	return base64.RawURLEncoding.EncodeToString(fileEncSHA256)
}

// fetchForPhone downloads and decrypts media a phone received.
func (m *mediaStore) fetchForPhone(ref phone.MediaRef) (*MediaInfo, []byte) {
	info := &MediaInfo{Kind: ref.Kind, Mime: ref.Mime, FileName: ref.FileName}
	enc, err := m.store.Get(blobID(ref.FileEncSHA256))
	if err != nil {
		info.Error = err.Error()
		return info, nil
	}
	data, err := phone.DecryptMedia(enc, ref.MediaKey, ref.MediaType(), ref.FileEncSHA256, ref.FileSHA256)
	if err != nil {
		info.Error = err.Error()
		return info, nil
	}
	sum := sha256.Sum256(data)
	info.Size, info.SHA256 = len(data), hex.EncodeToString(sum[:])
	return info, data
}

// upload encrypts data as a phone would and stores it.
func (m *mediaStore) upload(kind string, data []byte) (phone.MediaBlob, phone.Uploaded, error) {
	mt := phone.MediaRef{Kind: kind}.MediaType()
	blob, err := phone.EncryptMedia(data, mt)
	if err != nil {
		return phone.MediaBlob{}, phone.Uploaded{}, err
	}
	up, err := m.store.Put(phone.MMSType(mt), blob.Encrypted)
	if err != nil {
		return phone.MediaBlob{}, phone.Uploaded{}, err
	}
	return blob, phone.Uploaded{URL: up.URL, DirectPath: up.DirectPath}, nil
}

// resolve maps a message id that carried media to its blob id; other ids
// are returned unchanged.
func (m *mediaStore) resolve(id string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if b, ok := m.byMessage[id]; ok {
		return b
	}
	return id
}

// remember records which blob a media message carried.
func (m *mediaStore) remember(msgID string, fileEncSHA256 []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.byMessage) > 100000 {
		clear(m.byMessage)
	}
	m.byMessage[msgID] = blobID(fileEncSHA256)
}
