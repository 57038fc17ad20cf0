package agent

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tokend/tokend/tokens"
)

// metrics are the agent's Prometheus metrics, in a registry of its own.
// Counters are updated as things happen; gauges of pools, tokens and Raft
// are computed from the state when scraped, so they cost nothing between
// scrapes. No metric carries a secret.
type metrics struct {
	handler      http.Handler
	fetches      *prometheus.CounterVec
	fetchSeconds *prometheus.HistogramVec
	reports      *prometheus.CounterVec
	// Consistent reads (?consistent): how many, by result; how long each
	// waited for the leader's read index and to catch up with it; how many
	// wait now.
	consistentReads    *prometheus.CounterVec
	consistentWait     prometheus.Histogram
	consistentInFlight prometheus.Gauge
	// Set by the leader's prober; only the leader reports them.
	probeSeconds  *prometheus.GaugeVec
	rateRemaining *prometheus.GaugeVec
}

func newMetrics(a *Agent) *metrics {
	m := &metrics{
		fetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokend_fetches_total",
			Help: "Token fetches answered by this agent, by pool and result (ok or the error code).",
		}, []string{"pool", "result"}),
		fetchSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tokend_fetch_duration_seconds",
			Help:    "Time to answer a token fetch, from request to response written.",
			Buckets: []float64{25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 100e-3, 1, 5, 30, 60},
		}, []string{"pool"}),
		reports: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokend_reports_total",
			Help: "Token reports received by this agent, by pool and outcome.",
		}, []string{"pool", "outcome"}),
		consistentReads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokend_consistent_reads_total",
			Help: "Consistent reads (?consistent) this agent answered, by result: ok, or the error code of a read no leader could confirm (no_leader) or this agent could not catch up with in time (unavailable).",
		}, []string{"result"}),
		consistentWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "tokend_consistent_read_wait_seconds",
			Help:    "Time a consistent read waited before reading: for the leader's read index (a quorum round, and an RPC on a follower), then for this agent to apply it.",
			Buckets: []float64{100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3, 1, 2.5, 5, 10},
		}),
		consistentInFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tokend_consistent_reads_waiting",
			Help: "Consistent reads waiting now for the leader's read index or for this agent to catch up.",
		}),
		probeSeconds: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tokend_probe_duration_seconds",
			Help: "How long the last health-check probe of a token took (leader only).",
		}, []string{"pool", "token"}),
		rateRemaining: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tokend_token_ratelimit_remaining",
			Help: "A token's remaining rate-limit quota, as its last probe read it (leader only).",
		}, []string{"pool", "token"}),
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		m.fetches, m.fetchSeconds, m.reports, m.consistentReads, m.consistentWait, m.consistentInFlight, m.probeSeconds, m.rateRemaining, stateCollector{a},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	m.handler = promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: a.logger.Named("metrics").StandardLogger(nil)})
	return m
}

var (
	descTokens = prometheus.NewDesc("tokend_tokens",
		"Tokens by pool and health as this agent sees them (replicated state and its own reports).", []string{"pool", "health"}, nil)
	descEligible = prometheus.NewDesc("tokend_pool_eligible_tokens",
		"Tokens this agent would serve now, by pool.", []string{"pool"}, nil)
	descMinHealthy = prometheus.NewDesc("tokend_pool_min_healthy",
		"The pool's min_healthy: alert when tokend_pool_eligible_tokens falls below it.", []string{"pool"}, nil)
	descExpiry = prometheus.NewDesc("tokend_token_expiry_seconds",
		"Seconds until a token expires (negative once expired), for tokens with an expiry.", []string{"pool", "token"}, nil)
	descRaftState = prometheus.NewDesc("tokend_raft_state",
		"1 for this agent's Raft state, 0 for the others.", []string{"state"}, nil)
	descApplied = prometheus.NewDesc("tokend_raft_applied_index",
		"Raft index this agent has applied.", nil, nil)
	descKnownLeader = prometheus.NewDesc("tokend_raft_known_leader",
		"1 when this agent knows a leader.", nil, nil)
	descLastContact = prometheus.NewDesc("tokend_raft_last_contact_seconds",
		"Seconds since this agent last heard from the leader; 0 on the leader, -1 if never.", nil, nil)
)

var healthStates = []tokens.HealthState{tokens.Healthy, tokens.Degraded, tokens.Cooldown, tokens.Failed}

// stateCollector computes gauges from the state at scrape time.
type stateCollector struct{ a *Agent }

func (c stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descTokens, descEligible, descMinHealthy, descExpiry, descRaftState, descApplied, descKnownLeader, descLastContact} {
		ch <- d
	}
}

func (c stateCollector) Collect(ch chan<- prometheus.Metric) {
	view := c.a.reads.view()
	for _, ps := range view.state.Pools() {
		name := ps.Pool.Name
		counts := map[tokens.HealthState]int{}
		eligible := 0
		for _, t := range ps.Tokens {
			counts[view.Health(t).StateAt(view.now)]++
			if view.Eligible(t) {
				eligible++
			}
			if !t.ExpiresAt.IsZero() {
				ch <- prometheus.MustNewConstMetric(descExpiry, prometheus.GaugeValue, t.ExpiresAt.Sub(view.now).Seconds(), name, t.ID)
			}
		}
		for _, s := range healthStates {
			ch <- prometheus.MustNewConstMetric(descTokens, prometheus.GaugeValue, float64(counts[s]), name, string(s))
		}
		ch <- prometheus.MustNewConstMetric(descEligible, prometheus.GaugeValue, float64(eligible), name)
		ch <- prometheus.MustNewConstMetric(descMinHealthy, prometheus.GaugeValue, float64(ps.Pool.MinHealthy), name)
	}
	current := c.a.cluster.RaftState()
	for _, s := range []string{"leader", "follower", "candidate", "shutdown"} {
		v := 0.0
		if s == current {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(descRaftState, prometheus.GaugeValue, v, s)
	}
	applied, known, lastContact := c.a.cluster.Freshness()
	ch <- prometheus.MustNewConstMetric(descApplied, prometheus.GaugeValue, float64(applied))
	ch <- prometheus.MustNewConstMetric(descKnownLeader, prometheus.GaugeValue, boolFloat(known))
	lc := lastContact.Seconds()
	if lastContact < 0 {
		lc = -1
	}
	ch <- prometheus.MustNewConstMetric(descLastContact, prometheus.GaugeValue, lc)
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// observeFetch counts a fetch. Only pools that exist become label values,
// so clients asking for random names cannot grow the metrics without bound.
func (m *metrics) observeFetch(a *Agent, pool, result string, d time.Duration) {
	if _, ok := a.fsm.State().Pool(pool); !ok {
		pool = ""
	}
	m.fetches.WithLabelValues(pool, result).Inc()
	m.fetchSeconds.WithLabelValues(pool).Observe(d.Seconds())
}

func (m *metrics) observeProbe(pool, token string, d time.Duration) {
	m.probeSeconds.WithLabelValues(pool, token).Set(d.Seconds())
}

func (m *metrics) observeRateLimit(pool, token string, remaining int64) {
	m.rateRemaining.WithLabelValues(pool, token).Set(float64(remaining))
}

// forgetProbe drops the probe series of a token that is gone.
func (m *metrics) forgetProbe(pool, token string) {
	m.probeSeconds.DeleteLabelValues(pool, token)
	m.rateRemaining.DeleteLabelValues(pool, token)
}
