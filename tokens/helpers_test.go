package tokens

import (
	"slices"
	"time"
)

// t0 is the fixed "now" of these tests: the package takes time as input, so
// no test reads the clock.
var t0 = time.Date(2030, time.January, 2, 3, 4, 5, 0, time.UTC)

// tok returns an active, healthy token of pool "p".
func tok(id string, priority int, createIndex uint64, mods ...func(*Token)) *Token {
	t := &Token{
		ID:          id,
		Pool:        "p",
		Value:       sealed("value-of-"+id, "p", id),
		Fingerprint: fingerprint("value-of-" + id),
		Priority:    priority,
		Lifecycle:   LifecycleActive,
		Health:      Health{State: Healthy, Since: t0.Add(-time.Hour)},
		CreatedAt:   t0.Add(-time.Hour),
		CreateIndex: createIndex,
		ModifyIndex: createIndex,
	}
	for _, m := range mods {
		m(t)
	}
	return t
}

func expiresAt(at time.Time) func(*Token) { return func(t *Token) { t.ExpiresAt = at } }
func notBefore(at time.Time) func(*Token) { return func(t *Token) { t.NotBefore = at } }
func lifecycle(l Lifecycle) func(*Token)  { return func(t *Token) { t.Lifecycle = l } }
func state(s HealthState) func(*Token)    { return func(t *Token) { t.Health.State = s } }
func since(at time.Time) func(*Token)     { return func(t *Token) { t.Health.Since = at } }

func cooldownUntil(until time.Time) func(*Token) {
	return func(t *Token) {
		t.Health = Health{State: Cooldown, Reason: string(OutcomeRateLimited), Since: t0.Add(-time.Minute), Until: until}
	}
}

// ordered returns toks in Less order, as Select requires.
func ordered(toks ...*Token) []*Token {
	out := slices.Clone(toks)
	slices.SortFunc(out, func(a, b *Token) int {
		switch {
		case Less(a, b):
			return -1
		case Less(b, a):
			return 1
		}
		return 0
	})
	return out
}

// testRing seals the values of test tokens.
var testRing = func() *Keyring {
	raw, _ := ParseKey(GenerateKey())
	kr, err := NewKeyring(raw)
	if err != nil {
		panic(err)
	}
	return kr
}()

func sealed(value, pool, id string) Sealed {
	s, err := testRing.Seal(testRing.Default(), Secret(value), TokenAAD(pool, id))
	if err != nil {
		panic(err)
	}
	return s
}

func fingerprint(value string) string {
	fp, err := testRing.Fingerprint(testRing.Default(), Secret(value))
	if err != nil {
		panic(err)
	}
	return fp
}
