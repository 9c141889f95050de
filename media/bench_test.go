package media

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/amarula/amarula/msgstore"
)

// patternReader yields n deterministic bytes without holding them.
type patternReader struct{ off, n int64 }

func (p *patternReader) Read(b []byte) (int, error) {
	if p.off >= p.n {
		return 0, io.EOF
	}
	if rem := p.n - p.off; int64(len(b)) > rem {
		b = b[:rem]
	}
	for i := range b {
		x := p.off + int64(i)
		b[i] = byte(x*131 + x>>11)
	}
	p.off += int64(len(b))
	return len(b), nil
}

// heapSampler records the peak heap in use while a job runs.
type heapSampler struct {
	peak atomic.Uint64
	stop chan struct{}
	wg   sync.WaitGroup
}

func startSampler() *heapSampler {
	s := &heapSampler{stop: make(chan struct{})}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > s.peak.Load() {
				s.peak.Store(ms.HeapInuse)
			}
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

func (s *heapSampler) done() uint64 {
	close(s.stop)
	s.wg.Wait()
	return s.peak.Load()
}

// waitJobsGone polls (5 ms, bounded) until none of ids has a job left.
func (e *env) waitJobsGone(ids []string) {
	e.t.Helper()
	deadline := time.Now().Add(5 * time.Minute)
	for _, id := range ids {
		for {
			if _, ok := e.job(id); !ok {
				break
			}
			if time.Now().After(deadline) {
				e.t.Fatalf("job %s not done after 5 minutes", id)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// BenchmarkPipeline measures large documents through the whole pipeline:
// fake CDN (loopback HTTP) → streaming decrypt → verify → S3 multipart on
// versitygw → bolt transaction. MB/s is plaintext throughput; heap-MiB/job
// is the peak heap in use above the idle baseline divided by the jobs in
// flight; alloc-MiB/job is the garbage churned per job.
func BenchmarkPipeline(b *testing.B) {
	for _, tc := range []struct {
		name     string
		size     int64
		parallel int
		buffered bool
	}{
		{"doc64MiB_x1", 64 << 20, 1, false},
		{"doc32MiB_x4", 32 << 20, 4, false},
		// Baseline: what adapting whatsmeow's Download ([]byte) would cost.
		{"doc64MiB_x1_buffered", 64 << 20, 1, true},
	} {
		b.Run(tc.name, func(b *testing.B) {
			e := newEnv(b, backends[0].new(b))
			cfg := testConfig()
			cfg.Concurrency = tc.parallel
			cfg.PollInterval = time.Hour // only Notify starts the timed jobs
			deps := Deps{}
			if tc.buffered {
				deps.Downloader = bufferedDownloader{e.cdn.downloader()}
			}
			w := e.start(cfg, deps)
			var peakDelta, allocs uint64
			b.SetBytes(tc.size * int64(tc.parallel))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				var ids []string
				for j := range tc.parallel {
					id := fmt.Sprintf("3EB0BENCH%03d%02d", i, j)
					e.publish(id, "document", "application/pdf", &patternReader{n: tc.size}, uint64(tc.size), nil)
					ids = append(ids, id)
				}
				// Twice: the second GC also empties sync.Pool's victim
				// cache, so pooled part buffers count against the job.
				runtime.GC()
				runtime.GC()
				var base runtime.MemStats
				runtime.ReadMemStats(&base)
				s := startSampler()
				b.StartTimer()
				w.Notify(prof)
				e.waitJobsGone(ids)
				b.StopTimer()
				peak := s.done()
				var after runtime.MemStats
				runtime.ReadMemStats(&after)
				if peak > base.HeapInuse {
					peakDelta = max(peakDelta, peak-base.HeapInuse)
				}
				allocs += after.TotalAlloc - base.TotalAlloc
				b.Logf("round %d: heap in use %d MiB idle, %d MiB peak; %d MiB allocated",
					i, base.HeapInuse>>20, peak>>20, (after.TotalAlloc-base.TotalAlloc)>>20)
				for _, id := range ids {
					if m := e.message(id); m.Media == nil || m.Media.State != msgstore.MediaStored || m.Media.Size != tc.size {
						b.Fatalf("%s not stored: %+v", id, m.Media)
					}
				}
				// Drop the CDN copies so the next round's baseline is the same.
				e.cdn.set(func(c *fakeCDN) { clear(c.files) })
				b.StartTimer()
			}
			b.StopTimer()
			const mib = 1 << 20
			b.ReportMetric(float64(peakDelta)/float64(tc.parallel)/mib, "heap-MiB/job")
			b.ReportMetric(float64(allocs)/float64(b.N*tc.parallel)/mib, "alloc-MiB/job")
		})
	}
}

// BenchmarkDecrypt is the crypto alone (memory to io.Discard), the upper
// bound the pipeline is compared with.
func BenchmarkDecrypt(b *testing.B) {
	const size = 32 << 20
	key := mediaKey(1)
	var buf bytes.Buffer
	res, err := Encrypt(&buf, &patternReader{n: size}, key, "document")
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(size)
	b.ReportAllocs()
	for b.Loop() {
		r, err := NewDecryptReader(bytes.NewReader(buf.Bytes()), key, "document", res.FileEncSHA256)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, r); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkObjectPut is the S3 multipart upload alone (versitygw), the
// other bound of the pipeline.
func BenchmarkObjectPut(b *testing.B) {
	e := newEnv(b, backends[0].new(b))
	const size = 32 << 20
	b.SetBytes(size)
	for i := 0; b.Loop(); i++ {
		if _, err := e.obj.Put(context.Background(), fmt.Sprintf("bench/put/%d", i), &patternReader{n: size}, size, "", ""); err != nil {
			b.Fatal(err)
		}
	}
}

// bufferedDownloader is the whatsmeow-style baseline: the whole encrypted
// file is read into memory and decrypted into a second whole-file buffer
// (what Client.Download returns) before the upload starts.
type bufferedDownloader struct{ cdn *CDN }

func (d bufferedDownloader) Download(ctx context.Context, m msgstore.Media) (io.ReadCloser, error) {
	rc, err := d.cdn.Download(ctx, m)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	plain, err := io.ReadAll(rc)
	if err != nil {
		return nil, err
	}
	return io.NopCloser(bytes.NewReader(plain)), nil
}
