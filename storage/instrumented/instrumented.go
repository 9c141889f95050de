// Package instrumented wraps a storage.Store with Prometheus metrics: the
// latency of every operation, writes refused by the fence, corrupt reads,
// and the events appended by type (which counts messages received and
// sent). It changes no behaviour: every call and error passes through.
package instrumented

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/amarula/amarula/storage"
)

// Metrics are the collectors a wrapped store reports to.
type Metrics struct {
	opSeconds *prometheus.HistogramVec
	fenced    *prometheus.CounterVec
	errors    *prometheus.CounterVec
	events    *prometheus.CounterVec
	corrupt   prometheus.Counter
}

// NewMetrics registers the storage metrics with reg (nil: unregistered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		opSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "amarula_store_op_seconds",
			Help:    "Latency of storage seam operations by operation.",
			Buckets: []float64{.0002, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"op"}),
		fenced: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "amarula_fenced_writes_total",
			Help: "Writes refused because a newer owner raised the profile's fence (storage.ErrFenced), by operation.",
		}, []string{"op"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "amarula_store_errors_total",
			Help: "Storage operations that failed for another reason than a miss or a fence, by operation.",
		}, []string{"op"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "amarula_events_appended_total",
			Help: "Events appended to profiles' event logs by type (message.received counts messages received, message.sent messages sent).",
		}, []string{"type"}),
		corrupt: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "amarula_store_corrupt_reads_total",
			Help: "Stored values that failed their checksum and were read as a miss.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.opSeconds, m.fenced, m.errors, m.events, m.corrupt)
	}
	return m
}

// CorruptRead counts one corrupt entry; pass it as the adapter's OnCorrupt hook.
func (m *Metrics) CorruptRead(profile, ns, key string) { m.corrupt.Inc() }

// Store is a storage.Store that reports to Metrics.
type Store struct {
	storage.Store
	m *Metrics
}

// Wrap returns st reporting to m.
func Wrap(st storage.Store, m *Metrics) *Store { return &Store{Store: st, m: m} }

// Unwrap returns the wrapped store.
func (s *Store) Unwrap() storage.Store { return s.Store }

func (s *Store) observe(op string, start time.Time, err error) {
	s.m.opSeconds.WithLabelValues(op).Observe(time.Since(start).Seconds())
	switch {
	case err == nil, errors.Is(err, storage.ErrNotFound), errors.Is(err, context.Canceled):
	case errors.Is(err, storage.ErrFenced):
		s.m.fenced.WithLabelValues(op).Inc()
	default:
		s.m.errors.WithLabelValues(op).Inc()
	}
}

func (s *Store) Get(ctx context.Context, profile, ns, key string) (v []byte, err error) {
	defer func(t time.Time) { s.observe("get", t, err) }(time.Now())
	return s.Store.Get(ctx, profile, ns, key)
}

func (s *Store) GetMany(ctx context.Context, profile, ns string, keys []string) (v map[string][]byte, err error) {
	defer func(t time.Time) { s.observe("get_many", t, err) }(time.Now())
	return s.Store.GetMany(ctx, profile, ns, keys)
}

func (s *Store) Put(ctx context.Context, profile string, token storage.Token, ns, key string, value []byte) (err error) {
	defer func(t time.Time) { s.observe("put", t, err) }(time.Now())
	return s.Store.Put(ctx, profile, token, ns, key, value)
}

func (s *Store) PutMany(ctx context.Context, profile string, token storage.Token, entries []storage.Entry) (err error) {
	defer func(t time.Time) { s.observe("put_many", t, err) }(time.Now())
	return s.Store.PutMany(ctx, profile, token, entries)
}

func (s *Store) Delete(ctx context.Context, profile string, token storage.Token, ns, key string) (err error) {
	defer func(t time.Time) { s.observe("delete", t, err) }(time.Now())
	return s.Store.Delete(ctx, profile, token, ns, key)
}

func (s *Store) Scan(ctx context.Context, profile, ns, prefix string) (v []storage.KeyValue, err error) {
	defer func(t time.Time) { s.observe("scan", t, err) }(time.Now())
	return s.Store.Scan(ctx, profile, ns, prefix)
}

func (s *Store) ClearNamespace(ctx context.Context, profile string, token storage.Token, ns string) (err error) {
	defer func(t time.Time) { s.observe("clear_namespace", t, err) }(time.Now())
	return s.Store.ClearNamespace(ctx, profile, token, ns)
}

func (s *Store) Clear(ctx context.Context, profile string, token storage.Token) (err error) {
	defer func(t time.Time) { s.observe("clear", t, err) }(time.Now())
	return s.Store.Clear(ctx, profile, token)
}

func (s *Store) RaiseFence(ctx context.Context, profile string, token storage.Token) (err error) {
	defer func(t time.Time) { s.observe("raise_fence", t, err) }(time.Now())
	return s.Store.RaiseFence(ctx, profile, token)
}

// Txn counts the events the transaction appends once it has committed.
func (s *Store) Txn(ctx context.Context, profile string, token storage.Token, fn func(tx storage.Tx) error) (cursors []string, err error) {
	defer func(t time.Time) { s.observe("txn", t, err) }(time.Now())
	var types []string
	cursors, err = s.Store.Txn(ctx, profile, token, func(tx storage.Tx) error {
		types = types[:0]
		return fn(&countingTx{Tx: tx, types: &types})
	})
	if err == nil {
		for _, typ := range types {
			s.m.events.WithLabelValues(typ).Inc()
		}
	}
	return cursors, err
}

func (s *Store) Append(ctx context.Context, profile string, token storage.Token, typ string, data []byte) (c string, err error) {
	defer func(t time.Time) { s.observe("append", t, err) }(time.Now())
	c, err = s.Store.Append(ctx, profile, token, typ, data)
	if err == nil {
		s.m.events.WithLabelValues(typ).Inc()
	}
	return c, err
}

func (s *Store) Read(ctx context.Context, profile, after string, limit int) (ev []storage.Event, err error) {
	defer func(t time.Time) { s.observe("read", t, err) }(time.Now())
	return s.Store.Read(ctx, profile, after, limit)
}

func (s *Store) Ack(ctx context.Context, profile string, token storage.Token, consumer, cursor string) (err error) {
	defer func(t time.Time) { s.observe("ack", t, err) }(time.Now())
	return s.Store.Ack(ctx, profile, token, consumer, cursor)
}

// countingTx records the types of the events a transaction appends.
type countingTx struct {
	storage.Tx
	types *[]string
}

func (c *countingTx) Append(typ string, data []byte) {
	*c.types = append(*c.types, typ)
	c.Tx.Append(typ, data)
}
