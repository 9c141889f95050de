package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/amarula/amarula/storage"
)

// ErrNoTarget is returned by Redeliver when the profile has no webhook URL.
var ErrNoTarget = errors.New("webhook: profile has no webhook configured")

// DeadLetter is a parked event: the envelope plus why it was parked. Its
// JSON is the envelope's fields followed by parked_at, attempts,
// last_status and last_error.
type DeadLetter struct {
	Envelope
	ParkedAt   string `json:"parked_at"` // RFC 3339
	Attempts   int    `json:"attempts"`
	LastStatus int    `json:"last_status,omitempty"` // 0: no HTTP answer
	LastError  string `json:"last_error,omitempty"`

	key string // storage key in NSDead
}

// RedeliverResult reports one Redeliver call.
type RedeliverResult struct {
	Redelivered int `json:"redelivered"` // sent with a 2xx and removed from the list
	Failed      int `json:"failed"`      // still parked
	Remaining   int `json:"remaining"`   // parked events left afterwards (all of them, not only the selected)
}

// DeadLetters lists and redelivers parked events of any profile. It is safe
// for concurrent use; concurrent redeliveries of one profile are
// serialised.
type DeadLetters struct {
	KV KV
	// Token returns the fencing token that writes to a profile's dead list
	// carry (typically the profile's current fence: the list is not session
	// state, so an API node may edit it).
	Token func(ctx context.Context, profile string) (storage.Token, error)
	// Target returns the profile's webhook configuration.
	Target     func(ctx context.Context, profile string) (Target, error)
	HTTPClient *http.Client // default DefaultHTTPClient()
	Clock      Clock        // default: the real clock
	Logger     *slog.Logger
	Metrics    *Metrics
	// MaxPerCall bounds how many events one Redeliver sends, so an API
	// request stays short; the rest is reported as remaining. Default 100.
	MaxPerCall int

	mu    sync.Mutex
	locks map[string]*sync.Mutex
}

func (dl *DeadLetters) lock(profile string) func() {
	dl.mu.Lock()
	if dl.locks == nil {
		dl.locks = make(map[string]*sync.Mutex)
	}
	m := dl.locks[profile]
	if m == nil {
		m = &sync.Mutex{}
		dl.locks[profile] = m
	}
	dl.mu.Unlock()
	m.Lock()
	return m.Unlock
}

// Dead returns the parked events of profile, oldest first.
func (dl *DeadLetters) Dead(ctx context.Context, profile string) ([]DeadLetter, error) {
	if err := storage.ValidateProfile(profile); err != nil {
		return nil, err
	}
	kvs, err := dl.KV.Scan(ctx, profile, NSDead, "")
	if err != nil {
		return nil, fmt.Errorf("webhook dead list %s: %w", profile, err)
	}
	out := make([]DeadLetter, 0, len(kvs))
	for _, kv := range kvs {
		var d DeadLetter
		if err := json.Unmarshal(kv.Value, &d); err != nil {
			// A corrupt entry is skipped rather than failing the list.
			continue
		}
		d.key = kv.Key
		out = append(out, d)
	}
	return out, nil
}

// Redeliver sends the parked events of profile once each, in parking order,
// to the currently configured webhook, and removes the ones answered with a
// 2xx. With ids, only the parked events with those event ids are tried.
// Event filters are not applied: a parked event was selected when parked.
// At most MaxPerCall events are sent per call.
func (dl *DeadLetters) Redeliver(ctx context.Context, profile string, ids []string) (RedeliverResult, error) {
	var res RedeliverResult
	defer dl.lock(profile)()
	dead, err := dl.Dead(ctx, profile)
	if err != nil {
		return res, err
	}
	tgt, err := dl.Target(ctx, profile)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return res, fmt.Errorf("webhook redeliver %s: %w", profile, err)
	}
	if tgt.URL == "" {
		res.Remaining = len(dead)
		return res, ErrNoTarget
	}
	token, err := dl.Token(ctx, profile)
	if err != nil {
		return res, fmt.Errorf("webhook redeliver %s: token: %w", profile, err)
	}
	client := dl.HTTPClient
	if client == nil {
		client = DefaultHTTPClient()
	}
	clock := dl.Clock
	if clock == nil {
		clock = realClock{}
	}
	log := dl.Logger
	if log == nil {
		log = slog.Default()
	}
	limit := dl.MaxPerCall
	if limit <= 0 {
		limit = 100
	}
	res.Remaining = len(dead)
	for _, d := range dead {
		if len(ids) > 0 && !slices.Contains(ids, d.ID) {
			continue
		}
		if res.Redelivered+res.Failed >= limit {
			break
		}
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
		start := clock.Now()
		status, sendErr := send(ctx, client, tgt, d.Envelope, d.Envelope.Marshal(), start)
		if sendErr != nil {
			res.Failed++
			dl.Metrics.observe(resultFailed, time.Since(start))
			log.Info("webhook redelivery failed", "profile", profile, "event", d.ID, "status", status, "err", sendErr)
			continue
		}
		if err := dl.KV.Delete(ctx, profile, token, NSDead, d.key); err != nil {
			return res, fmt.Errorf("webhook redeliver %s: unpark %s: %w", profile, d.ID, err)
		}
		dl.Metrics.observe(resultRedelivered, time.Since(start))
		res.Redelivered++
		res.Remaining--
	}
	return res, nil
}
