package tokens

import (
	"strings"
	"time"
)

// Outcome is what a client saw when it used a token.
type Outcome string

const (
	OutcomeOK           Outcome = "ok"
	OutcomeUnauthorized Outcome = "unauthorized"
	OutcomeForbidden    Outcome = "forbidden"
	OutcomeRateLimited  Outcome = "rate_limited"
	OutcomeError        Outcome = "error"
	OutcomeTimeout      Outcome = "timeout"
)

var outcomes = []Outcome{OutcomeOK, OutcomeUnauthorized, OutcomeForbidden, OutcomeRateLimited, OutcomeError, OutcomeTimeout}

// Cooldown bounds for rate_limited reports.
const (
	DefaultCooldown = 60 * time.Second
	MaxCooldown     = 24 * time.Hour
)

// ParseOutcome validates an outcome named by a client.
func ParseOutcome(s string) (Outcome, error) {
	for _, o := range outcomes {
		if string(o) == s {
			return o, nil
		}
	}
	names := make([]string, len(outcomes))
	for i, o := range outcomes {
		names[i] = string(o)
	}
	return "", invalidf("outcome %q is not known: use one of %s", truncate(s, 40), strings.Join(names, ", "))
}

// Report is one client's account of using a token, stamped by the agent that
// received it.
type Report struct {
	Pool    string  `json:"pool"`
	TokenID string  `json:"token_id"`
	Outcome Outcome `json:"outcome"`
	// Until ends the cooldown a rate_limited report asks for.
	Until    time.Time `json:"until,omitzero"`
	Reporter string    `json:"reporter"`
	At       time.Time `json:"at"`
	// LatencyMS is how long the upstream call took, for ok reports.
	LatencyMS int64 `json:"latency_ms,omitempty"`
	// AuthHash is the hash of the ACL token's secret the report came
	// with, so the leader checks it again; empty for socket callers and
	// when ACLs are off.
	AuthHash string `json:"auth_hash,omitempty"`
}

// StateAt is the health state at time now: a cooldown whose deadline has
// passed is healthy again, with no write needed.
func (h Health) StateAt(now time.Time) HealthState {
	switch h.State {
	case "":
		return Healthy
	case Cooldown:
		if !now.Before(h.Until) {
			return Healthy
		}
	}
	return h.State
}

// AsOf returns h as it stands at now: a cooldown whose deadline has passed
// reads as healthy since that deadline.
func (h Health) AsOf(now time.Time) Health {
	if h.State == Cooldown && !now.Before(h.Until) {
		return Health{State: Healthy, Reason: "cooldown ended", Since: h.Until}
	}
	return h
}

// Target is the health a report asks for by itself: failed for
// unauthorized or forbidden, a cooldown for rate_limited. Other outcomes
// only count toward degraded (Tracker) and report false.
func Target(r Report) (Health, bool) {
	switch r.Outcome {
	case OutcomeUnauthorized, OutcomeForbidden:
		return Health{State: Failed, Reason: string(r.Outcome), Since: r.At, Reporter: r.Reporter}, true
	case OutcomeRateLimited:
		return Health{State: Cooldown, Reason: string(r.Outcome), Since: r.At, Until: r.Until, Reporter: r.Reporter}, true
	}
	return Health{}, false
}

// Merge returns the health a token has when next is applied to cur, and
// whether it changed. The FSM applies every committed health change through
// it, so the rules hold whatever order changes arrive in:
//   - failed stays failed until an operator resets it or a probe passes;
//   - a cooldown never shortens: the latest deadline wins, and it ends by
//     itself at that deadline;
//   - degraded replaces only healthy, and healthy replaces only degraded;
//   - a decision dated before the token's last reset does not apply.
func Merge(cur, next Health) (Health, bool) {
	if cur.State == Healthy && cur.Reason == ResetReason && next.Since.Before(cur.Since) {
		// Decided before an operator's reset, committed after it: stale.
		return cur, false
	}
	state := cur.StateAt(next.Since)
	switch next.State {
	case Failed:
		if state == Failed {
			return cur, false
		}
		return next, true
	case Cooldown:
		switch {
		case state == Failed, !next.Until.After(next.Since):
			return cur, false
		case state == Cooldown && !cur.Until.Before(next.Until):
			return cur, false
		case state == Cooldown:
			next.Since = cur.Since
		}
		return next, true
	case Degraded:
		if state != Healthy {
			return cur, false
		}
		return next, true
	case Healthy:
		// A passing probe is the signal that brings a failed token back.
		if state != Degraded && (state != Failed || next.Reporter != ProbeReporter) {
			return cur, false
		}
		return next, true
	}
	return cur, false
}

// Transition returns the health a token has after report r, and whether it
// changed: Merge of r's Target. Agents apply it to their local overlay, so a
// report takes effect on the agent that received it before any commit.
func Transition(cur Health, r Report) (Health, bool) {
	if target, ok := Target(r); ok {
		return Merge(cur, target)
	}
	return cur, false
}

// ResetReason is the reason of the health an operator's reset gives.
const ResetReason = "reset by operator"

// ResetHealth is the health an operator's reset gives a token.
func ResetHealth(at time.Time, by string) Health {
	return Health{State: Healthy, Reason: ResetReason, Since: at, Reporter: by}
}
