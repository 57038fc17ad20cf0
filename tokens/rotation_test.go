package tokens

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// issuingPool returns a pool "p" whose provider issues tokens.
func issuingPool(mods ...func(*Pool)) *Pool {
	p := &Pool{Name: "p", Provider: ProviderSpec{Type: ProviderExec, Command: []string{"/bin/issue"}}}
	for _, m := range mods {
		m(p)
	}
	return p
}

// staticPool returns a pool "p" whose tokens operators add.
func staticPool(mods ...func(*Pool)) *Pool {
	p := &Pool{Name: "p", Provider: ProviderSpec{Type: ProviderStatic}}
	for _, m := range mods {
		m(p)
	}
	return p
}

func poolSize(n int) func(*Pool) { return func(p *Pool) { p.Size = n } }
func maxAge(d time.Duration) func(*Pool) {
	return func(p *Pool) { p.Rotation.MaxAge = Duration(d) }
}
func renewBefore(d time.Duration) func(*Pool) {
	return func(p *Pool) { p.Rotation.RenewBefore = Duration(d) }
}

func createdAt(at time.Time) func(*Token) { return func(t *Token) { t.CreatedAt = at } }

func replacing(id string) *Rotation {
	return &Rotation{ID: "r-" + id, Pool: "p", Replaces: id, Reason: ReasonMaxAge}
}
func topUp(id string) *Rotation { return &Rotation{ID: "r-" + id, Pool: "p", Reason: ReasonSize} }

func replace(id, reason string) RotationNeed { return RotationNeed{Replaces: id, Reason: reason} }

var addOne = RotationNeed{Reason: ReasonSize}

func TestRotationPolicyWithDefaults(t *testing.T) {
	got := RotationPolicy{}.WithDefaults()
	want := RotationPolicy{
		Grace:     Duration(DefaultGrace),
		MinActive: DefaultMinActive,
		RetryMin:  Duration(DefaultRetryMin),
		RetryMax:  Duration(DefaultRetryMax),
	}
	if got != want {
		t.Errorf("RotationPolicy{}.WithDefaults() = %+v, want %+v", got, want)
	}
	// The token-dependent fields, and max_age, stay zero.
	if got.MaxAge != 0 || got.RenewBefore != 0 || got.AlertBefore != 0 {
		t.Errorf("WithDefaults set a per-token field: %+v", got)
	}

	set := RotationPolicy{
		MaxAge:      Duration(time.Hour),
		RenewBefore: Duration(10 * time.Minute),
		Grace:       Duration(5 * time.Second),
		MinActive:   3,
		RetryMin:    Duration(2 * time.Second),
		RetryMax:    Duration(time.Minute),
		AlertBefore: Duration(time.Minute),
	}
	if got := set.WithDefaults(); got != set {
		t.Errorf("WithDefaults changed set fields: %+v, want %+v", got, set)
	}
}

func TestRenewAndAlertBefore(t *testing.T) {
	lifetime3h := tok("a", 0, 1, createdAt(t0), expiresAt(t0.Add(3*time.Hour)))
	noExpiry := tok("b", 0, 2, createdAt(t0))
	tests := []struct {
		name         string
		policy       RotationPolicy
		tok          *Token
		renew, alert time.Duration
	}{
		{"defaults: a third, then half of that", RotationPolicy{}, lifetime3h, time.Hour, 30 * time.Minute},
		{"explicit renew_before, alert half of it", RotationPolicy{RenewBefore: Duration(20 * time.Minute)}, lifetime3h, 20 * time.Minute, 10 * time.Minute},
		{"explicit alert_before", RotationPolicy{AlertBefore: Duration(5 * time.Minute)}, lifetime3h, time.Hour, 5 * time.Minute},
		{"both explicit", RotationPolicy{RenewBefore: Duration(20 * time.Minute), AlertBefore: Duration(50 * time.Minute)}, lifetime3h, 20 * time.Minute, 50 * time.Minute},
		{"explicit renew_before past the lifetime", RotationPolicy{RenewBefore: Duration(5 * time.Hour)}, lifetime3h, 5 * time.Hour, 150 * time.Minute},
		{"no expiry, defaults", RotationPolicy{}, noExpiry, 0, 0},
		{"no expiry, explicit renew_before", RotationPolicy{RenewBefore: Duration(time.Minute)}, noExpiry, time.Minute, 30 * time.Second},
		{"no expiry, explicit alert_before", RotationPolicy{AlertBefore: Duration(time.Minute)}, noExpiry, 0, time.Minute},
		{"third rounds down", RotationPolicy{}, tok("d", 0, 4, createdAt(t0), expiresAt(t0.Add(3*time.Second+2))), time.Second, 500 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.policy.RenewBeforeFor(tt.tok); got != tt.renew {
				t.Errorf("RenewBeforeFor = %s, want %s", got, tt.renew)
			}
			if got := tt.policy.AlertBeforeFor(tt.tok); got != tt.alert {
				t.Errorf("AlertBeforeFor = %s, want %s", got, tt.alert)
			}
		})
	}
}

func TestRetryDelay(t *testing.T) {
	custom := RotationPolicy{RetryMin: Duration(100 * time.Millisecond), RetryMax: Duration(time.Second)}
	uneven := RotationPolicy{RetryMin: Duration(3 * time.Second), RetryMax: Duration(10 * time.Second)}
	tests := []struct {
		name     string
		policy   RotationPolicy
		failures int
		jitter   float64
		want     time.Duration
	}{
		{"no failure yet", RotationPolicy{}, 0, 0, time.Second},
		{"negative failures", RotationPolicy{}, -3, 0, time.Second},
		{"first failure", RotationPolicy{}, 1, 0, time.Second},
		{"second doubles", RotationPolicy{}, 2, 0, 2 * time.Second},
		{"third", RotationPolicy{}, 3, 0, 4 * time.Second},
		{"ninth", RotationPolicy{}, 9, 0, 256 * time.Second},
		{"tenth capped", RotationPolicy{}, 10, 0, 5 * time.Minute},
		{"many capped", RotationPolicy{}, 1 << 30, 0, 5 * time.Minute},
		{"custom first", custom, 1, 0, 100 * time.Millisecond},
		{"custom fourth", custom, 4, 0, 800 * time.Millisecond},
		{"custom fifth capped", custom, 5, 0, time.Second},
		{"custom max int failures", custom, int(^uint(0) >> 1), 0, time.Second},
		{"max not a power of two of min", uneven, 3, 0, 10 * time.Second},
		{"min equals max", RotationPolicy{RetryMin: Duration(time.Minute), RetryMax: Duration(time.Minute)}, 7, 0, time.Minute},
		{"only min set", RotationPolicy{RetryMin: Duration(time.Minute)}, 4, 0, 5 * time.Minute},
		{"only max set", RotationPolicy{RetryMax: Duration(3 * time.Second)}, 2, 0, 2 * time.Second},
		{"half jitter adds 10 %", RotationPolicy{}, 2, 0.5, 2200 * time.Millisecond},
		{"jitter applies after the cap", RotationPolicy{}, 20, 0.5, 330 * time.Second},
		{"custom with jitter", custom, 1, 0.25, 105 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.policy.RetryDelay(tt.failures, tt.jitter); got != tt.want {
				t.Errorf("RetryDelay(%d, %v) = %s, want %s", tt.failures, tt.jitter, got, tt.want)
			}
		})
	}
}

func TestRetryDelayJitterBound(t *testing.T) {
	jitters := []float64{0, 1e-9, 0.1, 0.5, 0.9, 0.999999, 1 - 1e-16}
	for _, policy := range []RotationPolicy{{}, {RetryMin: Duration(100 * time.Millisecond), RetryMax: Duration(time.Second)}} {
		w := policy.WithDefaults()
		prev := time.Duration(0)
		for failures := 0; failures <= 40; failures++ {
			base := policy.RetryDelay(failures, 0)
			if base < time.Duration(w.RetryMin) || base > time.Duration(w.RetryMax) {
				t.Fatalf("%+v: RetryDelay(%d, 0) = %s, outside [%s, %s]", policy, failures, base, w.RetryMin, w.RetryMax)
			}
			if base < prev {
				t.Fatalf("%+v: RetryDelay(%d, 0) = %s, shorter than after fewer failures (%s)", policy, failures, base, prev)
			}
			prev = base
			for _, j := range jitters {
				got := policy.RetryDelay(failures, j)
				if got < base || float64(got) > 1.2*float64(base) {
					t.Errorf("%+v: RetryDelay(%d, %v) = %s, want within [%s, %s]", policy, failures, j, got, base, time.Duration(1.2*float64(base)))
				}
			}
		}
	}
}

func TestPlanRotations(t *testing.T) {
	young := createdAt(t0.Add(-time.Second)) // not due under max_age 1m
	tests := []struct {
		name   string
		pool   *Pool
		toks   []*Token
		open   []*Rotation
		status RotationStatus
		now    time.Time
		want   []RotationNeed
	}{
		{
			name: "empty issuing pool gets the default size",
			pool: issuingPool(),
			want: []RotationNeed{addOne, addOne},
		},
		{
			name: "empty pool of size 3",
			pool: issuingPool(poolSize(3)),
			want: []RotationNeed{addOne, addOne, addOne},
		},
		{
			name: "full pool of healthy tokens",
			pool: issuingPool(),
			toks: ordered(tok("a", 0, 1), tok("b", 0, 2)),
		},
		{
			name: "one short",
			pool: issuingPool(poolSize(3)),
			toks: ordered(tok("a", 0, 1), tok("b", 0, 2)),
			want: []RotationNeed{addOne},
		},
		{
			name: "more than the size is not shrunk",
			pool: issuingPool(poolSize(1)),
			toks: ordered(tok("a", 0, 1), tok("b", 0, 2), tok("c", 0, 3)),
		},
		{
			name: "max_age reached exactly",
			pool: issuingPool(maxAge(time.Hour)),
			toks: ordered(tok("a", 0, 1), tok("b", 0, 2, young)),
			want: []RotationNeed{replace("a", ReasonMaxAge)},
		},
		{
			name: "max_age 1ns away",
			pool: issuingPool(maxAge(time.Hour)),
			toks: ordered(tok("a", 0, 1), tok("b", 0, 2, young)),
			now:  t0.Add(-time.Nanosecond),
		},
		{
			name: "max_age past, every token",
			pool: issuingPool(maxAge(time.Second)),
			toks: ordered(tok("a", 0, 1), tok("b", 0, 2, young)),
			want: []RotationNeed{replace("a", ReasonMaxAge), replace("b", ReasonMaxAge)},
		},
		{
			// Due renew_before ahead of the last moment it is served,
			// ExpiryMargin before it expires.
			name: "explicit renew_before reached exactly",
			pool: issuingPool(renewBefore(10 * time.Minute)),
			toks: ordered(tok("a", 0, 1, expiresAt(t0.Add(10*time.Minute+ExpiryMargin))), tok("b", 0, 2)),
			want: []RotationNeed{replace("a", ReasonRenewBefore)},
		},
		{
			name: "explicit renew_before 1ns away",
			pool: issuingPool(renewBefore(10 * time.Minute)),
			toks: ordered(tok("a", 0, 1, expiresAt(t0.Add(10*time.Minute+ExpiryMargin))), tok("b", 0, 2)),
			now:  t0.Add(-time.Nanosecond),
		},
		{
			name: "explicit renew_before overrides the default third",
			pool: issuingPool(renewBefore(time.Minute)),
			// Lifetime 3h: the default would make it due at t0.
			toks: ordered(tok("a", 0, 1, createdAt(t0.Add(-2*time.Hour)), expiresAt(t0.Add(time.Hour))), tok("b", 0, 2)),
		},
		{
			// Lifetime 3h: due an hour before it is last served.
			name: "default renew_before, a third of the lifetime, reached exactly",
			pool: issuingPool(),
			toks: ordered(tok("a", 0, 1, createdAt(t0.Add(-2*time.Hour)), expiresAt(t0.Add(time.Hour))), tok("b", 0, 2)),
			now:  t0.Add(-ExpiryMargin),
			want: []RotationNeed{replace("a", ReasonRenewBefore)},
		},
		{
			name: "default renew_before 1ns away",
			pool: issuingPool(),
			toks: ordered(tok("a", 0, 1, createdAt(t0.Add(-2*time.Hour)), expiresAt(t0.Add(time.Hour))), tok("b", 0, 2)),
			now:  t0.Add(-ExpiryMargin - time.Nanosecond),
		},
		{
			name: "expired token",
			pool: issuingPool(),
			toks: ordered(tok("a", 0, 1, expiresAt(t0.Add(-time.Second))), tok("b", 0, 2)),
			want: []RotationNeed{replace("a", ReasonRenewBefore)},
		},
		{
			name: "recorded after its expiry",
			pool: issuingPool(),
			toks: ordered(tok("a", 0, 1, createdAt(t0.Add(-time.Minute)), expiresAt(t0.Add(-4*time.Minute))), tok("b", 0, 2)),
			want: []RotationNeed{replace("a", ReasonRenewBefore)},
		},
		{
			name: "no expiry and no max_age: never due",
			pool: issuingPool(),
			toks: ordered(tok("a", 0, 1, createdAt(t0.Add(-10*365*24*time.Hour))), tok("b", 0, 2)),
		},
		{
			name: "failed token",
			pool: issuingPool(),
			toks: ordered(tok("a", 0, 1, state(Failed)), tok("b", 0, 2)),
			want: []RotationNeed{replace("a", ReasonFailed)},
		},
		{
			name: "failed wins over renew_before and max_age",
			pool: issuingPool(maxAge(time.Minute)),
			toks: ordered(tok("a", 0, 1, state(Failed), expiresAt(t0)), tok("b", 0, 2, young)),
			want: []RotationNeed{replace("a", ReasonFailed)},
		},
		{
			name: "renew_before wins over max_age",
			pool: issuingPool(maxAge(time.Minute)),
			toks: ordered(tok("a", 0, 1, expiresAt(t0)), tok("b", 0, 2, young)),
			want: []RotationNeed{replace("a", ReasonRenewBefore)},
		},
		{
			name: "cooldown and degraded tokens are not due and count",
			pool: issuingPool(),
			toks: ordered(tok("a", 0, 1, cooldownUntil(t0.Add(time.Hour))), tok("b", 0, 2, state(Degraded))),
		},
		{
			name: "ended cooldown counts as healthy",
			pool: issuingPool(),
			toks: ordered(tok("a", 0, 1, cooldownUntil(t0)), tok("b", 0, 2)),
		},
		{
			name: "cooling down does not spare a token past max_age",
			pool: issuingPool(maxAge(time.Minute)),
			toks: ordered(tok("a", 0, 1, cooldownUntil(t0.Add(time.Hour))), tok("b", 0, 2, young)),
			want: []RotationNeed{replace("a", ReasonMaxAge)},
		},
		{
			name: "retiring, orphaned and revoked tokens are ignored and not counted",
			pool: issuingPool(maxAge(time.Minute)),
			toks: ordered(
				tok("a", 0, 1, lifecycle(LifecycleRetiring), expiresAt(t0)),
				tok("b", 0, 2, lifecycle(LifecycleOrphaned), state(Failed)),
				tok("c", 0, 3, lifecycle(LifecycleRevoked)),
				tok("d", 0, 4, young),
			),
			want: []RotationNeed{addOne},
		},
		{
			name: "open rotation suppresses its token and counts toward the size",
			pool: issuingPool(maxAge(time.Minute)),
			toks: ordered(tok("a", 0, 1), tok("b", 0, 2, young)),
			open: []*Rotation{replacing("a")},
		},
		{
			name: "open rotation for a failed token",
			pool: issuingPool(),
			toks: ordered(tok("a", 0, 1, state(Failed)), tok("b", 0, 2)),
			open: []*Rotation{replacing("a")},
		},
		{
			name: "open rotation counts once: the rest is topped up",
			pool: issuingPool(maxAge(time.Minute), poolSize(3)),
			toks: ordered(tok("a", 0, 1), tok("b", 0, 2, young)),
			open: []*Rotation{replacing("a")},
			want: []RotationNeed{addOne},
		},
		{
			// A manual rotation of a token that is not due: the token will
			// retire, so it and its replacement count once.
			name: "open rotation of a healthy token counts once",
			pool: issuingPool(poolSize(3)),
			toks: ordered(tok("a", 0, 1), tok("b", 0, 2)),
			open: []*Rotation{replacing("a")},
			want: []RotationNeed{addOne},
		},
		{
			name: "open rotation of a token no longer listed counts",
			pool: issuingPool(),
			toks: ordered(tok("a", 0, 1)),
			open: []*Rotation{replacing("gone")},
		},
		{
			name: "open top-up counts",
			pool: issuingPool(),
			open: []*Rotation{topUp("x")},
			want: []RotationNeed{addOne},
		},
		{
			name: "open top-ups fill the pool",
			pool: issuingPool(),
			open: []*Rotation{topUp("x"), topUp("y")},
		},
		{
			name: "open top-ups do not spare a due token",
			pool: issuingPool(maxAge(time.Minute)),
			toks: ordered(tok("a", 0, 1), tok("b", 0, 2, young)),
			open: []*Rotation{topUp("x"), topUp("y")},
			want: []RotationNeed{replace("a", ReasonMaxAge)},
		},
		{
			name:   "backoff: nothing before next_attempt",
			pool:   issuingPool(maxAge(time.Minute)),
			toks:   ordered(tok("a", 0, 1, state(Failed)), tok("b", 0, 2)),
			status: RotationStatus{Failures: 3, NextAttempt: t0.Add(time.Nanosecond)},
		},
		{
			name:   "backoff: empty pool waits too",
			pool:   issuingPool(),
			status: RotationStatus{Failures: 1, NextAttempt: t0.Add(time.Nanosecond)},
		},
		{
			name:   "backoff: at next_attempt exactly",
			pool:   issuingPool(maxAge(time.Minute)),
			toks:   ordered(tok("a", 0, 1, state(Failed)), tok("b", 0, 2)),
			status: RotationStatus{Failures: 3, NextAttempt: t0},
			want:   []RotationNeed{replace("a", ReasonFailed), replace("b", ReasonMaxAge)},
		},
		{
			name:   "backoff: next_attempt passed",
			pool:   issuingPool(),
			status: RotationStatus{Failures: 1, NextAttempt: t0.Add(-time.Second)},
			want:   []RotationNeed{addOne, addOne},
		},
		{
			name: "static pool: due tokens, no top-ups",
			pool: staticPool(maxAge(time.Minute)),
			toks: ordered(tok("a", 0, 1, state(Failed)), tok("b", 0, 2), tok("c", 0, 3, young)),
			want: []RotationNeed{replace("a", ReasonFailed), replace("b", ReasonMaxAge)},
		},
		{
			name: "static pool: empty needs nothing",
			pool: staticPool(),
		},
		{
			name: "static pool: open rotation suppresses",
			pool: staticPool(),
			toks: ordered(tok("a", 0, 1, state(Failed))),
			open: []*Rotation{replacing("a")},
		},
		{
			name: "replacements in token order, then top-ups",
			pool: issuingPool(maxAge(time.Minute), poolSize(5)),
			toks: ordered(
				tok("d", 3, 1, young),
				tok("c", 2, 2),
				tok("a", 0, 3, young),
				tok("b", 1, 4, state(Failed)),
			),
			want: []RotationNeed{replace("b", ReasonFailed), replace("c", ReasonMaxAge), addOne},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now := tt.now
			if now.IsZero() {
				now = t0
			}
			got := PlanRotations(tt.pool, tt.toks, tt.open, tt.status, now)
			if !slices.Equal(got, tt.want) {
				t.Errorf("PlanRotations = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestPlanRotationsReplacementsFirst checks that replacements keep the
// tokens' order and top-ups come after them.
func TestPlanRotationsReplacementsFirst(t *testing.T) {
	p := issuingPool(poolSize(10), maxAge(time.Minute))
	var toks []*Token
	for i := range 6 {
		mods := []func(*Token){}
		if i%2 == 1 {
			mods = append(mods, createdAt(t0.Add(-time.Second)))
		}
		toks = append(toks, tok(fmt.Sprintf("t%d", i), 0, uint64(i+1), mods...))
	}
	got := PlanRotations(p, ordered(toks...), nil, RotationStatus{}, t0)
	want := []RotationNeed{
		replace("t0", ReasonMaxAge), replace("t2", ReasonMaxAge), replace("t4", ReasonMaxAge),
		addOne, addOne, addOne, addOne,
	}
	if !slices.Equal(got, want) {
		t.Errorf("PlanRotations = %+v, want %+v", got, want)
	}
}

// TestPlanRotationsDoesNotModifyInputs checks the planner is pure.
func TestPlanRotationsDoesNotModifyInputs(t *testing.T) {
	p := issuingPool(maxAge(time.Minute), poolSize(4))
	toks := ordered(tok("a", 0, 1), tok("b", 0, 2, state(Failed)), tok("c", 0, 3, createdAt(t0)))
	open := []*Rotation{replacing("a"), topUp("x")}
	pc := *p
	var tc []Token
	for _, tk := range toks {
		tc = append(tc, *tk)
	}
	var oc []Rotation
	for _, r := range open {
		oc = append(oc, *r)
	}
	PlanRotations(p, toks, open, RotationStatus{}, t0)
	if p.Name != pc.Name || p.Size != pc.Size || p.Rotation != pc.Rotation || p.Provider.Type != pc.Provider.Type {
		t.Errorf("pool changed: %+v, was %+v", *p, pc)
	}
	for i, tk := range toks {
		if tk.ID != tc[i].ID || tk.Lifecycle != tc[i].Lifecycle || tk.Health != tc[i].Health || !tk.CreatedAt.Equal(tc[i].CreatedAt) {
			t.Errorf("token %d changed: %+v, was %+v", i, *tk, tc[i])
		}
	}
	for i, r := range open {
		if *r != oc[i] {
			t.Errorf("rotation %d changed: %+v, was %+v", i, *r, oc[i])
		}
	}
}

// TestPlanRotationsRenewBeforeAtLeastLifetime: a renew_before as long as
// the tokens live would make each due the instant it is issued, and the
// pool would churn at every pass. RenewAt bounds it: a token serves for a
// quarter of its serving life (issue to ExpiryMargin before expiry) first.
func TestPlanRotationsRenewBeforeAtLeastLifetime(t *testing.T) {
	for _, rb := range []time.Duration{2 * time.Second, 3 * time.Second} {
		t.Run(rb.String(), func(t *testing.T) {
			p := issuingPool(renewBefore(rb))
			fresh := tok("a", 0, 1, createdAt(t0), expiresAt(t0.Add(2*time.Second)))
			// Serving life: 2s - 1s margin = 1s; a quarter of it is 250ms.
			if got, want := p.Rotation.RenewAt(fresh), t0.Add(250*time.Millisecond); !got.Equal(want) {
				t.Fatalf("RenewAt = %s, want %s", got.Sub(t0), want.Sub(t0))
			}
			if got, want := PlanRotations(p, []*Token{fresh}, nil, RotationStatus{}, t0), []RotationNeed{addOne}; !slices.Equal(got, want) {
				t.Fatalf("PlanRotations of a token issued now = %+v, want %+v", got, want)
			}
			if got, want := PlanRotations(p, []*Token{fresh}, nil, RotationStatus{}, t0.Add(250*time.Millisecond)), []RotationNeed{replace("a", ReasonRenewBefore), addOne}; !slices.Equal(got, want) {
				t.Fatalf("PlanRotations a quarter into its serving life = %+v, want %+v", got, want)
			}

			s := newRotationSim(t, p, 2*time.Second, 0)
			const steps = 50
			for i := range steps {
				s.step(t0.Add(time.Duration(i) * 100 * time.Millisecond))
			}
			// Each token is replaced once every 300 ms (the first 100 ms
			// step at or after its 250 ms RenewAt), not at every step.
			if max := DefaultPoolSize * steps / 2; s.replacements > max {
				t.Errorf("%d replacements in %d steps, want at most %d: tokens churn", s.replacements, steps, max)
			}
		})
	}
}

// rotationSim is a fake rotator: it applies each plan, instantly or after a
// latency, the way the leader would (a new active token; the replaced one
// retiring), on a fake clock, and checks the pool's invariants at every
// step.
type rotationSim struct {
	t        *testing.T
	pool     *Pool
	lifetime time.Duration
	latency  time.Duration

	toks         []*Token
	open         []simRotation
	rotated      map[string]bool // tokens a rotation was started for
	seq          int
	gen          uint64
	replacements int
	topUps       int
	failed       int
}

type simRotation struct {
	r      *Rotation
	doneAt time.Time
}

func newRotationSim(t *testing.T, p *Pool, lifetime, latency time.Duration) *rotationSim {
	t.Helper()
	return &rotationSim{t: t, pool: p, lifetime: lifetime, latency: latency, rotated: map[string]bool{}}
}

func (s *rotationSim) size() int {
	if s.pool.Size > 0 {
		return s.pool.Size
	}
	return DefaultPoolSize
}

func (s *rotationSim) find(id string) int {
	return slices.IndexFunc(s.toks, func(t *Token) bool { return t.ID == id })
}

// finish records what rotation r issued at now.
func (s *rotationSim) finish(r *Rotation, now time.Time) {
	s.seq++
	s.toks = append(s.toks, &Token{
		ID:          fmt.Sprintf("t%04d", s.seq),
		Pool:        "p",
		Lifecycle:   LifecycleActive,
		Health:      Health{State: Healthy, Since: now},
		RotationID:  r.ID,
		Generation:  r.Generation,
		CreatedAt:   now,
		ExpiresAt:   now.Add(s.lifetime),
		CreateIndex: uint64(s.seq),
	})
	if r.Replaces == "" {
		return
	}
	i := s.find(r.Replaces)
	if i < 0 {
		s.t.Fatalf("%s: rotation %s replaces unknown token %s", now.Sub(t0), r.ID, r.Replaces)
	}
	old := *s.toks[i]
	old.Lifecycle = LifecycleRetiring
	old.RetireAt = now.Add(DefaultGrace)
	s.toks[i] = &old
}

// fail marks active token id failed at now.
func (s *rotationSim) fail(id string, now time.Time) {
	i := s.find(id)
	failed := *s.toks[i]
	failed.Health = Health{State: Failed, Reason: string(OutcomeUnauthorized), Since: now}
	s.toks[i] = &failed
	s.failed++
}

func (s *rotationSim) active() []*Token {
	var out []*Token
	for _, t := range s.toks {
		if t.Lifecycle == LifecycleActive {
			out = append(out, t)
		}
	}
	return out
}

// step runs the leader's loop once at now: finish the rotations that are
// done, plan, start (or, without latency, apply) what the plan asks for.
func (s *rotationSim) step(now time.Time) {
	t := s.t
	t.Helper()
	keep := s.open[:0]
	for _, o := range s.open {
		if now.Before(o.doneAt) {
			keep = append(keep, o)
			continue
		}
		s.finish(o.r, now)
	}
	s.open = keep

	open := make([]*Rotation, len(s.open))
	for i, o := range s.open {
		open[i] = o.r
	}
	needs := PlanRotations(s.pool, ordered(s.toks...), open, RotationStatus{}, now)
	for _, n := range needs {
		s.gen++
		r := &Rotation{ID: fmt.Sprintf("r%04d", s.gen), Pool: "p", Replaces: n.Replaces, Reason: n.Reason, Generation: s.gen, StartedAt: now}
		if n.Replaces == "" {
			s.topUps++
		} else {
			if s.rotated[n.Replaces] {
				t.Fatalf("%s: token %s planned for rotation twice", now.Sub(t0), n.Replaces)
			}
			s.rotated[n.Replaces] = true
			s.replacements++
			i := s.find(n.Replaces)
			if i < 0 || s.toks[i].Lifecycle != LifecycleActive {
				t.Fatalf("%s: plan replaces %s, which is not an active token", now.Sub(t0), n.Replaces)
			}
			old := s.toks[i]
			if !now.Before(old.ExpiresAt) {
				t.Fatalf("%s: token %s replaced only after it expired at %s", now.Sub(t0), old.ID, old.ExpiresAt.Sub(t0))
			}
			if n.Reason != ReasonFailed && now.Before(s.pool.Rotation.RenewAt(old)) &&
				(s.pool.Rotation.MaxAge == 0 || now.Before(old.CreatedAt.Add(time.Duration(s.pool.Rotation.MaxAge)))) {
				t.Fatalf("%s: token %s replaced (%s) before it was due", now.Sub(t0), old.ID, n.Reason)
			}
		}
		if s.latency == 0 {
			s.finish(r, now)
		} else {
			s.open = append(s.open, simRotation{r: r, doneAt: now.Add(s.latency)})
		}
	}
}

// check asserts that at now the pool holds at least its size of active,
// unexpired, unfailed tokens, and no more active tokens than maxActive.
func (s *rotationSim) check(now time.Time, maxActive int) {
	s.t.Helper()
	usable := 0
	active := s.active()
	for _, t := range active {
		if now.Before(t.ExpiresAt) && t.Health.StateAt(now) != Failed {
			usable++
		}
	}
	if usable < s.size() {
		s.t.Fatalf("%s: %d usable active tokens, want at least %d", now.Sub(t0), usable, s.size())
	}
	if len(active) > maxActive {
		s.t.Fatalf("%s: %d active tokens, want at most %d", now.Sub(t0), len(active), maxActive)
	}
}

// TestPlanRotationsSimulation runs the planner against a fake rotator for 60 s
// of fake time, in 100 ms steps, with 2 s tokens.
func TestPlanRotationsSimulation(t *testing.T) {
	const (
		lifetime = 2 * time.Second
		tick     = 100 * time.Millisecond
		span     = 60 * time.Second
	)
	tests := []struct {
		name     string
		pool     *Pool
		latency  time.Duration
		failRate float64 // chance per step that an active token fails
		// minReplacements is a floor on the replacements over the span, so
		// that a planner that never rotates does not pass.
		minReplacements int
	}{
		{name: "instant, default renew_before", pool: issuingPool(), minReplacements: 2 * 40},
		{name: "instant, size 3", pool: issuingPool(poolSize(3)), minReplacements: 3 * 40},
		{name: "instant, size 1", pool: issuingPool(poolSize(1)), minReplacements: 40},
		{name: "instant, explicit renew_before", pool: issuingPool(renewBefore(500 * time.Millisecond)), minReplacements: 2 * 35},
		{name: "instant, max_age before renew_before", pool: issuingPool(maxAge(time.Second), poolSize(3)), minReplacements: 3 * 55},
		{name: "instant, failures", pool: issuingPool(poolSize(3)), failRate: 0.05, minReplacements: 3 * 40},
		{name: "300ms issue latency", pool: issuingPool(), latency: 300 * time.Millisecond, minReplacements: 2 * 30},
		{name: "500ms issue latency, size 4", pool: issuingPool(poolSize(4)), latency: 500 * time.Millisecond, minReplacements: 4 * 28},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(1, 2))
			s := newRotationSim(t, tt.pool, lifetime, tt.latency)
			for now := t0; !now.After(t0.Add(span)); now = now.Add(tick) {
				if tt.failRate > 0 && rng.Float64() < tt.failRate {
					if active := s.active(); len(active) > 0 {
						s.fail(active[rng.IntN(len(active))].ID, now)
					}
				}
				s.step(now)
				if now.Before(t0.Add(tt.latency)) {
					continue // still filling the empty pool
				}
				// Instant rotations never leave an extra active token; with
				// latency, a replaced token stays active until its
				// replacement is recorded, and no more is issued.
				s.check(now, s.size())
			}
			if s.topUps != s.size() {
				t.Errorf("%d top-ups, want %d: only the empty pool needs topping up", s.topUps, s.size())
			}
			if s.replacements < tt.minReplacements {
				t.Errorf("%d replacements in %s, want at least %d", s.replacements, span, tt.minReplacements)
			}
			if tt.failRate > 0 && s.failed == 0 {
				t.Errorf("no token failed: the failure case tests nothing")
			}
			t.Logf("%d replacements, %d top-ups, %d failures", s.replacements, s.topUps, s.failed)
		})
	}
}
