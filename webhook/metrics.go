package webhook

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Delivery results counted by Metrics.
const (
	resultDelivered   = "delivered"
	resultFailed      = "failed"
	resultParked      = "parked"
	resultSkipped     = "skipped"
	resultRedelivered = "redelivered"
)

// Metrics counts webhook deliveries. A nil *Metrics is valid and counts
// nothing.
type Metrics struct {
	deliveries *prometheus.CounterVec
	latency    prometheus.Histogram
}

// NewMetrics registers the webhook metrics on reg:
// amarula_webhook_deliveries_total{result} (delivered, failed, parked,
// skipped, redelivered) and amarula_webhook_delivery_seconds.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "amarula_webhook_deliveries_total",
			Help: "Webhook delivery attempts by result.",
		}, []string{"result"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "amarula_webhook_delivery_seconds",
			Help:    "Duration of webhook HTTP attempts.",
			Buckets: prometheus.ExponentialBuckets(0.005, 4, 8),
		}),
	}
	for _, c := range []prometheus.Collector{m.deliveries, m.latency} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *Metrics) observe(result string, d time.Duration) {
	if m == nil {
		return
	}
	m.deliveries.WithLabelValues(result).Inc()
	if d > 0 {
		m.latency.Observe(d.Seconds())
	}
}
