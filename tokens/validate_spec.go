package tokens

import (
	"maps"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Validate checks a provider spec: its type, the fields that type needs,
// and that no field of another type is set.
func (s ProviderSpec) Validate() error {
	if !slices.Contains(ProviderTypes, s.Type) {
		names := make([]string, len(ProviderTypes))
		for i, t := range ProviderTypes {
			names[i] = string(t)
		}
		return invalidf("provider type %q is not supported: use one of %s", truncate(string(s.Type), 40), strings.Join(names, ", "))
	}
	if s.Timeout < 0 || time.Duration(s.Timeout) > 10*time.Minute || (s.Timeout != 0 && time.Duration(s.Timeout) < 100*time.Millisecond) {
		return invalidf("provider.timeout must be between 100ms and 10m, got %s", s.Timeout)
	}
	set := s.setFields()
	allowed := map[ProviderType][]string{
		ProviderStatic: {},
		ProviderExec:   {"command", "revoke_command", "env"},
		ProviderOAuth2: {"token_url", "client_id", "client_secret", "clients", "scopes", "params"},
		ProviderHTTP:   {"url", "method", "headers", "body", "token_field", "expires_at_field", "expires_in_field", "revoke_url"},
	}[s.Type]
	for _, f := range set {
		if !slices.Contains(allowed, f) {
			return invalidf("provider.%s does not apply to provider type %s", f, s.Type)
		}
	}
	switch s.Type {
	case ProviderExec:
		return s.validateExec()
	case ProviderOAuth2:
		return s.validateOAuth2()
	case ProviderHTTP:
		return s.validateHTTP()
	}
	return nil
}

// setFields names the type-specific fields that are set.
func (s ProviderSpec) setFields() []string {
	var out []string
	add := func(name string, set bool) {
		if set {
			out = append(out, name)
		}
	}
	add("command", len(s.Command) > 0)
	add("revoke_command", len(s.RevokeCommand) > 0)
	add("env", len(s.Env) > 0)
	add("token_url", s.TokenURL != "")
	add("client_id", s.ClientID != "")
	add("client_secret", len(s.ClientSecret) > 0)
	add("clients", len(s.Clients) > 0)
	add("scopes", len(s.Scopes) > 0)
	add("params", len(s.Params) > 0)
	add("url", s.URL != "")
	add("method", s.Method != "")
	add("headers", len(s.Headers) > 0)
	add("body", s.Body != "")
	add("token_field", s.TokenField != "")
	add("expires_at_field", s.ExpiresAtField != "")
	add("expires_in_field", s.ExpiresInField != "")
	add("revoke_url", s.RevokeURL != "")
	return out
}

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

func (s ProviderSpec) validateExec() error {
	if err := validateArgv("provider.command", s.Command, true); err != nil {
		return err
	}
	if err := validateArgv("provider.revoke_command", s.RevokeCommand, false); err != nil {
		return err
	}
	for _, name := range s.Env {
		if !envName.MatchString(name) {
			return invalidf("provider.env: %q is not an environment variable name", truncate(name, 40))
		}
	}
	return nil
}

func validateArgv(field string, argv []string, required bool) error {
	switch {
	case len(argv) == 0 && required:
		return invalidf("%s is required: the program and its arguments, as a list (no shell)", field)
	case len(argv) > 64:
		return invalidf("%s has %d arguments (at most 64)", field, len(argv))
	case len(argv) > 0 && strings.TrimSpace(argv[0]) == "":
		return invalidf("%s: the program name is empty", field)
	}
	for _, a := range argv {
		if len(a) > 4096 || strings.ContainsRune(a, 0) {
			return invalidf("%s: an argument is too long or holds a NUL byte", field)
		}
	}
	return nil
}

func (s ProviderSpec) validateOAuth2() error {
	if err := validateURL("provider.token_url", s.TokenURL, true); err != nil {
		return err
	}
	single := s.ClientID != "" || len(s.ClientSecret) > 0
	switch {
	case single && len(s.Clients) > 0:
		return invalidf("provider: give either client_id and client_secret, or clients, not both")
	case single && (s.ClientID == "" || len(s.ClientSecret) == 0):
		return invalidf("provider: client_id and client_secret go together")
	case !single && len(s.Clients) == 0:
		return invalidf("provider.client_id and provider.client_secret are required (or provider.clients)")
	case len(s.Clients) > MaxPoolSize:
		return invalidf("provider.clients has %d entries (at most %d)", len(s.Clients), MaxPoolSize)
	}
	seen := map[string]bool{}
	for i, c := range s.Clients {
		if c.ClientID == "" || len(c.ClientSecret) == 0 {
			return invalidf("provider.clients[%d] needs client_id and client_secret", i)
		}
		if seen[c.ClientID] {
			return invalidf("provider.clients[%d]: client_id %q appears twice", i, truncate(c.ClientID, 60))
		}
		seen[c.ClientID] = true
	}
	for _, sc := range s.Scopes {
		if sc == "" || strings.ContainsAny(sc, " \t\n") {
			return invalidf("provider.scopes: %q is not a scope", truncate(sc, 60))
		}
	}
	return nil
}

func (s ProviderSpec) validateHTTP() error {
	if err := validateURL("provider.url", s.URL, true); err != nil {
		return err
	}
	if err := validateURL("provider.revoke_url", s.RevokeURL, false); err != nil {
		return err
	}
	switch s.Method {
	case "", http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch:
	default:
		return invalidf("provider.method %q is not supported: use GET, POST, PUT or PATCH", truncate(s.Method, 20))
	}
	// In key order, so that every agent rejects a command with the same
	// message.
	for _, k := range slices.Sorted(maps.Keys(s.Headers)) {
		if !validHeaderName(k) {
			return invalidf("provider.headers: %q is not a header name", truncate(k, 60))
		}
	}
	for _, f := range []struct{ name, path string }{{"token_field", s.TokenField}, {"expires_at_field", s.ExpiresAtField}, {"expires_in_field", s.ExpiresInField}} {
		if f.path != "" && slices.Contains(strings.Split(f.path, "."), "") {
			return invalidf("provider.%s %q is not a dotted field path such as data.token", f.name, truncate(f.path, 60))
		}
	}
	if s.ExpiresAtField != "" && s.ExpiresInField != "" {
		return invalidf("provider: give expires_at_field or expires_in_field, not both")
	}
	return nil
}

func validateURL(field, raw string, required bool) error {
	if raw == "" {
		if required {
			return invalidf("%s is required", field)
		}
		return nil
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return invalidf("%s %q must be an http or https URL", field, truncate(raw, 80))
	}
	return nil
}

func validHeaderName(name string) bool {
	if name == "" {
		return false
	}
	for _, c := range name {
		if c > 0x7e || c <= ' ' || strings.ContainsRune(`"(),/:;<=>?@[\]{}`, c) {
			return false
		}
	}
	return true
}

func (p *Pool) validateRotation() error {
	switch {
	case p.Size < 0 || p.Size > MaxPoolSize:
		return invalidf("size must be between 1 and %d, got %d", MaxPoolSize, p.Size)
	case p.Size > 0 && !p.Provider.Issues():
		return invalidf("size applies only to a provider that issues tokens, not to %s", p.Provider.Type)
	}
	r := p.Rotation
	for _, d := range []struct {
		name string
		v    Duration
		max  time.Duration
	}{
		{"rotation.max_age", r.MaxAge, 365 * 24 * time.Hour},
		{"rotation.renew_before", r.RenewBefore, 365 * 24 * time.Hour},
		{"rotation.grace", r.Grace, 7 * 24 * time.Hour},
		{"rotation.retry_min", r.RetryMin, time.Hour},
		{"rotation.retry_max", r.RetryMax, 24 * time.Hour},
		{"rotation.alert_before", r.AlertBefore, 365 * 24 * time.Hour},
	} {
		if d.v < 0 || time.Duration(d.v) > d.max {
			return invalidf("%s must be between 0s and %s, got %s", d.name, d.max, d.v)
		}
	}
	if w := r.WithDefaults(); w.RetryMin > w.RetryMax {
		return invalidf("rotation.retry_min (%s) must not exceed rotation.retry_max (%s)", w.RetryMin, w.RetryMax)
	}
	if r.MinActive < 0 || r.MinActive > MaxPoolSize {
		return invalidf("rotation.min_active must be between 0 and %d, got %d", MaxPoolSize, r.MinActive)
	}
	return nil
}

// Validate checks a health check.
func (c HealthCheck) Validate() error {
	if err := validateURL("health_check.url", c.URL, true); err != nil {
		return err
	}
	switch c.Method {
	case "", http.MethodGet, http.MethodHead, http.MethodPost:
	default:
		return invalidf("health_check.method %q is not supported: use GET, HEAD or POST", truncate(c.Method, 20))
	}
	if c.Header != "" && !validHeaderName(c.Header) {
		return invalidf("health_check.header %q is not a header name", truncate(c.Header, 60))
	}
	if c.Format != "" && !strings.Contains(c.Format, TokenPlaceholder) {
		return invalidf("health_check.format must contain %s where the token goes", TokenPlaceholder)
	}
	for _, st := range c.ExpectStatus {
		if st < 100 || st > 599 {
			return invalidf("health_check.expect_status: %d is not an HTTP status", st)
		}
	}
	if c.Interval != 0 && (time.Duration(c.Interval) < 100*time.Millisecond || time.Duration(c.Interval) > 24*time.Hour) {
		return invalidf("health_check.interval must be between 100ms and 24h, got %s", c.Interval)
	}
	if c.Timeout != 0 && (time.Duration(c.Timeout) < 10*time.Millisecond || time.Duration(c.Timeout) > time.Minute) {
		return invalidf("health_check.timeout must be between 10ms and 1m, got %s", c.Timeout)
	}
	for _, h := range []struct{ name, v string }{{"rate_limit_remaining_header", c.RateLimitRemainingHeader}, {"rate_limit_reset_header", c.RateLimitResetHeader}} {
		if h.v != "" && !validHeaderName(h.v) {
			return invalidf("health_check.%s %q is not a header name", h.name, truncate(h.v, 60))
		}
	}
	return nil
}
