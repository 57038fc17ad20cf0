package tokens

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// Merge outcomes in the matrix below.
const (
	keep   = "keep"   // cur back, changed false
	take   = "take"   // next back, changed true
	extend = "extend" // next with cur's Since, changed true
)

// TestMergeMatrix applies every kind of decision to every kind of current
// health. Every decision is made at t0.
func TestMergeMatrix(t *testing.T) {
	curs := []struct {
		name string
		h    Health
	}{
		{"zero", Health{}},
		{"healthy", Health{State: Healthy, Since: t0.Add(-time.Hour)}},
		{"degraded", Health{State: Degraded, Reason: "5 of the last 5 uses failed", Since: t0.Add(-time.Hour)}},
		{"active cooldown", Health{State: Cooldown, Reason: "rate_limited", Since: t0.Add(-time.Minute), Until: t0.Add(time.Minute), Reporter: "node-0"}},
		{"expired cooldown", Health{State: Cooldown, Reason: "rate_limited", Since: t0.Add(-time.Hour), Until: t0.Add(-time.Minute), Reporter: "node-0"}},
		{"failed", Health{State: Failed, Reason: "unauthorized", Since: t0.Add(-time.Hour), Reporter: "node-0"}},
	}
	cooldown := func(until time.Time) Health {
		return Health{State: Cooldown, Reason: "rate_limited", Since: t0, Until: until, Reporter: "node-1"}
	}
	nexts := []struct {
		name string
		h    Health
	}{
		{"healthy", Health{State: Healthy, Reason: "recovered: 0 of the last 3 uses failed", Since: t0}},
		{"degraded", Health{State: Degraded, Reason: "5 of the last 6 uses failed", Since: t0}},
		// Earlier, equal and later than the active cooldown's deadline
		// (t0+1m); all of them after the expired one's.
		{"cooldown earlier", cooldown(t0.Add(30 * time.Second))},
		{"cooldown equal", cooldown(t0.Add(time.Minute))},
		{"cooldown later", cooldown(t0.Add(time.Hour))},
		{"cooldown until = since", cooldown(t0)},
		{"cooldown until < since", cooldown(t0.Add(-time.Second))},
		{"cooldown without until", cooldown(time.Time{})},
		{"failed", Health{State: Failed, Reason: "forbidden", Since: t0, Reporter: "node-1"}},
		{"unknown state", Health{State: "bogus", Since: t0}},
	}
	// want[cur][next], in the order of curs and nexts.
	want := map[string][]string{
		//                   healthy degraded earlier equal later  u=s   u<s   no-until failed unknown
		"zero":             {keep, take, take, take, take, keep, keep, keep, take, keep},
		"healthy":          {keep, take, take, take, take, keep, keep, keep, take, keep},
		"degraded":         {take, keep, take, take, take, keep, keep, keep, take, keep},
		"active cooldown":  {keep, keep, keep, keep, extend, keep, keep, keep, take, keep},
		"expired cooldown": {keep, take, take, take, take, keep, keep, keep, take, keep},
		"failed":           {keep, keep, keep, keep, keep, keep, keep, keep, keep, keep},
	}
	if len(want) != len(curs) {
		t.Fatalf("matrix has %d rows for %d current states", len(want), len(curs))
	}
	for _, cur := range curs {
		row, ok := want[cur.name]
		if !ok || len(row) != len(nexts) {
			t.Fatalf("matrix row %q is missing or not %d long", cur.name, len(nexts))
		}
		for j, next := range nexts {
			t.Run(cur.name+" + "+next.name, func(t *testing.T) {
				got, changed := Merge(cur.h, next.h)
				switch row[j] {
				case keep:
					if changed || got != cur.h {
						t.Fatalf("Merge = %+v, %v; want the current health %+v, false", got, changed, cur.h)
					}
				case take:
					if !changed || got != next.h {
						t.Fatalf("Merge = %+v, %v; want the new health %+v, true", got, changed, next.h)
					}
				case extend:
					w := next.h
					w.Since = cur.h.Since
					if !changed || got != w {
						t.Fatalf("Merge = %+v, %v; want %+v (the cooldown's start kept), true", got, changed, w)
					}
				}
			})
		}
	}
}

// TestMergeBoundaries covers the instants where a cooldown ends and
// decisions that are older than the current health.
func TestMergeBoundaries(t *testing.T) {
	until := t0.Add(time.Minute)
	cooling := Health{State: Cooldown, Reason: "rate_limited", Since: t0, Until: until, Reporter: "node-0"}
	tests := []struct {
		name    string
		cur     Health
		next    Health
		want    Health
		changed bool
	}{
		{
			"degraded one nanosecond before the cooldown ends is ignored",
			cooling, Health{State: Degraded, Since: until.Add(-time.Nanosecond)},
			cooling, false,
		},
		{
			"degraded at the instant the cooldown ends applies",
			cooling, Health{State: Degraded, Since: until},
			Health{State: Degraded, Since: until}, true,
		},
		{
			"a cooldown starting as the old one ends is a new cooldown",
			cooling, Health{State: Cooldown, Reason: "rate_limited", Since: until, Until: until.Add(time.Second), Reporter: "node-1"},
			Health{State: Cooldown, Reason: "rate_limited", Since: until, Until: until.Add(time.Second), Reporter: "node-1"}, true,
		},
		{
			"a cooldown starting just before the old one ends extends it",
			cooling, Health{State: Cooldown, Reason: "rate_limited", Since: until.Add(-time.Nanosecond), Until: until.Add(time.Second), Reporter: "node-1"},
			Health{State: Cooldown, Reason: "rate_limited", Since: t0, Until: until.Add(time.Second), Reporter: "node-1"}, true,
		},
		{
			"a later deadline made before the cooldown started extends it, keeping its start",
			cooling, Health{State: Cooldown, Reason: "rate_limited", Since: t0.Add(-time.Second), Until: t0.Add(time.Hour), Reporter: "node-1"},
			Health{State: Cooldown, Reason: "rate_limited", Since: t0, Until: t0.Add(time.Hour), Reporter: "node-1"}, true,
		},
		{
			"a one-nanosecond cooldown is a cooldown",
			Health{State: Healthy, Since: t0.Add(-time.Hour)}, Health{State: Cooldown, Since: t0, Until: t0.Add(time.Nanosecond)},
			Health{State: Cooldown, Since: t0, Until: t0.Add(time.Nanosecond)}, true,
		},
		{
			"a cooldown without a deadline is healthy: degraded applies",
			Health{State: Cooldown, Since: t0.Add(-time.Hour)}, Health{State: Degraded, Since: t0},
			Health{State: Degraded, Since: t0}, true,
		},
		{
			"failed stays failed whatever the time of the decision",
			Health{State: Failed, Since: t0}, Health{State: Healthy, Since: t0.Add(time.Hour)},
			Health{State: Failed, Since: t0}, false,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, changed := Merge(tt.cur, tt.next)
			if got != tt.want || changed != tt.changed {
				t.Fatalf("Merge(%+v, %+v) = %+v, %v; want %+v, %v", tt.cur, tt.next, got, changed, tt.want, tt.changed)
			}
		})
	}
}

func TestTarget(t *testing.T) {
	at := t0
	until := t0.Add(time.Minute)
	tests := []struct {
		outcome Outcome
		want    Health
		ok      bool
	}{
		{OutcomeUnauthorized, Health{State: Failed, Reason: "unauthorized", Since: at, Reporter: "node-1"}, true},
		{OutcomeForbidden, Health{State: Failed, Reason: "forbidden", Since: at, Reporter: "node-1"}, true},
		{OutcomeRateLimited, Health{State: Cooldown, Reason: "rate_limited", Since: at, Until: until, Reporter: "node-1"}, true},
		{OutcomeOK, Health{}, false},
		{OutcomeError, Health{}, false},
		{OutcomeTimeout, Health{}, false},
		{"bogus", Health{}, false},
	}
	for _, tt := range tests {
		r := Report{Pool: "p", TokenID: "a", Outcome: tt.outcome, Until: until, Reporter: "node-1", At: at}
		got, ok := Target(r)
		if got != tt.want || ok != tt.ok {
			t.Errorf("Target(%s) = %+v, %v; want %+v, %v", tt.outcome, got, ok, tt.want, tt.ok)
		}
	}
}

// Transition is Merge of the report's Target, for every current health and
// every report.
func TestTransitionIsMergeOfTarget(t *testing.T) {
	curs := []Health{
		{},
		{State: Healthy, Since: t0.Add(-time.Hour)},
		{State: Degraded, Since: t0.Add(-time.Hour)},
		{State: Cooldown, Reason: "rate_limited", Since: t0.Add(-time.Minute), Until: t0.Add(time.Minute)},
		{State: Cooldown, Reason: "rate_limited", Since: t0.Add(-time.Hour), Until: t0.Add(-time.Minute)},
		{State: Failed, Reason: "forbidden", Since: t0.Add(-time.Hour)},
	}
	untils := []time.Time{{}, t0.Add(-time.Second), t0, t0.Add(30 * time.Second), t0.Add(time.Minute), t0.Add(time.Hour)}
	for _, cur := range curs {
		for _, o := range append(slices.Clone(outcomes), "bogus") {
			for _, until := range untils {
				r := Report{Pool: "p", TokenID: "a", Outcome: o, Until: until, Reporter: "node-1", At: t0}
				got, changed := Transition(cur, r)
				want, wantChanged := cur, false
				if target, ok := Target(r); ok {
					want, wantChanged = Merge(cur, target)
				}
				if got != want || changed != wantChanged {
					t.Errorf("Transition(%+v, %s until %v) = %+v, %v; Merge of its Target gives %+v, %v", cur, o, until, got, changed, want, wantChanged)
				}
			}
		}
	}
}

func TestAsOf(t *testing.T) {
	until := t0.Add(time.Minute)
	cooling := Health{State: Cooldown, Reason: "rate_limited", Since: t0, Until: until, Reporter: "node-0"}
	ended := Health{State: Healthy, Reason: "cooldown ended", Since: until}
	failed := Health{State: Failed, Reason: "unauthorized", Since: t0, Until: t0, Reporter: "node-0"}
	tests := []struct {
		name string
		h    Health
		now  time.Time
		want Health
	}{
		{"active cooldown", cooling, t0, cooling},
		{"cooldown's last nanosecond", cooling, until.Add(-time.Nanosecond), cooling},
		{"cooldown at its deadline", cooling, until, ended},
		{"cooldown long over", cooling, until.Add(24 * time.Hour), ended},
		{"failed is not a cooldown", failed, t0.Add(time.Hour), failed},
		{"degraded", Health{State: Degraded, Since: t0}, t0.Add(time.Hour), Health{State: Degraded, Since: t0}},
		{"zero", Health{}, t0, Health{}},
	}
	for _, tt := range tests {
		if got := tt.h.AsOf(tt.now); got != tt.want {
			t.Errorf("%s: AsOf = %+v, want %+v", tt.name, got, tt.want)
		}
		if got, want := tt.h.AsOf(tt.now).StateAt(tt.now), tt.h.StateAt(tt.now); got != want {
			t.Errorf("%s: AsOf(now).StateAt(now) = %s, StateAt(now) = %s", tt.name, got, want)
		}
	}
}

func TestResetHealth(t *testing.T) {
	want := Health{State: Healthy, Reason: "reset by operator", Since: t0, Reporter: "alice"}
	if got := ResetHealth(t0, "alice"); got != want {
		t.Fatalf("ResetHealth = %+v, want %+v", got, want)
	}
	// A reset is the operator's word: it is applied as is, not merged, so
	// the next report can fail the token again.
	got, changed := Merge(ResetHealth(t0, "alice"), Health{State: Failed, Reason: "unauthorized", Since: t0.Add(time.Second)})
	if !changed || got.State != Failed {
		t.Fatalf("unauthorized after a reset: Merge = %+v, %v; want failed", got, changed)
	}
}

// Several clients hit a rate limit at once; their cooldowns reach the FSM in
// any order, mixed with repeats. Whatever the order, the token ends in a
// cooldown until the latest deadline, set by one of the reports that asked
// for it.
func TestMergeOverlappingCooldownsProperty(t *testing.T) {
	rng := rand.New(rand.NewPCG(20300102, 30405))
	starts := []Health{
		{},
		{State: Healthy, Since: t0.Add(-time.Hour)},
		{State: Degraded, Since: t0.Add(-time.Hour)},
		{State: Cooldown, Reason: "rate_limited", Since: t0.Add(-time.Hour), Until: t0.Add(-time.Second), Reporter: "old"},
	}
	check := func(t *testing.T, iter int, start Health, targets []Health, latest time.Time) {
		t.Helper()
		h := start
		for _, next := range targets {
			h, _ = Merge(h, next)
		}
		if h.State != Cooldown || !h.Until.Equal(latest) {
			t.Fatalf("iteration %d: from %+v after %+v health is %+v, want a cooldown until %v", iter, start, targets, h, latest)
		}
		if !slices.ContainsFunc(targets, func(c Health) bool { return c.Until.Equal(latest) && c.Reporter == h.Reporter }) {
			t.Fatalf("iteration %d: cooldown until %v credits %q, which did not ask for that deadline", iter, latest, h.Reporter)
		}
		if h.Since.After(latest) || h.Since.Before(t0) {
			t.Fatalf("iteration %d: cooldown starts at %v, outside the reports' times", iter, h.Since)
		}
	}
	for iter := range 400 {
		n := 1 + rng.IntN(7)
		targets := make([]Health, n)
		var latest time.Time
		for i := range targets {
			at := t0.Add(time.Duration(rng.IntN(90)) * time.Second)
			// Few distinct lengths, so that equal deadlines happen.
			until := at.Add(time.Duration(1+rng.IntN(4)) * 30 * time.Second)
			targets[i] = Health{State: Cooldown, Reason: "rate_limited", Since: at, Until: until, Reporter: fmt.Sprintf("node-%d", i)}
			if until.After(latest) {
				latest = until
			}
		}
		start := starts[iter%len(starts)]
		if n <= 5 {
			permuteHealth(targets, func(order []Health) { check(t, iter, start, order, latest) })
			continue
		}
		for range 200 {
			rng.Shuffle(n, func(i, j int) { targets[i], targets[j] = targets[j], targets[i] })
			// Repeats happen too: a retried commit applies twice.
			order := append(slices.Clone(targets), targets[rng.IntN(n)])
			check(t, iter, start, order, latest)
		}
	}
}

// The same property through reports, as the FSM and the overlays see them.
func TestTransitionOverlappingCooldownsProperty(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 11))
	for iter := range 200 {
		n := 2 + rng.IntN(4)
		reports := make([]Report, n)
		var latest time.Time
		for i := range reports {
			at := t0.Add(time.Duration(rng.IntN(60)) * time.Second)
			until := at.Add(time.Duration(1+rng.IntN(90)) * time.Second)
			reports[i] = Report{Pool: "p", TokenID: "a", Outcome: OutcomeRateLimited, At: at, Until: until, Reporter: fmt.Sprintf("node-%d", i)}
			if until.After(latest) {
				latest = until
			}
		}
		permute(reports, func(order []Report) {
			var h Health
			for _, r := range order {
				h, _ = Transition(h, r)
			}
			if h.State != Cooldown || !h.Until.Equal(latest) {
				t.Fatalf("iteration %d: after %+v health is %+v, want a cooldown until %v", iter, order, h, latest)
			}
		})
	}
}

func permuteHealth(hs []Health, f func([]Health)) {
	var rec func(k int)
	rec = func(k int) {
		if k == len(hs) {
			f(hs)
			return
		}
		for i := k; i < len(hs); i++ {
			hs[k], hs[i] = hs[i], hs[k]
			rec(k + 1)
			hs[k], hs[i] = hs[i], hs[k]
		}
	}
	rec(0)
}

// A decision made before an operator's reset but committed after it does
// not undo the reset; one made after it applies.
func TestMergeIgnoresDecisionsOlderThanReset(t *testing.T) {
	reset := ResetHealth(t0.Add(time.Minute), "node1")
	for _, next := range []Health{
		{State: Failed, Reason: "unauthorized", Since: t0},
		{State: Cooldown, Since: t0, Until: t0.Add(time.Hour)},
		{State: Degraded, Since: t0},
	} {
		if h, changed := Merge(reset, next); changed || h != reset {
			t.Errorf("Merge(reset at +1m, %s at +0) = %+v, %v; want the reset kept", next.State, h, changed)
		}
		next.Since = t0.Add(2 * time.Minute)
		if next.State == Cooldown {
			next.Until = t0.Add(time.Hour)
		}
		if h, changed := Merge(reset, next); !changed || h.State != next.State {
			t.Errorf("Merge(reset at +1m, %s at +2m) = %+v, %v; want it applied", next.State, h, changed)
		}
	}
}

// Failure reports from before a reset do not count toward the quorum that
// fails the token again.
func TestTrackerForgetsFailureReportsBeforeReset(t *testing.T) {
	p := HealthPolicy{ReportQuorum: 2}
	var tr Tracker
	healthy := Health{State: Healthy, Since: t0}
	tr.Observe(p, healthy, Report{Outcome: OutcomeUnauthorized, Reporter: "a", At: t0.Add(time.Second)}, false)
	reset := ResetHealth(t0.Add(time.Minute), "op")
	v := tr.Observe(p, reset, Report{Outcome: OutcomeUnauthorized, Reporter: "b", At: t0.Add(2 * time.Minute)}, false)
	if v.Change {
		t.Fatalf("a report before the reset counted toward the quorum: %+v", v)
	}
	v = tr.Observe(p, reset, Report{Outcome: OutcomeUnauthorized, Reporter: "a", At: t0.Add(3 * time.Minute)}, false)
	if !v.Change || v.Health.State != Failed {
		t.Fatalf("two reports after the reset = %+v, want failed", v)
	}
}
