package tokens

import "time"

// HealthPolicy is how a pool turns reports into token health. Zero fields
// take the defaults (WithDefaults).
type HealthPolicy struct {
	// Window is how many recent error/timeout/ok outcomes per token are
	// remembered.
	Window int `json:"window,omitempty"`
	// A token is degraded while at least DegradedFailures of its
	// remembered outcomes are errors or timeouts and they are at least
	// DegradedRatio of them; it is healthy again once that no longer holds.
	DegradedFailures int     `json:"degraded_failures,omitempty"`
	DegradedRatio    float64 `json:"degraded_ratio,omitempty"`
	// OutcomeTTL forgets older outcomes, so a degraded token that nobody
	// uses any more recovers.
	OutcomeTTL Duration `json:"outcome_ttl,omitempty"`
	// DefaultCooldown is the cooldown of a rate_limited report that does
	// not say how long.
	DefaultCooldown Duration `json:"default_cooldown,omitempty"`
	// ReportQuorum is how many distinct agents must report a token
	// unauthorized or forbidden within ReportWindow before it fails.
	ReportQuorum int      `json:"report_quorum,omitempty"`
	ReportWindow Duration `json:"report_window,omitempty"`
}

// Defaults and bounds of a HealthPolicy.
const (
	DefaultWindow           = 20
	MaxWindow               = 64
	DefaultDegradedFailures = 5
	DefaultDegradedRatio    = 0.5
	DefaultOutcomeTTL       = 5 * time.Minute
	DefaultReportWindow     = 5 * time.Minute
	MaxReportQuorum         = 16
)

// WithDefaults returns p with every zero field set to its default.
func (p HealthPolicy) WithDefaults() HealthPolicy {
	if p.Window == 0 {
		p.Window = DefaultWindow
	}
	if p.DegradedFailures == 0 {
		p.DegradedFailures = min(DefaultDegradedFailures, p.Window)
	}
	if p.DegradedRatio == 0 {
		p.DegradedRatio = DefaultDegradedRatio
	}
	if p.OutcomeTTL == 0 {
		p.OutcomeTTL = Duration(DefaultOutcomeTTL)
	}
	if p.DefaultCooldown == 0 {
		p.DefaultCooldown = Duration(DefaultCooldown)
	}
	if p.ReportQuorum == 0 {
		p.ReportQuorum = 1
	}
	if p.ReportWindow == 0 {
		p.ReportWindow = Duration(DefaultReportWindow)
	}
	return p
}

// Validate checks a policy as a client wrote it (zero fields are fine).
func (p HealthPolicy) Validate() error {
	d := p.WithDefaults()
	switch {
	case p.Window < 0 || p.Window > MaxWindow:
		return invalidf("health.window must be between 1 and %d, got %d", MaxWindow, p.Window)
	case p.DegradedFailures < 0 || d.DegradedFailures > d.Window:
		return invalidf("health.degraded_failures must be between 1 and health.window (%d), got %d", d.Window, p.DegradedFailures)
	case !(p.DegradedRatio >= 0 && p.DegradedRatio <= 1): // NaN too
		return invalidf("health.degraded_ratio must be above 0 and at most 1, got %g", p.DegradedRatio)
	case p.OutcomeTTL < 0 || time.Duration(p.OutcomeTTL) > 24*time.Hour:
		return invalidf("health.outcome_ttl must be between 1s and 24h, got %s", p.OutcomeTTL)
	case p.OutcomeTTL != 0 && time.Duration(p.OutcomeTTL) < time.Second:
		return invalidf("health.outcome_ttl must be between 1s and 24h, got %s", p.OutcomeTTL)
	case p.DefaultCooldown < 0 || time.Duration(p.DefaultCooldown) > MaxCooldown:
		return invalidf("health.default_cooldown must be between 1s and %s, got %s", MaxCooldown, p.DefaultCooldown)
	case p.DefaultCooldown != 0 && time.Duration(p.DefaultCooldown) < time.Second:
		return invalidf("health.default_cooldown must be between 1s and %s, got %s", MaxCooldown, p.DefaultCooldown)
	case p.ReportQuorum < 0 || p.ReportQuorum > MaxReportQuorum:
		return invalidf("health.report_quorum must be between 1 and %d, got %d", MaxReportQuorum, p.ReportQuorum)
	case p.ReportWindow < 0 || time.Duration(p.ReportWindow) > 24*time.Hour:
		return invalidf("health.report_window must be between 1s and 24h, got %s", p.ReportWindow)
	case p.ReportWindow != 0 && time.Duration(p.ReportWindow) < time.Second:
		return invalidf("health.report_window must be between 1s and 24h, got %s", p.ReportWindow)
	}
	return nil
}
