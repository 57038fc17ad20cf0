package tokens

import (
	"fmt"
	"maps"
	"time"
)

// Tracker is the leader's memory of one token's recent reports, from every
// agent. It decides when an error rate makes the token degraded and when
// enough distinct agents agree that it is dead. It is soft state: a new
// leader starts with empty trackers.
type Tracker struct {
	// outcomes are the latest error/timeout/ok outcomes, oldest first.
	outcomes []timedOutcome
	// failReports holds each agent's latest unauthorized/forbidden report.
	failReports map[string]time.Time
}

type timedOutcome struct {
	at     time.Time
	failed bool
}

// Verdict is what a report or a tick means for a token.
type Verdict struct {
	// Health is the health the token should have; Change says it differs
	// from the current one and must be committed.
	Health Health
	Change bool
	// Detail explains a verdict that changes nothing although the report
	// asked for a change, such as a quorum not reached yet.
	Detail string
}

// Observe records report r about a token whose health is cur. lastEligible
// says whether the token is the only one its pool could serve: such a token
// fails only when at least two distinct agents report it within the report
// window, whatever the quorum, so that one broken client cannot drain a
// pool.
func (tr *Tracker) Observe(p HealthPolicy, cur Health, r Report, lastEligible bool) Verdict {
	p = p.WithDefaults()
	switch r.Outcome {
	case OutcomeUnauthorized, OutcomeForbidden:
		return tr.observeFailure(p, cur, r, lastEligible)
	case OutcomeRateLimited:
		// A report that does not say how long gets the pool's default
		// cooldown; without a deadline Merge would ignore it.
		if r.Until.IsZero() {
			r.Until = r.At.Add(time.Duration(p.DefaultCooldown))
		}
		target, _ := Target(r)
		h, changed := Merge(cur, target)
		return Verdict{Health: h, Change: changed}
	}
	if r.Outcome == OutcomeOK && r.Reporter == ProbeReporter && cur.StateAt(r.At) == Failed {
		h, changed := Merge(cur, Health{State: Healthy, Reason: "probe passed", Since: r.At, Reporter: ProbeReporter})
		return Verdict{Health: h, Change: changed}
	}
	tr.outcomes = append(tr.outcomes, timedOutcome{at: r.At, failed: r.Outcome != OutcomeOK})
	if extra := len(tr.outcomes) - p.Window; extra > 0 {
		tr.outcomes = append(tr.outcomes[:0], tr.outcomes[extra:]...)
	}
	return tr.evaluate(p, cur, r.At)
}

func (tr *Tracker) observeFailure(p HealthPolicy, cur Health, r Report, lastEligible bool) Verdict {
	if tr.failReports == nil {
		tr.failReports = map[string]time.Time{}
	}
	if prev, ok := tr.failReports[r.Reporter]; !ok || r.At.After(prev) {
		tr.failReports[r.Reporter] = r.At
	}
	if cur.State == Healthy && cur.Reason == ResetReason {
		// Reports from before an operator's reset do not count toward
		// failing the token again.
		maps.DeleteFunc(tr.failReports, func(_ string, at time.Time) bool { return at.Before(cur.Since) })
	}
	// The window ends at the newest report, not at r: reports reach the
	// leader out of order, and a late one must not join reports made more
	// than a window after it.
	newest := r.At
	for _, at := range tr.failReports {
		if at.After(newest) {
			newest = at
		}
	}
	tr.forgetFailures(p, newest)
	need := p.ReportQuorum
	if lastEligible {
		need = max(need, 2)
	}
	if r.Reporter == ProbeReporter {
		// The leader's own probe is the independent signal: it needs no
		// quorum, even for the last eligible token.
		need = 1
	}
	if n := len(tr.failReports); n < need {
		detail := fmt.Sprintf("awaiting quorum: %d of %d agents reported it within %s", n, need, p.ReportWindow)
		if lastEligible && p.ReportQuorum < 2 {
			detail = fmt.Sprintf("last eligible token of its pool: it fails only when a second agent reports it within %s", p.ReportWindow)
		}
		return Verdict{Health: cur, Detail: detail}
	}
	target, _ := Target(r)
	if len(tr.failReports) > 1 {
		target.Reason = fmt.Sprintf("%s (reported by %d agents)", r.Outcome, len(tr.failReports))
	}
	h, changed := Merge(cur, target)
	return Verdict{Health: h, Change: changed}
}

// Tick re-evaluates the token at now: outcomes older than the policy's TTL
// are forgotten, so a degraded token nobody uses any more recovers.
func (tr *Tracker) Tick(p HealthPolicy, cur Health, now time.Time) Verdict {
	p = p.WithDefaults()
	tr.forgetFailures(p, now)
	return tr.evaluate(p, cur, now)
}

// Idle reports whether the tracker remembers nothing, so it can be dropped.
func (tr *Tracker) Idle() bool { return len(tr.outcomes) == 0 && len(tr.failReports) == 0 }

func (tr *Tracker) forgetFailures(p HealthPolicy, now time.Time) {
	cutoff := now.Add(-time.Duration(p.ReportWindow))
	maps.DeleteFunc(tr.failReports, func(_ string, at time.Time) bool { return at.Before(cutoff) })
}

// evaluate decides degraded or recovered from the outcomes younger than the
// TTL.
func (tr *Tracker) evaluate(p HealthPolicy, cur Health, now time.Time) Verdict {
	cutoff := now.Add(-time.Duration(p.OutcomeTTL))
	drop := 0
	for drop < len(tr.outcomes) && tr.outcomes[drop].at.Before(cutoff) {
		drop++
	}
	tr.outcomes = append(tr.outcomes[:0], tr.outcomes[drop:]...)
	failed := 0
	for _, o := range tr.outcomes {
		if o.failed {
			failed++
		}
	}
	n := len(tr.outcomes)
	rate := fmt.Sprintf("%d of the last %d uses failed", failed, n)
	// failed/n, not ratio*n: 14 of 25 is 0.56 exactly as a float64, while
	// 0.56*25 is 14.000000000000002.
	if n > 0 && failed >= p.DegradedFailures && float64(failed)/float64(n) >= p.DegradedRatio {
		h, changed := Merge(cur, Health{State: Degraded, Reason: rate, Since: now})
		return Verdict{Health: h, Change: changed}
	}
	if n == 0 {
		rate = "no recent uses failed"
	}
	h, changed := Merge(cur, Health{State: Healthy, Reason: "recovered: " + rate, Since: now})
	return Verdict{Health: h, Change: changed}
}
