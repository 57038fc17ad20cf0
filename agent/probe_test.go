package agent_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokend/tokend/agent"
	"github.com/tokend/tokend/api"
	"github.com/tokend/tokend/internal/testutil"
	"github.com/tokend/tokend/tokens"
)

// checkServer answers health checks per token value, as told, and records
// which agent probed.
type checkServer struct {
	*httptest.Server
	mu     sync.Mutex
	status map[string]int
	header map[string]http.Header
	nodes  map[string]int
}

func newCheckServer(t *testing.T) *checkServer {
	cs := &checkServer{status: map[string]int{}, header: map[string]http.Header{}, nodes: map[string]int{}}
	cs.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		value := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		cs.mu.Lock()
		cs.nodes[r.Header.Get(agent.HeaderNode)]++
		status, ok := cs.status[value]
		for k, vs := range cs.header[value] {
			w.Header()[k] = vs
		}
		cs.mu.Unlock()
		if !ok {
			status = http.StatusOK
		}
		w.WriteHeader(status)
	}))
	t.Cleanup(cs.Close)
	return cs
}

func (cs *checkServer) set(value string, status int, h http.Header) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	cs.status[value], cs.header[value] = status, h
}

func (cs *checkServer) probers() map[string]int {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	out := map[string]int{}
	for k, v := range cs.nodes {
		out[k] = v
	}
	return out
}

// The leader probes every token: a 401 fails it everywhere (even the last
// eligible token: a probe is the independent signal), a pass brings it
// back, 429 and a spent quota cool it down; nobody but the leader probes.
func TestProbes(t *testing.T) {
	cs := newCheckServer(t)
	c := testutil.NewCluster(t, 3)
	leader := c.Leader()
	h := tcpClient(leader)
	h.Must(t, "PUT", "/v1/pools/p", api.PoolRequest{HealthCheck: &tokens.HealthCheck{
		URL: cs.URL, Interval: tokens.Duration(100 * time.Millisecond),
		RateLimitRemainingHeader: "X-RateLimit-Remaining", RateLimitResetHeader: "X-RateLimit-Reset",
	}}, http.StatusOK, nil)
	a := h.AddToken(t, "p", "value-a", 0)
	nodes := c.Running()

	cs.set("value-a", http.StatusUnauthorized, nil)
	waitHealth(t, nodes, "p", a, "failed")
	var info api.TokenInfo
	h.Must(t, "GET", "/v1/pools/p/tokens/"+a, nil, http.StatusOK, &info)
	if info.Health.Reporter != tokens.ProbeReporter {
		t.Fatalf("failed by %q, want the probe", info.Health.Reporter)
	}
	cs.set("value-a", http.StatusOK, nil)
	waitHealth(t, nodes, "p", a, "healthy")
	waitServes(t, nodes, "p", a)

	cs.set("value-a", http.StatusTooManyRequests, http.Header{"Retry-After": {"30"}})
	waitHealth(t, nodes, "p", a, "cooldown")
	h.Must(t, "POST", "/v1/pools/p/tokens/"+a+"/reset", nil, http.StatusOK, nil)

	b := h.AddToken(t, "p", "value-b", 1)
	reset := fmt.Sprint(time.Now().Add(time.Hour).Unix())
	cs.set("value-b", http.StatusOK, http.Header{"X-Ratelimit-Remaining": {"0"}, "X-Ratelimit-Reset": {reset}})
	waitHealth(t, nodes, "p", b, "cooldown")

	for node := range cs.probers() {
		if node != leader.Name {
			t.Fatalf("%q probed; only the leader %s may: %v", node, leader.Name, cs.probers())
		}
	}
	// The probe latency and quota are metrics on the leader.
	testutil.WaitFor(t, 5*time.Second, func() error {
		m := scrape(t, h)
		if _, ok := m.value("tokend_probe_duration_seconds", map[string]string{"pool": "p", "token": a}); !ok {
			return fmt.Errorf("no probe latency for %s", a)
		}
		if v, ok := m.value("tokend_token_ratelimit_remaining", map[string]string{"pool": "p", "token": b}); !ok || v != 0 {
			return fmt.Errorf("rate-limit remaining of %s = %v (found %v)", b, v, ok)
		}
		return nil
	})
}

// Alerts: the leader raises them from the state, any agent shows them, a
// webhook receives them in Alertmanager's JSON, again while they hold, and
// resolved when they stop.
func TestAlerts(t *testing.T) {
	var (
		mu       sync.Mutex
		received []map[string]any
	)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var batch []map[string]any
		if err := json.NewDecoder(r.Body).Decode(&batch); err == nil {
			mu.Lock()
			received = append(received, batch...)
			mu.Unlock()
		}
	}))
	t.Cleanup(hook.Close)
	fp := testutil.NewFakeProvider(time.Hour)
	fp.Fail(fmt.Errorf("issuer down"))
	c := testutil.NewClusterWith(t, 3, func(cfg *agent.Config) {
		cfg.AlertWebhook = hook.URL
		cfg.AlertRepeat = 300 * time.Millisecond
		cfg.RotationInterval = 50 * time.Millisecond
		cfg.ProviderFactory = fp.Factory(cfg.NodeName)
	})
	f := tcpClient(c.Followers()[0])
	f.Must(t, "PUT", "/v1/pools/static", api.PoolRequest{MinHealthy: 2}, http.StatusOK, nil)
	soon := time.Now().Add(3 * time.Second)
	var tk api.TokenInfo
	f.Must(t, "POST", "/v1/pools/static/tokens", api.TokenRequest{Value: "short-lived", ExpiresAt: &soon}, http.StatusCreated, &tk)
	issuingPool(t, f, "issuing", api.PoolRequest{Size: 1, Rotation: &tokens.RotationPolicy{RetryMin: tokens.Duration(10 * time.Millisecond), RetryMax: tokens.Duration(20 * time.Millisecond)}})

	want := []string{"pool_below_min_healthy/static/", "token_expiring/static/" + tk.ID, "static_token_due/static/" + tk.ID, "rotation_failing/issuing/"}
	alertKeys := func() (map[string]api.Alert, error) {
		var got api.Alerts
		r, err := f.Do("GET", "/v1/alerts", nil)
		if err != nil || r.Status != http.StatusOK || jsonUnmarshal(r.Body, &got) != nil {
			return nil, fmt.Errorf("GET /v1/alerts: %v %d %s", err, r.Status, r.Body)
		}
		out := map[string]api.Alert{}
		for _, a := range got.Alerts {
			out[a.Name+"/"+a.Pool+"/"+a.Token] = a
		}
		return out, nil
	}
	testutil.WaitFor(t, 10*time.Second, func() error {
		got, err := alertKeys()
		if err != nil {
			return err
		}
		for _, k := range want {
			if _, ok := got[k]; !ok {
				return fmt.Errorf("alert %s not firing; firing: %v", k, got)
			}
		}
		return nil
	})
	// The webhook got each, in Alertmanager's shape, and again after the
	// repeat interval.
	testutil.WaitFor(t, 5*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		count := 0
		for _, a := range received {
			labels, _ := a["labels"].(map[string]any)
			if labels["alertname"] == "pool_below_min_healthy" && labels["pool"] == "static" && a["startsAt"] != nil {
				count++
			}
		}
		if count < 2 {
			return fmt.Errorf("webhook got pool_below_min_healthy %d times, want it again after the repeat", count)
		}
		return nil
	})
	// Fixing the pool resolves its alert, and the webhook hears it.
	f.AddToken(t, "static", "another", 1)
	f.AddToken(t, "static", "third", 2)
	testutil.WaitFor(t, 5*time.Second, func() error {
		got, err := alertKeys()
		if err != nil {
			return err
		}
		if _, ok := got["pool_below_min_healthy/static/"]; ok {
			return fmt.Errorf("still firing")
		}
		mu.Lock()
		defer mu.Unlock()
		for _, a := range received {
			labels, _ := a["labels"].(map[string]any)
			if labels["alertname"] == "pool_below_min_healthy" && a["endsAt"] != nil {
				return nil
			}
		}
		return fmt.Errorf("webhook did not hear the resolution")
	})
}
