package tokens

import "time"

// HealthCheck has the leader probe every token of a pool: a request to URL
// with the token in Header (written with Format, where {{token}} stands for
// the value). The answer feeds the health model as a report from "probe", an
// independent signal: a passing probe brings a failed token back.
type HealthCheck struct {
	URL    string `json:"url"`
	Method string `json:"method,omitempty"`
	// Header and Format place the token (defaults: Authorization and
	// "Bearer {{token}}").
	Header string `json:"header,omitempty"`
	Format string `json:"format,omitempty"`
	// ExpectStatus lists the statuses that mean healthy (default [200]);
	// 401 and 403 mean failed, 429 cooldown, anything else an error.
	ExpectStatus []int    `json:"expect_status,omitempty"`
	Interval     Duration `json:"interval,omitzero"`
	Timeout      Duration `json:"timeout,omitzero"`
	// RateLimitRemainingHeader and RateLimitResetHeader name the headers
	// that carry the remaining quota and when it resets (unix seconds or
	// seconds from now); a token with none left cools down until the reset.
	RateLimitRemainingHeader string `json:"rate_limit_remaining_header,omitempty"`
	RateLimitResetHeader     string `json:"rate_limit_reset_header,omitempty"`
}

// Health check defaults.
const (
	DefaultCheckInterval = time.Minute
	DefaultCheckTimeout  = 5 * time.Second
	TokenPlaceholder     = "{{token}}"
	// ProbeReporter is the reporter of the leader's own probes.
	ProbeReporter = "probe"
)

// WithDefaults returns c with zero fields set to their defaults.
func (c HealthCheck) WithDefaults() HealthCheck {
	if c.Method == "" {
		c.Method = "GET"
	}
	if c.Header == "" {
		c.Header = "Authorization"
	}
	if c.Format == "" {
		c.Format = "Bearer " + TokenPlaceholder
	}
	if len(c.ExpectStatus) == 0 {
		c.ExpectStatus = []int{200}
	}
	if c.Interval == 0 {
		c.Interval = Duration(DefaultCheckInterval)
	}
	if c.Timeout == 0 {
		c.Timeout = Duration(DefaultCheckTimeout)
	}
	return c
}
