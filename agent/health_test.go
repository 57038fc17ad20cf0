package agent_test

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/tokend/tokend/api"
	"github.com/tokend/tokend/internal/testutil"
	"github.com/tokend/tokend/tokens"
)

// healthPool creates pool with the given policy and n tokens (priority
// order: the first one is the primary), and waits until every node has
// them. It returns the token ids.
func healthPool(t *testing.T, c *testutil.Cluster, pool string, policy *tokens.HealthPolicy, n int) []string {
	t.Helper()
	h := tcpClient(c.Leader())
	h.Must(t, "PUT", "/v1/pools/"+pool, api.PoolRequest{Health: policy}, http.StatusOK, nil)
	ids := make([]string, n)
	// Added backwards so that a node serving the primary has applied all.
	for i := n - 1; i >= 0; i-- {
		ids[i] = h.AddToken(t, pool, fmt.Sprintf("%s-value-%d", pool, i), i)
	}
	waitServes(t, c.Running(), pool, ids[0])
	return ids
}

func report(t *testing.T, n *testutil.Node, pool, id string, req api.ReportRequest) (api.ReportResponse, int) {
	t.Helper()
	var rep api.ReportResponse
	r, err := tcpClient(n).Do("POST", "/v1/pools/"+pool+"/tokens/"+id+"/report", req)
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != http.StatusOK && r.Status != http.StatusAccepted {
		t.Fatalf("report %s on %s: %d %s", req.Outcome, n.Name, r.Status, r.Body)
	}
	if err := jsonUnmarshal(r.Body, &rep); err != nil {
		t.Fatal(err)
	}
	return rep, r.Status
}

// A token reported dead on one node stops being served there on the very
// next request, and on every other node once the leader's decision commits.
func TestReportOnOneNodeStopsEveryNode(t *testing.T) {
	c := testutil.NewCluster(t, 3)
	ids := healthPool(t, c, "p", nil, 2)
	for _, reporter := range c.Followers()[:1] {
		rep, status := report(t, reporter, "p", ids[0], api.ReportRequest{Outcome: "unauthorized"})
		if status != http.StatusOK || !rep.Changed || !rep.Committed || rep.Health.State != "failed" {
			t.Fatalf("report = %d %+v", status, rep)
		}
		if id, _, _ := tcpClient(reporter).Fetch("p"); id != ids[1] {
			t.Fatalf("reporting node serves %s right after the report", id)
		}
	}
	waitServes(t, c.Running(), "p", ids[1])
}

// Errors reported to different nodes add up on the leader: the token turns
// degraded everywhere, is served only after healthy ones, and recovers when
// the error rate falls.
func TestErrorsFromSeveralNodesDegradeThenRecover(t *testing.T) {
	c := testutil.NewCluster(t, 3)
	policy := &tokens.HealthPolicy{Window: 10, DegradedFailures: 4, DegradedRatio: 0.5}
	ids := healthPool(t, c, "p", policy, 2)
	nodes := c.Running()
	for i := range 4 { // 4 of 4 failed, from three nodes
		rep, _ := report(t, nodes[i%3], "p", ids[0], api.ReportRequest{Outcome: []string{"error", "timeout"}[i%2]})
		if rep.Changed || rep.Pending != "" {
			t.Fatalf("an error report answered %+v; it should only count", rep)
		}
	}
	waitServes(t, nodes, "p", ids[1]) // the degraded primary is served last
	waitHealth(t, nodes, "p", ids[0], "degraded")
	// Five oks: 4 failed of 9 is under 50 %.
	for i := range 5 {
		latency := int64(20 + i)
		report(t, nodes[i%3], "p", ids[0], api.ReportRequest{Outcome: "ok", LatencyMS: &latency})
	}
	waitHealth(t, nodes, "p", ids[0], "healthy")
	waitServes(t, nodes, "p", ids[0])
	// Each node counted what it received.
	var info api.TokenInfo
	tcpClient(nodes[0]).Must(t, "GET", "/v1/pools/p/tokens/"+ids[0], nil, http.StatusOK, &info)
	if info.Reports == nil || info.Reports.Error+info.Reports.Timeout == 0 || info.Reports.OK == 0 {
		t.Fatalf("node0's report counts = %+v", info.Reports)
	}
}

// A pool with report_quorum 2 fails a token only once two nodes report it;
// until then only the reporting node skips it.
func TestReportQuorum(t *testing.T) {
	c := testutil.NewCluster(t, 3)
	ids := healthPool(t, c, "p", &tokens.HealthPolicy{ReportQuorum: 2}, 2)
	nodes := c.Running()
	rep, status := report(t, nodes[0], "p", ids[0], api.ReportRequest{Outcome: "forbidden"})
	if status != http.StatusAccepted || !rep.Changed || rep.Committed || !strings.Contains(rep.Pending, "quorum") {
		t.Fatalf("first report = %d %+v", status, rep)
	}
	if id, _, _ := tcpClient(nodes[0]).Fetch("p"); id != ids[1] {
		t.Fatalf("the reporting node serves %s", id)
	}
	for _, n := range nodes[1:] {
		if id, _, _ := tcpClient(n).Fetch("p"); id != ids[0] {
			t.Fatalf("%s serves %s before the quorum", n.Name, id)
		}
	}
	rep, status = report(t, nodes[1], "p", ids[0], api.ReportRequest{Outcome: "unauthorized"})
	if status != http.StatusOK || !rep.Committed {
		t.Fatalf("second report = %d %+v", status, rep)
	}
	waitServes(t, nodes, "p", ids[1])
	waitHealth(t, nodes, "p", ids[0], "failed")
}

// One node's reports never fail a pool's last eligible token; a second
// node's report does.
func TestLastEligibleTokenNeedsTwoNodes(t *testing.T) {
	c := testutil.NewCluster(t, 3)
	ids := healthPool(t, c, "p", nil, 1)
	nodes := c.Running()
	for range 2 {
		rep, status := report(t, nodes[0], "p", ids[0], api.ReportRequest{Outcome: "unauthorized"})
		if status != http.StatusAccepted || rep.Changed || rep.Committed || !strings.Contains(rep.Pending, "last eligible") {
			t.Fatalf("report from one node = %d %+v", status, rep)
		}
	}
	waitServes(t, nodes, "p", ids[0])
	rep, status := report(t, nodes[2], "p", ids[0], api.ReportRequest{Outcome: "unauthorized"})
	if status != http.StatusOK || !rep.Committed {
		t.Fatalf("report from a second node = %d %+v", status, rep)
	}
	for _, n := range nodes {
		testutil.WaitFor(t, 5*time.Second, func() error {
			if _, code, err := tcpClient(n).Fetch("p"); err != nil || code != tokens.CodeNoHealthy {
				return fmt.Errorf("%s answers %q (%v), want no_healthy_token", n.Name, code, err)
			}
			return nil
		})
	}
}

// A cooldown ends by itself on every node, with no write; a fetch with
// ?wait= rides it out.
func TestCooldownEndsWithoutWrites(t *testing.T) {
	c := testutil.NewCluster(t, 3)
	ids := healthPool(t, c, "p", nil, 1)
	nodes := c.Running()
	one := 1
	rep, status := report(t, nodes[1], "p", ids[0], api.ReportRequest{Outcome: "rate_limited", RetryAfterSeconds: &one})
	if status != http.StatusOK || rep.Health.State != "cooldown" {
		t.Fatalf("rate_limited report = %d %+v", status, rep)
	}
	until := *rep.Health.Until
	index := rep.Index
	for _, n := range nodes {
		testutil.WaitFor(t, 5*time.Second, func() error {
			r, err := tcpClient(n).Do("GET", "/v1/pools/p/token", nil)
			if err != nil || r.ErrorCode() != tokens.CodeAllCoolingDown || r.Header.Get("Retry-After") == "" {
				if time.Now().After(until) {
					return nil // already over: checked below
				}
				return fmt.Errorf("%s: %v %d %s", n.Name, err, r.Status, r.Body)
			}
			return nil
		})
	}
	// ?wait= parks the fetch until the cooldown is over.
	var tok api.Token
	tcpClient(nodes[2]).Must(t, "GET", "/v1/pools/p/token?wait=10s", nil, http.StatusOK, &tok)
	if tok.ID != ids[0] || time.Now().Before(until) {
		t.Fatalf("waited fetch returned %s at %s, cooldown until %s", tok.ID, time.Now(), until)
	}
	waitServes(t, nodes, "p", ids[0])
	for _, n := range nodes {
		if got := appliedIndex(t, n); got != index {
			t.Fatalf("%s: the cooldown's end wrote to the log: index %d -> %d", n.Name, index, got)
		}
	}
}

// Every transition is an event on every node; a blocking read returns when
// the next one commits.
func TestEventsReplicateAndBlock(t *testing.T) {
	c := testutil.NewCluster(t, 3)
	ids := healthPool(t, c, "p", nil, 2)
	nodes := c.Running()
	var evs api.Events
	tcpClient(nodes[2]).Must(t, "GET", "/v1/events", nil, http.StatusOK, &evs)
	since := evs.Index
	done := make(chan api.Events, 1)
	go func() {
		var got api.Events
		r, err := tcpClient(nodes[2]).Do("GET", "/v1/events?wait=30s&since="+strconv.FormatUint(since, 10), nil)
		if err == nil {
			_ = jsonUnmarshal(r.Body, &got)
		}
		done <- got
	}()
	report(t, nodes[0], "p", ids[0], api.ReportRequest{Outcome: "unauthorized"})
	select {
	case got := <-done:
		if len(got.Events) == 0 || got.Events[0].Type != tokens.EventTokenHealth || got.Events[0].Token != ids[0] ||
			got.Events[0].To != tokens.Failed || got.Events[0].Reporter != nodes[0].Name {
			t.Fatalf("blocking events = %+v", got)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("blocking events read did not return after the report committed")
	}
	for _, n := range nodes {
		testutil.WaitFor(t, 5*time.Second, func() error {
			var evs api.Events
			tcpClient(n).Must(t, "GET", "/v1/events?since="+strconv.FormatUint(since, 10), nil, http.StatusOK, &evs)
			if len(evs.Events) != 1 || evs.Events[0].Token != ids[0] {
				return fmt.Errorf("%s events = %+v", n.Name, evs)
			}
			return nil
		})
	}
}

// /v1/metrics parses as Prometheus text and counts what happened.
func TestMetricsScrape(t *testing.T) {
	c := testutil.NewCluster(t, 3)
	ids := healthPool(t, c, "p", nil, 2)
	n := c.Followers()[0]
	h := tcpClient(n)
	for range 3 {
		if id, _, _ := h.Fetch("p"); id != ids[0] {
			t.Fatal("fetch")
		}
	}
	// waitServes may have met pool_not_found on a node still applying the
	// pool: count from here.
	notFound, _ := scrape(t, h).value("tokend_fetches_total", map[string]string{"pool": "", "result": "pool_not_found"})
	h.Fetch("missing-pool")
	report(t, n, "p", ids[0], api.ReportRequest{Outcome: "unauthorized"})
	testutil.WaitFor(t, 5*time.Second, func() error {
		m := scrape(t, h)
		checks := []struct {
			name   string
			labels map[string]string
			min    float64
			max    float64
		}{
			{"tokend_fetches_total", map[string]string{"pool": "p", "result": "ok"}, 3, 1e9},
			{"tokend_fetches_total", map[string]string{"pool": "", "result": "pool_not_found"}, notFound + 1, notFound + 1},
			{"tokend_reports_total", map[string]string{"pool": "p", "outcome": "unauthorized"}, 1, 1},
			{"tokend_tokens", map[string]string{"pool": "p", "health": "failed"}, 1, 1},
			{"tokend_tokens", map[string]string{"pool": "p", "health": "healthy"}, 1, 1},
			{"tokend_pool_eligible_tokens", map[string]string{"pool": "p"}, 1, 1},
			{"tokend_raft_state", map[string]string{"state": "follower"}, 1, 1},
			{"tokend_raft_known_leader", nil, 1, 1},
			{"tokend_raft_applied_index", nil, 1, 1e9},
			{"tokend_fetch_duration_seconds_count", map[string]string{"pool": "p"}, 3, 1e9},
		}
		for _, ch := range checks {
			v, ok := m.value(ch.name, ch.labels)
			if !ok || v < ch.min || v > ch.max {
				return fmt.Errorf("%s%v = %v (found %v), want %v..%v", ch.name, ch.labels, v, ok, ch.min, ch.max)
			}
		}
		return nil
	})
	if body := scrapeText(t, h); strings.Contains(body, "p-value-") {
		t.Fatal("a token value appears in the metrics")
	}
}

func waitHealth(t *testing.T, nodes []*testutil.Node, pool, id, state string) {
	t.Helper()
	for _, n := range nodes {
		testutil.WaitFor(t, 5*time.Second, func() error {
			var info api.TokenInfo
			r, err := tcpClient(n).Do("GET", "/v1/pools/"+pool+"/tokens/"+id, nil)
			if err != nil || r.Status != http.StatusOK || jsonUnmarshal(r.Body, &info) != nil {
				return fmt.Errorf("%s: %v %d %s", n.Name, err, r.Status, r.Body)
			}
			if info.Health.State != state {
				return fmt.Errorf("%s sees %s as %s (%s), want %s", n.Name, id, info.Health.State, info.Health.Reason, state)
			}
			return nil
		})
	}
}

func appliedIndex(t *testing.T, n *testutil.Node) uint64 {
	var h api.AgentHealth
	tcpClient(n).Must(t, "GET", "/v1/health", nil, http.StatusOK, &h)
	return h.AppliedIndex
}

type scraped map[string][]*dto

type dto struct {
	labels map[string]string
	value  float64
}

func scrapeText(t *testing.T, h *testutil.HTTP) string {
	t.Helper()
	r := h.Must(t, "GET", "/v1/metrics", nil, http.StatusOK, nil)
	return string(r.Body)
}

// scrape parses /v1/metrics with Prometheus' own text parser.
func scrape(t *testing.T, h *testutil.HTTP) scraped {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(strings.NewReader(scrapeText(t, h)))
	if err != nil {
		t.Fatalf("metrics do not parse: %v", err)
	}
	out := scraped{}
	for name, f := range families {
		for _, m := range f.GetMetric() {
			d := &dto{labels: map[string]string{}}
			for _, l := range m.GetLabel() {
				d.labels[l.GetName()] = l.GetValue()
			}
			switch {
			case m.Counter != nil:
				d.value = m.GetCounter().GetValue()
			case m.Gauge != nil:
				d.value = m.GetGauge().GetValue()
			case m.Histogram != nil:
				out[name+"_count"] = append(out[name+"_count"], &dto{labels: d.labels, value: float64(m.GetHistogram().GetSampleCount())})
				continue
			}
			out[name] = append(out[name], d)
		}
	}
	return out
}

func (s scraped) value(name string, labels map[string]string) (float64, bool) {
	for _, d := range s[name] {
		match := true
		for k, v := range labels {
			if d.labels[k] != v {
				match = false
			}
		}
		if match {
			return d.value, true
		}
	}
	return 0, false
}
