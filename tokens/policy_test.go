package tokens

import (
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
	"time"
)

func TestHealthPolicyWithDefaults(t *testing.T) {
	defaults := HealthPolicy{
		Window:           DefaultWindow,
		DegradedFailures: DefaultDegradedFailures,
		DegradedRatio:    DefaultDegradedRatio,
		OutcomeTTL:       Duration(DefaultOutcomeTTL),
		DefaultCooldown:  Duration(DefaultCooldown),
		ReportQuorum:     1,
		ReportWindow:     Duration(DefaultReportWindow),
	}
	custom := HealthPolicy{
		Window:           4,
		DegradedFailures: 2,
		DegradedRatio:    0.75,
		OutcomeTTL:       Duration(time.Minute),
		DefaultCooldown:  Duration(90 * time.Second),
		ReportQuorum:     3,
		ReportWindow:     Duration(time.Hour),
	}
	with := func(f func(*HealthPolicy)) HealthPolicy {
		p := defaults
		f(&p)
		return p
	}
	tests := []struct {
		name string
		p    HealthPolicy
		want HealthPolicy
	}{
		{"zero", HealthPolicy{}, defaults},
		{"every field set", custom, custom},
		{"window only", HealthPolicy{Window: 40}, with(func(p *HealthPolicy) { p.Window = 40 })},
		{"window below the default failures", HealthPolicy{Window: 3}, with(func(p *HealthPolicy) { p.Window, p.DegradedFailures = 3, 3 })},
		{"window of one", HealthPolicy{Window: 1}, with(func(p *HealthPolicy) { p.Window, p.DegradedFailures = 1, 1 })},
		{"failures only", HealthPolicy{DegradedFailures: 8}, with(func(p *HealthPolicy) { p.DegradedFailures = 8 })},
		{"ratio only", HealthPolicy{DegradedRatio: 0.9}, with(func(p *HealthPolicy) { p.DegradedRatio = 0.9 })},
		{"outcome_ttl only", HealthPolicy{OutcomeTTL: Duration(time.Second)}, with(func(p *HealthPolicy) { p.OutcomeTTL = Duration(time.Second) })},
		{"default_cooldown only", HealthPolicy{DefaultCooldown: Duration(time.Hour)}, with(func(p *HealthPolicy) { p.DefaultCooldown = Duration(time.Hour) })},
		{"report_quorum only", HealthPolicy{ReportQuorum: 2}, with(func(p *HealthPolicy) { p.ReportQuorum = 2 })},
		{"report_window only", HealthPolicy{ReportWindow: Duration(time.Minute)}, with(func(p *HealthPolicy) { p.ReportWindow = Duration(time.Minute) })},
	}
	for _, tt := range tests {
		got := tt.p.WithDefaults()
		if got != tt.want {
			t.Errorf("%s: WithDefaults = %+v, want %+v", tt.name, got, tt.want)
		}
		if again := got.WithDefaults(); again != got {
			t.Errorf("%s: WithDefaults is not idempotent: %+v then %+v", tt.name, got, again)
		}
		if err := got.Validate(); err != nil {
			t.Errorf("%s: the defaulted policy %+v is invalid: %v", tt.name, got, err)
		}
	}
}

func TestHealthPolicyValidateAccepts(t *testing.T) {
	for _, p := range []HealthPolicy{
		{},
		HealthPolicy{}.WithDefaults(),
		{Window: 1},
		{Window: MaxWindow},
		{Window: 4, DegradedFailures: 4},
		{DegradedFailures: DefaultWindow},
		{DegradedFailures: 1},
		{DegradedRatio: 1},
		{DegradedRatio: 0.01},
		{OutcomeTTL: Duration(time.Second)},
		{OutcomeTTL: Duration(24 * time.Hour)},
		{DefaultCooldown: Duration(time.Second)},
		{DefaultCooldown: Duration(MaxCooldown)},
		{ReportQuorum: 1},
		{ReportQuorum: MaxReportQuorum},
		{ReportWindow: Duration(time.Second)},
		{ReportWindow: Duration(24 * time.Hour)},
		{Window: 4, DegradedFailures: 2, DegradedRatio: 0.75, OutcomeTTL: Duration(time.Minute), DefaultCooldown: Duration(90 * time.Second), ReportQuorum: 3, ReportWindow: Duration(10 * time.Minute)},
	} {
		if err := p.Validate(); err != nil {
			t.Errorf("Validate(%+v) = %v, want nil", p, err)
		}
	}
}

func TestHealthPolicyValidateRejects(t *testing.T) {
	tests := []struct {
		p HealthPolicy
		// want are all in the message: the field's name first.
		want []string
	}{
		{HealthPolicy{Window: -1}, []string{"health.window", "between 1 and 64", "got -1"}},
		{HealthPolicy{Window: MaxWindow + 1}, []string{"health.window", "got 65"}},
		{HealthPolicy{DegradedFailures: -1}, []string{"health.degraded_failures", "got -1"}},
		{HealthPolicy{DegradedFailures: DefaultWindow + 1}, []string{"health.degraded_failures", "health.window (20)", "got 21"}},
		{HealthPolicy{Window: 4, DegradedFailures: 5}, []string{"health.degraded_failures", "health.window (4)", "got 5"}},
		{HealthPolicy{DegradedRatio: -0.1}, []string{"health.degraded_ratio", "got -0.1"}},
		{HealthPolicy{DegradedRatio: 1.5}, []string{"health.degraded_ratio", "at most 1", "got 1.5"}},
		{HealthPolicy{DegradedRatio: math.Inf(1)}, []string{"health.degraded_ratio"}},
		{HealthPolicy{DegradedRatio: math.NaN()}, []string{"health.degraded_ratio", "got NaN"}},
		{HealthPolicy{OutcomeTTL: Duration(-time.Second)}, []string{"health.outcome_ttl", "between 1s and 24h", "got -1s"}},
		{HealthPolicy{OutcomeTTL: Duration(999 * time.Millisecond)}, []string{"health.outcome_ttl", "got 999ms"}},
		{HealthPolicy{OutcomeTTL: Duration(24*time.Hour + time.Nanosecond)}, []string{"health.outcome_ttl", "got 24h0m0.000000001s"}},
		{HealthPolicy{DefaultCooldown: Duration(-time.Minute)}, []string{"health.default_cooldown", "between 1s and 24h0m0s", "got -1m0s"}},
		{HealthPolicy{DefaultCooldown: Duration(time.Millisecond)}, []string{"health.default_cooldown", "got 1ms"}},
		{HealthPolicy{DefaultCooldown: Duration(MaxCooldown + time.Second)}, []string{"health.default_cooldown", "got 24h0m1s"}},
		{HealthPolicy{ReportQuorum: -1}, []string{"health.report_quorum", "between 1 and 16", "got -1"}},
		{HealthPolicy{ReportQuorum: MaxReportQuorum + 1}, []string{"health.report_quorum", "got 17"}},
		{HealthPolicy{ReportWindow: Duration(-time.Nanosecond)}, []string{"health.report_window", "got -1ns"}},
		{HealthPolicy{ReportWindow: Duration(time.Nanosecond)}, []string{"health.report_window", "between 1s and 24h", "got 1ns"}},
		{HealthPolicy{ReportWindow: Duration(25 * time.Hour)}, []string{"health.report_window", "got 25h0m0s"}},
	}
	for _, tt := range tests {
		err := tt.p.Validate()
		if err == nil {
			t.Errorf("Validate(%+v) = nil, want an error", tt.p)
			continue
		}
		if !errors.Is(err, ErrInvalid) || AsError(err).Code != CodeInvalid {
			t.Errorf("Validate(%+v) error %v is not invalid_request", tt.p, err)
		}
		if !strings.HasPrefix(err.Error(), tt.want[0]+" ") {
			t.Errorf("Validate(%+v) = %q, want it to start with %q", tt.p, err, tt.want[0])
		}
		for _, w := range tt.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("Validate(%+v) = %q, want it to mention %q", tt.p, err, w)
			}
		}
	}
}

// A pool's health policy is checked with the rest of the pool.
func TestPoolNormalizeValidatesHealth(t *testing.T) {
	p := Pool{Name: "p", Health: HealthPolicy{ReportQuorum: 2, ReportWindow: Duration(time.Minute)}}
	if err := p.Normalize(); err != nil {
		t.Fatalf("Normalize with a valid policy: %v", err)
	}
	p.Health.Window = -3
	err := p.Normalize()
	if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "health.window") {
		t.Fatalf("Normalize with window -3 = %v, want an invalid_request naming health.window", err)
	}
}

// The policy's JSON names are part of the pool files and of the replicated
// state; zero fields are left out.
func TestHealthPolicyJSON(t *testing.T) {
	p := HealthPolicy{Window: 4, DegradedFailures: 2, DegradedRatio: 0.75, OutcomeTTL: Duration(90 * time.Second), DefaultCooldown: Duration(time.Minute), ReportQuorum: 2, ReportWindow: Duration(time.Hour)}
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"window":4,"degraded_failures":2,"degraded_ratio":0.75,"outcome_ttl":"1m30s","default_cooldown":"1m0s","report_quorum":2,"report_window":"1h0m0s"}`
	if string(b) != want {
		t.Fatalf("Marshal = %s, want %s", b, want)
	}
	var back HealthPolicy
	if err := json.Unmarshal(b, &back); err != nil || back != p {
		t.Fatalf("round trip = %+v, %v; want %+v", back, err, p)
	}
	if b, _ := json.Marshal(HealthPolicy{}); string(b) != `{}` {
		t.Fatalf("zero policy marshals as %s, want {}", b)
	}
	var in HealthPolicy
	if err := json.Unmarshal([]byte(`{"outcome_ttl":"90s","report_window":"5m"}`), &in); err != nil {
		t.Fatal(err)
	}
	if in != (HealthPolicy{OutcomeTTL: Duration(90 * time.Second), ReportWindow: Duration(5 * time.Minute)}) {
		t.Fatalf("decoded %+v", in)
	}
	// A pool without a policy carries no health field at all.
	b, err = json.Marshal(Pool{Name: "p"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), `"health"`) {
		t.Fatalf("pool with the zero policy marshals a health field: %s", b)
	}
}
