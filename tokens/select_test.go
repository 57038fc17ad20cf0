package tokens

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestLess(t *testing.T) {
	tests := []struct {
		name string
		a, b *Token
	}{
		{"lower priority number first", tok("z", 1, 9), tok("a", 2, 1)},
		{"negative priority before zero", tok("z", -5, 9), tok("a", 0, 1)},
		{"same priority: older CreateIndex first", tok("z", 1, 3), tok("a", 1, 4)},
		{"same priority and index: by id", tok("a", 1, 3), tok("b", 1, 3)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !Less(tt.a, tt.b) {
				t.Errorf("Less(%s, %s) = false, want true", tt.a.ID, tt.b.ID)
			}
			if Less(tt.b, tt.a) {
				t.Errorf("Less(%s, %s) = true, want false", tt.b.ID, tt.a.ID)
			}
		})
	}
	if a := tok("a", 1, 1); Less(a, a) {
		t.Error("Less(a, a) = true: the order is not strict")
	}
}

func TestSelect(t *testing.T) {
	now := t0
	rateLimited := func(id string, at, until time.Time) Report {
		return Report{Pool: "p", TokenID: id, Outcome: OutcomeRateLimited, At: at, Until: until, Reporter: "node-1"}
	}
	unauthorized := func(id string, at time.Time) Report {
		return Report{Pool: "p", TokenID: id, Outcome: OutcomeUnauthorized, At: at, Reporter: "node-1"}
	}
	tests := []struct {
		name    string
		policy  SelectionPolicy
		toks    []*Token
		overlay Overlay
		exclude []string
		want    string // token id; empty when an error is expected
		code    string
		retryAt time.Time
	}{
		// Priority order.
		{name: "lowest priority number wins", toks: []*Token{tok("a", 5, 1), tok("b", 1, 2), tok("c", 3, 3)}, want: "b"},
		{name: "default policy is priority", policy: "", toks: []*Token{tok("a", 2, 1), tok("b", 1, 2)}, want: "b"},
		{name: "negative priority wins", toks: []*Token{tok("a", 0, 1), tok("b", -1, 2)}, want: "b"},
		{name: "priority tie: lower CreateIndex wins", toks: []*Token{tok("a", 1, 20), tok("b", 1, 10)}, want: "b"},
		{name: "priority and index tie: lower id wins", toks: []*Token{tok("tok_b", 1, 10), tok("tok_a", 1, 10)}, want: "tok_a"},

		// Expiry, with the safety margin.
		{name: "expired token skipped", toks: []*Token{tok("a", 0, 1, expiresAt(now.Add(-time.Hour))), tok("b", 1, 2)}, want: "b"},
		{name: "token inside expiry margin skipped", toks: []*Token{tok("a", 0, 1, expiresAt(now.Add(ExpiryMargin/2))), tok("b", 1, 2)}, want: "b"},
		{name: "now+margin equal to expires_at skipped", toks: []*Token{tok("a", 0, 1, expiresAt(now.Add(ExpiryMargin))), tok("b", 1, 2)}, want: "b"},
		{name: "expires just after now+margin served", toks: []*Token{tok("a", 0, 1, expiresAt(now.Add(ExpiryMargin+time.Nanosecond))), tok("b", 1, 2)}, want: "a"},
		{name: "only expired tokens", toks: []*Token{tok("a", 0, 1, expiresAt(now))}, code: CodeNoHealthy},

		// Not before.
		{name: "not yet valid skipped", toks: []*Token{tok("a", 0, 1, notBefore(now.Add(time.Nanosecond))), tok("b", 1, 2)}, want: "b"},
		{name: "valid from exactly now served", toks: []*Token{tok("a", 0, 1, notBefore(now)), tok("b", 1, 2)}, want: "a"},
		{name: "only not-yet-valid tokens", toks: []*Token{tok("a", 0, 1, notBefore(now.Add(time.Minute)))}, code: CodeNoHealthy},

		// Health.
		{name: "failed skipped", toks: []*Token{tok("a", 0, 1, state(Failed)), tok("b", 1, 2)}, want: "b"},
		{name: "cooling down skipped", toks: []*Token{tok("a", 0, 1, cooldownUntil(now.Add(time.Second))), tok("b", 1, 2)}, want: "b"},
		{name: "cooldown ending exactly now is over", toks: []*Token{tok("a", 0, 1, cooldownUntil(now)), tok("b", 1, 2)}, want: "a"},
		{name: "cooldown in the past is over", toks: []*Token{tok("a", 0, 1, cooldownUntil(now.Add(-time.Minute))), tok("b", 1, 2)}, want: "a"},
		{name: "empty health state counts as healthy", toks: []*Token{tok("a", 0, 1, func(t *Token) { t.Health = Health{} }), tok("b", 1, 2)}, want: "a"},
		{name: "unknown health state skipped", toks: []*Token{tok("a", 0, 1, state("weird")), tok("b", 1, 2)}, want: "b"},
		{name: "healthy before degraded of better priority", toks: []*Token{tok("a", 0, 1, state(Degraded)), tok("b", 9, 2)}, want: "b"},
		{name: "degraded served when nothing healthy", toks: []*Token{tok("a", 0, 1, state(Failed)), tok("b", 5, 2, state(Degraded)), tok("c", 9, 3, state(Degraded))}, want: "b"},

		// Lifecycle.
		{name: "revoked skipped", toks: []*Token{tok("a", 0, 1, lifecycle(LifecycleRevoked)), tok("b", 1, 2)}, want: "b"},
		{name: "unknown lifecycle skipped", toks: []*Token{tok("a", 0, 1, lifecycle("")), tok("b", 1, 2)}, want: "b"},
		{name: "active before retiring of better priority", toks: []*Token{tok("a", 0, 1, lifecycle(LifecycleRetiring)), tok("b", 9, 2)}, want: "b"},
		{name: "degraded active before healthy retiring", toks: []*Token{tok("a", 0, 1, lifecycle(LifecycleRetiring)), tok("b", 9, 2, state(Degraded))}, want: "b"},
		{name: "retiring when no active is eligible", toks: []*Token{tok("a", 0, 1, state(Failed)), tok("b", 5, 2, lifecycle(LifecycleRetiring)), tok("c", 9, 3, cooldownUntil(now.Add(time.Hour)))}, want: "b"},
		{name: "healthy retiring before degraded retiring", toks: []*Token{tok("a", 0, 1, lifecycle(LifecycleRetiring), state(Degraded)), tok("b", 5, 2, lifecycle(LifecycleRetiring))}, want: "b"},
		{name: "degraded retiring as last resort", toks: []*Token{tok("a", 0, 1, state(Failed)), tok("b", 5, 2, lifecycle(LifecycleRetiring), state(Degraded))}, want: "b"},
		{name: "expired retiring skipped", toks: []*Token{tok("a", 0, 1, state(Failed)), tok("b", 5, 2, lifecycle(LifecycleRetiring), expiresAt(now))}, code: CodeNoHealthy},

		// Exclusion.
		{name: "excluded skipped", toks: []*Token{tok("a", 0, 1), tok("b", 1, 2), tok("c", 2, 3)}, exclude: []string{"zzz", "a"}, want: "b"},
		{name: "all excluded", toks: []*Token{tok("a", 0, 1), tok("b", 1, 2)}, exclude: []string{"a", "b"}, code: CodeNoHealthy},

		// Overlay.
		{name: "overlay failure makes token ineligible at once", toks: []*Token{tok("a", 0, 1), tok("b", 1, 2)}, overlay: Overlay{"a": unauthorized("a", now.Add(-time.Second))}, want: "b"},
		{name: "overlay cooldown makes token ineligible at once", toks: []*Token{tok("a", 0, 1), tok("b", 1, 2)}, overlay: Overlay{"a": rateLimited("a", now.Add(-time.Second), now.Add(time.Minute))}, want: "b"},
		{name: "overlay cooldown that has passed", toks: []*Token{tok("a", 0, 1), tok("b", 1, 2)}, overlay: Overlay{"a": rateLimited("a", now.Add(-time.Minute), now.Add(-time.Second))}, want: "a"},
		{name: "overlay ignored when replicated health is newer", toks: []*Token{tok("a", 0, 1, since(now.Add(-time.Second))), tok("b", 1, 2)}, overlay: Overlay{"a": unauthorized("a", now.Add(-time.Minute))}, want: "a"},
		{name: "overlay applies when report is as new as replicated health", toks: []*Token{tok("a", 0, 1, since(now.Add(-time.Minute))), tok("b", 1, 2)}, overlay: Overlay{"a": unauthorized("a", now.Add(-time.Minute))}, want: "b"},
		{name: "overlay for same id in another pool ignored", toks: []*Token{tok("a", 0, 1), tok("b", 1, 2)}, overlay: Overlay{"a": {Pool: "other", TokenID: "a", Outcome: OutcomeUnauthorized, At: now}}, want: "a"},
		{name: "overlay ok report changes nothing", toks: []*Token{tok("a", 0, 1), tok("b", 1, 2)}, overlay: Overlay{"a": {Pool: "p", TokenID: "a", Outcome: OutcomeOK, At: now}}, want: "a"},
		{name: "overlay for every token", toks: []*Token{tok("a", 0, 1), tok("b", 1, 2)}, overlay: Overlay{"a": unauthorized("a", now), "b": unauthorized("b", now)}, code: CodeNoHealthy},

		// Errors.
		{name: "no tokens", toks: nil, code: CodePoolEmpty},
		{name: "only revoked tokens", toks: []*Token{tok("a", 0, 1, lifecycle(LifecycleRevoked))}, code: CodePoolEmpty},
		{name: "all failed", toks: []*Token{tok("a", 0, 1, state(Failed)), tok("b", 1, 2, state(Failed))}, code: CodeNoHealthy},
		{
			name:    "all cooling down: retry at the earliest end",
			toks:    []*Token{tok("a", 0, 1, cooldownUntil(now.Add(30*time.Second))), tok("b", 1, 2, cooldownUntil(now.Add(10*time.Second))), tok("c", 2, 3, cooldownUntil(now.Add(20*time.Second)))},
			code:    CodeAllCoolingDown,
			retryAt: now.Add(10 * time.Second),
		},
		{
			name:    "cooling down and failed: retry at the cooldown end",
			toks:    []*Token{tok("a", 0, 1, state(Failed)), tok("b", 1, 2, cooldownUntil(now.Add(10*time.Second)))},
			code:    CodeAllCoolingDown,
			retryAt: now.Add(10 * time.Second),
		},
		{
			name:    "overlay cooldown counts toward retry time",
			toks:    []*Token{tok("a", 0, 1, cooldownUntil(now.Add(time.Hour))), tok("b", 1, 2)},
			overlay: Overlay{"b": rateLimited("b", now, now.Add(5*time.Second))},
			code:    CodeAllCoolingDown,
			retryAt: now.Add(5 * time.Second),
		},
		{
			name: "cooldown that outlasts the token's life is not a reason to retry",
			toks: []*Token{tok("a", 0, 1, cooldownUntil(now.Add(time.Hour)), expiresAt(now.Add(time.Minute)))},
			code: CodeNoHealthy,
		},
		{
			name:    "cooldown ending within the expiry margin is not a reason to retry",
			toks:    []*Token{tok("a", 0, 1, cooldownUntil(now.Add(time.Minute)), expiresAt(now.Add(time.Minute+ExpiryMargin))), tok("b", 1, 2, cooldownUntil(now.Add(2*time.Minute)))},
			code:    CodeAllCoolingDown,
			retryAt: now.Add(2 * time.Minute),
		},
		{
			name:    "cooldown ending before expiry is a reason to retry",
			toks:    []*Token{tok("a", 0, 1, cooldownUntil(now.Add(time.Minute)), expiresAt(now.Add(time.Hour)))},
			code:    CodeAllCoolingDown,
			retryAt: now.Add(time.Minute),
		},
		{name: "excluded cooling-down token is no reason to retry", toks: []*Token{tok("a", 0, 1, cooldownUntil(now.Add(time.Minute)))}, exclude: []string{"a"}, code: CodeNoHealthy},
	}
	for _, policy := range []SelectionPolicy{SelectPriority, SelectRoundRobin} {
		for _, tt := range tests {
			if tt.policy != "" && tt.policy != policy {
				continue
			}
			t.Run(string(policy)+"/"+tt.name, func(t *testing.T) {
				pool := &Pool{Name: "p", Selection: tt.policy}
				if tt.policy == "" {
					pool.Selection = policy
				}
				// Round robin without a counter picks like priority, so
				// the same expectations hold for both policies.
				got, err := Select(pool, ordered(tt.toks...), Query{Now: now, Overlay: tt.overlay, Exclude: tt.exclude})
				if tt.code != "" {
					if got != nil {
						t.Fatalf("Select = %s, want error %s", got.ID, tt.code)
					}
					checkSelectError(t, err, tt.code, tt.retryAt)
					return
				}
				if err != nil {
					t.Fatalf("Select: %v, want %s", err, tt.want)
				}
				if got.ID != tt.want {
					t.Fatalf("Select = %s, want %s", got.ID, tt.want)
				}
				if !Eligible(got, &Query{Now: now, Overlay: tt.overlay, Exclude: tt.exclude}) {
					t.Errorf("Select returned %s, which Eligible says is not eligible", got.ID)
				}
			})
		}
	}
}

func checkSelectError(t *testing.T, err error, code string, retryAt time.Time) {
	t.Helper()
	if err == nil {
		t.Fatalf("Select succeeded, want error %s", code)
	}
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("Select error %v (%T) is not a *tokens.Error", err, err)
	}
	if e.Code != code {
		t.Fatalf("Select error code = %s (%v), want %s", e.Code, err, code)
	}
	if !errors.Is(err, ErrNoEligible) {
		t.Errorf("errors.Is(%v, ErrNoEligible) = false", err)
	}
	if !e.RetryAt.Equal(retryAt) {
		t.Errorf("RetryAt = %v, want %v", e.RetryAt, retryAt)
	}
	if !e.RetryAt.IsZero() {
		// The message names the retry time so a person reading it knows it.
		if want := retryAt.UTC().Format(time.RFC3339); !strings.Contains(e.Message, want) {
			t.Errorf("message %q does not name the retry time %s", e.Message, want)
		}
	}
}

// A cooldown ends by the clock alone: the same token, unchanged, is skipped
// before its Until and served from it on.
func TestSelectCooldownEndsWithTime(t *testing.T) {
	until := t0.Add(time.Minute)
	a := tok("a", 0, 1, cooldownUntil(until))
	b := tok("b", 1, 2)
	before := *a
	pool := &Pool{Name: "p", Selection: SelectPriority}
	toks := []*Token{a, b}
	for _, c := range []struct {
		now  time.Time
		want string
	}{
		{t0, "b"},
		{until.Add(-time.Nanosecond), "b"},
		{until, "a"},
		{until.Add(time.Hour), "a"},
	} {
		got, err := Select(pool, toks, Query{Now: c.now})
		if err != nil {
			t.Fatalf("at %v: %v", c.now, err)
		}
		if got.ID != c.want {
			t.Errorf("at %v: Select = %s, want %s", c.now, got.ID, c.want)
		}
	}
	if !reflect.DeepEqual(*a, before) {
		t.Errorf("Select modified the token: %+v, want %+v", *a, before)
	}
}

func TestSelectRoundRobinSpreadsEvenly(t *testing.T) {
	toks := ordered(
		tok("h1", 0, 1),
		tok("h2", 1, 2),
		tok("failed", 0, 3, state(Failed)),
		tok("h3", 5, 4),
		tok("degraded", 0, 5, state(Degraded)),
		tok("retiring", 0, 6, lifecycle(LifecycleRetiring)),
		tok("cooling", 0, 7, cooldownUntil(t0.Add(time.Hour))),
		tok("expired", 0, 8, expiresAt(t0)),
		tok("excluded", 0, 9),
		tok("h4", 9, 10),
		tok("overlaid", 0, 11),
	)
	pool := &Pool{Name: "p", Selection: SelectRoundRobin}
	var counter atomic.Uint64
	q := Query{
		Now:     t0,
		Counter: &counter,
		Exclude: []string{"excluded"},
		Overlay: Overlay{"overlaid": {Pool: "p", TokenID: "overlaid", Outcome: OutcomeForbidden, At: t0}},
	}
	healthy := []string{"h1", "h2", "h3", "h4"}
	const rounds = 50
	counts := map[string]int{}
	var window []string
	for i := range rounds * len(healthy) {
		got, err := Select(pool, toks, q)
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		counts[got.ID]++
		// Each run of len(healthy) consecutive picks serves every token.
		window = append(window, got.ID)
		if len(window) == len(healthy) {
			seen := map[string]bool{}
			for _, id := range window {
				seen[id] = true
			}
			if len(seen) != len(healthy) {
				t.Fatalf("picks %d..%d were %v: not every eligible token was served in turn", i-len(healthy)+1, i, window)
			}
			window = window[:0]
		}
	}
	for _, id := range healthy {
		if counts[id] != rounds {
			t.Errorf("%s served %d times, want %d (counts %v)", id, counts[id], rounds, counts)
		}
	}
	if len(counts) != len(healthy) {
		t.Errorf("served tokens %v, want only %v", counts, healthy)
	}
}

func TestSelectRoundRobinFallsBackByClass(t *testing.T) {
	pool := &Pool{Name: "p", Selection: SelectRoundRobin}
	tests := []struct {
		name string
		toks []*Token
		want []string
	}{
		{"degraded only when no healthy", []*Token{tok("f", 0, 1, state(Failed)), tok("d1", 1, 2, state(Degraded)), tok("d2", 2, 3, state(Degraded)), tok("r", 0, 4, lifecycle(LifecycleRetiring))}, []string{"d1", "d2"}},
		{"retiring only when no active", []*Token{tok("f", 0, 1, state(Failed)), tok("r1", 1, 2, lifecycle(LifecycleRetiring)), tok("r2", 2, 3, lifecycle(LifecycleRetiring)), tok("rd", 0, 4, lifecycle(LifecycleRetiring), state(Degraded))}, []string{"r1", "r2"}},
		{"single eligible token", []*Token{tok("f", 0, 1, state(Failed)), tok("only", 1, 2)}, []string{"only"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var counter atomic.Uint64
			counts := map[string]int{}
			toks := ordered(tt.toks...)
			for range 10 * len(tt.want) {
				got, err := Select(pool, toks, Query{Now: t0, Counter: &counter})
				if err != nil {
					t.Fatal(err)
				}
				counts[got.ID]++
			}
			for _, id := range tt.want {
				if counts[id] != 10 {
					t.Errorf("counts = %v, want each of %v 10 times", counts, tt.want)
					break
				}
			}
			if len(counts) != len(tt.want) {
				t.Errorf("counts = %v, want only %v", counts, tt.want)
			}
		})
	}
}

// Fetches run concurrently on every agent: the shared counter still gives each
// token its exact share.
func TestSelectRoundRobinConcurrent(t *testing.T) {
	toks := ordered(tok("a", 0, 1), tok("b", 0, 2), tok("c", 0, 3), tok("x", 0, 4, state(Failed)))
	pool := &Pool{Name: "p", Selection: SelectRoundRobin}
	var counter atomic.Uint64
	const workers, perWorker = 8, 300
	var (
		mu     sync.Mutex
		counts = map[string]int{}
		wg     sync.WaitGroup
	)
	for range workers {
		wg.Go(func() {
			local := map[string]int{}
			for range perWorker {
				got, err := Select(pool, toks, Query{Now: t0, Counter: &counter})
				if err != nil {
					t.Error(err)
					return
				}
				local[got.ID]++
			}
			mu.Lock()
			defer mu.Unlock()
			for id, n := range local {
				counts[id] += n
			}
		})
	}
	wg.Wait()
	for _, id := range []string{"a", "b", "c"} {
		if want := workers * perWorker / 3; counts[id] != want {
			t.Errorf("counts = %v, want %d each for a, b, c", counts, want)
			break
		}
	}
	if counts["x"] != 0 {
		t.Errorf("failed token served %d times", counts["x"])
	}
}

func TestSelectPriorityIgnoresCounter(t *testing.T) {
	pool := &Pool{Name: "p", Selection: SelectPriority}
	toks := ordered(tok("a", 0, 1), tok("b", 1, 2), tok("c", 1, 3, state(Degraded)), tok("d", 2, 4, state(Degraded)))
	var counter atomic.Uint64
	for range 10 {
		got, err := Select(pool, toks, Query{Now: t0, Counter: &counter})
		if err != nil || got.ID != "a" {
			t.Fatalf("Select = %v, %v; want a every time", got, err)
		}
	}
	toks[0].Health.State = Failed
	toks[1].Health.State = Failed
	for range 10 {
		got, err := Select(pool, toks, Query{Now: t0, Counter: &counter})
		if err != nil || got.ID != "c" {
			t.Fatalf("Select = %v, %v; want the first degraded token c every time", got, err)
		}
	}
}

// TestSelectMatchesReference checks Select against a plain statement of the
// rules on many random pools.
func TestSelectMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	lifecycles := []Lifecycle{LifecycleActive, LifecycleActive, LifecycleActive, LifecycleRetiring, LifecycleRevoked}
	states := []HealthState{Healthy, Healthy, Healthy, Degraded, Cooldown, Failed}
	for iter := range 3000 {
		n := rng.IntN(8)
		var toks []*Token
		for i := range n {
			t := tok(fmt.Sprintf("t%d", i), rng.IntN(3), uint64(rng.IntN(4)))
			t.Lifecycle = lifecycles[rng.IntN(len(lifecycles))]
			t.Health.State = states[rng.IntN(len(states))]
			if t.Health.State == Cooldown {
				t.Health.Until = t0.Add(time.Duration(rng.IntN(7)-3) * time.Minute)
			}
			switch rng.IntN(5) {
			case 0:
				t.ExpiresAt = t0.Add(time.Duration(rng.IntN(7)-2) * time.Minute)
			case 1:
				t.NotBefore = t0.Add(time.Duration(rng.IntN(5)-2) * time.Minute)
			}
			toks = append(toks, t)
		}
		toks = ordered(toks...)
		q := Query{Now: t0, Overlay: Overlay{}}
		for _, t := range toks {
			switch rng.IntN(8) {
			case 0:
				q.Exclude = append(q.Exclude, t.ID)
			case 1:
				q.Overlay[t.ID] = Report{Pool: "p", TokenID: t.ID, Outcome: OutcomeUnauthorized, At: t0}
			case 2:
				q.Overlay[t.ID] = Report{Pool: "p", TokenID: t.ID, Outcome: OutcomeRateLimited, At: t0, Until: t0.Add(time.Minute)}
			}
		}
		pool := &Pool{Name: "p", Selection: SelectPriority}
		got, err := Select(pool, toks, q)
		want, wantCode, wantRetry := referenceSelect(toks, q)
		if want != nil {
			if err != nil || got != want {
				t.Fatalf("iteration %d: Select = %v, %v; want %s\ntokens: %s", iter, got, err, want.ID, describe(toks, q))
			}
			continue
		}
		if got != nil {
			t.Fatalf("iteration %d: Select = %s, want error %s\ntokens: %s", iter, got.ID, wantCode, describe(toks, q))
		}
		e := AsError(err)
		if e.Code != wantCode || !e.RetryAt.Equal(wantRetry) {
			t.Fatalf("iteration %d: Select error %s (retry %v), want %s (retry %v)\ntokens: %s", iter, e.Code, e.RetryAt, wantCode, wantRetry, describe(toks, q))
		}
	}
}

// referenceSelect states the priority policy directly.
func referenceSelect(toks []*Token, q Query) (*Token, string, time.Time) {
	usable := func(t *Token, at time.Time) bool {
		return (t.ExpiresAt.IsZero() || at.Add(ExpiryMargin).Before(t.ExpiresAt)) && (t.NotBefore.IsZero() || !q.Now.Before(t.NotBefore))
	}
	health := func(t *Token) Health {
		if r, ok := q.Overlay[t.ID]; ok && !t.Health.Since.After(r.At) {
			h, _ := Transition(t.Health, r)
			return h
		}
		return t.Health
	}
	excluded := func(t *Token) bool {
		for _, id := range q.Exclude {
			if id == t.ID {
				return true
			}
		}
		return false
	}
	for _, want := range []struct {
		l Lifecycle
		s HealthState
	}{{LifecycleActive, Healthy}, {LifecycleActive, Degraded}, {LifecycleRetiring, Healthy}, {LifecycleRetiring, Degraded}} {
		for _, t := range toks {
			if t.Lifecycle == want.l && !excluded(t) && usable(t, q.Now) && health(t).StateAt(q.Now) == want.s {
				return t, "", time.Time{}
			}
		}
	}
	var retry time.Time
	live := 0
	for _, t := range toks {
		if t.Lifecycle == LifecycleRevoked {
			continue
		}
		live++
		h := health(t)
		if t.Lifecycle == LifecycleActive || t.Lifecycle == LifecycleRetiring {
			if !excluded(t) && usable(t, q.Now) && h.StateAt(q.Now) == Cooldown && usable(t, h.Until) {
				if retry.IsZero() || h.Until.Before(retry) {
					retry = h.Until
				}
			}
		}
	}
	switch {
	case live == 0:
		return nil, CodePoolEmpty, time.Time{}
	case !retry.IsZero():
		return nil, CodeAllCoolingDown, retry
	}
	return nil, CodeNoHealthy, time.Time{}
}

func describe(toks []*Token, q Query) string {
	s := ""
	for _, t := range toks {
		s += fmt.Sprintf("\n  %s prio=%d idx=%d %s %+v exp=%v nb=%v overlay=%+v", t.ID, t.Priority, t.CreateIndex, t.Lifecycle, t.Health, t.ExpiresAt, t.NotBefore, q.Overlay[t.ID])
	}
	return s + fmt.Sprintf("\n  exclude=%v", q.Exclude)
}

func TestEligible(t *testing.T) {
	q := &Query{Now: t0, Exclude: []string{"x"}}
	for _, c := range []struct {
		t    *Token
		want bool
	}{
		{tok("a", 0, 1), true},
		{tok("a", 0, 1, state(Degraded)), true},
		{tok("a", 0, 1, lifecycle(LifecycleRetiring)), true},
		{tok("a", 0, 1, state(Failed)), false},
		{tok("a", 0, 1, cooldownUntil(t0.Add(time.Second))), false},
		{tok("a", 0, 1, lifecycle(LifecycleRevoked)), false},
		{tok("a", 0, 1, expiresAt(t0)), false},
		{tok("a", 0, 1, notBefore(t0.Add(time.Second))), false},
		{tok("x", 0, 1), false},
	} {
		if got := Eligible(c.t, q); got != c.want {
			t.Errorf("Eligible(%s %s %+v exp=%v nb=%v) = %v, want %v", c.t.ID, c.t.Lifecycle, c.t.Health, c.t.ExpiresAt, c.t.NotBefore, got, c.want)
		}
	}
}

// benchPool is 100 tokens in which the only eligible one is near the end:
// Select looks at almost every token, with a non-empty overlay and exclude
// list, as on a busy agent during an incident.
func benchPool(policy SelectionPolicy) (*Pool, []*Token, Query) {
	var toks []*Token
	for i := range 100 {
		t := tok(fmt.Sprintf("tok_%016x", i), i, uint64(i+1))
		switch i % 4 {
		case 0:
			t.Health.State = Failed
		case 1:
			t.Health = Health{State: Cooldown, Since: t0.Add(-time.Minute), Until: t0.Add(time.Hour)}
		case 2:
			t.ExpiresAt = t0.Add(-time.Minute)
		case 3:
			t.Lifecycle = LifecycleRevoked
		}
		toks = append(toks, t)
	}
	for _, i := range []int{95, 97} { // the eligible ones
		toks[i].Health = Health{State: Healthy, Since: t0.Add(-time.Hour)}
		toks[i].Lifecycle = LifecycleActive
		toks[i].ExpiresAt = time.Time{}
	}
	ov := Overlay{}
	for i := 0; i < 100; i += 10 {
		id := toks[i].ID
		ov[id] = Report{Pool: "p", TokenID: id, Outcome: OutcomeRateLimited, At: t0, Until: t0.Add(time.Minute)}
	}
	// A report for the eligible token older than its replicated health:
	// looked at, and ignored.
	ov[toks[97].ID] = Report{Pool: "p", TokenID: toks[97].ID, Outcome: OutcomeUnauthorized, At: t0.Add(-2 * time.Hour)}
	return &Pool{Name: "p", Selection: policy}, toks, Query{Now: t0, Overlay: ov, Exclude: []string{"tok_none", toks[3].ID}, Counter: new(atomic.Uint64)}
}

func BenchmarkSelect100(b *testing.B) {
	for _, policy := range []SelectionPolicy{SelectPriority, SelectRoundRobin} {
		b.Run(string(policy), func(b *testing.B) {
			pool, toks, q := benchPool(policy)
			b.ReportAllocs()
			for b.Loop() {
				if t, err := Select(pool, toks, q); err != nil || t == nil {
					b.Fatal(t, err)
				}
			}
		})
	}
}

func TestSelectDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector changes allocation counts")
	}
	for _, policy := range []SelectionPolicy{SelectPriority, SelectRoundRobin} {
		pool, toks, q := benchPool(policy)
		for range 2 {
			got, err := Select(pool, toks, q)
			if err != nil || (got != toks[95] && got != toks[97]) || (policy == SelectPriority && got != toks[95]) {
				t.Fatalf("%s: Select = %v, %v; want %s (or %s for round_robin)", policy, got, err, toks[95].ID, toks[97].ID)
			}
		}
		allocs := testing.AllocsPerRun(100, func() {
			if _, err := Select(pool, toks, q); err != nil {
				t.Fatal(err)
			}
		})
		if allocs != 0 {
			t.Errorf("%s: Select allocates %.1f times per call, want 0", policy, allocs)
		}
	}
}
