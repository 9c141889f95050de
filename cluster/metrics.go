package cluster

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the cluster's Prometheus instruments (amarula_ prefix).
type Metrics struct {
	Acquisitions    prometheus.Counter     // leases won by this node
	AcquireFailures prometheus.Counter     // attempts that failed other than "held"
	Losses          prometheus.Counter     // grants ended without a hand-off (lease lost, revoked, key deleted)
	Handoffs        *prometheus.CounterVec // by reason: rebalance, drain, deleted, stopped
	Revocations     prometheus.Counter     // dead nodes' leases revoked by this node
	Failover        prometheus.Histogram   // dead verdict → profile acquired here
	ProfilesOwned   prometheus.Gauge
	Members         *prometheus.GaugeVec // by state
}

// NewMetrics creates the instruments and registers them with reg (nil:
// not registered, e.g. in tests).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Acquisitions: prometheus.NewCounter(prometheus.CounterOpts{Name: "amarula_lease_acquisitions_total",
			Help: "Profile leases acquired by this node."}),
		AcquireFailures: prometheus.NewCounter(prometheus.CounterOpts{Name: "amarula_lease_acquire_failures_total",
			Help: "Lease acquisitions that failed for a reason other than the profile being held."}),
		Losses: prometheus.NewCounter(prometheus.CounterOpts{Name: "amarula_lease_losses_total",
			Help: "Profile leases lost without a hand-off (node lease lost or revoked, owner key deleted)."}),
		Handoffs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "amarula_handoffs_total",
			Help: "Graceful hand-offs of profiles by this node, by reason."}, []string{"reason"}),
		Revocations: prometheus.NewCounter(prometheus.CounterOpts{Name: "amarula_dead_node_revocations_total",
			Help: "Leases of dead nodes revoked by this node."}),
		Failover: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "amarula_failover_duration_seconds",
			Help:    "Time from a node's dead verdict to this node acquiring one of its profiles.",
			Buckets: []float64{0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20, 30, 60}}),
		ProfilesOwned: prometheus.NewGauge(prometheus.GaugeOpts{Name: "amarula_profiles_owned",
			Help: "Profiles this node owns."}),
		Members: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "amarula_cluster_members",
			Help: "Cluster members by state, as this node sees them."}, []string{"state"}),
	}
	if reg != nil {
		reg.MustRegister(m.Acquisitions, m.AcquireFailures, m.Losses, m.Handoffs, m.Revocations, m.Failover, m.ProfilesOwned, m.Members)
	}
	return m
}
