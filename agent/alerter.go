package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/tokend/tokend/api"
	"github.com/tokend/tokend/tokens"
)

// leaderAlerts is the name under which agents ask the leader for alerts.
const leaderAlerts = "alerts"

// Alert names.
const (
	alertTokenExpiring  = "token_expiring"
	alertRotationFail   = "rotation_failing"
	alertBelowMin       = "pool_below_min_healthy"
	alertDegraded       = "token_degraded"
	alertStaticTokenDue = "static_token_due"
)

// rotationFailingAfter is how many failed rotations in a row raise an alert.
const rotationFailingAfter = 3

// alerter is the leader task that watches for conditions an operator must
// hear about. Each pass works out which alerts hold from the state; a new
// one is sent at once, a held one again every repeat interval, and one that
// no longer holds is sent as resolved. Sinks are the log and, when
// configured, a webhook that takes Alertmanager's JSON. Its memory is soft
// state: a new leader sends what holds again.
type alerter struct {
	a       *Agent
	logger  hclog.Logger
	webhook string
	repeat  time.Duration
	client  *http.Client

	mu     sync.Mutex
	active bool
	firing map[string]*firingAlert
}

type firingAlert struct {
	api.Alert
	lastSent time.Time
}

func newAlerter(a *Agent) *alerter {
	return &alerter{
		a: a, logger: a.logger.Named("alerts"), webhook: a.cfg.AlertWebhook, repeat: a.cfg.AlertRepeat,
		client: &http.Client{Timeout: 10 * time.Second},
	}
}

func (al *alerter) run(ctx context.Context) {
	al.mu.Lock()
	al.active, al.firing = true, map[string]*firingAlert{}
	al.mu.Unlock()
	defer func() {
		al.mu.Lock()
		al.active, al.firing = false, nil
		al.mu.Unlock()
	}()
	outbox := make(chan []webhookAlert, 64)
	var wg sync.WaitGroup
	if al.webhook != "" {
		wg.Add(1)
		go func() {
			defer wg.Done()
			al.deliver(ctx, outbox)
		}()
	}
	defer wg.Wait()
	t := time.NewTicker(al.a.cfg.RotationInterval)
	defer t.Stop()
	for {
		if batch := al.pass(time.Now()); len(batch) > 0 && al.webhook != "" {
			select {
			case outbox <- batch:
			default:
				al.logger.Error("alert webhook is falling behind; dropping a batch", "alerts", len(batch))
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// pass compares what holds now with what was firing, logs every change and
// returns what the webhook must be sent.
func (al *alerter) pass(now time.Time) []webhookAlert {
	holding := al.evaluate(now)
	al.mu.Lock()
	defer al.mu.Unlock()
	var out []webhookAlert
	for key, a := range holding {
		f, ok := al.firing[key]
		switch {
		case !ok:
			f = &firingAlert{Alert: a}
			f.Since = now
			al.firing[key] = f
			al.logger.Warn("alert firing", "alert", a.Name, "pool", a.Pool, "token", a.Token, "severity", a.Severity, "summary", a.Summary)
		case now.Sub(f.lastSent) < al.repeat:
			f.Summary = a.Summary
			continue
		default:
			f.Summary = a.Summary
			al.logger.Warn("alert still firing", "alert", a.Name, "pool", a.Pool, "token", a.Token, "since", f.Since, "summary", a.Summary)
		}
		f.lastSent = now
		out = append(out, webhookFrom(f.Alert, al.a.cfg.NodeName, time.Time{}))
	}
	for key, f := range al.firing {
		if _, ok := holding[key]; !ok {
			delete(al.firing, key)
			al.logger.Info("alert resolved", "alert", f.Name, "pool", f.Pool, "token", f.Token, "since", f.Since)
			out = append(out, webhookFrom(f.Alert, al.a.cfg.NodeName, now))
		}
	}
	return out
}

// evaluate works out every alert that holds at now, by key.
func (al *alerter) evaluate(now time.Time) map[string]api.Alert {
	out := map[string]api.Alert{}
	add := func(a api.Alert) { out[a.Name+"/"+a.Pool+"/"+a.Token] = a }
	q := &tokens.Query{Now: now}
	for _, ps := range al.a.fsm.State().Pools() {
		p := ps.Pool
		eligible := 0
		for _, t := range ps.Tokens {
			if tokens.Eligible(t, q) {
				eligible++
			}
			if t.Lifecycle != tokens.LifecycleActive {
				continue
			}
			if !t.ExpiresAt.IsZero() && !now.Before(t.ExpiresAt.Add(-p.Rotation.AlertBeforeFor(t))) {
				severity := "warning"
				if !now.Before(t.ExpiresAt.Add(-tokens.ExpiryMargin)) {
					severity = "critical"
				}
				add(api.Alert{Name: alertTokenExpiring, Pool: p.Name, Token: t.ID, Severity: severity,
					Summary: fmt.Sprintf("token %s expires at %s and no replacement is active", t.ID, t.ExpiresAt.UTC().Format(time.RFC3339))})
			}
			if t.Health.StateAt(now) == tokens.Degraded {
				add(api.Alert{Name: alertDegraded, Pool: p.Name, Token: t.ID, Severity: "warning",
					Summary: fmt.Sprintf("token %s fails intermittently: %s", t.ID, t.Health.Reason)})
			}
		}
		if !p.Provider.Issues() {
			for _, need := range tokens.PlanRotations(p, ps.Tokens, nil, tokens.RotationStatus{}, now) {
				add(api.Alert{Name: alertStaticTokenDue, Pool: p.Name, Token: need.Replaces, Severity: "warning",
					Summary: fmt.Sprintf("token %s is due for replacement (%s) and the pool's provider is static: add a new token", need.Replaces, need.Reason)})
			}
		}
		if ps.Status.Failures >= rotationFailingAfter {
			add(api.Alert{Name: alertRotationFail, Pool: p.Name, Severity: "critical",
				Summary: fmt.Sprintf("%d rotations in a row failed; last error: %s", ps.Status.Failures, ps.Status.LastError)})
		}
		if p.MinHealthy > 0 && eligible < p.MinHealthy {
			add(api.Alert{Name: alertBelowMin, Pool: p.Name, Severity: "critical",
				Summary: fmt.Sprintf("%d tokens can be served, below min_healthy %d", eligible, p.MinHealthy)})
		}
	}
	return out
}

// handle answers GET /v1/alerts for every agent.
func (al *alerter) handle(context.Context, []byte) ([]byte, error) {
	al.mu.Lock()
	defer al.mu.Unlock()
	if !al.active {
		return nil, tokens.Errorf(tokens.CodeNoLeader, "this agent is not leading yet, or no longer")
	}
	out := api.Alerts{Leader: al.a.cfg.NodeName, Alerts: []api.Alert{}}
	for _, f := range al.firing {
		a := f.Alert
		sent := f.lastSent
		a.LastSent = &sent
		out.Alerts = append(out.Alerts, a)
	}
	sort.Slice(out.Alerts, func(i, j int) bool {
		a, b := out.Alerts[i], out.Alerts[j]
		if a.Pool != b.Pool {
			return a.Pool < b.Pool
		}
		if a.Name != b.Name {
			return a.Name < b.Name
		}
		return a.Token < b.Token
	})
	return json.Marshal(out)
}

// webhookAlert is one alert in Alertmanager's JSON (POST /api/v2/alerts).
type webhookAlert struct {
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations"`
	StartsAt     time.Time         `json:"startsAt"`
	EndsAt       time.Time         `json:"endsAt,omitzero"`
	GeneratorURL string            `json:"generatorURL,omitempty"`
}

func webhookFrom(a api.Alert, leader string, resolvedAt time.Time) webhookAlert {
	labels := map[string]string{"alertname": a.Name, "pool": a.Pool, "severity": a.Severity, "source": "tokend", "leader": leader}
	if a.Token != "" {
		labels["token"] = a.Token
	}
	return webhookAlert{Labels: labels, Annotations: map[string]string{"summary": a.Summary}, StartsAt: a.Since, EndsAt: resolvedAt}
}

// deliver posts batches to the webhook, retrying each a few times with
// backoff; a batch that cannot be delivered is logged and dropped.
func (al *alerter) deliver(ctx context.Context, outbox <-chan []webhookAlert) {
	for {
		var batch []webhookAlert
		select {
		case <-ctx.Done():
			return
		case batch = <-outbox:
		}
		body, err := json.Marshal(batch)
		if err != nil {
			al.logger.Error("encode alerts", "error", err)
			continue
		}
		delay := 200 * time.Millisecond
		for attempt := 1; ; attempt++ {
			err = al.post(ctx, body)
			if err == nil || attempt == 4 || ctx.Err() != nil {
				break
			}
			select {
			case <-ctx.Done():
			case <-time.After(delay):
			}
			delay *= 2
		}
		if err != nil {
			al.logger.Error("alert webhook failed; alerts dropped", "alerts", len(batch), "error", err)
		}
	}
}

func (al *alerter) post(ctx context.Context, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, al.webhook, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := al.client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("webhook answered %s", resp.Status)
	}
	return nil
}
