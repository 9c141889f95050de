package phone

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"

	"go.mau.fi/whatsmeow"
	"go.mau.fi/whatsmeow/proto/waMmsRetry"
	"google.golang.org/protobuf/proto"
)

// mediaMACLen is the length of the truncated HMAC appended to media.
const mediaMACLen = 10

// Sentinel errors of media decryption, in the order whatsmeow checks.
var (
	ErrMediaTooShort  = errors.New("phone: media too short")
	ErrMediaEncSHA256 = errors.New("phone: media enc sha256 mismatch")
	ErrMediaMAC       = errors.New("phone: media hmac mismatch")
	ErrMediaPadding   = errors.New("phone: media padding invalid")
	ErrMediaSHA256    = errors.New("phone: media sha256 mismatch")
)

// MediaBlob is encrypted media as uploaded (§8.2) plus the values a media
// message carries so that a receiver can fetch and decrypt it.
type MediaBlob struct {
	// Encrypted is AES-CBC(plaintext) || HMAC[:10]: the upload body.
	Encrypted []byte
	// MediaKey is the 32-byte random key all media keys are derived from.
	MediaKey []byte
	// FileSHA256 is SHA-256 of the plaintext.
	FileSHA256 []byte
	// FileEncSHA256 is SHA-256 of Encrypted; base64url of it is the upload
	// token.
	FileEncSHA256 []byte
	// FileLength is the plaintext length.
	FileLength uint64
}

// mediaKeys expands mediaKey like whatsmeow's getMediaKeys:
// HKDF-SHA256(mediaKey, info = media type, 112 bytes).
func mediaKeys(mediaKey []byte, appInfo whatsmeow.MediaType) (iv, cipherKey, macKey []byte, err error) {
	exp, err := hkdf.Key(sha256.New, mediaKey, nil, string(appInfo), 112)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("media keys: %w", err)
	}
	return exp[:16], exp[16:48], exp[48:80], nil
}

// EncryptMedia encrypts data with a fresh media key exactly as whatsmeow's
// Upload does, so that whatsmeow's Download decrypts the result.
func EncryptMedia(data []byte, appInfo whatsmeow.MediaType) (MediaBlob, error) {
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	return EncryptMediaWithKey(data, key, appInfo)
}

// EncryptMediaWithKey is EncryptMedia with a given media key. The output is
// deterministic, which is how a phone re-uploads identical bytes after a
// media retry request.
func EncryptMediaWithKey(data, mediaKey []byte, appInfo whatsmeow.MediaType) (MediaBlob, error) {
	if len(mediaKey) != 32 {
		return MediaBlob{}, fmt.Errorf("encrypt media: key of %d bytes: %w", len(mediaKey), ErrBadKey)
	}
	iv, cipherKey, macKey, err := mediaKeys(mediaKey, appInfo)
	if err != nil {
		return MediaBlob{}, fmt.Errorf("encrypt media: %w", err)
	}
	block, err := aes.NewCipher(cipherKey)
	if err != nil {
		return MediaBlob{}, fmt.Errorf("encrypt media: %w", err)
	}
	padLen := aes.BlockSize - len(data)%aes.BlockSize
	out := make([]byte, len(data)+padLen, len(data)+padLen+mediaMACLen)
	copy(out, data)
	copy(out[len(data):], bytes.Repeat([]byte{byte(padLen)}, padLen))
	cipher.NewCBCEncrypter(block, iv).CryptBlocks(out, out)
	mac := hmac.New(sha256.New, macKey)
	mac.Write(iv)
	mac.Write(out)
	out = append(out, mac.Sum(nil)[:mediaMACLen]...)
	plainSum := sha256.Sum256(data)
	encSum := sha256.Sum256(out)
	return MediaBlob{
		Encrypted:     out,
		MediaKey:      bytes.Clone(mediaKey),
		FileSHA256:    plainSum[:],
		FileEncSHA256: encSum[:],
		FileLength:    uint64(len(data)),
	}, nil
}

// DecryptMedia checks and decrypts a downloaded media body like whatsmeow's
// downloadAndDecrypt: length, SHA-256 of the body (when fileEncSHA256 is
// given), HMAC, CBC with PKCS#7 padding, then SHA-256 of the plaintext (when
// fileSHA256 is given). Unlike whatsmeow it treats a plaintext hash mismatch
// as an error, not a warning.
func DecryptMedia(encrypted, mediaKey []byte, appInfo whatsmeow.MediaType, fileEncSHA256, fileSHA256 []byte) ([]byte, error) {
	if len(encrypted) <= mediaMACLen {
		return nil, fmt.Errorf("decrypt media: %d bytes: %w", len(encrypted), ErrMediaTooShort)
	}
	if len(fileEncSHA256) > 0 {
		sum := sha256.Sum256(encrypted)
		if !bytes.Equal(sum[:], fileEncSHA256) {
			return nil, fmt.Errorf("decrypt media: %w", ErrMediaEncSHA256)
		}
	}
	if len(mediaKey) != 32 {
		return nil, fmt.Errorf("decrypt media: key of %d bytes: %w", len(mediaKey), ErrBadKey)
	}
	iv, cipherKey, macKey, err := mediaKeys(mediaKey, appInfo)
	if err != nil {
		return nil, fmt.Errorf("decrypt media: %w", err)
	}
	ct, tag := encrypted[:len(encrypted)-mediaMACLen], encrypted[len(encrypted)-mediaMACLen:]
	mac := hmac.New(sha256.New, macKey)
	mac.Write(iv)
	mac.Write(ct)
	if !hmac.Equal(mac.Sum(nil)[:mediaMACLen], tag) {
		return nil, fmt.Errorf("decrypt media: %w", ErrMediaMAC)
	}
	if len(ct) == 0 || len(ct)%aes.BlockSize != 0 {
		return nil, fmt.Errorf("decrypt media: ciphertext of %d bytes: %w", len(ct), ErrMediaPadding)
	}
	block, err := aes.NewCipher(cipherKey)
	if err != nil {
		return nil, fmt.Errorf("decrypt media: %w", err)
	}
	pt := make([]byte, len(ct))
	cipher.NewCBCDecrypter(block, iv).CryptBlocks(pt, ct)
	n := int(pt[len(pt)-1])
	if n == 0 || n > aes.BlockSize || n > len(pt) || !bytes.Equal(pt[len(pt)-n:], bytes.Repeat([]byte{byte(n)}, n)) {
		return nil, fmt.Errorf("decrypt media: %w", ErrMediaPadding)
	}
	pt = pt[:len(pt)-n]
	if len(fileSHA256) > 0 {
		sum := sha256.Sum256(pt)
		if !bytes.Equal(sum[:], fileSHA256) {
			return nil, fmt.Errorf("decrypt media: %w", ErrMediaSHA256)
		}
	}
	return pt, nil
}

// MMSType returns the path segment of upload and download URLs for a media
// type ("image", "document", …), as whatsmeow's mediaTypeToMMSType.
func MMSType(appInfo whatsmeow.MediaType) string {
	switch appInfo {
	case whatsmeow.MediaImage:
		return "image"
	case whatsmeow.MediaAudio:
		return "audio"
	case whatsmeow.MediaVideo:
		return "video"
	case whatsmeow.MediaDocument:
		return "document"
	case whatsmeow.MediaHistory:
		return "md-msg-hist"
	case whatsmeow.MediaAppState:
		return "md-app-state"
	case whatsmeow.MediaStickerPack:
		return "sticker-pack"
	case whatsmeow.MediaLinkThumbnail:
		return "thumbnail-link"
	}
	return ""
}

// mediaRetryKey derives the AES-GCM key of media retry messages
// (mediaretry.go: getMediaRetryKey).
func mediaRetryKey(mediaKey []byte) ([]byte, error) {
	k, err := hkdf.Key(sha256.New, mediaKey, nil, "WhatsApp Media Retry Notification", 32)
	if err != nil {
		return nil, fmt.Errorf("media retry key: %w", err)
	}
	return k, nil
}

func mediaRetryGCM(mediaKey []byte) (cipher.AEAD, error) {
	key, err := mediaRetryKey(mediaKey)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("media retry cipher: %w", err)
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("media retry cipher: %w", err)
	}
	return gcm, nil
}

// DecryptMediaRetryReceipt opens the <encrypt><enc_p/><enc_iv/></encrypt>
// of a client's media retry receipt (type="server-error", §8.5) with the
// media key of the message the phone sent, and returns the stanza id it
// names. The message id is the AES-GCM additional data.
func DecryptMediaRetryReceipt(mediaKey, ciphertext, iv []byte, messageID string) (stanzaID string, err error) {
	gcm, err := mediaRetryGCM(mediaKey)
	if err != nil {
		return "", fmt.Errorf("decrypt media retry receipt: %w", err)
	}
	if len(iv) != gcm.NonceSize() {
		return "", fmt.Errorf("decrypt media retry receipt: iv of %d bytes: %w", len(iv), ErrBadKey)
	}
	pt, err := gcm.Open(nil, iv, ciphertext, []byte(messageID))
	if err != nil {
		return "", fmt.Errorf("decrypt media retry receipt: %w", err)
	}
	var r waMmsRetry.ServerErrorReceipt
	if err := proto.Unmarshal(pt, &r); err != nil {
		return "", fmt.Errorf("decrypt media retry receipt: %w", err)
	}
	return r.GetStanzaID(), nil
}

// EncryptMediaRetryNotification builds the encrypted payload of the
// phone's <notification type="mediaretry"> answer: a MediaRetryNotification
// {stanzaID, directPath, result} sealed with the media key, the message id
// as additional data. whatsmeow's DecryptMediaRetryNotification opens it.
func EncryptMediaRetryNotification(mediaKey []byte, messageID, directPath string, result waMmsRetry.MediaRetryNotification_ResultType) (ciphertext, iv []byte, err error) {
	gcm, err := mediaRetryGCM(mediaKey)
	if err != nil {
		return nil, nil, fmt.Errorf("encrypt media retry notification: %w", err)
	}
	n := &waMmsRetry.MediaRetryNotification{
		StanzaID: proto.String(messageID),
		Result:   result.Enum(),
	}
	if directPath != "" {
		n.DirectPath = proto.String(directPath)
	}
	pt, err := proto.Marshal(n)
	if err != nil {
		return nil, nil, fmt.Errorf("encrypt media retry notification: %w", err)
	}
	iv = make([]byte, gcm.NonceSize())
	_, _ = rand.Read(iv)
	return gcm.Seal(nil, iv, pt, []byte(messageID)), iv, nil
}
