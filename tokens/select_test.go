package tokens

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
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
	for _, policy := range SelectionPolicies {
		for _, tt := range tests {
			if tt.policy != "" && tt.policy != policy {
				continue
			}
			if policy == SelectRandom && tt.code == "" && tt.policy == "" {
				continue // TestSelectMatchesReference covers which token random serves
			}
			t.Run(string(policy)+"/"+tt.name, func(t *testing.T) {
				pool := &Pool{Name: "p", Selection: tt.policy}
				if tt.policy == "" {
					pool.Selection = policy
				}
				// Round robin without a counter, and least_used without
				// use counts, pick like priority, so the same expectations
				// hold for them.
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

func TestSelectLeastUsed(t *testing.T) {
	pool := &Pool{Name: "p", Selection: SelectLeastUsed}
	toks := ordered(
		tok("u1", 0, 1),
		tok("failed", 0, 2, state(Failed)),
		tok("u2", 1, 3),
		tok("degraded", 0, 4, state(Degraded)),
		tok("u3", 2, 5),
		tok("retiring", 0, 6, lifecycle(LifecycleRetiring)),
		tok("cooling", 0, 7, cooldownUntil(t0.Add(time.Hour))),
		tok("excluded", 0, 8),
	)
	index := func(id string) int {
		return slices.IndexFunc(toks, func(t *Token) bool { return t.ID == id })
	}
	pick := func(q Query) string {
		t.Helper()
		got, err := Select(pool, toks, q)
		if err != nil {
			t.Fatal(err)
		}
		return got.ID
	}

	t.Run("equal counts: in toks order", func(t *testing.T) {
		q := Query{Now: t0, Exclude: []string{"excluded"}, Uses: make([]atomic.Uint64, len(toks))}
		var got []string
		for range 9 {
			got = append(got, pick(q))
		}
		if want := []string{"u1", "u2", "u3", "u1", "u2", "u3", "u1", "u2", "u3"}; !slices.Equal(got, want) {
			t.Errorf("picks = %v, want %v", got, want)
		}
		for i, u := range uses(q.Uses) {
			if want := map[bool]uint64{true: 3, false: 0}[strings.HasPrefix(toks[i].ID, "u")]; u != want {
				t.Errorf("uses of %s = %d, want %d", toks[i].ID, u, want)
			}
		}
	})
	t.Run("fewest uses first, earlier on a tie", func(t *testing.T) {
		q := Query{Now: t0, Exclude: []string{"excluded"}, Uses: make([]atomic.Uint64, len(toks))}
		q.Uses[index("u1")].Store(5)
		q.Uses[index("u2")].Store(2)
		q.Uses[index("u3")].Store(2)
		q.Uses[index("degraded")].Store(0)
		var got []string
		for range 4 {
			got = append(got, pick(q))
		}
		if want := []string{"u2", "u3", "u2", "u3"}; !slices.Equal(got, want) {
			t.Errorf("picks = %v, want %v", got, want)
		}
	})
	t.Run("class before uses", func(t *testing.T) {
		q := Query{Now: t0, Uses: make([]atomic.Uint64, len(toks)), Exclude: []string{"u1", "u2", "u3"}}
		q.Uses[index("excluded")].Store(100)
		if got := pick(q); got != "excluded" {
			t.Errorf("Select = %s, want the healthy token excluded, not degraded (fewer uses, worse class)", got)
		}
		q.Exclude = append(q.Exclude, "excluded")
		if got := pick(q); got != "degraded" {
			t.Errorf("Select = %s, want degraded before the healthy retiring token", got)
		}
	})
	t.Run("without use counts: like priority", func(t *testing.T) {
		for _, u := range [][]atomic.Uint64{nil, {}, make([]atomic.Uint64, len(toks)-1)} {
			for range 3 {
				if got := pick(Query{Now: t0, Uses: u}); got != "u1" {
					t.Fatalf("with %d counts for %d tokens: Select = %s, want u1", len(u), len(toks), got)
				}
			}
			if slices.ContainsFunc(uses(u), func(n uint64) bool { return n != 0 }) {
				t.Errorf("with %d counts for %d tokens: counted %v", len(u), len(toks), uses(u))
			}
		}
	})
}

// Fetches run concurrently: every pick is counted once, and only eligible
// tokens are.
func TestSelectLeastUsedConcurrent(t *testing.T) {
	toks := ordered(tok("a", 0, 1), tok("b", 0, 2), tok("c", 0, 3), tok("x", 0, 4, state(Failed)))
	pool := &Pool{Name: "p", Selection: SelectLeastUsed}
	q := Query{Now: t0, Uses: make([]atomic.Uint64, len(toks))}
	const workers, perWorker = 8, 300
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range perWorker {
				if _, err := Select(pool, toks, q); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	got := uses(q.Uses)
	var sum uint64
	for i, n := range got {
		sum += n
		if failed := toks[i].ID == "x"; failed != (n == 0) {
			t.Errorf("uses = %v (tokens %s): want every eligible token served and the failed one never", got, idList(toks))
		}
	}
	if sum != workers*perWorker {
		t.Errorf("uses = %v, sum %d, want %d", got, sum, workers*perWorker)
	}
}

func TestSelectRandom(t *testing.T) {
	pool := &Pool{Name: "p", Selection: SelectRandom}
	toks := ordered(
		tok("r1", 0, 1),
		tok("failed", 0, 2, state(Failed)),
		tok("r2", 3, 3),
		tok("degraded", 0, 4, state(Degraded)),
		tok("retiring", 0, 5, lifecycle(LifecycleRetiring)),
		tok("r3", 5, 6),
		tok("cooling", 0, 7, cooldownUntil(t0.Add(time.Hour))),
		tok("expired", 0, 8, expiresAt(t0)),
		tok("excluded", 0, 9),
		tok("overlaid", 0, 10),
		tok("r4", 9, 11),
	)
	q := Query{
		Now:     t0,
		Exclude: []string{"excluded"},
		Overlay: Overlay{"overlaid": {Pool: "p", TokenID: "overlaid", Outcome: OutcomeForbidden, At: t0}},
	}
	// 10 000 picks over 4 tokens: each is served 2 500 times on average,
	// with a standard deviation of 43. Fewer than 1 500 is 23 deviations
	// away: it does not happen by chance.
	const picks = 10_000
	counts := map[string]int{}
	for range picks {
		got, err := Select(pool, toks, q)
		if err != nil {
			t.Fatal(err)
		}
		counts[got.ID]++
	}
	for _, id := range []string{"r1", "r2", "r3", "r4"} {
		if counts[id] < 1500 {
			t.Errorf("%s served %d times in %d, want about %d (counts %v)", id, counts[id], picks, picks/4, counts)
		}
	}
	if len(counts) != 4 {
		t.Errorf("served %v, want only r1..r4", counts)
	}

	// With no healthy active token, it picks among the next class only.
	toks = ordered(tok("f", 0, 1, state(Failed)), tok("d1", 1, 2, state(Degraded)), tok("d2", 2, 3, state(Degraded)), tok("r", 0, 4, lifecycle(LifecycleRetiring)))
	counts = map[string]int{}
	for range 1000 {
		got, err := Select(pool, toks, Query{Now: t0})
		if err != nil {
			t.Fatal(err)
		}
		counts[got.ID]++
	}
	// Each of d1, d2 is served 500 times on average (deviation 16).
	if len(counts) != 2 || counts["d1"] < 300 || counts["d2"] < 300 {
		t.Errorf("counts = %v, want d1 and d2 about 500 times each and nothing else", counts)
	}
}

// Select remembers the first maxCandidates eligible tokens of the best class;
// round_robin and random must still reach the ones after them.
func TestSelectBeyondCandidates(t *testing.T) {
	const n = 2*maxCandidates + 22
	var toks []*Token
	for i := range n {
		toks = append(toks, tok(fmt.Sprintf("t%03d", i), 0, uint64(i+1)))
		// Ineligible and worse-class tokens in between.
		toks = append(toks, tok(fmt.Sprintf("f%03d", i), 0, uint64(n+i+1), state(Failed)))
		toks = append(toks, tok(fmt.Sprintf("d%03d", i), 0, uint64(2*n+i+1), state(Degraded)))
	}
	toks = ordered(toks...)
	t.Run("round_robin", func(t *testing.T) {
		pool := &Pool{Name: "p", Selection: SelectRoundRobin}
		q := Query{Now: t0, Counter: new(atomic.Uint64)}
		q.Counter.Store(uint64(n - 1)) // the first pick is t000
		for round := range 2 {
			for i := range n {
				got, err := Select(pool, toks, q)
				if want := fmt.Sprintf("t%03d", i); err != nil || got.ID != want {
					t.Fatalf("round %d pick %d: Select = %v, %v; want %s", round, i, got, err, want)
				}
			}
		}
	})
	t.Run("random", func(t *testing.T) {
		pool := &Pool{Name: "p", Selection: SelectRandom}
		// 20 000 picks over n tokens: the chance that a given one is never
		// served is (1-1/n)^20000, below 1e-50.
		counts := map[string]int{}
		for range 20_000 {
			got, err := Select(pool, toks, Query{Now: t0})
			if err != nil {
				t.Fatal(err)
			}
			counts[got.ID]++
		}
		for i := range n {
			if id := fmt.Sprintf("t%03d", i); counts[id] == 0 {
				t.Errorf("%s never served", id)
			}
		}
		if len(counts) != n {
			t.Errorf("served %d tokens, want the %d healthy ones only", len(counts), n)
		}
	})
}

// Select skips the overlay for a token whose replicated health is failed:
// that holds only because no report moves a token out of failed.
func TestTransitionKeepsFailed(t *testing.T) {
	failed := Health{State: Failed, Reason: "unauthorized", Since: t0.Add(-time.Hour)}
	for _, o := range outcomes {
		for _, at := range []time.Time{t0.Add(-2 * time.Hour), t0, t0.Add(time.Hour)} {
			for _, until := range []time.Time{{}, at.Add(-time.Minute), at.Add(time.Minute)} {
				r := Report{Pool: "p", TokenID: "a", Outcome: o, At: at, Until: until}
				if h, changed := Transition(failed, r); changed || h != failed {
					t.Errorf("Transition(failed, %+v) = %+v, %v; want failed, unchanged", r, h, changed)
				}
			}
		}
	}
}

// TestSelectMatchesReference checks Select against a plain statement of the
// rules on many random pools, for every policy. The first 3000 pools use
// ordinary reports; the rest add reports a live agent rarely holds: for
// another pool, older than the replicated health, stamped after the query's
// now, or with a cooldown already over.
func TestSelectMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	extra := rand.New(rand.NewPCG(3, 4)) // draws only for what the first 3000 pools did not have
	lifecycles := []Lifecycle{LifecycleActive, LifecycleActive, LifecycleActive, LifecycleRetiring, LifecycleRevoked}
	states := []HealthState{Healthy, Healthy, Healthy, Degraded, Cooldown, Failed}
	for iter := range 6000 {
		unusual := iter >= 3000
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
			default:
				if !unusual {
					continue
				}
				// Up to 3 minutes either side of now, like the cooldowns
				// above, with a cooldown that may end before it starts.
				at := t0.Add(time.Duration(extra.IntN(7)-3) * time.Minute)
				r := Report{Pool: "p", TokenID: t.ID, Outcome: OutcomeRateLimited, At: at, Until: at.Add(time.Duration(extra.IntN(6)-2) * time.Minute)}
				switch extra.IntN(6) {
				case 0:
					r.Pool = "other"
				case 1:
					r.Outcome = OutcomeForbidden
					r.Until = time.Time{}
				case 2:
					r.Outcome = OutcomeOK
					r.Until = time.Time{}
				case 3:
					r.At = t.Health.Since.Add(-time.Second) // older than the replicated health
				}
				q.Overlay[t.ID] = r
			}
		}
		want, wantCode, wantRetry := referenceSelect(toks, q)
		fail := func(policy SelectionPolicy, format string, args ...any) {
			t.Helper()
			t.Fatalf("iteration %d, %s: %s\ntokens: %s", iter, policy, fmt.Sprintf(format, args...), describe(toks, q))
		}
		for _, policy := range SelectionPolicies {
			pool := &Pool{Name: "p", Selection: policy}
			if want == nil {
				got, err := Select(pool, toks, q)
				if got != nil {
					fail(policy, "Select = %s, want error %s", got.ID, wantCode)
				}
				if e := AsError(err); e.Code != wantCode || !e.RetryAt.Equal(wantRetry) {
					fail(policy, "Select error %s (retry %v), want %s (retry %v)", e.Code, e.RetryAt, wantCode, wantRetry)
				}
				continue
			}
			switch policy {
			case SelectPriority:
				if got, err := Select(pool, toks, q); err != nil || got != want[0] {
					fail(policy, "Select = %v, %v; want %s", got, err, want[0].ID)
				}
			case SelectRoundRobin:
				// Any len(want) consecutive picks serve each acceptable
				// token once, whatever the counter starts at.
				q := q
				q.Counter = new(atomic.Uint64)
				q.Counter.Store(extra.Uint64N(1 << 32))
				served := map[*Token]int{}
				for range want {
					got, err := Select(pool, toks, q)
					if err != nil {
						fail(policy, "Select: %v", err)
					}
					served[got]++
				}
				for _, w := range want {
					if served[w] != 1 {
						fail(policy, "%d picks served %v, want each of %s once", len(want), ids(served), idList(want))
					}
				}
			case SelectRandom:
				for range 4 {
					if got, err := Select(pool, toks, q); err != nil || !slices.Contains(want, got) {
						fail(policy, "Select = %v, %v; want one of %s", got, err, idList(want))
					}
				}
			case SelectLeastUsed:
				q := q
				q.Uses = make([]atomic.Uint64, len(toks))
				for i := range q.Uses {
					q.Uses[i].Store(uint64(extra.IntN(3)))
				}
				before := uses(q.Uses)
				least := want[0] // the fewest uses, the first on a tie
				for _, w := range want {
					if before[slices.Index(toks, w)] < before[slices.Index(toks, least)] {
						least = w
					}
				}
				got, err := Select(pool, toks, q)
				if err != nil || got != least {
					fail(policy, "Select = %v, %v; want %s (uses %v)", got, err, least.ID, before)
				}
				after := uses(q.Uses)
				before[slices.Index(toks, least)]++
				if !slices.Equal(after, before) {
					fail(policy, "uses after the pick = %v, want %v", after, before)
				}
				// Without per-token counts it serves like priority.
				for _, bad := range [][]atomic.Uint64{nil, make([]atomic.Uint64, len(toks)+1)} {
					q.Uses = bad
					if got, err := Select(pool, toks, q); err != nil || got != want[0] {
						fail(policy, "with %d use counts for %d tokens: Select = %v, %v; want %s", len(bad), len(toks), got, err, want[0].ID)
					}
					if slices.ContainsFunc(uses(bad), func(u uint64) bool { return u != 0 }) {
						fail(policy, "with %d use counts for %d tokens: counted %v", len(bad), len(toks), uses(bad))
					}
				}
			default:
				t.Fatalf("policy %s is not covered", policy)
			}
		}
	}
}

// referenceSelect states the rules directly. It returns the tokens a policy
// may serve: the eligible ones of the best class, in toks order, so that
// priority serves the first. When there is none it returns the error code and
// retry time instead.
func referenceSelect(toks []*Token, q Query) ([]*Token, string, time.Time) {
	usable := func(t *Token, at time.Time) bool {
		return (t.ExpiresAt.IsZero() || at.Add(ExpiryMargin).Before(t.ExpiresAt)) && (t.NotBefore.IsZero() || !q.Now.Before(t.NotBefore))
	}
	health := func(t *Token) Health {
		if r, ok := q.Overlay[t.ID]; ok && r.Pool == t.Pool && !t.Health.Since.After(r.At) {
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
		var class []*Token
		for _, t := range toks {
			if t.Lifecycle == want.l && !excluded(t) && usable(t, q.Now) && health(t).StateAt(q.Now) == want.s {
				class = append(class, t)
			}
		}
		if len(class) > 0 {
			return class, "", time.Time{}
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

func uses(u []atomic.Uint64) []uint64 {
	out := make([]uint64, len(u))
	for i := range u {
		out[i] = u[i].Load()
	}
	return out
}

func idList(toks []*Token) []string {
	var out []string
	for _, t := range toks {
		out = append(out, t.ID)
	}
	return out
}

func ids(served map[*Token]int) map[string]int {
	out := map[string]int{}
	for t, n := range served {
		out[t.ID] = n
	}
	return out
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

// benchPool is 100 tokens in which the only eligible ones are near the end:
// Select looks at almost every token, with a non-empty overlay and exclude
// list, as on a busy agent during an incident. The Query carries a counter
// and use counts, so that every policy runs in full.
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
	q := Query{
		Now:     t0,
		Overlay: ov,
		Exclude: []string{"tok_none", toks[3].ID},
		Counter: new(atomic.Uint64),
		Uses:    make([]atomic.Uint64, len(toks)),
	}
	return &Pool{Name: "p", Selection: policy}, toks, q
}

// benchPoolHealthyFirst is benchPool with its first token eligible: the
// common case for priority, which then looks at that token only.
func benchPoolHealthyFirst(policy SelectionPolicy) (*Pool, []*Token, Query) {
	pool, toks, q := benchPool(policy)
	toks[0].Health = Health{State: Healthy, Since: t0.Add(-time.Hour)}
	delete(q.Overlay, toks[0].ID)
	return pool, toks, q
}

var benchCases = []struct {
	name   string
	policy SelectionPolicy
	pool   func(SelectionPolicy) (*Pool, []*Token, Query)
	// want are the tokens Select may return, by index.
	want []int
}{
	{"priority", SelectPriority, benchPool, []int{95}},
	{"round_robin", SelectRoundRobin, benchPool, []int{95, 97}},
	{"least_used", SelectLeastUsed, benchPool, []int{95, 97}},
	{"random", SelectRandom, benchPool, []int{95, 97}},
	{"priority_healthy_first", SelectPriority, benchPoolHealthyFirst, []int{0}},
}

func BenchmarkSelect100(b *testing.B) {
	for _, bc := range benchCases {
		b.Run(bc.name, func(b *testing.B) {
			pool, toks, q := bc.pool(bc.policy)
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
	for _, bc := range benchCases {
		pool, toks, q := bc.pool(bc.policy)
		for range 2 {
			got, err := Select(pool, toks, q)
			if err != nil || !slices.ContainsFunc(bc.want, func(i int) bool { return got == toks[i] }) {
				t.Fatalf("%s: Select = %v, %v; want one of tokens %v", bc.name, got, err, bc.want)
			}
		}
		allocs := testing.AllocsPerRun(100, func() {
			if _, err := Select(pool, toks, q); err != nil {
				t.Fatal(err)
			}
		})
		if allocs != 0 {
			t.Errorf("%s: Select allocates %.1f times per call, want 0", bc.name, allocs)
		}
	}
}
