package media

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"sort"
	"sync"
	"time"

	"github.com/amarula/amarula/msgstore"
	"github.com/amarula/amarula/storage"
	"github.com/amarula/amarula/storage/s3"
)

// Config holds every tunable of the Worker. Zero fields take the values of
// DefaultConfig.
type Config struct {
	// Concurrency bounds the jobs in flight on this node, across all
	// attached profiles. Default 4.
	Concurrency int
	// MaxAttempts bounds the attempts of one job, counting attempts that
	// died with their process (so a file that crashes the worker cannot
	// loop forever). Default 6.
	MaxAttempts int
	// MaxReuploads bounds the media retry requests of one job. Default 2;
	// negative disables media retry (an expired file fails at once).
	MaxReuploads int
	// BackoffBase and BackoffMax shape the delay after a failed attempt:
	// BackoffBase·2^(attempt-1), capped at BackoffMax, ±20% jitter.
	// Defaults 2 s and 5 min.
	BackoffBase time.Duration
	BackoffMax  time.Duration
	// PollInterval is how often every attached profile's jobs are
	// rescanned even without Notify (a safety net). Default 1 min.
	PollInterval time.Duration
	// AttemptTimeout bounds one attempt: download, media retry, upload.
	// Default 15 min.
	AttemptTimeout time.Duration
	// MaxSize is the largest file accepted (WhatsApp documents go up to
	// 2 GB). Default 2 GiB.
	MaxSize int64
	// Logger receives one line per outcome; default slog.Default().
	Logger *slog.Logger
	// Metrics; default NewMetrics(nil) (unregistered).
	Metrics *Metrics
}

// DefaultConfig returns the defaults documented on Config.
func DefaultConfig() Config {
	return Config{
		Concurrency:    4,
		MaxAttempts:    6,
		MaxReuploads:   2,
		BackoffBase:    2 * time.Second,
		BackoffMax:     5 * time.Minute,
		PollInterval:   time.Minute,
		AttemptTimeout: 15 * time.Minute,
		MaxSize:        2 << 30,
	}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Concurrency <= 0 {
		c.Concurrency = d.Concurrency
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = d.MaxAttempts
	}
	if c.MaxReuploads < 0 {
		c.MaxReuploads = 0
	} else if c.MaxReuploads == 0 {
		c.MaxReuploads = d.MaxReuploads
	}
	if c.BackoffBase <= 0 {
		c.BackoffBase = d.BackoffBase
	}
	if c.BackoffMax <= 0 {
		c.BackoffMax = d.BackoffMax
	}
	if c.PollInterval <= 0 {
		c.PollInterval = d.PollInterval
	}
	if c.AttemptTimeout <= 0 {
		c.AttemptTimeout = d.AttemptTimeout
	}
	if c.MaxSize <= 0 {
		c.MaxSize = d.MaxSize
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Metrics == nil {
		c.Metrics = NewMetrics(nil)
	}
	return c
}

// Deps are the worker's collaborators. All but Rerequester are required;
// without a Rerequester an expired file fails at once.
type Deps struct {
	Store       Store
	Objects     Objects
	Messages    Messages
	Downloader  Downloader
	Rerequester Rerequester
}

// Worker is the node-wide media pipeline: one per node, a bounded pool of
// Config.Concurrency goroutines serving every profile the node owns. The
// owner of the node calls Run once; sessions Attach their profile with
// their fencing token when they take ownership (the worker then loads the
// profile's pending jobs: restart and failover recovery), Notify after
// enqueuing, and Detach when they stop.
type Worker struct {
	cfg  Config
	deps Deps
	log  *slog.Logger
	met  *Metrics

	mu       sync.Mutex
	profiles map[string]*attached
	inflight map[jobRef]struct{}
	running  bool
	wake     chan struct{} // capacity 1: "something changed, look again"
}

// attached is one profile the worker serves.
type attached struct {
	name   string
	token  storage.Token
	ctx    context.Context // cancelled by Detach or a fenced write
	cancel context.CancelFunc
	jobs   sync.WaitGroup // jobs of this profile in flight

	// Guarded by Worker.mu.
	scan    bool      // rescan on the next round
	due     time.Time // earliest NextAt of a waiting job (zero: none)
	pending int       // due jobs at the last scan
	retry   int       // jobs waiting for their backoff at the last scan
}

type jobRef struct{ profile, msgID string }

type task struct {
	p      *attached
	msgID  string
	nextAt time.Time
}

// New returns a Worker. It does nothing until Run.
func New(deps Deps, cfg Config) (*Worker, error) {
	if deps.Store == nil || deps.Objects == nil || deps.Messages == nil || deps.Downloader == nil {
		return nil, errors.New("media: Store, Objects, Messages and Downloader are required")
	}
	cfg = cfg.withDefaults()
	return &Worker{
		cfg:      cfg,
		deps:     deps,
		log:      cfg.Logger.With("component", "media"),
		met:      cfg.Metrics,
		profiles: map[string]*attached{},
		inflight: map[jobRef]struct{}{},
		wake:     make(chan struct{}, 1),
	}, nil
}

// Attach makes the worker serve profile's jobs with token, starting with
// the ones already stored. Attaching again with another token replaces the
// previous attachment (its in-flight jobs are cancelled).
func (w *Worker) Attach(profile string, token storage.Token) error {
	if err := storage.ValidateProfile(profile); err != nil {
		return fmt.Errorf("media: attach: %w", err)
	}
	w.mu.Lock()
	old := w.profiles[profile]
	if old != nil && old.token == token {
		old.scan = true
		w.mu.Unlock()
		w.poke()
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	w.profiles[profile] = &attached{name: profile, token: token, ctx: ctx, cancel: cancel, scan: true}
	w.mu.Unlock()
	if old != nil {
		old.cancel()
	}
	w.poke()
	return nil
}

// Detach stops serving profile: its in-flight jobs are cancelled (they stay
// stored, to be resumed by the next owner) and Detach waits for them.
func (w *Worker) Detach(profile string) {
	w.mu.Lock()
	p := w.profiles[profile]
	if p != nil {
		delete(w.profiles, profile)
	}
	w.mu.Unlock()
	if p == nil {
		return
	}
	p.cancel()
	p.jobs.Wait()
	w.poke()
}

// drop detaches p without waiting; for a job of p that hit ErrFenced.
func (w *Worker) drop(p *attached) {
	w.mu.Lock()
	if w.profiles[p.name] == p {
		delete(w.profiles, p.name)
	}
	w.mu.Unlock()
	p.cancel()
}

// Notify tells the worker that profile has new jobs (call it after the
// transaction that enqueued them commits). Without it they are found by
// the next poll.
func (w *Worker) Notify(profile string) {
	w.mu.Lock()
	if p := w.profiles[profile]; p != nil {
		p.scan = true
	}
	w.mu.Unlock()
	w.poke()
}

func (w *Worker) poke() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// Run serves attached profiles until ctx is done, then cancels the jobs in
// flight (they stay stored) and returns once every goroutine it started has
// stopped. It may be called once.
func (w *Worker) Run(ctx context.Context) error {
	w.mu.Lock()
	if w.running {
		w.mu.Unlock()
		return errors.New("media: worker already running")
	}
	w.running = true
	w.mu.Unlock()

	tasks := make(chan task)
	var wg sync.WaitGroup
	for range w.cfg.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for t := range tasks {
				w.process(ctx, t)
			}
		}()
	}
	w.schedule(ctx, tasks)
	close(tasks)
	wg.Wait()
	return nil
}

// schedule finds due jobs and hands them to the pool until ctx is done.
func (w *Worker) schedule(ctx context.Context, tasks chan<- task) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	lastFull := time.Time{}
	for {
		now := time.Now()
		full := now.Sub(lastFull) >= w.cfg.PollInterval
		if full {
			lastFull = now
		}
		ready, next, more := w.collect(ctx, now, full)
		for i, t := range ready {
			select {
			case tasks <- t:
			case <-ctx.Done():
				w.release(ready[i:])
				return
			}
		}
		if ctx.Err() != nil {
			return
		}
		if more {
			continue
		}
		wait := lastFull.Add(w.cfg.PollInterval).Sub(time.Now())
		if !next.IsZero() {
			wait = min(wait, time.Until(next))
		}
		timer.Reset(max(wait, time.Millisecond))
		select {
		case <-ctx.Done():
			return
		case <-w.wake:
		case <-timer.C:
		}
	}
}

// release forgets tasks that were never handed to the pool.
func (w *Worker) release(ts []task) {
	w.mu.Lock()
	for _, t := range ts {
		delete(w.inflight, jobRef{t.p.name, t.msgID})
	}
	w.mu.Unlock()
}

// collect scans the profiles that need it and returns the due jobs (marked
// in flight), the earliest future NextAt among all profiles, and whether a
// profile had more due jobs than one round takes.
func (w *Worker) collect(ctx context.Context, now time.Time, full bool) (ready []task, next time.Time, more bool) {
	w.mu.Lock()
	var scan []*attached
	for _, p := range w.profiles {
		if full || p.scan || (!p.due.IsZero() && !p.due.After(now)) {
			p.scan = false
			scan = append(scan, p)
		}
	}
	w.mu.Unlock()

	perRound := 2 * w.cfg.Concurrency
	for _, p := range scan {
		kvs, err := w.deps.Store.Scan(p.ctx, p.name, NSJobs, "")
		if err != nil {
			if ctx.Err() == nil && p.ctx.Err() == nil {
				w.log.Warn("media: scan jobs", "profile", p.name, "err", err)
			}
			w.mu.Lock()
			p.due = now.Add(w.cfg.BackoffBase)
			w.mu.Unlock()
			continue
		}
		var due time.Time
		var mine []task
		pending, retry := 0, 0
		for _, kv := range kvs {
			var j Job
			if err := json.Unmarshal(kv.Value, &j); err != nil {
				w.log.Error("media: undecodable job skipped", "profile", p.name, "msg", kv.Key, "err", err)
				continue
			}
			if j.NextAt.After(now) {
				retry++
				if due.IsZero() || j.NextAt.Before(due) {
					due = j.NextAt
				}
				continue
			}
			pending++
			mine = append(mine, task{p: p, msgID: kv.Key, nextAt: j.NextAt})
		}
		sort.Slice(mine, func(i, j int) bool { return mine[i].nextAt.Before(mine[j].nextAt) })
		w.mu.Lock()
		if w.profiles[p.name] == p {
			taken := 0
			for _, t := range mine {
				ref := jobRef{p.name, t.msgID}
				if _, busy := w.inflight[ref]; busy {
					continue
				}
				if taken == perRound {
					p.scan, more = true, true
					break
				}
				w.inflight[ref] = struct{}{}
				ready = append(ready, t)
				taken++
			}
			p.due, p.pending, p.retry = due, pending, retry
		}
		w.mu.Unlock()
	}

	w.mu.Lock()
	pending, retry := 0, 0
	for _, p := range w.profiles {
		pending += p.pending
		retry += p.retry
		if !p.due.IsZero() && (next.IsZero() || p.due.Before(next)) {
			next = p.due
		}
	}
	w.mu.Unlock()
	w.met.Jobs.WithLabelValues(JobPending).Set(float64(pending))
	w.met.Jobs.WithLabelValues(JobRetry).Set(float64(retry))
	sort.Slice(ready, func(i, j int) bool { return ready[i].nextAt.Before(ready[j].nextAt) })
	return ready, next, more
}

// process runs one attempt of a job, bounded by the profile's attachment,
// the worker's ctx and AttemptTimeout.
func (w *Worker) process(runCtx context.Context, t task) {
	p := t.p
	ref := jobRef{p.name, t.msgID}
	w.mu.Lock()
	live := w.profiles[p.name] == p
	if live {
		p.jobs.Add(1)
	}
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		delete(w.inflight, ref)
		w.mu.Unlock()
	}()
	if !live {
		return
	}
	defer p.jobs.Done()

	ctx, cancel := context.WithCancel(runCtx)
	defer cancel()
	stop := context.AfterFunc(p.ctx, cancel)
	defer stop()

	running := w.met.Jobs.WithLabelValues(JobRunning)
	running.Inc()
	defer running.Dec()
	if err := w.attempt(ctx, p, t.msgID); err != nil && ctx.Err() == nil {
		if errors.Is(err, storage.ErrFenced) {
			w.met.Results.WithLabelValues("fenced").Inc()
			w.log.Warn("media: profile fenced by a newer owner; detaching", "profile", p.name)
			w.drop(p)
			return
		}
		w.log.Warn("media: job bookkeeping failed; will retry", "profile", p.name, "msg", t.msgID, "err", err)
		w.mu.Lock()
		p.due = time.Now().Add(w.cfg.BackoffBase)
		w.mu.Unlock()
	}
}

// attempt runs one attempt of job msgID. Its error is about bookkeeping
// (storage); download outcomes are recorded on the job or the message.
func (w *Worker) attempt(ctx context.Context, p *attached, msgID string) error {
	job, err := w.loadJob(ctx, p.name, msgID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil // finished meanwhile
	}
	if err != nil {
		return err
	}
	if job.NextAt.After(time.Now()) {
		return nil // rescheduled meanwhile
	}
	if job.Attempts >= w.cfg.MaxAttempts {
		// The previous attempt used the last try and died with its
		// process: do not let a poisonous file loop forever.
		return w.finish(ctx, p, job, s3.Info{}, failure{reason: "attempts_exhausted", err: errors.New(job.LastError)})
	}
	job.Attempts++
	job.State = JobRunning
	if err := w.saveJob(ctx, p, job); err != nil {
		return err
	}

	start := time.Now()
	actx, cancel := context.WithTimeout(ctx, w.cfg.AttemptTimeout)
	info, err := w.fetch(actx, p, job)
	cancel()
	if err == nil {
		w.met.Duration.Observe(time.Since(start).Seconds())
		return w.finish(ctx, p, job, info, failure{})
	}
	if ctx.Err() != nil {
		return nil // detached or shutting down: the job stays for whoever runs next
	}
	if errors.Is(err, storage.ErrFenced) {
		return err
	}
	f := classify(err)
	if f.permanent || job.Attempts >= w.cfg.MaxAttempts {
		return w.finish(ctx, p, job, s3.Info{}, f)
	}
	delay := w.backoff(job.Attempts)
	job.State = JobRetry
	job.NextAt = time.Now().Add(delay).UTC()
	job.LastError = truncErr(err)
	w.met.Results.WithLabelValues("retry").Inc()
	w.log.Info("media: attempt failed; retrying", "profile", p.name, "msg", msgID,
		"attempt", job.Attempts, "reason", f.reason, "in", delay.Round(time.Millisecond), "err", err)
	if err := w.saveJob(ctx, p, job); err != nil {
		return err
	}
	w.mu.Lock()
	if p.due.IsZero() || job.NextAt.Before(p.due) {
		p.due = job.NextAt
	}
	w.mu.Unlock()
	w.poke()
	return nil
}

// fetch produces the verified object for job: an object left by an
// earlier attempt that died before its commit, or a fresh download
// streamed into the object store. A 404/410 goes through media retry.
func (w *Worker) fetch(ctx context.Context, p *attached, job *Job) (s3.Info, error) {
	m := job.Media
	key := ObjectKey(p.name, job.MessageID)
	size := int64(-1)
	if m.FileLength > 0 {
		if m.FileLength > uint64(w.cfg.MaxSize) {
			return s3.Info{}, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, m.FileLength, w.cfg.MaxSize)
		}
		size = int64(m.FileLength)
	}
	wantSHA := ""
	if len(m.FileSHA256) == 32 {
		wantSHA = hex.EncodeToString(m.FileSHA256)
	}
	if info, err := w.deps.Objects.Stat(ctx, key); err == nil && reusable(info, size, wantSHA) {
		return info, nil
	}
	for {
		rc, err := w.deps.Downloader.Download(ctx, job.Media)
		if errors.Is(err, ErrExpired) {
			if err := w.reupload(ctx, p, job, err); err != nil {
				return s3.Info{}, err
			}
			continue
		}
		if err != nil {
			return s3.Info{}, fmt.Errorf("download: %w", err)
		}
		body := &countingReader{r: rc, limit: w.cfg.MaxSize}
		mime := job.Media.Mime
		info, err := w.deps.Objects.Put(ctx, key, body, size, mime, wantSHA)
		_ = rc.Close()
		if err != nil {
			return s3.Info{}, fmt.Errorf("store %s: %w", key, err)
		}
		w.met.Bytes.Add(float64(info.Size))
		return info, nil
	}
}

// reusable reports whether an object found under the job's key is the
// finished result of an earlier attempt. Every Put is atomic and verified,
// so an existing object is complete; it is ours if it matches what the
// descriptor announces.
func reusable(info s3.Info, size int64, wantSHA string) bool {
	if info.SHA256 == "" {
		return false
	}
	if wantSHA != "" && info.SHA256 != wantSHA {
		return false
	}
	return size < 0 || info.Size == size
}

// reupload asks the phone to re-upload an expired file and points the job
// at the new copy. Each request is recorded on the job before it is sent,
// so MaxReuploads also holds across crashes.
func (w *Worker) reupload(ctx context.Context, p *attached, job *Job, cause error) error {
	if w.deps.Rerequester == nil {
		return fmt.Errorf("%w: %w (media retry not available)", ErrPermanent, cause)
	}
	if job.Reuploads >= w.cfg.MaxReuploads {
		return fmt.Errorf("%w: %w after %d re-upload requests", ErrPermanent, cause, job.Reuploads)
	}
	job.Reuploads++
	if err := w.saveJob(ctx, p, job); err != nil {
		return err
	}
	w.met.Results.WithLabelValues("reupload").Inc()
	w.log.Info("media: expired on the CDN; asking the phone to re-upload", "profile", p.name, "msg", job.MessageID, "request", job.Reuploads)
	path, err := w.deps.Rerequester.RequestReupload(ctx, p.name, job.MessageID, job.Media)
	if err != nil {
		return fmt.Errorf("media retry: %w", err)
	}
	if path == "" {
		return fmt.Errorf("media retry: %w: empty direct path", ErrPermanent)
	}
	job.Media.DirectPath = path
	job.Media.URL = "" // the old URL points at the expired copy
	return w.saveJob(ctx, p, job)
}

// failure describes why a job failed; the zero value means success.
type failure struct {
	reason    string
	permanent bool
	err       error
}

func classify(err error) failure {
	f := failure{err: err}
	switch {
	case errors.Is(err, ErrTooLarge):
		f.reason, f.permanent = "too_large", true
	case errors.Is(err, ErrPermanent) && errors.Is(err, ErrExpired):
		f.reason, f.permanent = "expired", true
	case errors.Is(err, ErrPermanent):
		f.reason, f.permanent = "permanent", true
	case errors.Is(err, ErrCorrupt), errors.Is(err, s3.ErrChecksum), errors.Is(err, s3.ErrSizeMismatch):
		f.reason = "corrupt"
	case errors.Is(err, ErrExpired):
		f.reason = "expired"
	case errors.Is(err, context.DeadlineExceeded):
		f.reason = "timeout"
	default:
		f.reason = "error"
	}
	return f
}

// errJobGone aborts a commit whose job another attempt already finished.
var errJobGone = errors.New("media: job already finished")

// finish records the outcome on the message, appends media.stored or
// media.failed and deletes the job, in one transaction. A job that is no
// longer stored means the outcome was already recorded: nothing is written.
func (w *Worker) finish(ctx context.Context, p *attached, job *Job, info s3.Info, f failure) error {
	stored := f.reason == ""
	typ := msgstore.EventMediaStored
	if !stored {
		typ = msgstore.EventMediaFailed
	}
	var missing bool
	err := w.deps.Messages.UpdateMessage(ctx, p.name, p.token, job.MessageID, func(tx storage.Tx, m *msgstore.Message) error {
		if _, err := tx.Get(ctx, NSJobs, job.MessageID); errors.Is(err, storage.ErrNotFound) {
			return errJobGone
		} else if err != nil {
			return fmt.Errorf("read job: %w", err)
		}
		tx.Delete(NSJobs, job.MessageID)
		if m == nil {
			missing = true // message wiped meanwhile: drop the job quietly
			return nil
		}
		md := job.Media
		if m.Media != nil {
			md = *m.Media
		}
		if stored {
			md.ObjectKey, md.Size, md.SHA256, md.State = info.Key, info.Size, info.SHA256, msgstore.MediaStored
			if md.Mime == "" {
				md.Mime = info.ContentType
			}
		} else {
			md.State = msgstore.MediaFailed
		}
		m.Media = &md
		data := EventData{ID: m.ID, Chat: m.Chat, From: m.From, Media: publicMedia(md), Attempts: job.Attempts}
		if !stored {
			data.Reason, data.Error = f.reason, truncErr(f.err)
		}
		raw, err := json.Marshal(data)
		if err != nil {
			return fmt.Errorf("encode event: %w", err)
		}
		tx.Append(typ, raw)
		return nil
	})
	if errors.Is(err, errJobGone) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("record %s of %s/%s: %w", typ, p.name, job.MessageID, err)
	}
	switch {
	case missing:
		w.log.Warn("media: message no longer stored; job dropped", "profile", p.name, "msg", job.MessageID)
	case stored:
		w.met.Results.WithLabelValues("stored").Inc()
		w.log.Info("media: stored", "profile", p.name, "msg", job.MessageID, "key", info.Key, "size", info.Size, "attempts", job.Attempts)
	default:
		w.met.Results.WithLabelValues("failed").Inc()
		w.log.Warn("media: failed", "profile", p.name, "msg", job.MessageID, "reason", f.reason, "attempts", job.Attempts, "err", f.err)
	}
	return nil
}

func (w *Worker) loadJob(ctx context.Context, profile, msgID string) (*Job, error) {
	raw, err := w.deps.Store.Get(ctx, profile, NSJobs, msgID)
	if err != nil {
		return nil, fmt.Errorf("load job %s/%s: %w", profile, msgID, err)
	}
	var j Job
	if err := json.Unmarshal(raw, &j); err != nil {
		return nil, fmt.Errorf("load job %s/%s: %w", profile, msgID, storage.ErrNotFound)
	}
	if j.MessageID == "" {
		j.MessageID = msgID
	}
	if j.Profile == "" {
		j.Profile = profile
	}
	return &j, nil
}

func (w *Worker) saveJob(ctx context.Context, p *attached, j *Job) error {
	raw, err := json.Marshal(j)
	if err != nil {
		return fmt.Errorf("encode job: %w", err)
	}
	if err := w.deps.Store.Put(ctx, p.name, p.token, NSJobs, j.MessageID, raw); err != nil {
		return fmt.Errorf("save job %s/%s: %w", p.name, j.MessageID, err)
	}
	return nil
}

func (w *Worker) backoff(attempt int) time.Duration {
	d := w.cfg.BackoffBase
	for i := 1; i < attempt && d < w.cfg.BackoffMax; i++ {
		d *= 2
	}
	d = min(d, w.cfg.BackoffMax)
	jitter := 0.8 + 0.4*rand.Float64()
	return time.Duration(float64(d) * jitter)
}

func truncErr(err error) string {
	if err == nil {
		return ""
	}
	s := err.Error()
	if len(s) > 500 {
		s = s[:500] + "…"
	}
	return s
}

// countingReader enforces MaxSize on streams of unknown length.
type countingReader struct {
	r     io.Reader
	n     int64
	limit int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.n > c.limit {
		return n, fmt.Errorf("%w: more than %d bytes", ErrTooLarge, c.limit)
	}
	return n, err
}
