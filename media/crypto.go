package media

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
)

// WhatsApp media encryption, as whatsmeow implements it (download.go,
// upload.go): HKDF-SHA256(mediaKey, info = the kind's app info) expands to
// 112 bytes = IV(16) | AES-256 key(32) | HMAC key(32) | ref key(32). The
// file on the CDN is AES-256-CBC(PKCS#7) ciphertext followed by the first
// 10 bytes of HMAC-SHA256(macKey, IV | ciphertext). FileEncSHA256 is the
// SHA-256 of that whole file, FileSHA256 the SHA-256 of the plaintext.

const (
	macLen     = 10
	blockSize  = aes.BlockSize
	chunkSize  = 64 << 10
	mediaKeyLn = 32
)

// App infos of the HKDF expansion, per media kind.
const (
	appInfoImage    = "WhatsApp Image Keys"
	appInfoVideo    = "WhatsApp Video Keys"
	appInfoAudio    = "WhatsApp Audio Keys"
	appInfoDocument = "WhatsApp Document Keys"
)

// kindInfo maps msgstore.Media.Kind to its HKDF app info and CDN mms-type.
func kindInfo(kind string) (appInfo, mmsType string, err error) {
	switch kind {
	case "image", "sticker":
		return appInfoImage, "image", nil
	case "video", "gif":
		return appInfoVideo, "video", nil
	case "audio", "voice", "ptt":
		return appInfoAudio, "audio", nil
	case "document":
		return appInfoDocument, "document", nil
	}
	return "", "", fmt.Errorf("%w: unknown media kind %q", ErrPermanent, kind)
}

type mediaKeys struct {
	iv, cipherKey, macKey []byte
}

func deriveKeys(mediaKey []byte, kind string) (mediaKeys, error) {
	if len(mediaKey) != mediaKeyLn {
		return mediaKeys{}, fmt.Errorf("%w: media key is %d bytes, want %d", ErrPermanent, len(mediaKey), mediaKeyLn)
	}
	info, _, err := kindInfo(kind)
	if err != nil {
		return mediaKeys{}, err
	}
	exp, err := hkdf.Key(sha256.New, mediaKey, nil, info, 112)
	if err != nil {
		return mediaKeys{}, fmt.Errorf("media: hkdf: %w", err)
	}
	return mediaKeys{iv: exp[:16], cipherKey: exp[16:48], macKey: exp[48:80]}, nil
}

// Encrypted describes the result of Encrypt: what a media message carries.
type Encrypted struct {
	FileSHA256    []byte // SHA-256 of the plaintext
	FileEncSHA256 []byte // SHA-256 of the encrypted file (ciphertext + MAC)
	FileLength    uint64 // plaintext length
	EncLength     int64  // encrypted file length
}

// Encrypt streams src through WhatsApp media encryption for kind into dst,
// holding one chunk in memory. It is what a phone does before uploading;
// the gateway uses it to send media and tests use it to play the CDN.
func Encrypt(dst io.Writer, src io.Reader, mediaKey []byte, kind string) (Encrypted, error) {
	keys, err := deriveKeys(mediaKey, kind)
	if err != nil {
		return Encrypted{}, err
	}
	block, err := aes.NewCipher(keys.cipherKey)
	if err != nil {
		return Encrypted{}, fmt.Errorf("media: encrypt: %w", err)
	}
	enc := cipher.NewCBCEncrypter(block, keys.iv)
	mac := hmac.New(sha256.New, keys.macKey)
	mac.Write(keys.iv)
	plainHash, encHash := sha256.New(), sha256.New()
	var res Encrypted
	out := io.MultiWriter(dst, mac, encHash)

	buf := make([]byte, chunkSize+blockSize)
	pending := 0 // bytes in buf not yet encrypted
	for eof := false; !eof; {
		n, rerr := io.ReadFull(src, buf[pending:chunkSize])
		plainHash.Write(buf[pending : pending+n])
		res.FileLength += uint64(n)
		pending += n
		switch {
		case errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF):
			eof = true
			pad := blockSize - pending%blockSize
			for i := 0; i < pad; i++ {
				buf[pending+i] = byte(pad)
			}
			pending += pad
		case rerr != nil:
			return Encrypted{}, fmt.Errorf("media: encrypt: read: %w", rerr)
		}
		full := pending - pending%blockSize
		enc.CryptBlocks(buf[:full], buf[:full])
		if _, err := out.Write(buf[:full]); err != nil {
			return Encrypted{}, fmt.Errorf("media: encrypt: write: %w", err)
		}
		res.EncLength += int64(full)
		pending = copy(buf, buf[full:pending])
	}
	tag := mac.Sum(nil)[:macLen]
	if _, err := dst.Write(tag); err != nil {
		return Encrypted{}, fmt.Errorf("media: encrypt: write: %w", err)
	}
	encHash.Write(tag)
	res.EncLength += macLen
	res.FileSHA256 = plainHash.Sum(nil)
	res.FileEncSHA256 = encHash.Sum(nil)
	return res, nil
}

// decryptReader turns an encrypted media stream into plaintext as it is
// read. It holds back the last block and the MAC until the source ends;
// only then, when the MAC and the encrypted file's SHA-256 check out, does
// it release the final block and io.EOF. Any mismatch fails the final Read
// with ErrCorrupt, so a consumer that commits only at a clean EOF (the
// object store's Put) never keeps a forged or damaged file.
type decryptReader struct {
	src     io.Reader
	dec     cipher.BlockMode
	mac     hash.Hash
	encHash hash.Hash
	wantEnc []byte

	in  []byte // encrypted bytes read, not yet processed
	out []byte // plaintext ready for Read
	buf []byte // backing array of out
	err error  // sticky: io.EOF after a verified end, or the failure
}

// NewDecryptReader returns a reader of the plaintext of the encrypted media
// file src for kind. fileEncSHA256 (32 bytes, or nil to skip) is checked
// against the whole encrypted file.
func NewDecryptReader(src io.Reader, mediaKey []byte, kind string, fileEncSHA256 []byte) (io.Reader, error) {
	keys, err := deriveKeys(mediaKey, kind)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(keys.cipherKey)
	if err != nil {
		return nil, fmt.Errorf("media: decrypt: %w", err)
	}
	d := &decryptReader{
		src:     src,
		dec:     cipher.NewCBCDecrypter(block, keys.iv),
		mac:     hmac.New(sha256.New, keys.macKey),
		encHash: sha256.New(),
		in:      make([]byte, 0, chunkSize+blockSize+macLen),
		buf:     make([]byte, chunkSize+blockSize),
	}
	if len(fileEncSHA256) == sha256.Size {
		d.wantEnc = fileEncSHA256
	}
	d.mac.Write(keys.iv)
	return d, nil
}

// holdBack is what must stay unprocessed until the end: the MAC and the
// last (padded) block.
const holdBack = macLen + blockSize

func (d *decryptReader) Read(p []byte) (int, error) {
	for len(d.out) == 0 && d.err == nil {
		d.fill()
	}
	if len(d.out) > 0 {
		n := copy(p, d.out)
		d.out = d.out[n:]
		return n, nil
	}
	return 0, d.err
}

// fill reads one chunk and decrypts what can safely be released.
func (d *decryptReader) fill() {
	n, rerr := d.src.Read(d.in[len(d.in):cap(d.in)])
	d.in = d.in[:len(d.in)+n]
	if rerr != nil && !errors.Is(rerr, io.EOF) {
		d.err = rerr
		return
	}
	if errors.Is(rerr, io.EOF) {
		d.finish()
		return
	}
	ready := len(d.in) - holdBack
	if ready < blockSize {
		return
	}
	ready -= ready % blockSize
	d.process(d.in[:ready])
	d.in = d.in[:copy(d.in, d.in[ready:])]
}

func (d *decryptReader) process(ct []byte) {
	d.mac.Write(ct)
	d.encHash.Write(ct)
	d.dec.CryptBlocks(d.buf[:len(ct)], ct)
	d.out = d.buf[:len(ct)]
}

// finish checks the tail at the source's end: MAC, encrypted hash, padding.
func (d *decryptReader) finish() {
	if len(d.in) < holdBack || (len(d.in)-macLen)%blockSize != 0 {
		d.err = fmt.Errorf("%w: encrypted file has a truncated tail (%d bytes)", ErrCorrupt, len(d.in))
		return
	}
	ct, tag := d.in[:len(d.in)-macLen], d.in[len(d.in)-macLen:]
	d.mac.Write(ct)
	d.encHash.Write(d.in)
	if !hmac.Equal(d.mac.Sum(nil)[:macLen], tag) {
		d.err = fmt.Errorf("%w: media HMAC mismatch", ErrCorrupt)
		return
	}
	if d.wantEnc != nil && !hmac.Equal(d.encHash.Sum(nil), d.wantEnc) {
		d.err = fmt.Errorf("%w: encrypted file SHA-256 mismatch", ErrCorrupt)
		return
	}
	plain := d.buf[:len(ct)]
	d.dec.CryptBlocks(plain, ct)
	pad := int(plain[len(plain)-1])
	if pad == 0 || pad > blockSize {
		d.err = fmt.Errorf("%w: bad padding", ErrCorrupt)
		return
	}
	for _, b := range plain[len(plain)-pad:] {
		if int(b) != pad {
			d.err = fmt.Errorf("%w: bad padding", ErrCorrupt)
			return
		}
	}
	d.out = plain[:len(plain)-pad]
	d.in = d.in[:0]
	d.err = io.EOF
}
