package tokens

import (
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

func TestStateAt(t *testing.T) {
	until := t0.Add(time.Minute)
	tests := []struct {
		h    Health
		now  time.Time
		want HealthState
	}{
		{Health{}, t0, Healthy},
		{Health{State: Healthy}, t0, Healthy},
		{Health{State: Degraded}, t0, Degraded},
		{Health{State: Failed}, t0, Failed},
		{Health{State: Failed, Until: t0}, t0.Add(time.Hour), Failed},
		{Health{State: Cooldown, Until: until}, t0, Cooldown},
		{Health{State: Cooldown, Until: until}, until.Add(-time.Nanosecond), Cooldown},
		{Health{State: Cooldown, Until: until}, until, Healthy},
		{Health{State: Cooldown, Until: until}, until.Add(time.Hour), Healthy},
		{Health{State: Cooldown}, t0, Healthy}, // no deadline: nothing to wait for
	}
	for _, tt := range tests {
		if got := tt.h.StateAt(tt.now); got != tt.want {
			t.Errorf("%+v.StateAt(%v) = %s, want %s", tt.h, tt.now, got, tt.want)
		}
	}
}

func TestTransition(t *testing.T) {
	at := t0
	healthy := Health{State: Healthy, Since: at.Add(-time.Hour)}
	cooling := Health{State: Cooldown, Reason: "rate_limited", Since: at.Add(-time.Minute), Until: at.Add(time.Minute), Reporter: "node-0"}
	expiredCooldown := Health{State: Cooldown, Reason: "rate_limited", Since: at.Add(-time.Hour), Until: at.Add(-time.Minute), Reporter: "node-0"}
	failed := Health{State: Failed, Reason: "unauthorized", Since: at.Add(-time.Hour), Reporter: "node-0"}
	degraded := Health{State: Degraded, Since: at.Add(-time.Hour)}
	report := func(o Outcome, until time.Time) Report {
		return Report{Pool: "p", TokenID: "a", Outcome: o, Until: until, Reporter: "node-1", At: at}
	}
	unchanged := Health{State: "unchanged"} // marker: want cur back
	tests := []struct {
		name string
		cur  Health
		r    Report
		want Health
	}{
		{"unauthorized fails a healthy token", healthy, report(OutcomeUnauthorized, time.Time{}), Health{State: Failed, Reason: "unauthorized", Since: at, Reporter: "node-1"}},
		{"forbidden fails a healthy token", healthy, report(OutcomeForbidden, time.Time{}), Health{State: Failed, Reason: "forbidden", Since: at, Reporter: "node-1"}},
		{"unauthorized fails a token with no health yet", Health{}, report(OutcomeUnauthorized, time.Time{}), Health{State: Failed, Reason: "unauthorized", Since: at, Reporter: "node-1"}},
		{"unauthorized fails a cooling-down token", cooling, report(OutcomeUnauthorized, time.Time{}), Health{State: Failed, Reason: "unauthorized", Since: at, Reporter: "node-1"}},
		{"forbidden fails a degraded token", degraded, report(OutcomeForbidden, time.Time{}), Health{State: Failed, Reason: "forbidden", Since: at, Reporter: "node-1"}},
		{"failed stays failed on unauthorized", failed, report(OutcomeUnauthorized, time.Time{}), unchanged},
		{"failed stays failed on forbidden", failed, report(OutcomeForbidden, time.Time{}), unchanged},
		{"failed stays failed on rate_limited", failed, report(OutcomeRateLimited, at.Add(time.Hour)), unchanged},
		{"failed stays failed on ok", failed, report(OutcomeOK, time.Time{}), unchanged},

		{"rate_limited cools a healthy token down", healthy, report(OutcomeRateLimited, at.Add(30*time.Second)), Health{State: Cooldown, Reason: "rate_limited", Since: at, Until: at.Add(30 * time.Second), Reporter: "node-1"}},
		{"rate_limited cools a degraded token down", degraded, report(OutcomeRateLimited, at.Add(30*time.Second)), Health{State: Cooldown, Reason: "rate_limited", Since: at, Until: at.Add(30 * time.Second), Reporter: "node-1"}},
		{"later deadline extends a cooldown, keeping its start", cooling, report(OutcomeRateLimited, at.Add(time.Hour)), Health{State: Cooldown, Reason: "rate_limited", Since: cooling.Since, Until: at.Add(time.Hour), Reporter: "node-1"}},
		{"earlier deadline leaves a cooldown", cooling, report(OutcomeRateLimited, at.Add(time.Second)), unchanged},
		{"same deadline leaves a cooldown", cooling, report(OutcomeRateLimited, cooling.Until), unchanged},
		{"cooldown over: a new one starts", expiredCooldown, report(OutcomeRateLimited, at.Add(time.Second)), Health{State: Cooldown, Reason: "rate_limited", Since: at, Until: at.Add(time.Second), Reporter: "node-1"}},
	}
	for _, o := range []Outcome{OutcomeOK, OutcomeError, OutcomeTimeout, "bogus"} {
		for _, cur := range []Health{{}, healthy, cooling, expiredCooldown, failed, degraded} {
			tests = append(tests, struct {
				name string
				cur  Health
				r    Report
				want Health
			}{string(o) + " changes nothing on " + string(cur.State), cur, report(o, time.Time{}), unchanged})
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, changed := Transition(tt.cur, tt.r)
			if tt.want == unchanged {
				if changed || got != tt.cur {
					t.Fatalf("Transition = %+v, %v; want the current health %+v, false", got, changed, tt.cur)
				}
				return
			}
			if !changed || got != tt.want {
				t.Fatalf("Transition = %+v, %v; want %+v, true", got, changed, tt.want)
			}
		})
	}
}

// Cooldowns overlap when several clients hit a rate limit; their reports
// reach the FSM in any order. Whatever the order, the latest deadline wins.
func TestTransitionOverlappingCooldownsOrderIndependent(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	for iter := range 300 {
		reports := make([]Report, 4)
		var latest time.Time
		for i := range reports {
			at := t0.Add(time.Duration(rng.IntN(120)) * time.Second)
			until := at.Add(time.Duration(1+rng.IntN(120)) * time.Second)
			reports[i] = Report{Pool: "p", TokenID: "a", Outcome: OutcomeRateLimited, At: at, Until: until, Reporter: "r"}
			if until.After(latest) {
				latest = until
			}
		}
		permute(reports, func(order []Report) {
			h := Health{State: Healthy, Since: t0.Add(-time.Hour)}
			for _, r := range order {
				h, _ = Transition(h, r)
			}
			if h.State != Cooldown || !h.Until.Equal(latest) {
				t.Fatalf("iteration %d: after %v health is %+v, want cooldown until %v", iter, order, h, latest)
			}
		})
	}
}

// An unauthorized report anywhere in a sequence leaves the token failed,
// whatever the order.
func TestTransitionFailedIsFinal(t *testing.T) {
	reports := []Report{
		{Outcome: OutcomeRateLimited, At: t0, Until: t0.Add(time.Minute)},
		{Outcome: OutcomeUnauthorized, At: t0.Add(time.Second)},
		{Outcome: OutcomeRateLimited, At: t0.Add(2 * time.Second), Until: t0.Add(time.Hour)},
		{Outcome: OutcomeOK, At: t0.Add(3 * time.Second)},
	}
	permute(reports, func(order []Report) {
		h := Health{State: Healthy}
		for _, r := range order {
			h, _ = Transition(h, r)
		}
		if h.State != Failed || h.Reason != string(OutcomeUnauthorized) {
			t.Fatalf("after %v health is %+v, want failed (unauthorized)", order, h)
		}
	})
}

func permute(rs []Report, f func([]Report)) {
	var rec func(k int)
	rec = func(k int) {
		if k == len(rs) {
			f(rs)
			return
		}
		for i := k; i < len(rs); i++ {
			rs[k], rs[i] = rs[i], rs[k]
			rec(k + 1)
			rs[k], rs[i] = rs[i], rs[k]
		}
	}
	rec(0)
}

func TestParseOutcome(t *testing.T) {
	for _, o := range []Outcome{OutcomeOK, OutcomeUnauthorized, OutcomeForbidden, OutcomeRateLimited, OutcomeError, OutcomeTimeout} {
		got, err := ParseOutcome(string(o))
		if err != nil || got != o {
			t.Errorf("ParseOutcome(%q) = %q, %v", o, got, err)
		}
	}
	for _, s := range []string{"", "OK", "Unauthorized", "rate-limited", " ok", strings.Repeat("x", 1000)} {
		got, err := ParseOutcome(s)
		if err == nil {
			t.Errorf("ParseOutcome(%q) = %q, want an error", s, got)
			continue
		}
		if !errors.Is(err, ErrInvalid) || AsError(err).Code != CodeInvalid {
			t.Errorf("ParseOutcome(%q) error %v is not invalid_request", s, err)
		}
		if !strings.Contains(err.Error(), "rate_limited") {
			t.Errorf("ParseOutcome(%q) error %q does not list the known outcomes", s, err)
		}
		if len(err.Error()) > 300 {
			t.Errorf("ParseOutcome error is %d bytes long: long input is not truncated", len(err.Error()))
		}
	}
}

func TestOverlayHealth(t *testing.T) {
	a := tok("a", 0, 1, since(t0))
	fail := func(at time.Time) Report {
		return Report{Pool: "p", TokenID: "a", Outcome: OutcomeUnauthorized, At: at, Reporter: "n"}
	}
	tests := []struct {
		name string
		ov   Overlay
		want HealthState
	}{
		{"nil overlay", nil, Healthy},
		{"no entry for the token", Overlay{"b": fail(t0)}, Healthy},
		{"newer report applies", Overlay{"a": fail(t0.Add(time.Second))}, Failed},
		{"report as new as the health applies", Overlay{"a": fail(t0)}, Failed},
		{"older report is ignored", Overlay{"a": fail(t0.Add(-time.Nanosecond))}, Healthy},
		{"report for another pool is ignored", Overlay{"a": {Pool: "q", TokenID: "a", Outcome: OutcomeForbidden, At: t0.Add(time.Second)}}, Healthy},
		{"report that changes nothing", Overlay{"a": {Pool: "p", TokenID: "a", Outcome: OutcomeTimeout, At: t0.Add(time.Second)}}, Healthy},
	}
	for _, tt := range tests {
		if got := tt.ov.Health(a).State; got != tt.want {
			t.Errorf("%s: Health = %s, want %s", tt.name, got, tt.want)
		}
	}
}

func TestCovered(t *testing.T) {
	failedAt := tok("a", 0, 1, func(t *Token) { t.Health = Health{State: Failed, Reason: "forbidden", Since: t0} })
	healthy := tok("a", 0, 1, since(t0))
	tests := []struct {
		name string
		t    *Token
		r    Report
		want bool
	}{
		{"replicated state already failed", failedAt, Report{Pool: "p", TokenID: "a", Outcome: OutcomeUnauthorized, At: t0.Add(time.Second)}, true},
		{"replicated health is newer", healthy, Report{Pool: "p", TokenID: "a", Outcome: OutcomeUnauthorized, At: t0.Add(-time.Second)}, true},
		{"report still to be committed", healthy, Report{Pool: "p", TokenID: "a", Outcome: OutcomeUnauthorized, At: t0.Add(time.Second)}, false},
		{"cooldown still to be committed", healthy, Report{Pool: "p", TokenID: "a", Outcome: OutcomeRateLimited, At: t0.Add(time.Second), Until: t0.Add(time.Minute)}, false},
		{"report that changes nothing", healthy, Report{Pool: "p", TokenID: "a", Outcome: OutcomeOK, At: t0.Add(time.Second)}, true},
	}
	for _, tt := range tests {
		if got := Covered(tt.t, tt.r); got != tt.want {
			t.Errorf("%s: Covered = %v, want %v", tt.name, got, tt.want)
		}
	}
}
