package webhook

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Header names of a webhook delivery.
const (
	HeaderEvent     = "X-Amarula-Event"     // event type, e.g. message.received
	HeaderDelivery  = "X-Amarula-Delivery"  // event id: the receiver's dedup key
	HeaderTimestamp = "X-Amarula-Timestamp" // Unix seconds of this attempt
	HeaderSignature = "X-Amarula-Signature" // sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>
)

// signaturePrefix names the algorithm in the signature header.
const signaturePrefix = "sha256="

// ErrBadSignature is returned by Verify when the signature does not match.
var ErrBadSignature = errors.New("webhook: bad signature")

// ErrStale is returned by VerifyRequest when the timestamp is outside the
// accepted window (a replayed or badly delayed request).
var ErrStale = errors.New("webhook: stale timestamp")

// Sign returns the X-Amarula-Signature value for body sent at timestamp
// (the X-Amarula-Timestamp header value): "sha256=" followed by the hex
// HMAC-SHA256 of timestamp + "." + body keyed with secret.
func Sign(secret, timestamp string, body []byte) string {
	return signaturePrefix + hex.EncodeToString(mac(secret, timestamp, body))
}

func mac(secret, timestamp string, body []byte) []byte {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(timestamp))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// Verify checks a delivery's signature header against the secret, the
// X-Amarula-Timestamp header value and the raw request body, in constant
// time. It returns nil or an error wrapping ErrBadSignature.
func Verify(secret, timestamp string, body []byte, signatureHeader string) error {
	hexSig, ok := strings.CutPrefix(strings.TrimSpace(signatureHeader), signaturePrefix)
	if !ok {
		return fmt.Errorf("%w: header must start with %q", ErrBadSignature, signaturePrefix)
	}
	got, err := hex.DecodeString(hexSig)
	if err != nil {
		return fmt.Errorf("%w: signature is not hex", ErrBadSignature)
	}
	if !hmac.Equal(got, mac(secret, timestamp, body)) {
		return ErrBadSignature
	}
	return nil
}

// VerifyRequest is the receiver-side check in one call: it reads the body of
// r (at most maxBody bytes), checks that X-Amarula-Timestamp is within
// maxSkew of now (skipped when maxSkew is 0) and verifies the signature. It
// returns the body on success.
func VerifyRequest(r *http.Request, secret string, maxBody int64, maxSkew time.Duration, now time.Time) ([]byte, error) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		return nil, fmt.Errorf("webhook: read body: %w", err)
	}
	if int64(len(body)) > maxBody {
		return nil, fmt.Errorf("webhook: body larger than %d bytes", maxBody)
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	ts := r.Header.Get(HeaderTimestamp)
	if maxSkew > 0 {
		sec, err := strconv.ParseInt(ts, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%w: %s is not Unix seconds", ErrStale, HeaderTimestamp)
		}
		if d := now.Sub(time.Unix(sec, 0)); d > maxSkew || d < -maxSkew {
			return nil, fmt.Errorf("%w: %s off by %s", ErrStale, HeaderTimestamp, d.Round(time.Second))
		}
	}
	if err := Verify(secret, ts, body, r.Header.Get(HeaderSignature)); err != nil {
		return nil, err
	}
	return body, nil
}
