package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/amarula/amarula/storage"
)

// Consumer is the name of the webhook consumer cursor in the event log.
const Consumer = "webhook"

// Storage namespaces owned by this package.
const (
	// NSDead holds parked events, keyed so that a scan returns them in the
	// order they were parked.
	NSDead = "webhook_dead"
	// NSState holds the retry state of the event being delivered, so the
	// retry budget survives restarts.
	NSState = "webhook_state"
)

const stateKeyRetry = "retry"

// Log is the part of the event log the deliverer reads and acknowledges
// (storage.EventLog satisfies it).
type Log interface {
	Tail(ctx context.Context, profile, after string, limit int) ([]storage.Event, error)
	Ack(ctx context.Context, profile string, token storage.Token, consumer, cursor string) error
	Cursor(ctx context.Context, profile, consumer string) (string, error)
}

// KV is the part of the key/value store used for parked events and retry
// state (storage.KV satisfies it).
type KV interface {
	Get(ctx context.Context, profile, ns, key string) ([]byte, error)
	Put(ctx context.Context, profile string, token storage.Token, ns, key string, value []byte) error
	Delete(ctx context.Context, profile string, token storage.Token, ns, key string) error
	Scan(ctx context.Context, profile, ns, prefix string) ([]storage.KeyValue, error)
}

// Target is where a profile's events go. An empty URL means "no webhook":
// events are skipped (acknowledged without delivery). An empty Events list
// selects every event type.
type Target struct {
	URL    string
	Secret string
	Events []string
}

// wants reports whether an event of type typ is to be delivered.
func (t Target) wants(typ string) bool { return t.URL != "" && Match(t.Events, typ) }

// TargetFunc returns the profile's current webhook configuration. It is
// called before every attempt so configuration changes apply to retries. A
// storage.ErrNotFound error means "no webhook"; any other error is retried.
type TargetFunc func(ctx context.Context) (Target, error)

// StaticTarget returns a TargetFunc that always answers t.
func StaticTarget(t Target) TargetFunc {
	return func(context.Context) (Target, error) { return t, nil }
}

// Backoff shapes the retries of one event.
type Backoff struct {
	Initial time.Duration // first retry delay; default 1 s
	Max     time.Duration // cap of a single delay; default 10 min
	Budget  time.Duration // from the first failure until the event is parked; default 24 h
	// Jitter is the fraction (0..1) of each delay that is randomised, so many
	// profiles failing together do not retry in lockstep; default 0.2.
	Jitter float64
}

// DefaultBackoff is the retry schedule of api.md: 1 s doubling to 10 min,
// parked after 24 h.
func DefaultBackoff() Backoff {
	return Backoff{Initial: time.Second, Max: 10 * time.Minute, Budget: 24 * time.Hour, Jitter: 0.2}
}

// Delay returns the wait after the given number of failed attempts (>= 1).
func (b Backoff) Delay(attempts int) time.Duration {
	d := b.Initial
	for i := 1; i < attempts && d < b.Max; i++ {
		d *= 2
	}
	if d > b.Max {
		d = b.Max
	}
	if b.Jitter > 0 {
		d -= time.Duration(rand.Float64() * b.Jitter * float64(d))
	}
	return d
}

// Clock is the time source of the deliverer; tests may replace it.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Config configures the deliverer of one profile.
type Config struct {
	Profile string
	// Token is the fencing token of this node's ownership of the profile;
	// every write (cursor, dead letters) carries it.
	Token  storage.Token
	Log    Log
	KV     KV
	Target TargetFunc
	// HTTPClient sends the requests. Default: 30 s timeout, redirects are not
	// followed (a 3xx is a failed delivery).
	HTTPClient *http.Client
	Backoff    Backoff // zero fields take DefaultBackoff's values
	Clock      Clock   // default: the real clock
	Logger     *slog.Logger
	Metrics    *Metrics // optional
	// BatchSize is how many events are read from the log at once; default 100.
	BatchSize int
}

func (c *Config) setDefaults() error {
	if err := storage.ValidateProfile(c.Profile); err != nil {
		return err
	}
	if c.Log == nil || c.KV == nil || c.Target == nil {
		return errors.New("webhook: Config needs Log, KV and Target")
	}
	if c.HTTPClient == nil {
		c.HTTPClient = DefaultHTTPClient()
	}
	c.Backoff = c.Backoff.withDefaults()
	if c.Clock == nil {
		c.Clock = realClock{}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.BatchSize <= 0 {
		c.BatchSize = 100
	}
	return nil
}

func (b Backoff) withDefaults() Backoff {
	d := DefaultBackoff()
	if b.Initial <= 0 {
		b.Initial = d.Initial
	}
	if b.Max <= 0 {
		b.Max = d.Max
	}
	if b.Max < b.Initial {
		b.Max = b.Initial
	}
	if b.Budget <= 0 {
		b.Budget = d.Budget
	}
	if b.Jitter < 0 || b.Jitter >= 1 {
		b.Jitter = 0
	}
	return b
}

// DefaultHTTPClient is the client used when Config.HTTPClient is nil.
func DefaultHTTPClient() *http.Client {
	return &http.Client{
		Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// retryState is persisted in NSState while an event is failing, so that a
// restarted deliverer continues its budget instead of starting over.
type retryState struct {
	Cursor       string    `json:"cursor"`
	FirstFailure time.Time `json:"first_failure"`
	Attempts     int       `json:"attempts"`
}

type deliverer struct {
	Config
	log *slog.Logger
	// acked is the newest cursor acknowledged; pending is the newest cursor
	// processed (skipped) but not yet acknowledged.
	acked, pending string
}

// Run delivers the profile's events until ctx is done (then it returns nil)
// or the profile is fenced by a newer owner (then it returns an error
// wrapping storage.ErrFenced and the caller must not restart it). Transient
// storage and target errors are retried with backoff.
//
// Events are handled strictly in log order: an event is delivered (2xx) or
// parked before the next one is tried. The consumer cursor is acknowledged
// after each delivery, so a restart re-sends at most the one in-flight event.
func Run(ctx context.Context, cfg Config) error {
	if err := cfg.setDefaults(); err != nil {
		return fmt.Errorf("webhook run: %w", err)
	}
	d := &deliverer{Config: cfg, log: cfg.Logger.With("profile", cfg.Profile, "component", "webhook")}
	err := d.run(ctx)
	if ctx.Err() != nil && !errors.Is(err, storage.ErrFenced) {
		return nil
	}
	return err
}

func (d *deliverer) run(ctx context.Context) error {
	var cursor string
	err := d.retryStorage(ctx, "read cursor", func() error {
		var err error
		cursor, err = d.Log.Cursor(ctx, d.Profile, Consumer)
		return err
	})
	if err != nil {
		return err
	}
	d.acked = cursor
	for {
		var evs []storage.Event
		err := d.retryStorage(ctx, "tail", func() error {
			var err error
			evs, err = d.Log.Tail(ctx, d.Profile, cursor, d.BatchSize)
			return err
		})
		if err != nil {
			return err
		}
		for _, ev := range evs {
			if err := d.handle(ctx, ev); err != nil {
				return err
			}
			cursor = ev.Cursor
		}
		// Skipped events at the end of the batch: one ack for all of them.
		if d.pending != "" {
			if err := d.ack(ctx, d.pending); err != nil {
				return err
			}
		}
	}
}

// retryStorage runs op until it succeeds, ctx ends, or it is fenced.
func (d *deliverer) retryStorage(ctx context.Context, what string, op func() error) error {
	for attempt := 1; ; attempt++ {
		err := op()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, storage.ErrFenced) {
			return fmt.Errorf("webhook %s %s: %w", what, d.Profile, err)
		}
		d.log.Warn("webhook storage error, retrying", "op", what, "err", err, "attempt", attempt)
		if err := d.sleep(ctx, d.Backoff.Delay(attempt)); err != nil {
			return err
		}
	}
}

func (d *deliverer) sleep(ctx context.Context, dur time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-d.Clock.After(dur):
		return nil
	}
}

func (d *deliverer) ack(ctx context.Context, cursor string) error {
	err := d.retryStorage(ctx, "ack", func() error {
		return d.Log.Ack(ctx, d.Profile, d.Token, Consumer, cursor)
	})
	if err != nil {
		return err
	}
	d.acked, d.pending = cursor, ""
	return nil
}

func (d *deliverer) target(ctx context.Context) (Target, error) {
	var t Target
	err := d.retryStorage(ctx, "target", func() error {
		var err error
		t, err = d.Target(ctx)
		if errors.Is(err, storage.ErrNotFound) {
			t, err = Target{}, nil
		}
		return err
	})
	return t, err
}

// handle delivers or parks one event, or skips it when no webhook wants it.
func (d *deliverer) handle(ctx context.Context, ev storage.Event) error {
	tgt, err := d.target(ctx)
	if err != nil {
		return err
	}
	if !tgt.wants(ev.Type) {
		d.pending = ev.Cursor
		d.Metrics.observe(resultSkipped, 0)
		return nil
	}
	env := NewEnvelope(d.Profile, ev)
	body := env.Marshal()
	st, err := d.loadState(ctx, ev.Cursor)
	if err != nil {
		return err
	}
	for {
		start := d.Clock.Now()
		status, sendErr := send(ctx, d.HTTPClient, tgt, env, body, d.Clock.Now())
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if sendErr == nil {
			d.Metrics.observe(resultDelivered, d.Clock.Now().Sub(start))
			d.log.Debug("webhook delivered", "event", ev.Cursor, "type", ev.Type, "status", status, "attempts", st.Attempts+1)
			if err := d.ack(ctx, ev.Cursor); err != nil {
				return err
			}
			return d.clearState(ctx, st)
		}
		d.Metrics.observe(resultFailed, d.Clock.Now().Sub(start))
		now := d.Clock.Now()
		if st.Attempts == 0 {
			st.FirstFailure = now
		}
		st.Attempts++
		elapsed := now.Sub(st.FirstFailure)
		if elapsed >= d.Backoff.Budget {
			return d.park(ctx, env, st, status, sendErr)
		}
		if err := d.saveState(ctx, st); err != nil {
			return err
		}
		delay := d.Backoff.Delay(st.Attempts)
		if left := d.Backoff.Budget - elapsed; delay > left {
			delay = left // the last attempt happens when the budget runs out
		}
		d.log.Info("webhook delivery failed, will retry", "event", ev.Cursor, "type", ev.Type,
			"status", status, "err", sendErr, "attempts", st.Attempts, "retry_in", delay)
		if err := d.sleep(ctx, delay); err != nil {
			return err
		}
		// Configuration may have changed meanwhile (fixed URL, new filter).
		if tgt, err = d.target(ctx); err != nil {
			return err
		}
		if !tgt.wants(ev.Type) {
			d.Metrics.observe(resultSkipped, 0)
			if err := d.ack(ctx, ev.Cursor); err != nil {
				return err
			}
			return d.clearState(ctx, st)
		}
	}
}

func (d *deliverer) loadState(ctx context.Context, cursor string) (retryState, error) {
	st := retryState{Cursor: cursor}
	var raw []byte
	err := d.retryStorage(ctx, "load retry state", func() error {
		var err error
		raw, err = d.KV.Get(ctx, d.Profile, NSState, stateKeyRetry)
		if errors.Is(err, storage.ErrNotFound) {
			raw, err = nil, nil
		}
		return err
	})
	if err != nil {
		return st, err
	}
	var saved retryState
	if raw != nil && json.Unmarshal(raw, &saved) == nil && saved.Cursor == cursor {
		return saved, nil
	}
	return st, nil
}

func (d *deliverer) saveState(ctx context.Context, st retryState) error {
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("webhook encode retry state: %w", err)
	}
	return d.retryStorage(ctx, "save retry state", func() error {
		return d.KV.Put(ctx, d.Profile, d.Token, NSState, stateKeyRetry, b)
	})
}

func (d *deliverer) clearState(ctx context.Context, st retryState) error {
	if st.Attempts == 0 {
		return nil
	}
	return d.retryStorage(ctx, "clear retry state", func() error {
		return d.KV.Delete(ctx, d.Profile, d.Token, NSState, stateKeyRetry)
	})
}

// park moves an event that exhausted its budget to the dead list, then
// acknowledges it so delivery moves on.
func (d *deliverer) park(ctx context.Context, env Envelope, st retryState, status int, sendErr error) error {
	now := d.Clock.Now()
	dl := DeadLetter{Envelope: env, ParkedAt: now.UTC().Format(time.RFC3339), Attempts: st.Attempts, LastStatus: status, LastError: sendErr.Error()}
	b, err := json.Marshal(dl)
	if err != nil {
		return fmt.Errorf("webhook encode dead letter: %w", err)
	}
	// Keyed by the first failure, not the parking time, so parking the same
	// event again after a crash between Put and Ack overwrites the entry.
	key := deadKey(st.FirstFailure, env.ID)
	if err := d.retryStorage(ctx, "park", func() error {
		return d.KV.Put(ctx, d.Profile, d.Token, NSDead, key, b)
	}); err != nil {
		return err
	}
	d.Metrics.observe(resultParked, 0)
	d.log.Warn("webhook event parked after retry budget", "event", env.ID, "type", env.Type,
		"attempts", st.Attempts, "status", status, "err", sendErr)
	if err := d.ack(ctx, env.ID); err != nil {
		return err
	}
	return d.clearState(ctx, st)
}

// deadKey sorts parked events by first failure (that is, log order).
func deadKey(firstFailure time.Time, id string) string {
	return fmt.Sprintf("%020d/%s", firstFailure.UnixNano(), id)
}

// errStatus is a non-2xx answer.
type errStatus int

func (e errStatus) Error() string { return "HTTP " + strconv.Itoa(int(e)) }

// send POSTs one event and reports the HTTP status (0 without an answer)
// and nil only for a 2xx. Errors never contain the URL, which may carry
// credentials.
func send(ctx context.Context, client *http.Client, tgt Target, env Envelope, body []byte, now time.Time) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, tgt.URL, bytes.NewReader(body))
	if err != nil {
		return 0, errors.New("invalid webhook URL")
	}
	ts := strconv.FormatInt(now.Unix(), 10)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "Amarula-Webhook/1")
	req.Header.Set(HeaderEvent, env.Type)
	req.Header.Set(HeaderDelivery, env.ID)
	req.Header.Set(HeaderTimestamp, ts)
	req.Header.Set(HeaderSignature, Sign(tgt.Secret, ts, body))
	resp, err := client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return 0, err
	}
	// Drain a bounded amount so the connection can be reused.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp.StatusCode, errStatus(resp.StatusCode)
	}
	return resp.StatusCode, nil
}
