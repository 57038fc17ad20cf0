package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/tokend/tokend/api"
	"github.com/tokend/tokend/internal/testutil"
	"github.com/tokend/tokend/tokens"
)

// settle is how long after an action an agent may still give the answer
// from before it. Each agent's window closes early, as soon as its fetcher
// has seen the new answer (an agent's state only moves forward), and on the
// agent that took a report that applies locally, as soon as the report
// returned.
const settle = 3 * time.Second

// TestHealthScenario drives a 3-agent cluster on loopback the way a user
// would — tokens reported dead, rate limited with different retry-after
// values and failing intermittently, on different agents — while a client
// on every agent fetches all the time. Every fetch is checked against a
// model of which token an agent may serve; the time each agent takes to
// stop serving a dead token is measured; the event log and the Prometheus
// metrics of every agent are checked at the end.
func TestHealthScenario(t *testing.T) {
	procs := newCluster(t, 3)
	for _, p := range procs {
		p.start()
	}
	l := leader(t, procs)
	// A and C are followers, B is the leader: a report travels to the
	// leader from a follower (A, C) or is decided where it arrives (B).
	var roles [3]string
	var a, b, c int
	followers := 0
	for i, p := range procs {
		if p == l {
			b, roles[i] = i, "leader"
			continue
		}
		if followers == 0 {
			a = i
		} else {
			c = i
		}
		followers++
		roles[i] = "follower"
	}
	t.Logf("A = %s (follower), B = %s (leader), C = %s (follower)", procs[a].name, procs[b].name, procs[c].name)

	const pool = "svc"
	policy := &tokens.HealthPolicy{Window: 10, DegradedFailures: 3, DegradedRatio: 0.5}
	procs[a].must("PUT", "/v1/pools/"+pool, api.PoolRequest{Selection: "priority", Health: policy}, http.StatusOK, nil)
	ids := make([]string, 5)
	// Added backwards, through every agent, so that an agent serving t0
	// has applied them all.
	for i := len(ids) - 1; i >= 0; i-- {
		ids[i] = procs[i%3].httpC.AddToken(t, pool, fmt.Sprintf("svc-secret-%d", i), i)
	}
	waitServes(t, procs, pool, ids[0])

	sc := &scenario{t: t, procs: procs, roles: roles, pool: pool, m: newHealthModel(ids)}
	stop := sc.startFetchers()
	defer stop() // a no-op once stopped below

	// 1. Every token healthy: everyone serves t0.
	sc.phase(1, "all healthy")
	sc.waitFetched(ids[0])

	// 2. t0 is revoked upstream; a client on A reports it.
	sc.phase(2, "t0 unauthorized on A")
	ch := sc.reportChange(a, 0, api.ReportRequest{Outcome: "unauthorized"}, expHealth{state: tokens.Failed}, ids[1])
	times := sc.converge(ch)
	for i, d := range times {
		if d > 2*time.Second {
			t.Errorf("%s (%s) served the dead token t0 for %s after the report was sent", procs[i].name, roles[i], d)
		}
	}

	// 3. t1 and t2 are rate limited for 2 s and 4 s: t3 is served; each
	// cooldown ends by itself, on every agent, with no write.
	sc.phase(3, "t1 and t2 rate limited")
	ch1 := sc.reportChange(b, 1, api.ReportRequest{Outcome: "rate_limited", RetryAfterSeconds: intp(2)}, expHealth{state: tokens.Cooldown}, ids[2])
	sc.converge(ch1)
	ch2 := sc.reportChange(c, 2, api.ReportRequest{Outcome: "rate_limited", RetryAfterSeconds: intp(4)}, expHealth{state: tokens.Cooldown}, ids[3])
	sc.converge(ch2)
	index := ch2.index // the last write
	until1, until2 := sc.m.until(ch1), sc.m.until(ch2)
	sc.waitApplied(index)
	// t1's cooldown ends: every agent serves it again, at the same index.
	for i, p := range procs {
		testutil.WaitFor(t, time.Until(until1)+10*time.Second, func() error {
			r, err := []*testutil.HTTP{p.httpC, p.unixC}[i%2].Do("GET", "/v1/pools/"+pool+"/token", nil)
			if err != nil {
				return err
			}
			var tok api.Token
			if r.Status != http.StatusOK || json.Unmarshal(r.Body, &tok) != nil || tok.ID != ids[1] {
				return fmt.Errorf("%s answers %d %s, want t1 back after its cooldown", p.name, r.Status, r.Body)
			}
			if got := r.Header.Get(api.HeaderIndex); got != strconv.FormatUint(index, 10) {
				t.Fatalf("%s serves t1 again at index %s, but the last write was %d: the cooldown's end wrote to the log", p.name, got, index)
			}
			return nil
		})
	}
	// t2's cooldown ends too: eligible again, t1 still preferred.
	for _, p := range procs {
		testutil.WaitFor(t, time.Until(until2)+10*time.Second, func() error {
			var info api.TokenInfo
			p.must("GET", "/v1/pools/"+pool+"/tokens/"+ids[2], nil, http.StatusOK, &info)
			var pl api.Pool
			p.must("GET", "/v1/pools/"+pool, nil, http.StatusOK, &pl)
			if info.Health.State != string(tokens.Healthy) || pl.Eligible != 4 {
				return fmt.Errorf("%s: t2 is %s (%s), %d eligible tokens; want healthy, 4", p.name, info.Health.State, info.Health.Reason, pl.Eligible)
			}
			return nil
		})
	}
	sc.waitFetched(ids[1])
	sc.checkIndex(index, "after both cooldowns ended")

	// 4. t1 fails intermittently, seen by clients on every agent: 3 of 3
	// uses failed, so it is degraded and t2 is served; then ok reports
	// until fewer than half failed, and t1 is back.
	sc.phase(4, "t1 errors then oks")
	sc.reportCount(a, 1, api.ReportRequest{Outcome: "error"})
	sc.reportCount(b, 1, api.ReportRequest{Outcome: "timeout"})
	ch = sc.reportChange(c, 1, api.ReportRequest{Outcome: "error"}, expHealth{state: tokens.Degraded}, "")
	sc.converge(ch)
	oks := []int{a, b, c, a}
	for i, n := range oks {
		req := api.ReportRequest{Outcome: "ok", LatencyMS: int64p(int64(30 + i))}
		if i < len(oks)-1 {
			sc.reportCount(n, 1, req) // 3 failed of 4, 5, 6: still degraded
			continue
		}
		ch = sc.reportChange(n, 1, req, expHealth{state: tokens.Healthy}, "") // 3 of 7
	}
	sc.converge(ch)

	// 5. Every token but t4 rate limited: only t4 is served. Then t4 too,
	// briefly: fetches answer all_cooling_down, and a fetch with ?wait=
	// rides the cooldown out.
	sc.phase(5, "all but t4 rate limited, then t4 briefly")
	for i, n := range []int{a, b, c} {
		tok := i + 1
		ch = sc.reportChange(n, tok, api.ReportRequest{Outcome: "rate_limited", RetryAfterSeconds: intp(60)}, expHealth{state: tokens.Cooldown}, ids[tok+1])
		sc.converge(ch)
	}
	ch = sc.reportChange(a, 4, api.ReportRequest{Outcome: "rate_limited", RetryAfterSeconds: intp(3)}, expHealth{state: tokens.Cooldown}, tokens.CodeAllCoolingDown)
	sc.converge(ch)
	until4 := sc.m.until(ch)
	for _, p := range procs {
		r := p.must("GET", "/v1/pools/"+pool+"/token", nil, http.StatusServiceUnavailable, nil)
		var e api.ErrorResponse
		if err := json.Unmarshal(r.Body, &e); err != nil || e.Error.Code != tokens.CodeAllCoolingDown ||
			e.Error.RetryAt == nil || !e.Error.RetryAt.Equal(until4) || r.Header.Get("Retry-After") == "" {
			t.Fatalf("%s answers %s (Retry-After %q); want all_cooling_down, retry_at %s", p.name, r.Body, r.Header.Get("Retry-After"), until4)
		}
	}
	if time.Until(until4) < 500*time.Millisecond {
		t.Fatalf("the cluster took too long to converge: t4's 3 s cooldown is nearly over before the ?wait= fetches start")
	}
	type waited struct {
		r    testutil.Response
		err  error
		sent time.Time
		back time.Time
	}
	results := make([]waited, len(procs))
	var wg sync.WaitGroup
	for i, p := range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := waited{sent: time.Now()}
			w.r, w.err = []*testutil.HTTP{p.httpC, p.unixC}[i%2].Do("GET", "/v1/pools/"+pool+"/token?wait=5s", nil)
			w.back = time.Now()
			results[i] = w
		}()
	}
	wg.Wait()
	for i, w := range results {
		var tok api.Token
		if w.err != nil || w.r.Status != http.StatusOK || json.Unmarshal(w.r.Body, &tok) != nil || tok.ID != ids[4] {
			t.Fatalf("%s: fetch with ?wait=5s answered %d %s (%v), want t4", procs[i].name, w.r.Status, w.r.Body, w.err)
		}
		if w.back.Before(until4) || w.back.Sub(until4) > 2*time.Second {
			t.Fatalf("%s: fetch with ?wait=5s returned %s after t4's cooldown ended (sent %s before)", procs[i].name, w.back.Sub(until4), until4.Sub(w.sent))
		}
		if got := w.r.Header.Get(api.HeaderIndex); got != strconv.FormatUint(ch.index, 10) {
			t.Fatalf("%s serves t4 again at index %s, but the last write was %d", procs[i].name, got, ch.index)
		}
		t.Logf("%s: fetch with ?wait=5s parked %s and returned t4 %s after its cooldown ended",
			procs[i].name, w.back.Sub(w.sent).Round(time.Millisecond), w.back.Sub(until4).Round(100*time.Microsecond))
	}
	sc.waitFetched(ids[4])
	stop()

	sc.checkFetches()
	sc.checkEvents([][5]string{
		// token, from, to, reason, reporter
		{ids[0], "healthy", "failed", "unauthorized", procs[a].name},
		{ids[1], "healthy", "cooldown", "rate_limited", procs[b].name},
		{ids[2], "healthy", "cooldown", "rate_limited", procs[c].name},
		{ids[1], "healthy", "degraded", "3 of the last 3 uses failed", ""},
		{ids[1], "degraded", "healthy", "recovered: 3 of the last 7 uses failed", ""},
		{ids[1], "healthy", "cooldown", "rate_limited", procs[a].name},
		{ids[2], "healthy", "cooldown", "rate_limited", procs[b].name},
		{ids[3], "healthy", "cooldown", "rate_limited", procs[c].name},
		{ids[4], "healthy", "cooldown", "rate_limited", procs[a].name},
	})
	sc.checkMetrics()
	// Each agent shows the reports it received, with the last latency.
	for i, n := range []int{a, b, c} {
		var info api.TokenInfo
		procs[n].must("GET", "/v1/pools/"+pool+"/tokens/"+ids[1], nil, http.StatusOK, &info)
		wantLatency := []int64{33, 31, 32}[i] // A got the 1st and 4th ok
		if info.Reports == nil || info.Reports.LastLatencyMS != wantLatency || info.Reports.OK != sc.sent[n]["ok"] ||
			info.Reports.Error+info.Reports.Timeout != sc.sent[n]["error"]+sc.sent[n]["timeout"] {
			t.Errorf("%s shows t1's reports as %+v; it received %v", procs[n].name, info.Reports, sc.sent[n])
		}
	}
}

func intp(n int) *int           { return &n }
func int64p(n int64) *int64     { return &n }
func ms(d time.Duration) string { return d.Round(100 * time.Microsecond).String() }

// expHealth is a token's health as the model expects it.
type expHealth struct {
	state tokens.HealthState
	until time.Time // end of a cooldown
}

// modelServes is the model of priority selection: what an agent serves at
// time at when it sees the pool's tokens, in priority order, with health h.
// The first healthy token wins (a cooldown whose deadline has passed is
// healthy); with none, the first degraded; with none, all_cooling_down if
// some token is cooling down, else no_healthy_token.
func modelServes(ids []string, h []expHealth, at time.Time) string {
	degraded, cooling := "", false
	for i, s := range h {
		switch s.state {
		case tokens.Healthy:
			return ids[i]
		case tokens.Cooldown:
			if !at.Before(s.until) {
				return ids[i]
			}
			cooling = true
		case tokens.Degraded:
			if degraded == "" {
				degraded = ids[i]
			}
		}
	}
	switch {
	case degraded != "":
		return degraded
	case cooling:
		return tokens.CodeAllCoolingDown
	}
	return tokens.CodeNoHealthy
}

// change is one expected health change, caused by an action of the test.
type change struct {
	name   string
	tok    int
	to     expHealth
	at     time.Time // the action's request was sent
	index  uint64    // the Raft index of its commit, when the test knows it
	seen   [3]time.Time
	closed [3]time.Time
}

// end is when node's transition window for c ends: from then on the node
// must answer as if c had happened.
func (c *change) end(node int) time.Time {
	end := c.at.Add(settle)
	if cl := c.closed[node]; !cl.IsZero() && cl.Before(end) {
		end = cl
	}
	return end
}

// healthModel is the timeline of expected changes, and what the fetchers
// saw against it.
type healthModel struct {
	ids []string

	mu      sync.Mutex
	changes []*change
	phase   int
	// counts[phase][node][answer] counts fetches.
	counts     map[int]*[3]map[string]int
	runs       [3][]string // each agent's answers, repeats collapsed (the first 200)
	last       [3]string   // each agent's latest answer
	violations []string
	nViolation int
	start      time.Time
	// fetches counts each agent's fetches; hot says a change is under
	// way, so the fetchers fetch back to back rather than paced.
	fetches [3]int
	hot     bool
}

func newHealthModel(ids []string) *healthModel {
	return &healthModel{ids: ids, counts: map[int]*[3]map[string]int{}, start: time.Now()}
}

// viewsAt returns every view of the pool's health node may have at x: a
// change whose window is open may or may not have reached it.
func (m *healthModel) viewsAt(node int, x time.Time, strict bool) [][]expHealth {
	opts := make([][]expHealth, len(m.ids))
	for i := range opts {
		opts[i] = []expHealth{{state: tokens.Healthy}}
	}
	for _, c := range m.changes {
		switch {
		case x.Before(c.at):
		case !strict && x.Before(c.end(node)):
			opts[c.tok] = append(opts[c.tok], c.to)
		default:
			opts[c.tok] = []expHealth{c.to}
		}
	}
	views := [][]expHealth{nil}
	for _, o := range opts {
		next := make([][]expHealth, 0, len(views)*len(o))
		for _, v := range views {
			for _, h := range o {
				next = append(next, append(slices.Clip(v), h))
			}
		}
		views = next
	}
	return views
}

// answers returns what node may answer to a fetch sent at s and answered at
// e: the model's answer for every view the node may have had at any moment
// in between. With strict, a change made before s counts as having reached
// the node.
func (m *healthModel) answers(node int, s, e time.Time, strict bool) map[string]bool {
	times := []time.Time{s, e}
	for _, c := range m.changes {
		for _, b := range []time.Time{c.at, c.end(node), c.to.until} {
			if b.After(s) && b.Before(e) {
				times = append(times, b, b.Add(-time.Nanosecond))
			}
		}
	}
	out := map[string]bool{}
	for _, x := range times {
		for _, v := range m.viewsAt(node, x, strict) {
			out[modelServes(m.ids, v, x)] = true
		}
	}
	return out
}

// observe checks one fetch on node against the model, and reports whether
// a change is under way.
func (m *healthModel) observe(node int, transport string, s, e time.Time, got string) (hot bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	pc := m.counts[m.phase]
	if pc == nil {
		pc = &[3]map[string]int{{}, {}, {}}
		m.counts[m.phase] = pc
	}
	pc[node][m.short(got)]++
	m.fetches[node]++
	m.last[node] = m.short(got)
	if r := m.runs[node]; (len(r) == 0 || r[len(r)-1] != m.short(got)) && len(r) < 200 {
		m.runs[node] = append(r, m.short(got))
	}
	if !m.answers(node, s, e, false)[got] {
		m.nViolation++
		if len(m.violations) < 10 {
			var want []string
			for a := range m.answers(node, s, e, false) {
				want = append(want, m.short(a))
			}
			sort.Strings(want)
			m.violations = append(m.violations, fmt.Sprintf("node%d over %s, fetch sent +%s and answered +%s after the fetchers started (phase %d): got %s, model allows %v",
				node, transport, ms(s.Sub(m.start)), ms(e.Sub(m.start)), m.phase, m.short(got), want))
		}
	}
	// The node shows the state after every change made before this fetch:
	// it has caught up with them, and states only move forward.
	if m.answers(node, s, e, true)[got] {
		for _, c := range m.changes {
			if !c.at.After(s) && c.seen[node].IsZero() {
				c.seen[node] = e
				if c.closed[node].IsZero() || e.Before(c.closed[node]) {
					c.closed[node] = e
				}
			}
		}
	}
	return m.hot
}

// short names a token by its priority (t0..t4) for messages.
func (m *healthModel) short(answer string) string {
	if i := slices.Index(m.ids, answer); i >= 0 {
		return fmt.Sprintf("t%d", i)
	}
	return answer
}

func (m *healthModel) until(c *change) time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return c.to.until
}

// scenario is the test's client side: the fetchers, and the actions that
// change the model.
type scenario struct {
	t     *testing.T
	procs []*agentProc
	roles [3]string
	pool  string
	m     *healthModel
	// sent[node][outcome] counts the reports sent to each agent.
	sent [3]map[string]uint64
}

// startFetchers starts one client per agent that fetches until the
// returned function is called; it alternates between HTTP and the unix
// socket.
func (sc *scenario) startFetchers() (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	for node, p := range sc.procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			clients := []*testutil.HTTP{p.httpC, p.unixC}
			for i := 0; ; i++ {
				select {
				case <-done:
					return
				default:
				}
				s := time.Now()
				id, code, err := clients[i%2].Fetch(sc.pool)
				e := time.Now()
				got := id
				switch {
				case err != nil:
					got = "error: " + err.Error()
				case code != "":
					got = code
				}
				if !sc.m.observe(node, []string{"http", "unix"}[i%2], s, e, got) {
					// Nothing is changing: pace the fetches, to leave CPU
					// to the agents and to other tests.
					time.Sleep(2 * time.Millisecond)
				}
			}
		}()
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			close(done)
			wg.Wait()
		})
	}
}

func (sc *scenario) phase(n int, name string) {
	sc.m.mu.Lock()
	sc.m.phase = n
	sc.m.mu.Unlock()
	sc.t.Logf("phase %d: %s", n, name)
}

// waitFetched waits until every agent's fetcher has served want.
func (sc *scenario) waitFetched(want string) {
	sc.t.Helper()
	sc.m.mu.Lock()
	from := map[int]int{}
	for node := range sc.procs {
		from[node] = len(sc.m.runs[node])
	}
	sc.m.mu.Unlock()
	testutil.WaitFor(sc.t, 10*time.Second, func() error {
		sc.m.mu.Lock()
		defer sc.m.mu.Unlock()
		for node, p := range sc.procs {
			if got := sc.m.last[node]; got != sc.m.short(want) {
				return fmt.Errorf("%s's fetcher sees %s (since the wait began: %v), want %s", p.name, got, sc.m.runs[node][from[node]:], sc.m.short(want))
			}
		}
		return nil
	})
	sc.dwell()
}

// report sends a report to node, which must answer 200, and counts it.
func (sc *scenario) report(node, tok int, req api.ReportRequest) api.ReportResponse {
	sc.t.Helper()
	var rep api.ReportResponse
	sc.procs[node].must("POST", "/v1/pools/"+sc.pool+"/tokens/"+sc.m.ids[tok]+"/report", req, http.StatusOK, &rep)
	if sc.sent[node] == nil {
		sc.sent[node] = map[string]uint64{}
	}
	sc.sent[node][req.Outcome]++
	return rep
}

// reportCount sends a report that only counts toward the error window.
func (sc *scenario) reportCount(node, tok int, req api.ReportRequest) {
	sc.t.Helper()
	if rep := sc.report(node, tok, req); rep.Changed || rep.Committed || rep.Pending != "" {
		sc.t.Fatalf("%s report on %s answered %+v; it should only count", req.Outcome, sc.procs[node].name, rep)
	}
}

// reportChange sends a report that changes tok's health to `to`, as a
// change in the model from the moment the request is sent. For reports
// that apply on the receiving agent at once (unauthorized, forbidden,
// rate_limited), that agent's window closes when the report returns, and
// its very next fetches, over HTTP and the socket, must serve next.
func (sc *scenario) reportChange(node, tok int, req api.ReportRequest, to expHealth, next string) *change {
	sc.t.Helper()
	local := req.Outcome != "ok" && req.Outcome != "error" && req.Outcome != "timeout"
	c := &change{name: fmt.Sprintf("t%d %s on %s", tok, req.Outcome, sc.procs[node].name), tok: tok, to: to}
	sc.m.mu.Lock()
	sc.m.hot = true
	c.at = time.Now()
	if req.RetryAfterSeconds != nil {
		c.to.until = c.at.Add(time.Duration(*req.RetryAfterSeconds) * time.Second) // until the answer says
	}
	sc.m.changes = append(sc.m.changes, c)
	sc.m.mu.Unlock()
	rep := sc.report(node, tok, req)
	returned := time.Now()
	if !local {
		if rep.Changed || rep.Committed || rep.Pending != "" {
			sc.t.Fatalf("%s report on %s answered %+v; it should only count", req.Outcome, sc.procs[node].name, rep)
		}
		return c
	}
	if !rep.Changed || !rep.Committed || rep.Index == 0 || rep.Health.State != string(to.state) {
		sc.t.Fatalf("%s report on %s answered %+v; want changed and committed, %s", req.Outcome, sc.procs[node].name, rep, to.state)
	}
	sc.m.mu.Lock()
	c.index = rep.Index
	if to.state == tokens.Cooldown {
		if rep.Health.Until == nil {
			sc.m.mu.Unlock()
			sc.t.Fatalf("rate_limited report answered %+v, with no cooldown deadline", rep)
		}
		c.to.until = *rep.Health.Until
	}
	if c.closed[node].IsZero() || returned.Before(c.closed[node]) {
		c.closed[node] = returned
	}
	sc.m.mu.Unlock()
	p := sc.procs[node]
	for _, h := range []*testutil.HTTP{p.httpC, p.unixC} {
		id, code, err := h.Fetch(sc.pool)
		if got := id + code; err != nil || got != next {
			sc.t.Fatalf("%s took the report, then served %s (%v) on its next fetch; want %s", p.name, sc.m.short(got), err, sc.m.short(next))
		}
	}
	return c
}

// converge waits until every agent's fetcher has seen c's effect, and
// returns and logs how long each took from the moment the report was sent.
func (sc *scenario) converge(c *change) [3]time.Duration {
	sc.t.Helper()
	var out [3]time.Duration
	testutil.WaitFor(sc.t, settle+10*time.Second, func() error {
		sc.m.mu.Lock()
		defer sc.m.mu.Unlock()
		for node, p := range sc.procs {
			if c.seen[node].IsZero() {
				return fmt.Errorf("%s's fetcher does not show %s yet", p.name, c.name)
			}
			out[node] = c.seen[node].Sub(c.at)
		}
		return nil
	})
	var parts []string
	for node, p := range sc.procs {
		parts = append(parts, fmt.Sprintf("%s (%s) %s", p.name, sc.roles[node], ms(out[node])))
	}
	sc.t.Logf("%s: each agent's fetcher saw the change after %s", c.name, strings.Join(parts, ", "))
	sc.dwell()
	sc.m.mu.Lock()
	sc.m.hot = false
	sc.m.mu.Unlock()
	return out
}

// dwell waits until every agent's fetcher has made 40 more fetches, over
// both transports, so that each settled state is checked.
func (sc *scenario) dwell() {
	sc.t.Helper()
	sc.m.mu.Lock()
	from := sc.m.fetches
	sc.m.mu.Unlock()
	testutil.WaitFor(sc.t, 10*time.Second, func() error {
		sc.m.mu.Lock()
		defer sc.m.mu.Unlock()
		for node, p := range sc.procs {
			if n := sc.m.fetches[node] - from[node]; n < 40 {
				return fmt.Errorf("%s's fetcher made %d fetches", p.name, n)
			}
		}
		return nil
	})
}

// waitApplied waits until every agent has applied index, and checks that
// nothing was written after it.
func (sc *scenario) waitApplied(index uint64) {
	sc.t.Helper()
	for _, p := range sc.procs {
		testutil.WaitFor(sc.t, 10*time.Second, func() error {
			h, err := p.health()
			if err == nil && h.AppliedIndex < index {
				err = fmt.Errorf("%s applied %d, want %d", p.name, h.AppliedIndex, index)
			}
			return err
		})
	}
	sc.checkIndex(index, "")
}

// checkIndex checks that every agent's applied index is index.
func (sc *scenario) checkIndex(index uint64, when string) {
	sc.t.Helper()
	for _, p := range sc.procs {
		var h api.AgentHealth
		p.must("GET", "/v1/health", nil, http.StatusOK, &h)
		if h.AppliedIndex != index {
			sc.t.Fatalf("%s applied index %d %s, but the last write was %d", p.name, h.AppliedIndex, when, index)
		}
	}
}

// checkFetches fails the test on any fetch that disagreed with the model,
// and logs what each agent served in each phase.
func (sc *scenario) checkFetches() {
	sc.t.Helper()
	m := sc.m
	m.mu.Lock()
	defer m.mu.Unlock()
	phases := make([]int, 0, len(m.counts))
	for ph := range m.counts {
		phases = append(phases, ph)
	}
	sort.Ints(phases)
	for _, ph := range phases {
		var parts []string
		for node, p := range sc.procs {
			parts = append(parts, fmt.Sprintf("%s %v", p.name, m.counts[ph][node]))
		}
		sc.t.Logf("phase %d fetches: %s", ph, strings.Join(parts, "; "))
	}
	for node, p := range sc.procs {
		sc.t.Logf("%s served, in order: %s", p.name, strings.Join(m.runs[node], " "))
		for ph := 1; ph <= 5; ph++ {
			total := 0
			if pc := m.counts[ph]; pc != nil {
				for _, n := range pc[node] {
					total += n
				}
			}
			if total == 0 {
				sc.t.Errorf("%s's fetcher made no fetch in phase %d", p.name, ph)
			}
		}
	}
	if m.nViolation > 0 {
		sc.t.Errorf("%d fetches disagreed with the model; the first:\n%s", m.nViolation, strings.Join(m.violations, "\n"))
	}
}

// checkEvents checks that every agent's event log holds exactly the health
// transitions the scenario caused, in order.
func (sc *scenario) checkEvents(want [][5]string) {
	sc.t.Helper()
	var first []byte
	for _, p := range sc.procs {
		var evs api.Events
		p.must("GET", "/v1/events?limit=1000", nil, http.StatusOK, &evs)
		var got [][5]string
		for _, e := range evs.Events {
			if e.Type == tokens.EventTokenHealth && e.Pool == sc.pool {
				got = append(got, [5]string{e.Token, string(e.From), string(e.To), e.Reason, e.Reporter})
			}
		}
		if !slices.Equal(got, want) {
			sc.t.Errorf("%s's token_health events:\n%s\nwant:\n%s", p.name, sc.events(got), sc.events(want))
		}
		raw, _ := json.Marshal(evs.Events)
		if first == nil {
			first = raw
		} else if string(raw) != string(first) {
			sc.t.Errorf("%s's event log differs from %s's:\n%s\n%s", p.name, sc.procs[0].name, raw, first)
		}
	}
}

func (sc *scenario) events(evs [][5]string) string {
	var b strings.Builder
	for _, e := range evs {
		fmt.Fprintf(&b, "  %s %s -> %s %q by %q\n", sc.m.short(e[0]), e[1], e[2], e[3], e[4])
	}
	return b.String()
}

// checkMetrics reads /v1/metrics on every agent with Prometheus' own text
// parser and checks the fetch, report and health counts.
func (sc *scenario) checkMetrics() {
	sc.t.Helper()
	for node, p := range sc.procs {
		r := p.must("GET", "/v1/metrics", nil, http.StatusOK, nil)
		parser := expfmt.NewTextParser(model.UTF8Validation)
		families, err := parser.TextToMetricFamilies(strings.NewReader(string(r.Body)))
		if err != nil {
			sc.t.Fatalf("%s's metrics do not parse: %v", p.name, err)
		}
		value := func(name string, labels map[string]string) float64 {
			f, ok := families[name]
			if !ok {
				return 0
			}
			for _, m := range f.GetMetric() {
				match := 0
				for _, lp := range m.GetLabel() {
					if v, ok := labels[lp.GetName()]; ok && v == lp.GetValue() {
						match++
					}
				}
				if match == len(labels) {
					switch {
					case m.Counter != nil:
						return m.GetCounter().GetValue()
					case m.Gauge != nil:
						return m.GetGauge().GetValue()
					}
				}
			}
			return 0
		}
		fetched := map[string]int{}
		sc.m.mu.Lock()
		for _, pc := range sc.m.counts {
			for answer, n := range pc[node] {
				fetched[answer] += n
			}
		}
		sc.m.mu.Unlock()
		okFetches := 0
		for i := range sc.m.ids {
			okFetches += fetched[fmt.Sprintf("t%d", i)]
		}
		checks := []metricCheck{
			{"tokend_fetches_total", map[string]string{"pool": sc.pool, "result": "ok"},
				func(v float64) bool { return v > 0 && v >= float64(okFetches) }, fmt.Sprintf("> 0 and >= %d (its fetcher's)", okFetches)},
			{"tokend_fetches_total", map[string]string{"pool": sc.pool, "result": tokens.CodeAllCoolingDown},
				func(v float64) bool { return v >= float64(fetched[tokens.CodeAllCoolingDown]) },
				fmt.Sprintf(">= %d (its fetcher's)", fetched[tokens.CodeAllCoolingDown])},
			{"tokend_tokens", map[string]string{"pool": sc.pool, "health": "failed"}, equal(1), "1"},
			{"tokend_tokens", map[string]string{"pool": sc.pool, "health": "cooldown"}, equal(3), "3"},
			{"tokend_tokens", map[string]string{"pool": sc.pool, "health": "degraded"}, equal(0), "0"},
			{"tokend_tokens", map[string]string{"pool": sc.pool, "health": "healthy"}, equal(1), "1"},
			{"tokend_pool_eligible_tokens", map[string]string{"pool": sc.pool}, equal(1), "1"},
		}
		for _, o := range []string{"ok", "unauthorized", "forbidden", "rate_limited", "error", "timeout"} {
			n := sc.sent[node][o]
			checks = append(checks, metricCheck{"tokend_reports_total", map[string]string{"pool": sc.pool, "outcome": o}, equal(float64(n)), fmt.Sprint(n)})
		}
		var got []string
		for _, ch := range checks {
			v := value(ch.name, ch.labels)
			got = append(got, fmt.Sprintf("%s%s=%g", ch.name, fmtLabels(ch.labels), v))
			if !ch.ok(v) {
				sc.t.Errorf("%s: %s%s = %g, want %s", p.name, ch.name, fmtLabels(ch.labels), v, ch.want)
			}
		}
		if strings.Contains(string(r.Body), "svc-secret-") {
			sc.t.Errorf("%s's metrics carry a token value", p.name)
		}
		sc.t.Logf("%s metrics: %s", p.name, strings.Join(got, ", "))
	}
}

type metricCheck struct {
	name   string
	labels map[string]string
	ok     func(float64) bool
	want   string
}

func equal(want float64) func(float64) bool { return func(v float64) bool { return v == want } }

func fmtLabels(labels map[string]string) string {
	var parts []string
	for k, v := range labels {
		parts = append(parts, fmt.Sprintf("%s=%q", k, v))
	}
	sort.Strings(parts)
	return "{" + strings.Join(parts, ",") + "}"
}
