package media

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/amarula/amarula/internal/testenv"
	"github.com/amarula/amarula/msgstore"
	"github.com/amarula/amarula/storage"
)

// forEachBackend runs fn against bolt and Redis.
func forEachBackend(t *testing.T, fn func(t *testing.T, e *env)) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) { fn(t, newEnv(t, b.new(t))) })
	}
}

// TestStoredByteIdentical: an image, a voice note and a 12 MiB document
// (multipart) received by the session end up in S3 byte-identical, the
// message records key/size/sha256/state, one media.stored event each
// (without the descriptor's keys), jobs gone.
func TestStoredByteIdentical(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		msgs := []received{
			e.receive("3EB0IMAGE0001", "image", "image/jpeg", randBytes(150_000, 1)),
			e.receive("3EB0VOICE0001", "voice", "audio/ogg; codecs=opus", randBytes(33_333, 2)),
			e.receive("3EB0DOC000001", "document", "application/pdf", randBytes(12<<20+5, 3)),
			e.receive("3EB0STICKER01", "sticker", "image/webp", randBytes(1, 4)),
		}
		cfg := testConfig()
		reg := prometheus.NewRegistry()
		cfg.Metrics = NewMetrics(reg)
		w := e.start(cfg, Deps{Rerequester: e.phone})
		w.Notify(prof)
		var total int
		for _, r := range msgs {
			e.assertStored(r)
			total += len(r.plain)
		}
		if got := counterValue(t, cfg.Metrics.Results.WithLabelValues("stored")); got != float64(len(msgs)) {
			t.Fatalf("stored counter %v, want %d", got, len(msgs))
		}
		if got := counterValue(t, cfg.Metrics.Bytes); got != float64(total) {
			t.Fatalf("bytes counter %v, want %d", got, total)
		}
		if !gathered(t, reg, "amarula_media_jobs") {
			t.Fatal("amarula_media_jobs not exported")
		}
		for _, ev := range e.mediaEvents() {
			if bytes.Contains(ev.Data, []byte("media_key")) || bytes.Contains(ev.Data, []byte("direct_path")) {
				t.Fatalf("event leaks the download descriptor: %s", ev.Data)
			}
		}
		if got := len(e.objectFiles()); got != len(msgs) {
			t.Fatalf("%d objects under media/%s/, want %d: %v", got, prof, len(msgs), e.objectFiles())
		}
		if e.phone.calls.Load() != 0 {
			t.Fatal("media retry requested without expiry")
		}
	})
}

// TestCrashMidDownload: the worker is killed (its context cancelled) while
// the CDN is half-way through a 12 MiB body and the store is reopened, as
// after a crash; a new worker on the same store completes the job exactly
// once: one media.stored, one object, bytes identical.
func TestCrashMidDownload(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		r := e.receive("3EB0CRASH0001", "document", "application/zip", randBytes(12<<20, 9))
		gate := make(chan struct{})
		e.cdn.set(func(c *fakeCDN) { c.stall[urlPath(r.media.DirectPath)] = gate })

		w1 := e.start(testConfig(), Deps{Rerequester: e.phone})
		select {
		case <-e.cdn.started:
		case <-time.After(30 * time.Second):
			t.Fatal("download never started")
		}
		w1.stop() // killed mid-body
		j, ok := e.job(r.id)
		if !ok || j.Attempts != 1 || j.State != JobRunning {
			t.Fatalf("after the crash: job %+v (stored %v), want attempts 1 state running", j, ok)
		}
		if n := len(e.mediaEvents()); n != 0 {
			t.Fatalf("%d media events after a killed attempt", n)
		}
		if files := e.objectFiles(); len(files) != 0 {
			t.Fatalf("a half download is visible: %v", files)
		}

		e.h.restart(t) // the process comes back
		e.cdn.set(func(c *fakeCDN) { delete(c.stall, urlPath(r.media.DirectPath)) })
		close(gate)
		w2 := e.start(testConfig(), Deps{Rerequester: e.phone})
		e.assertStored(r)
		w2.stop()
		if n := e.eventsFor(r.id); n[msgstore.EventMediaStored] != 1 {
			t.Fatalf("events after the second worker stopped: %v", n)
		}
		if files := e.objectFiles(); len(files) != 1 {
			t.Fatalf("objects %v, want exactly one", files)
		}
		if _, data := e.waitOutcome(r.id); data.Attempts != 2 {
			t.Fatalf("attempts %d, want 2 (the killed one counts)", data.Attempts)
		}
	})
}

// killingMessages simulates a crash between the upload and the commit: the
// first commit kills the worker instead of committing.
type killingMessages struct {
	Messages
	kill   func()
	killed bool
}

func (k *killingMessages) UpdateMessage(ctx context.Context, profile string, token storage.Token, msgID string,
	fn func(tx storage.Tx, m *msgstore.Message) error) error {
	if !k.killed {
		k.killed = true
		k.kill()
		return errors.New("killed before commit")
	}
	return k.Messages.UpdateMessage(ctx, profile, token, msgID, fn)
}

// TestCrashBeforeCommit: the object was uploaded but the process died
// before the transaction; the next worker reuses the object (no second
// download), commits once.
func TestCrashBeforeCommit(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		r := e.receive("3EB0COMMIT001", "image", "image/png", randBytes(700_000, 10))
		var w1 *runningWorker
		killed, ready := make(chan struct{}), make(chan struct{})
		km := &killingMessages{Messages: e.msgs, kill: func() { <-ready; w1.cancel(); close(killed) }}
		w1 = e.start(testConfig(), Deps{Messages: km, Rerequester: e.phone})
		close(ready)
		select {
		case <-killed:
		case <-time.After(30 * time.Second):
			t.Fatal("never reached the commit")
		}
		w1.stop()
		if _, ok := e.job(r.id); !ok {
			t.Fatal("job gone without a commit")
		}
		if len(e.objectFiles()) != 1 || len(e.mediaEvents()) != 0 {
			t.Fatalf("before the retry: objects %v, events %d; want 1 object, 0 events", e.objectFiles(), len(e.mediaEvents()))
		}
		e.h.restart(t)
		e.start(testConfig(), Deps{Rerequester: e.phone})
		e.assertStored(r)
		if hits := e.cdn.hitCount(urlPath(r.media.DirectPath)); hits != 1 {
			t.Fatalf("CDN hit %d times, want 1 (the uploaded object must be reused)", hits)
		}
	})
}

// TestExpiredMediaRetry: the CDN answers 404/410; the worker asks the phone
// to re-upload and stores the file from the new path. When the phone cannot
// help, or keeps pointing at expired copies, the job fails with a reason.
func TestExpiredMediaRetry(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		for _, tc := range []struct {
			name      string
			status    int
			answer    func(n int32, old string) (string, error)
			noPhone   bool
			reason    string // "" = stored
			wantCalls int32
		}{
			{name: "404 recovers", status: 404, wantCalls: 1},
			{name: "410 recovers", status: 410, wantCalls: 1},
			{name: "phone no longer has it", status: 404, reason: "permanent", wantCalls: 1,
				answer: func(int32, string) (string, error) {
					return "", fmt.Errorf("%w: phone answered not found", ErrPermanent)
				}},
			{name: "re-uploads expire too", status: 404, reason: "expired", wantCalls: 2,
				answer: func(n int32, old string) (string, error) { return old, nil }},
			{name: "no rerequester", status: 410, reason: "expired", noPhone: true},
		} {
			t.Run(tc.name, func(t *testing.T) {
				id := "3EB0EXP" + strings.ToUpper(strings.NewReplacer(" ", "", "'", "").Replace(tc.name))
				r := e.receive(id, "video", "video/mp4", randBytes(300_000, uint64(len(id))))
				e.cdn.set(func(c *fakeCDN) { c.expired[urlPath(r.media.DirectPath)] = tc.status })
				ph := &phone{cdn: e.cdn, answer: tc.answer}
				deps := Deps{Rerequester: ph}
				if tc.noPhone {
					deps.Rerequester = nil
				}
				w := e.start(testConfig(), deps)
				defer w.stop()
				if tc.reason == "" {
					e.assertStored(r)
				} else {
					e.assertFailed(r.id, tc.reason)
				}
				if got := ph.calls.Load(); got != tc.wantCalls {
					t.Fatalf("media retry requests %d, want %d", got, tc.wantCalls)
				}
			})
		}
	})
}

// TestCorruptDownload: damaged bytes (CDN file, announced plaintext hash or
// length) are retried, then reported as media.failed "corrupt"; nothing is
// ever stored as good. Transient damage and 500s are retried into success.
func TestCorruptDownload(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		for _, tc := range []struct {
			name     string
			size     int
			prepare  func(c *fakeCDN, path string)
			descr    func(m *msgstore.Media)
			reason   string // "" = stored
			attempts int
		}{
			{name: "always damaged", size: 200_000, reason: "corrupt", attempts: 3,
				prepare: func(c *fakeCDN, p string) { c.corrupt[p] = 1 << 30 }},
			{name: "always damaged multipart", size: 6 << 20, reason: "corrupt", attempts: 3,
				prepare: func(c *fakeCDN, p string) { c.corrupt[p] = 1 << 30 }},
			{name: "wrong plaintext sha", size: 50_000, reason: "corrupt", attempts: 3,
				descr: func(m *msgstore.Media) { m.FileSHA256 = sha256Sum([]byte("other")) }},
			{name: "wrong length", size: 50_000, reason: "corrupt", attempts: 3,
				descr: func(m *msgstore.Media) { m.FileLength++ }},
			{name: "damaged twice then good", size: 80_000, attempts: 3,
				prepare: func(c *fakeCDN, p string) { c.corrupt[p] = 2 }},
			{name: "500 twice then good", size: 80_000, attempts: 3,
				prepare: func(c *fakeCDN, p string) { c.fail500[p] = 2 }},
			{name: "too large", size: 10_000, reason: "too_large", attempts: 1,
				descr: func(m *msgstore.Media) { m.FileLength = 1 << 40 }},
		} {
			t.Run(tc.name, func(t *testing.T) {
				id := "3EB0BAD" + strings.ToUpper(strings.ReplaceAll(tc.name, " ", ""))
				plain := randBytes(tc.size, uint64(len(id)))
				md, enc := e.publish(id, "document", "application/octet-stream", bytes.NewReader(plain), uint64(len(id)), tc.descr)
				r := received{id: id, plain: plain, media: md, enc: enc}
				if tc.prepare != nil {
					e.cdn.set(func(c *fakeCDN) { tc.prepare(c, urlPath(r.media.DirectPath)) })
				}
				w := e.start(testConfig(), Deps{Rerequester: e.phone})
				defer w.stop()
				var data EventData
				if tc.reason == "" {
					e.assertStored(r)
					_, data = e.waitOutcome(r.id)
				} else {
					data = e.assertFailed(r.id, tc.reason)
					if data.Error == "" {
						t.Fatal("media.failed without an error text")
					}
				}
				if data.Attempts != tc.attempts {
					t.Fatalf("attempts %d, want %d", data.Attempts, tc.attempts)
				}
			})
		}
	})
}

// TestBacklogBoundedPool: jobs enqueued while no worker runs (a restart)
// are all loaded at start and stored once each, with never more downloads
// in flight than Concurrency.
func TestBacklogBoundedPool(t *testing.T) {
	e := newEnv(t, backends[0].new(t))
	var rs []received
	for i := range 12 {
		rs = append(rs, e.receive(fmt.Sprintf("3EB0BACKLOG%02d", i), "image", "image/jpeg", randBytes(40_000+i, uint64(i))))
	}
	cfg := testConfig()
	cfg.Concurrency = 3
	e.start(cfg, Deps{Rerequester: e.phone})
	for _, r := range rs {
		e.assertStored(r)
	}
	if m := e.cdn.maxInfl.Load(); m > 3 || m < 1 {
		t.Fatalf("max downloads in flight %d, want 1..3", m)
	}
	if n := len(e.mediaEvents()); n != len(rs) {
		t.Fatalf("%d media events for %d messages", n, len(rs))
	}
}

// TestFencedWorkerStops: once a newer owner raised the profile's fence,
// the old owner's worker writes nothing (no event, job untouched) and
// detaches the profile; the new owner's worker then finishes the job.
func TestFencedWorkerStops(t *testing.T) {
	e := newEnv(t, backends[0].new(t))
	ctx := context.Background()
	st := e.h.store()
	if err := st.RaiseFence(ctx, prof, tok); err != nil {
		t.Fatal(err)
	}
	r := e.receive("3EB0FENCED001", "image", "image/jpeg", randBytes(10_000, 5))
	if err := st.RaiseFence(ctx, prof, tok+1); err != nil {
		t.Fatal(err)
	}
	old := e.start(testConfig(), Deps{}) // attaches with tok: fenced
	if err := testenv.WaitFor(20*time.Second, func() error {
		old.mu.Lock()
		defer old.mu.Unlock()
		if old.profiles[prof] != nil {
			return errors.New("still attached")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if j, ok := e.job(r.id); !ok || j.Attempts != 0 {
		t.Fatalf("fenced worker touched the job: %+v %v", j, ok)
	}
	if n := len(e.mediaEvents()); n != 0 {
		t.Fatalf("fenced worker appended %d events", n)
	}
	if err := old.Attach(prof, tok+1); err != nil { // the same node re-acquires with the new token
		t.Fatal(err)
	}
	e.assertStored(r)
}

// TestDetachCancelsAndWaits: Detach stops a profile's in-flight download
// and returns only after it stopped; the job stays for the next owner.
func TestDetachCancelsAndWaits(t *testing.T) {
	e := newEnv(t, backends[0].new(t))
	r := e.receive("3EB0DETACH001", "document", "application/pdf", randBytes(2<<20, 6))
	gate := make(chan struct{})
	defer close(gate)
	e.cdn.set(func(c *fakeCDN) { c.stall[urlPath(r.media.DirectPath)] = gate })
	w := e.start(testConfig(), Deps{})
	select {
	case <-e.cdn.started:
	case <-time.After(30 * time.Second):
		t.Fatal("download never started")
	}
	w.Detach(prof)
	if j, ok := e.job(r.id); !ok || j.Attempts != 1 {
		t.Fatalf("job after detach: %+v %v", j, ok)
	}
	if n := len(e.mediaEvents()); n != 0 {
		t.Fatalf("%d events after detach", n)
	}
}

func TestEnqueueValidation(t *testing.T) {
	e := newEnv(t, backends[0].new(t))
	ctx := context.Background()
	good := msgstore.Media{Kind: "image", DirectPath: "/v/x"}
	for _, tc := range []struct {
		name, profile, id string
		m                 msgstore.Media
		want              error
	}{
		{"bad profile", "Alice!", "ID1", good, storage.ErrInvalidProfile},
		{"empty id", prof, "", good, storage.ErrInvalidArgument},
		{"no path", prof, "ID1", msgstore.Media{Kind: "image"}, storage.ErrInvalidArgument},
	} {
		_, err := e.h.store().Txn(ctx, prof, tok, func(tx storage.Tx) error { return Enqueue(tx, tc.profile, tc.id, tc.m) })
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	jobs, err := ListJobs(ctx, e.h.store(), prof)
	if err != nil || len(jobs) != 0 {
		t.Fatalf("jobs after rejected enqueues: %v %v", jobs, err)
	}
}

func TestObjectKey(t *testing.T) {
	for _, tc := range []struct{ id, want string }{
		{"3EB0C431C26A1916E07A", "media/alice/3EB0C431C26A1916E07A"},
		{"../../etc/passwd", "media/alice/h="},
		{"a b", "media/alice/h="},
		{".hidden", "media/alice/h="},
	} {
		got := ObjectKey("alice", tc.id)
		if !strings.HasPrefix(got, tc.want) || (strings.HasSuffix(tc.want, "=") && len(got) != len(tc.want)+64) {
			t.Errorf("ObjectKey(%q) = %q, want %q…", tc.id, got, tc.want)
		}
	}
}

func TestBackoffBounded(t *testing.T) {
	w := &Worker{cfg: Config{BackoffBase: time.Second, BackoffMax: 10 * time.Second}}
	for attempt, want := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 4: 8 * time.Second, 5: 10 * time.Second, 40: 10 * time.Second} {
		for range 20 {
			got := w.backoff(attempt)
			if got < want*8/10 || got > want*12/10 {
				t.Fatalf("backoff(%d) = %v, want %v ±20%%", attempt, got, want)
			}
		}
	}
}

// TestLateDuplicateCommitIsNoop: an attempt that finishes after another
// one already recorded the outcome (two attempts racing across a hand-off)
// writes nothing: still one event, message unchanged.
func TestLateDuplicateCommitIsNoop(t *testing.T) {
	e := newEnv(t, backends[0].new(t))
	r := e.receive("3EB0LATE00001", "image", "image/gif", randBytes(20_000, 8))
	j, ok := e.job(r.id)
	if !ok {
		t.Fatal("no job")
	}
	w := e.start(testConfig(), Deps{})
	e.assertStored(r)
	before := e.message(r.id)
	w.mu.Lock()
	p := w.profiles[prof]
	w.mu.Unlock()
	for _, f := range []failure{{}, {reason: "corrupt", err: errors.New("late")}} {
		if err := w.finish(context.Background(), p, &j, s3Info(e, r.id), f); err != nil {
			t.Fatalf("late finish: %v", err)
		}
	}
	if n := e.eventsFor(r.id); n[msgstore.EventMediaStored] != 1 || n[msgstore.EventMediaFailed] != 0 {
		t.Fatalf("events after late commits: %v", n)
	}
	if after := e.message(r.id); after.Media.State != before.Media.State {
		t.Fatalf("late commit changed the message: %+v", after.Media)
	}
}

func counterValue(t *testing.T, c prometheus.Metric) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

func gathered(t *testing.T, reg *prometheus.Registry, name string) bool {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) > 0 {
			return true
		}
	}
	return false
}

// TestManyProfilesOneWorker: one node-wide worker serves several attached
// profiles, each with its own jobs, keys and events; the jobs of a profile
// the node does not own wait untouched until it is attached.
func TestManyProfilesOneWorker(t *testing.T) {
	e := newEnv(t, backends[0].new(t))
	views := map[string]*env{}
	var rs = map[string][]received{}
	for _, p := range []string{"alice", "bob", "carol"} {
		v := e.forProfile(p)
		views[p] = v
		for i := range 4 {
			rs[p] = append(rs[p], v.receive(fmt.Sprintf("3EB0%s%02d", strings.ToUpper(p), i), "image", "image/jpeg", randBytes(30_000+i, uint64(i+len(p)))))
		}
	}
	w := e.start(testConfig(), Deps{}) // attaches alice
	if err := w.Attach("bob", tok); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"alice", "bob"} {
		for _, r := range rs[p] {
			views[p].assertStored(r)
		}
		if files := views[p].objectFiles(); len(files) != 4 {
			t.Fatalf("%s: objects %v, want 4", p, files)
		}
	}
	if jobs, err := ListJobs(context.Background(), e.h.store(), "carol"); err != nil || len(jobs) != 4 || jobs[0].Attempts != 0 {
		t.Fatalf("unattached profile's jobs: %+v %v, want 4 untouched", jobs, err)
	}
	if err := w.Attach("carol", tok); err != nil {
		t.Fatal(err)
	}
	for _, r := range rs["carol"] {
		views["carol"].assertStored(r)
	}
}
