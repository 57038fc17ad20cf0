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

// Transition returns the health a token has after report r, and whether it
// changed. It is pure: the FSM applies it to replicated state and agents apply
// it to their local overlay, and both reach the same answer.
//
// A failed token stays failed until an operator or a probe says otherwise.
// Overlapping cooldowns keep the latest deadline.
func Transition(cur Health, r Report) (Health, bool) {
	state := cur.StateAt(r.At)
	switch r.Outcome {
	case OutcomeUnauthorized, OutcomeForbidden:
		if state == Failed {
			return cur, false
		}
		return Health{State: Failed, Reason: string(r.Outcome), Since: r.At, Reporter: r.Reporter}, true
	case OutcomeRateLimited:
		if state == Failed {
			return cur, false
		}
		if state == Cooldown && !cur.Until.Before(r.Until) {
			return cur, false
		}
		since := r.At
		if state == Cooldown {
			since = cur.Since
		}
		return Health{State: Cooldown, Reason: string(r.Outcome), Since: since, Until: r.Until, Reporter: r.Reporter}, true
	}
	return cur, false
}
