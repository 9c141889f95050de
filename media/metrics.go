package media

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the worker's Prometheus series (design §7 "media jobs").
type Metrics struct {
	// Jobs counts jobs by state on this node: pending (due, waiting for a
	// worker), retry (waiting for their backoff), running.
	Jobs *prometheus.GaugeVec
	// Results counts finished attempts by result: stored, failed, retry,
	// reupload (a media retry request sent), fenced.
	Results *prometheus.CounterVec
	// Bytes counts plaintext bytes stored.
	Bytes prometheus.Counter
	// Duration observes successful jobs' download+upload time.
	Duration prometheus.Histogram
}

// NewMetrics creates the series and registers them with reg (nil: not
// registered, e.g. in tests).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Jobs: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "amarula_media_jobs",
			Help: "Media download jobs of the profiles this node owns, by state.",
		}, []string{"state"}),
		Results: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "amarula_media_job_results_total",
			Help: "Media job attempts by result (stored, failed, retry, reupload, fenced).",
		}, []string{"result"}),
		Bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "amarula_media_bytes_total",
			Help: "Plaintext media bytes stored in the object store.",
		}),
		Duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "amarula_media_job_duration_seconds",
			Help:    "Download, decrypt and upload time of stored media.",
			Buckets: prometheus.ExponentialBuckets(0.05, 2, 14),
		}),
	}
	if reg != nil {
		reg.MustRegister(m.Jobs, m.Results, m.Bytes, m.Duration)
	}
	return m
}
