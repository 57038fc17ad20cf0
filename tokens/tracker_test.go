package tokens

import (
	"strings"
	"testing"
	"time"
)

var healthyAtStart = Health{State: Healthy, Since: t0.Add(-time.Hour)}

// use is a report of outcome o by reporter at t.
func use(o Outcome, at time.Time, reporter string) Report {
	return Report{Pool: "p", TokenID: "a", Outcome: o, Reporter: reporter, At: at}
}

var seqOutcomes = map[rune]Outcome{'o': OutcomeOK, 'e': OutcomeError, 't': OutcomeTimeout, 'r': OutcomeRateLimited}

// feed reports the uses in seq one second apart, the first at start:
// 'o' ok, 'e' error, 't' timeout, 'r' rate_limited without a deadline.
// Each changing verdict is committed, as the leader would. It returns the
// final health, the last verdict and the times health changed.
func feed(t *testing.T, tr *Tracker, p HealthPolicy, cur Health, start time.Time, seq string) (Health, Verdict, []time.Time) {
	t.Helper()
	var v Verdict
	var changes []time.Time
	for i, c := range seq {
		o, ok := seqOutcomes[c]
		if !ok {
			t.Fatalf("bad sequence %q", seq)
		}
		at := start.Add(time.Duration(i) * time.Second)
		v = tr.Observe(p, cur, use(o, at, "node-0"), false)
		if v.Change != (v.Health != cur) {
			t.Fatalf("use %d (%s): verdict %+v says Change=%v against current %+v", i, o, v, v.Change, cur)
		}
		if v.Change {
			if v.Detail != "" {
				t.Fatalf("use %d: changing verdict has detail %q", i, v.Detail)
			}
			cur = v.Health
			changes = append(changes, at)
		}
	}
	return cur, v, changes
}

// TestTrackerDegradedThreshold: with the defaults a token is degraded while
// at least 5 of its last 20 error/timeout/ok outcomes failed and they are
// at least half of them.
func TestTrackerDegradedThreshold(t *testing.T) {
	tests := []struct {
		name   string
		seq    string
		want   HealthState
		reason string
	}{
		{"nothing but ok", strings.Repeat("o", 30), Healthy, ""},
		{"4 failures of 4: too few", "eeee", Healthy, ""},
		{"5 failures of 5", "eeeee", Degraded, "5 of the last 5 uses failed"},
		{"timeouts count as failures", "ttett", Degraded, "5 of the last 5 uses failed"},
		{"4 failures of 20", strings.Repeat("o", 16) + "eeee", Healthy, ""},
		{"5 failures of 20: 25 % is below half", strings.Repeat("o", 15) + "eeeee", Healthy, ""},
		{"9 failures of 20", strings.Repeat("o", 11) + strings.Repeat("e", 9), Healthy, ""},
		{"10 failures of 20: exactly half", strings.Repeat("o", 10) + strings.Repeat("e", 10), Degraded, "10 of the last 20 uses failed"},
		{"5 failures of 10: exactly half", "ooooo" + "eeeee", Degraded, "5 of the last 10 uses failed"},
		{"5 failures of 11 recovers", "eeeee" + "oooooo", Healthy, "recovered: 5 of the last 11 uses failed"},
		{"5 failures of 10 stays degraded", "eeeee" + "ooooo", Degraded, "5 of the last 5 uses failed"},
		{"interleaved, 6 failures of 12", "eoeoeoeoeoeo", Degraded, "5 of the last 9 uses failed"},
		{"interleaved, 6 failures of 13 recovers", "eoeoeoeoeoeoo", Healthy, "recovered: 6 of the last 13 uses failed"},
		// The window keeps the last 20: old failures pushed out by new ok's
		// recover the token. Without the window it would be 20 of 31.
		{"20 failures then 10 ok: 10 of the last 20", strings.Repeat("e", 20) + strings.Repeat("o", 10), Degraded, "5 of the last 5 uses failed"},
		{"20 failures then 11 ok: 9 of the last 20", strings.Repeat("e", 20) + strings.Repeat("o", 11), Healthy, "recovered: 9 of the last 20 uses failed"},
		{"degraded again after recovering", "eeeee" + "oooooo" + "eeeeee", Degraded, "6 of the last 12 uses failed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var tr Tracker
			got, _, _ := feed(t, &tr, HealthPolicy{}, healthyAtStart, t0, tt.seq)
			if got.State != tt.want {
				t.Fatalf("after %q health is %+v, want %s", tt.seq, got, tt.want)
			}
			if tt.reason != "" && got.Reason != tt.reason {
				t.Fatalf("after %q reason is %q, want %q", tt.seq, got.Reason, tt.reason)
			}
		})
	}
}

// A token is degraded from the use that crossed the threshold, and healthy
// again from the one that brought the rate down; nothing else commits.
func TestTrackerChangesOnlyWhenCrossing(t *testing.T) {
	var tr Tracker
	seq := "eeee" + "e" + "eee" + "oooooooo" + "o" + "oo"
	got, _, changes := feed(t, &tr, HealthPolicy{}, healthyAtStart, t0, seq)
	want := []time.Time{t0.Add(4 * time.Second), t0.Add(16 * time.Second)}
	if len(changes) != len(want) || !changes[0].Equal(want[0]) || !changes[1].Equal(want[1]) {
		t.Fatalf("health changed at %v, want %v", changes, want)
	}
	wantH := Health{State: Healthy, Reason: "recovered: 8 of the last 17 uses failed", Since: want[1]}
	if got != wantH {
		t.Fatalf("health is %+v, want %+v", got, wantH)
	}
}

func TestTrackerCustomPolicy(t *testing.T) {
	small := HealthPolicy{Window: 4, DegradedFailures: 2, DegradedRatio: 0.75}
	tests := []struct {
		name string
		p    HealthPolicy
		seq  string
		want HealthState
	}{
		{"one failure is not enough", small, "e", Healthy},
		{"2 of 2", small, "ee", Degraded},
		{"2 of 3 is below 75 %", small, "eoe", Healthy},
		{"2 of 4 is below 75 %", small, "ooee", Healthy},
		{"3 of 4", small, "oeee", Degraded},
		{"window 4: the early ok's are forgotten", small, "oooooeee", Degraded},
		{"window 4: 2 of the last 4 recovers", small, "eeeeoo", Healthy},
		{"window 4: 3 of the last 4 stays degraded", small, "eeeeo", Degraded},
		// The ratio is compared exactly: 14 of 25 is 56 %.
		{"14 of 25 at 56 %", HealthPolicy{Window: 25, DegradedFailures: 1, DegradedRatio: 0.56}, strings.Repeat("o", 11) + strings.Repeat("e", 14), Degraded},
		{"13 of 25 below 56 %", HealthPolicy{Window: 25, DegradedFailures: 1, DegradedRatio: 0.56}, strings.Repeat("o", 12) + strings.Repeat("e", 13), Healthy},
		{"7 of 50 at 14 %", HealthPolicy{Window: 50, DegradedFailures: 1, DegradedRatio: 0.14}, strings.Repeat("o", 43) + strings.Repeat("e", 7), Degraded},
		{"ratio 1: every use failed", HealthPolicy{Window: 3, DegradedRatio: 1}, "eee", Degraded},
		{"ratio 1: one ok is enough", HealthPolicy{Window: 3, DegradedRatio: 1}, "eeeo", Healthy},
		// A window smaller than 5 lowers the default failure count to the
		// window.
		{"window 3, default failures: 3 of 3", HealthPolicy{Window: 3}, "eee", Degraded},
		{"window 3, default failures: 2 of 2", HealthPolicy{Window: 3}, "ee", Healthy},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var tr Tracker
			got, _, _ := feed(t, &tr, tt.p, healthyAtStart, t0, tt.seq)
			if got.State != tt.want {
				t.Fatalf("%+v after %q: health is %+v, want %s", tt.p, tt.seq, got, tt.want)
			}
		})
	}
}

// Degraded replaces only healthy: a failed token or one in an active
// cooldown keeps its health, and ok's never revive a failed one.
func TestTrackerDegradedDoesNotOverride(t *testing.T) {
	failed := Health{State: Failed, Reason: "unauthorized", Since: t0.Add(-time.Hour), Reporter: "node-9"}
	cooling := Health{State: Cooldown, Reason: "rate_limited", Since: t0, Until: t0.Add(time.Hour), Reporter: "node-9"}
	expired := Health{State: Cooldown, Reason: "rate_limited", Since: t0.Add(-time.Hour), Until: t0.Add(-time.Second)}
	tests := []struct {
		name string
		cur  Health
		seq  string
		want HealthState
	}{
		{"failures on a failed token", failed, "eeeeeeeeee", Failed},
		{"ok's on a failed token", failed, "oooooooooo", Failed},
		{"failures in an active cooldown", cooling, "eeeeeeeeee", Cooldown},
		{"ok's in an active cooldown", cooling, "oooooooooo", Cooldown},
		{"failures after a cooldown ended", expired, "eeeee", Degraded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var tr Tracker
			got, _, changes := feed(t, &tr, HealthPolicy{}, tt.cur, t0, tt.seq)
			if got.State != tt.want {
				t.Fatalf("health is %+v, want %s", got, tt.want)
			}
			if tt.want == tt.cur.State && (len(changes) != 0 || got != tt.cur) {
				t.Fatalf("health changed at %v to %+v, want %+v kept", changes, got, tt.cur)
			}
		})
	}

	// Once the cooldown ends, the remembered failures make it degraded.
	var tr Tracker
	p := HealthPolicy{OutcomeTTL: Duration(2 * time.Hour)}
	got, _, _ := feed(t, &tr, p, cooling, t0, "eeeee")
	if v := tr.Tick(p, got, cooling.Until.Add(-time.Nanosecond)); v.Change {
		t.Fatalf("tick before the cooldown ends: %+v, want no change", v)
	}
	v := tr.Tick(p, got, cooling.Until)
	want := Health{State: Degraded, Reason: "5 of the last 5 uses failed", Since: cooling.Until}
	if !v.Change || v.Health != want {
		t.Fatalf("tick as the cooldown ends: %+v, want %+v", v, want)
	}
}

// Outcomes older than outcome_ttl are forgotten at Tick, so a degraded
// token that nobody uses any more recovers without another report.
func TestTrackerTickForgetsOldOutcomes(t *testing.T) {
	tests := []struct {
		name string
		p    HealthPolicy
		ttl  time.Duration
	}{
		{"default ttl", HealthPolicy{}, DefaultOutcomeTTL},
		{"ttl 1m", HealthPolicy{OutcomeTTL: Duration(time.Minute)}, time.Minute},
		{"ttl 1h", HealthPolicy{OutcomeTTL: Duration(time.Hour)}, time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var tr Tracker
			// Failures at t0 .. t0+4s, then one ok at t0+5s.
			cur, _, _ := feed(t, &tr, tt.p, healthyAtStart, t0, "eeeeeo")
			if cur.State != Degraded {
				t.Fatalf("health is %+v, want degraded", cur)
			}
			steps := []struct {
				now    time.Time
				want   Health
				change bool
				idle   bool
			}{
				// Nothing is older than the TTL yet.
				{t0.Add(tt.ttl), cur, false, false},
				// The failure at t0 is forgotten: 4 of 5.
				{t0.Add(tt.ttl + time.Nanosecond), Health{State: Healthy, Reason: "recovered: 4 of the last 5 uses failed", Since: t0.Add(tt.ttl + time.Nanosecond)}, true, false},
				// Everything is forgotten.
				{t0.Add(tt.ttl + 5*time.Second + time.Nanosecond), Health{State: Healthy, Reason: "recovered: 4 of the last 5 uses failed", Since: t0.Add(tt.ttl + time.Nanosecond)}, false, true},
			}
			for i, s := range steps {
				v := tr.Tick(tt.p, cur, s.now)
				if v.Change != s.change || v.Health != s.want {
					t.Fatalf("step %d: Tick(%v) = %+v, want %+v (change %v)", i, s.now, v, s.want, s.change)
				}
				cur = v.Health
				if tr.Idle() != s.idle {
					t.Fatalf("step %d: Idle = %v, want %v", i, tr.Idle(), s.idle)
				}
			}
		})
	}
}

// A token degraded by outcomes that are all forgotten at once recovers with
// nothing left to count.
func TestTrackerTickRecoversUnusedToken(t *testing.T) {
	var tr Tracker
	p := HealthPolicy{OutcomeTTL: Duration(time.Minute)}
	cur, _, _ := feed(t, &tr, p, healthyAtStart, t0, "eeeee")
	now := t0.Add(10 * time.Minute)
	v := tr.Tick(p, cur, now)
	want := Health{State: Healthy, Reason: "recovered: no recent uses failed", Since: now}
	if !v.Change || v.Health != want {
		t.Fatalf("Tick = %+v, want %+v", v, want)
	}
	if !tr.Idle() {
		t.Fatal("tracker is not idle after forgetting everything")
	}
	// A healthy token with nothing remembered stays as it is.
	if v := tr.Tick(p, v.Health, now.Add(time.Hour)); v.Change || v.Health != want {
		t.Fatalf("second Tick = %+v, want no change", v)
	}
}

// Forgetting also applies to outcomes reported after a quiet spell: the new
// report's time is what counts.
func TestTrackerObserveForgetsOldOutcomes(t *testing.T) {
	var tr Tracker
	p := HealthPolicy{OutcomeTTL: Duration(time.Minute)}
	cur, _, _ := feed(t, &tr, p, healthyAtStart, t0, "eeee")
	// One more failure, long after: the first four are forgotten.
	cur, _, _ = feed(t, &tr, p, cur, t0.Add(time.Hour), "e")
	if cur.State != Healthy {
		t.Fatalf("health is %+v, want healthy: the old failures are past the TTL", cur)
	}
	cur, _, _ = feed(t, &tr, p, cur, t0.Add(time.Hour+time.Second), "eeee")
	if cur.State != Degraded || cur.Reason != "5 of the last 5 uses failed" {
		t.Fatalf("health is %+v, want degraded with 5 of 5", cur)
	}
}

// failure is one unauthorized or forbidden report in a quorum scenario.
type failure struct {
	reporter string
	at       time.Duration // after t0
	outcome  Outcome       // unauthorized when empty
}

func TestTrackerReportQuorum(t *testing.T) {
	tests := []struct {
		name         string
		p            HealthPolicy
		lastEligible bool
		reports      []failure
		// failsAt is the index of the report that fails the token, -1 for
		// none.
		failsAt int
		reason  string
		// detail is in the last verdict when the token did not fail.
		detail string
	}{
		{"default quorum 1: one report fails", HealthPolicy{}, false,
			[]failure{{reporter: "a"}}, 0, "unauthorized", ""},
		{"quorum 1: forbidden fails", HealthPolicy{ReportQuorum: 1}, false,
			[]failure{{reporter: "a", outcome: OutcomeForbidden}}, 0, "forbidden", ""},
		{"quorum 2: one agent is not enough", HealthPolicy{ReportQuorum: 2}, false,
			[]failure{{reporter: "a"}}, -1, "", "awaiting quorum: 1 of 2 agents reported it within 5m0s"},
		{"quorum 2: the same agent twice is not enough", HealthPolicy{ReportQuorum: 2}, false,
			[]failure{{reporter: "a"}, {reporter: "a", at: time.Second}, {reporter: "a", at: time.Minute}}, -1, "", "awaiting quorum: 1 of 2 agents"},
		{"quorum 2: two agents", HealthPolicy{ReportQuorum: 2}, false,
			[]failure{{reporter: "a"}, {reporter: "b", at: time.Minute}}, 1, "unauthorized (reported by 2 agents)", ""},
		{"quorum 2: unauthorized and forbidden agree", HealthPolicy{ReportQuorum: 2}, false,
			[]failure{{reporter: "a"}, {reporter: "b", at: time.Second, outcome: OutcomeForbidden}}, 1, "forbidden (reported by 2 agents)", ""},
		{"quorum 2: second agent at the window's edge", HealthPolicy{ReportQuorum: 2}, false,
			[]failure{{reporter: "a"}, {reporter: "b", at: DefaultReportWindow}}, 1, "unauthorized (reported by 2 agents)", ""},
		{"quorum 2: second agent just outside the window", HealthPolicy{ReportQuorum: 2}, false,
			[]failure{{reporter: "a"}, {reporter: "b", at: DefaultReportWindow + time.Nanosecond}}, -1, "", "awaiting quorum: 1 of 2 agents reported it within 5m0s"},
		{"quorum 2: a repeated report renews an agent's vote", HealthPolicy{ReportQuorum: 2}, false,
			[]failure{{reporter: "a"}, {reporter: "b", at: 6 * time.Minute}, {reporter: "a", at: 7 * time.Minute}}, 2, "unauthorized (reported by 2 agents)", ""},
		{"quorum 2: a repeated report within the window renews an agent's vote", HealthPolicy{ReportQuorum: 2}, false,
			[]failure{{reporter: "a"}, {reporter: "a", at: 4 * time.Minute}, {reporter: "b", at: 8 * time.Minute}}, 2, "unauthorized (reported by 2 agents)", ""},
		{"quorum 2: a late, older report does not replace an agent's newer one", HealthPolicy{ReportQuorum: 2}, false,
			[]failure{{reporter: "a", at: 4 * time.Minute}, {reporter: "a"}, {reporter: "b", at: 8 * time.Minute}}, 2, "unauthorized (reported by 2 agents)", ""},
		{"quorum 2: custom window 1m", HealthPolicy{ReportQuorum: 2, ReportWindow: Duration(time.Minute)}, false,
			[]failure{{reporter: "a"}, {reporter: "b", at: 61 * time.Second}}, -1, "", "awaiting quorum: 1 of 2 agents reported it within 1m0s"},
		// Reports may reach the leader out of order; the window still bounds
		// how far apart the agreeing reports are.
		{"quorum 2: a late report far older than the other", HealthPolicy{ReportQuorum: 2}, false,
			[]failure{{reporter: "a", at: 10 * time.Minute}, {reporter: "b"}}, -1, "", "awaiting quorum: 1 of 2"},
		{"quorum 2: a late report within the window", HealthPolicy{ReportQuorum: 2}, false,
			[]failure{{reporter: "a", at: 4 * time.Minute}, {reporter: "b"}}, 1, "unauthorized (reported by 2 agents)", ""},
		{"quorum 3: three agents", HealthPolicy{ReportQuorum: 3}, false,
			[]failure{{reporter: "a"}, {reporter: "b", at: time.Second}, {reporter: "c", at: 2 * time.Second}}, 2, "unauthorized (reported by 3 agents)", ""},
		{"quorum 3: two agents, one twice", HealthPolicy{ReportQuorum: 3}, false,
			[]failure{{reporter: "a"}, {reporter: "b", at: time.Second}, {reporter: "b", at: 2 * time.Second}}, -1, "", "awaiting quorum: 2 of 3 agents reported it within 5m0s"},
		{"quorum 3: the first report fell out of the window", HealthPolicy{ReportQuorum: 3, ReportWindow: Duration(time.Minute)}, false,
			[]failure{{reporter: "a"}, {reporter: "b", at: 30 * time.Second}, {reporter: "c", at: 61 * time.Second}}, -1, "", "awaiting quorum: 2 of 3 agents reported it within 1m0s"},

		// The last eligible token needs two agents whatever the quorum.
		{"last eligible: one agent changes nothing", HealthPolicy{}, true,
			[]failure{{reporter: "a"}}, -1, "", "last eligible token of its pool: it fails only when a second agent reports it within 5m0s"},
		{"last eligible: the same agent twice changes nothing", HealthPolicy{}, true,
			[]failure{{reporter: "a"}, {reporter: "a", at: time.Second}}, -1, "", "second agent"},
		{"last eligible: a second agent fails it", HealthPolicy{}, true,
			[]failure{{reporter: "a"}, {reporter: "b", at: time.Second}}, 1, "unauthorized (reported by 2 agents)", ""},
		{"last eligible: a second agent outside the window", HealthPolicy{}, true,
			[]failure{{reporter: "a"}, {reporter: "b", at: 6 * time.Minute}}, -1, "", "second agent reports it within 5m0s"},
		{"last eligible, quorum 2", HealthPolicy{ReportQuorum: 2}, true,
			[]failure{{reporter: "a"}}, -1, "", "awaiting quorum: 1 of 2 agents"},
		{"last eligible, quorum 3: two agents are not enough", HealthPolicy{ReportQuorum: 3}, true,
			[]failure{{reporter: "a"}, {reporter: "b", at: time.Second}}, -1, "", "awaiting quorum: 2 of 3 agents"},
		{"last eligible, quorum 3: three agents", HealthPolicy{ReportQuorum: 3}, true,
			[]failure{{reporter: "a"}, {reporter: "b", at: time.Second}, {reporter: "c", at: 2 * time.Second}}, 2, "unauthorized (reported by 3 agents)", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var tr Tracker
			cur := healthyAtStart
			failsAt := -1
			var last Verdict
			for i, f := range tt.reports {
				o := f.outcome
				if o == "" {
					o = OutcomeUnauthorized
				}
				r := use(o, t0.Add(f.at), f.reporter)
				v := tr.Observe(tt.p, cur, r, tt.lastEligible)
				last = v
				if !v.Change {
					if v.Health != cur {
						t.Fatalf("report %d: verdict %+v without change differs from the current health %+v", i, v, cur)
					}
					continue
				}
				if failsAt >= 0 {
					t.Fatalf("report %d changed health again: %+v", i, v)
				}
				failsAt = i
				want := Health{State: Failed, Reason: tt.reason, Since: r.At, Reporter: r.Reporter}
				if v.Health != want || v.Detail != "" {
					t.Fatalf("report %d: verdict %+v, want health %+v and no detail", i, v, want)
				}
				cur = v.Health
			}
			if failsAt != tt.failsAt {
				t.Fatalf("failed at report %d, want %d (last verdict %+v)", failsAt, tt.failsAt, last)
			}
			if tt.failsAt < 0 && !strings.Contains(last.Detail, tt.detail) {
				t.Fatalf("last detail %q does not contain %q", last.Detail, tt.detail)
			}
		})
	}
}

// Whether the token is the last eligible one is decided per report: a first
// report made while other tokens could serve still counts toward the two
// agents once the token is the last one.
func TestTrackerLastEligibleCountsEarlierReports(t *testing.T) {
	var tr Tracker
	p := HealthPolicy{ReportQuorum: 2}
	cur := healthyAtStart
	if v := tr.Observe(p, cur, use(OutcomeForbidden, t0, "a"), false); v.Change {
		t.Fatalf("first report: %+v, want no change under quorum 2", v)
	}
	v := tr.Observe(p, cur, use(OutcomeForbidden, t0.Add(time.Second), "b"), true)
	if !v.Change || v.Health.State != Failed || v.Health.Reason != "forbidden (reported by 2 agents)" {
		t.Fatalf("second agent: %+v, want failed by 2 agents", v)
	}
}

// A failure report on a token that is already failed changes nothing.
func TestTrackerFailureOnFailedToken(t *testing.T) {
	var tr Tracker
	failed := Health{State: Failed, Reason: "unauthorized", Since: t0.Add(-time.Hour), Reporter: "x"}
	v := tr.Observe(HealthPolicy{}, failed, use(OutcomeForbidden, t0, "a"), false)
	if v.Change || v.Health != failed {
		t.Fatalf("Observe = %+v, want the failed health kept", v)
	}
	// A cooling-down token fails.
	cooling := Health{State: Cooldown, Reason: "rate_limited", Since: t0, Until: t0.Add(time.Hour)}
	v = tr.Observe(HealthPolicy{}, cooling, use(OutcomeUnauthorized, t0.Add(time.Second), "a"), false)
	if !v.Change || v.Health.State != Failed {
		t.Fatalf("Observe on a cooldown = %+v, want failed", v)
	}
}

func TestTrackerRateLimited(t *testing.T) {
	cooling := Health{State: Cooldown, Reason: "rate_limited", Since: t0.Add(-time.Minute), Until: t0.Add(time.Minute), Reporter: "x"}
	failed := Health{State: Failed, Reason: "forbidden", Since: t0.Add(-time.Hour)}
	rl := func(until time.Time) Report {
		r := use(OutcomeRateLimited, t0, "a")
		r.Until = until
		return r
	}
	tests := []struct {
		name         string
		p            HealthPolicy
		cur          Health
		r            Report
		lastEligible bool
		want         Health
		change       bool
	}{
		{"retry_after gives the deadline", HealthPolicy{}, healthyAtStart, rl(t0.Add(90 * time.Second)), false,
			Health{State: Cooldown, Reason: "rate_limited", Since: t0, Until: t0.Add(90 * time.Second), Reporter: "a"}, true},
		{"no deadline: the default cooldown", HealthPolicy{}, healthyAtStart, rl(time.Time{}), false,
			Health{State: Cooldown, Reason: "rate_limited", Since: t0, Until: t0.Add(DefaultCooldown), Reporter: "a"}, true},
		{"no deadline: the pool's default cooldown", HealthPolicy{DefaultCooldown: Duration(5 * time.Minute)}, healthyAtStart, rl(time.Time{}), false,
			Health{State: Cooldown, Reason: "rate_limited", Since: t0, Until: t0.Add(5 * time.Minute), Reporter: "a"}, true},
		{"the pool's default does not override retry_after", HealthPolicy{DefaultCooldown: Duration(5 * time.Minute)}, healthyAtStart, rl(t0.Add(time.Second)), false,
			Health{State: Cooldown, Reason: "rate_limited", Since: t0, Until: t0.Add(time.Second), Reporter: "a"}, true},
		{"the last eligible token cools down on one report", HealthPolicy{}, healthyAtStart, rl(t0.Add(time.Minute)), true,
			Health{State: Cooldown, Reason: "rate_limited", Since: t0, Until: t0.Add(time.Minute), Reporter: "a"}, true},
		{"a later deadline extends a cooldown", HealthPolicy{}, cooling, rl(t0.Add(time.Hour)), false,
			Health{State: Cooldown, Reason: "rate_limited", Since: cooling.Since, Until: t0.Add(time.Hour), Reporter: "a"}, true},
		{"an earlier deadline leaves a cooldown", HealthPolicy{}, cooling, rl(t0.Add(time.Second)), false, cooling, false},
		{"a default cooldown shorter than the current one leaves it", HealthPolicy{DefaultCooldown: Duration(time.Second)}, cooling, rl(time.Time{}), false, cooling, false},
		{"a failed token stays failed", HealthPolicy{}, failed, rl(t0.Add(time.Hour)), false, failed, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var tr Tracker
			v := tr.Observe(tt.p, tt.cur, tt.r, tt.lastEligible)
			if v.Health != tt.want || v.Change != tt.change {
				t.Fatalf("Observe = %+v, want %+v (change %v)", v, tt.want, tt.change)
			}
			if !tr.Idle() {
				t.Fatal("a rate_limited report left something in the tracker")
			}
		})
	}
}

// rate_limited is neither a failure nor a success in the error rate.
func TestTrackerRateLimitedDoesNotCount(t *testing.T) {
	var tr Tracker
	p := HealthPolicy{}
	// 4 failures, 20 short cooldowns, 1 failure once the last cooldown is
	// over: 5 of the last 5. Counted as ok's the rate limits would make it
	// 1 of the last 20, counted as failures 20 of 20.
	cur, _, _ := feed(t, &tr, p, healthyAtStart, t0, "eeee")
	for i := range 20 {
		at := t0.Add(time.Duration(4+i) * time.Second)
		r := use(OutcomeRateLimited, at, "node-0")
		r.Until = at.Add(time.Second)
		if v := tr.Observe(p, cur, r, false); v.Change {
			cur = v.Health
		}
	}
	if cur.State != Cooldown || !cur.Until.Equal(t0.Add(24*time.Second)) {
		t.Fatalf("health is %+v, want a cooldown until t0+24s", cur)
	}
	cur, _, _ = feed(t, &tr, p, cur, t0.Add(30*time.Second), "e")
	if cur.State != Degraded || cur.Reason != "5 of the last 5 uses failed" {
		t.Fatalf("health is %+v, want degraded with 5 of the last 5: rate_limited must not count", cur)
	}
}

func TestTrackerIdle(t *testing.T) {
	p := HealthPolicy{OutcomeTTL: Duration(time.Minute), ReportWindow: Duration(2 * time.Minute), ReportQuorum: 2}
	var tr Tracker
	if !tr.Idle() {
		t.Fatal("a new tracker is not idle")
	}
	cur := healthyAtStart
	tr.Observe(p, cur, use(OutcomeOK, t0, "a"), false)
	if tr.Idle() {
		t.Fatal("idle after an ok")
	}
	tr.Observe(p, cur, use(OutcomeUnauthorized, t0, "a"), false)
	steps := []struct {
		now  time.Time
		idle bool
	}{
		{t0.Add(time.Minute), false},
		// The ok is forgotten, the failure report is not.
		{t0.Add(time.Minute + time.Nanosecond), false},
		{t0.Add(2 * time.Minute), false},
		{t0.Add(2*time.Minute + time.Nanosecond), true},
	}
	for i, s := range steps {
		if v := tr.Tick(p, cur, s.now); v.Change {
			t.Fatalf("step %d: Tick changed health: %+v", i, v)
		}
		if tr.Idle() != s.idle {
			t.Fatalf("step %d: Idle at %v = %v, want %v", i, s.now, tr.Idle(), s.idle)
		}
	}
	// A forgotten failure report no longer counts toward the quorum.
	if v := tr.Observe(p, cur, use(OutcomeUnauthorized, t0.Add(3*time.Minute), "b"), false); v.Change {
		t.Fatalf("after forgetting, one agent failed the token under quorum 2: %+v", v)
	}
}

// The leader's probe is an independent signal: a failing probe fails even
// a pool's last eligible token with no quorum, and a passing probe brings a
// failed token back.
func TestTrackerProbe(t *testing.T) {
	p := HealthPolicy{ReportQuorum: 3}
	var tr Tracker
	healthy := Health{State: Healthy, Since: t0}
	v := tr.Observe(p, healthy, Report{Outcome: OutcomeUnauthorized, Reporter: ProbeReporter, At: t0.Add(time.Second)}, true)
	if !v.Change || v.Health.State != Failed || v.Health.Reporter != ProbeReporter {
		t.Fatalf("failing probe on the last eligible token = %+v, want failed", v)
	}
	failed := v.Health
	// A client's ok report does not revive it; the probe's does.
	if v := tr.Observe(p, failed, Report{Outcome: OutcomeOK, Reporter: "node1", At: t0.Add(2 * time.Second)}, false); v.Change {
		t.Fatalf("a client's ok revived a failed token: %+v", v)
	}
	v = tr.Observe(p, failed, Report{Outcome: OutcomeOK, Reporter: ProbeReporter, At: t0.Add(3 * time.Second)}, false)
	if !v.Change || v.Health.State != Healthy || v.Health.Reason != "probe passed" {
		t.Fatalf("passing probe on a failed token = %+v, want healthy", v)
	}
	// Merge keeps the rule whatever order decisions commit in.
	if h, changed := Merge(failed, Health{State: Healthy, Reason: "recovered", Since: t0.Add(4 * time.Second)}); changed {
		t.Fatalf("a non-probe healthy revived a failed token: %+v", h)
	}
}
