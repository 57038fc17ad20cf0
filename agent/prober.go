package agent

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/tokend/tokend/tokens"
)

// prober is the leader task that runs pools' health checks: every token of
// a pool with a health_check is probed every interval (with jitter, backing
// off while the check itself cannot be reached), and each result goes to
// the health monitor as a report from "probe". A probe is the independent
// signal of the health model: a failing one fails even a pool's last
// eligible token, a passing one brings a failed token back.
type prober struct {
	a      *Agent
	logger hclog.Logger
	client *http.Client

	// Per token, by pool and id: when it is next due, and how many probes
	// in a row could not reach the check. Owned by run's goroutine.
	next   map[tokenKey]time.Time
	errors map[tokenKey]int
}

// maxProbesInFlight bounds the probes one leader runs at once.
const maxProbesInFlight = 16

func newProber(a *Agent) *prober {
	return &prober{
		a:      a,
		logger: a.logger.Named("prober"),
		client: &http.Client{
			Transport: nodeHeader{node: a.cfg.NodeName, next: http.DefaultTransport.(*http.Transport).Clone()},
			// A check that redirects is answered as it stands: the token
			// must not follow a redirect to another host.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
}

func (p *prober) run(ctx context.Context) {
	p.next, p.errors = map[tokenKey]time.Time{}, map[tokenKey]int{}
	var wg sync.WaitGroup
	defer wg.Wait()
	slots := make(chan struct{}, maxProbesInFlight)
	t := time.NewTicker(min(p.a.cfg.RotationInterval, 250*time.Millisecond))
	defer t.Stop()
	results := make(chan probeResult, maxProbesInFlight)
	for {
		now := time.Now()
		for _, job := range p.due(now) {
			select {
			case slots <- struct{}{}:
			default:
				continue // busy: the token stays due for the next tick
			}
			p.next[job.key] = now.Add(time.Hour) // in flight
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-slots }()
				results <- probeResult{job: job, report: p.probe(ctx, job)}
			}()
		}
		select {
		case <-ctx.Done():
			return
		case res := <-results:
			p.record(ctx, res)
		case <-t.C:
		}
	}
}

type probeJob struct {
	key   tokenKey
	check tokens.HealthCheck
	token *tokens.Token
}

type probeResult struct {
	job    probeJob
	report tokens.Report
}

// due lists the tokens whose probe is due at now, and forgets tokens and
// pools that are gone or no longer checked.
func (p *prober) due(now time.Time) []probeJob {
	var jobs []probeJob
	seen := map[tokenKey]bool{}
	for _, ps := range p.a.fsm.State().Pools() {
		if ps.Pool.HealthCheck == nil {
			continue
		}
		check := ps.Pool.HealthCheck.WithDefaults()
		for _, t := range ps.Tokens {
			if t.Lifecycle != tokens.LifecycleActive && t.Lifecycle != tokens.LifecycleRetiring {
				continue
			}
			key := tokenKey{t.Pool, t.ID}
			seen[key] = true
			next, known := p.next[key]
			if !known {
				// Spread first probes over an interval, so that a new
				// leader does not probe every token at once.
				next = now.Add(time.Duration(rand.Int64N(int64(check.Interval))))
				p.next[key] = next
			}
			if !now.Before(next) {
				jobs = append(jobs, probeJob{key: key, check: check, token: t})
			}
		}
	}
	for key := range p.next {
		if !seen[key] {
			delete(p.next, key)
			delete(p.errors, key)
			p.a.metrics.forgetProbe(key.pool, key.id)
		}
	}
	return jobs
}

// probe runs one check and says what it means as a report.
func (p *prober) probe(ctx context.Context, job probeJob) tokens.Report {
	c := job.check
	rep := tokens.Report{Pool: job.key.pool, TokenID: job.key.id, Reporter: tokens.ProbeReporter}
	cctx, cancel := context.WithTimeout(ctx, time.Duration(c.Timeout))
	defer cancel()
	start := time.Now()
	req, err := http.NewRequestWithContext(cctx, c.Method, c.URL, nil)
	if err != nil {
		rep.Outcome, rep.At = tokens.OutcomeError, time.Now()
		return rep
	}
	value, err := p.a.keys.openToken(job.token)
	if err != nil {
		p.logger.Error("cannot open a token to probe it", "pool", job.key.pool, "token", job.key.id, "error", err)
		rep.Outcome, rep.At = tokens.OutcomeError, time.Now()
		return rep
	}
	req.Header.Set(c.Header, strings.ReplaceAll(c.Format, tokens.TokenPlaceholder, value.Reveal()))
	resp, err := p.client.Do(req)
	rep.At = time.Now()
	rep.LatencyMS = rep.At.Sub(start).Milliseconds()
	p.a.metrics.observeProbe(job.key.pool, job.key.id, rep.At.Sub(start))
	if err != nil {
		rep.Outcome = tokens.OutcomeError
		if errors.Is(err, context.DeadlineExceeded) {
			rep.Outcome = tokens.OutcomeTimeout
		}
		return rep
	}
	resp.Body.Close()
	remaining, reset := rateLimit(resp, c, rep.At)
	if remaining >= 0 {
		p.a.metrics.observeRateLimit(job.key.pool, job.key.id, remaining)
	}
	switch {
	case resp.StatusCode == http.StatusUnauthorized:
		rep.Outcome = tokens.OutcomeUnauthorized
	case resp.StatusCode == http.StatusForbidden:
		rep.Outcome = tokens.OutcomeForbidden
	case resp.StatusCode == http.StatusTooManyRequests:
		rep.Outcome, rep.Until = tokens.OutcomeRateLimited, retryAfter(resp, rep.At)
	case remaining == 0 && !reset.IsZero():
		// The quota is spent: the token cools down until it resets.
		rep.Outcome, rep.Until = tokens.OutcomeRateLimited, reset
	case slices.Contains(c.ExpectStatus, resp.StatusCode):
		rep.Outcome = tokens.OutcomeOK
	default:
		rep.Outcome = tokens.OutcomeError
	}
	return rep
}

// record hands a probe's report to the monitor and schedules the next.
func (p *prober) record(ctx context.Context, res probeResult) {
	key, c := res.job.key, res.job.check
	interval := time.Duration(c.Interval)
	if res.report.Outcome == tokens.OutcomeError || res.report.Outcome == tokens.OutcomeTimeout {
		p.errors[key]++
		// Back off while the check cannot tell anything: up to 8 times
		// the interval.
		interval <<= min(p.errors[key], 3)
	} else {
		p.errors[key] = 0
	}
	jitter := time.Duration(rand.Int64N(int64(interval)/5 + 1))
	p.next[key] = time.Now().Add(interval + jitter)
	if res.report.Outcome == tokens.OutcomeRateLimited && res.report.Until.IsZero() {
		res.report.Until = res.report.At.Add(time.Duration(tokens.DefaultCooldown))
	}
	if ctx.Err() != nil {
		return
	}
	if _, err := p.a.monitor.submit(ctx, []tokens.Report{res.report}); err != nil && ctx.Err() == nil {
		p.logger.Warn("could not record a probe", "pool", key.pool, "token", key.id, "outcome", res.report.Outcome, "error", err)
	}
	if res.report.Outcome != tokens.OutcomeOK {
		p.logger.Warn("probe did not pass", "pool", key.pool, "token", key.id, "outcome", res.report.Outcome, "latency_ms", res.report.LatencyMS)
	}
}

// rateLimit reads the check's rate-limit headers: the remaining quota (-1
// when not given) and when it resets (zero when not given). The reset is
// unix seconds, or seconds from now when it is small.
func rateLimit(resp *http.Response, c tokens.HealthCheck, now time.Time) (int64, time.Time) {
	remaining := int64(-1)
	if c.RateLimitRemainingHeader != "" {
		if n, err := strconv.ParseInt(strings.TrimSpace(resp.Header.Get(c.RateLimitRemainingHeader)), 10, 64); err == nil && n >= 0 {
			remaining = n
		}
	}
	var reset time.Time
	if c.RateLimitResetHeader != "" {
		if n, err := strconv.ParseInt(strings.TrimSpace(resp.Header.Get(c.RateLimitResetHeader)), 10, 64); err == nil && n > 0 {
			if n > 1_000_000_000 {
				reset = time.Unix(n, 0)
			} else {
				reset = now.Add(time.Duration(n) * time.Second)
			}
		}
	}
	if !reset.After(now) || reset.Sub(now) > tokens.MaxCooldown {
		reset = time.Time{}
	}
	return remaining, reset
}

// retryAfter reads Retry-After (seconds or an HTTP date), or is zero.
func retryAfter(resp *http.Response, now time.Time) time.Time {
	v := strings.TrimSpace(resp.Header.Get("Retry-After"))
	if secs, err := strconv.Atoi(v); err == nil && secs > 0 {
		return now.Add(time.Duration(min(secs, int(tokens.MaxCooldown/time.Second))) * time.Second)
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) && t.Sub(now) <= tokens.MaxCooldown {
		return t
	}
	return time.Time{}
}
