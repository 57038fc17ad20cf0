package tokens

import (
	"math/rand/v2"
	"sync/atomic"
	"time"
)

// ExpiryMargin is how long before its expires_at a token stops being served:
// it covers clock skew between hosts and the time a client takes to use it.
const ExpiryMargin = time.Second

// Overlay holds reports this agent received that the replicated state may
// not reflect yet, keyed by token id. It lets the receiving agent stop
// serving a dead token before the report has gone through Raft. An Overlay is
// never modified once readers can see it.
type Overlay map[string]Report

// Health is t's health as this agent sees it: the replicated health with any
// newer local report applied on top.
func (ov Overlay) Health(t *Token) Health {
	if r, ok := ov[t.ID]; ok && r.Pool == t.Pool && !t.Health.Since.After(r.At) {
		if h, changed := Transition(t.Health, r); changed {
			return h
		}
	}
	return t.Health
}

// Covered reports whether the replicated token already reflects r, or holds a
// newer decision, so that r can leave the overlay.
func Covered(t *Token, r Report) bool {
	if t.Health.Since.After(r.At) {
		return true
	}
	_, changed := Transition(t.Health, r)
	return !changed
}

// Query is one fetch's view of the world.
type Query struct {
	Now     time.Time
	Overlay Overlay
	// Exclude lists token ids the caller does not want, such as the one
	// that just failed it.
	Exclude []string
	// Counter drives round_robin; it is per pool and local to the agent.
	// Without it, round_robin serves like priority.
	Counter *atomic.Uint64
	// Uses counts the fetches this agent served per token, index-aligned
	// with the tokens passed to Select; least_used picks the eligible token
	// with the fewest and counts the pick. When Uses is nil or not exactly
	// as long as the tokens, least_used serves like priority and counts
	// nothing.
	Uses []atomic.Uint64
}

// Eligibility classes, best first. A token in a worse class is served only
// when no better one is eligible.
const (
	classActiveHealthy = iota
	classActiveDegraded
	classRetiringHealthy
	classRetiringDegraded
	classCount
	ineligible  = -1
	coolingDown = -2
)

// view is a Query as class reads it, with the per-query work done once.
type view struct {
	now time.Time
	// live is now+ExpiryMargin: a token is served only if it expires after.
	live    time.Time
	overlay Overlay
	exclude []string
}

func newView(q *Query) view {
	return view{now: q.Now, live: q.Now.Add(ExpiryMargin), overlay: q.Overlay, exclude: q.Exclude}
}

// class returns the eligibility class of t at v.now, or ineligible or
// coolingDown (with the time the cooldown ends).
func (v *view) class(t *Token) (int, time.Time) {
	var base int
	switch t.Lifecycle {
	case LifecycleActive:
		base = classActiveHealthy
	case LifecycleRetiring:
		base = classRetiringHealthy
	default:
		return ineligible, time.Time{}
	}
	if !v.usable(t) || v.excluded(t.ID) {
		return ineligible, time.Time{}
	}
	h := &t.Health
	if _, ok := v.overlay[t.ID]; ok { // most tokens have no report: copy none
		local := v.overlay.Health(t)
		h = &local
	}
	switch h.StateAt(v.now) {
	case Healthy:
		return base, time.Time{}
	case Degraded:
		return base + 1, time.Time{}
	case Cooldown:
		if !t.ExpiresAt.IsZero() && !h.Until.Add(ExpiryMargin).Before(t.ExpiresAt) {
			// The token expires before its cooldown ends: waiting for it
			// is no use, so it is no reason to tell a client to retry.
			return ineligible, time.Time{}
		}
		return coolingDown, h.Until
	}
	return ineligible, time.Time{}
}

// usable makes the checks of class on replicated state alone, the cheap ones,
// so that they come before the overlay lookup. None depends on health but the
// first, and no report moves a token out of failed (TestTransitionKeepsFailed),
// so a token they rule out is ineligible whatever the overlay holds.
func (v *view) usable(t *Token) bool {
	return t.Health.State != Failed &&
		(t.ExpiresAt.IsZero() || v.live.Before(t.ExpiresAt)) &&
		(t.NotBefore.IsZero() || !v.now.Before(t.NotBefore))
}

func (v *view) excluded(id string) bool {
	for _, x := range v.exclude {
		if x == id {
			return true
		}
	}
	return false
}

// Eligible reports whether t may be served at q.Now.
func Eligible(t *Token, q *Query) bool {
	v := newView(q)
	c, _ := v.class(t)
	return c >= 0
}

// How Select chooses among the eligible tokens of the best class.
const (
	pickFirst      = iota // priority, and round_robin or least_used without their state
	pickRoundRobin        // the next in turn, by Query.Counter
	pickRandom            // one uniformly at random
	pickLeastUsed         // the one with the fewest Query.Uses, the first on a tie
)

// maxCandidates is how many eligible tokens of the best class Select
// remembers as it goes, on its stack; round_robin and random look through the
// rest of the pool again only for a pick beyond them.
const maxCandidates = 64

// Select picks the token to serve from toks, which must be in Less order.
// It never returns an expired, not-yet-valid, failed, cooling-down, revoked
// or excluded token; when none is eligible the error says why. Select does
// not allocate unless it fails.
//
// Every policy serves from the best class present: healthy active tokens,
// then degraded active, healthy retiring, degraded retiring. Within it,
// priority serves the first in toks order; round_robin serves each in turn;
// random serves one uniformly at random; least_used serves the one with the
// fewest Uses, the first on a tie, and counts it. round_robin without a
// Counter and least_used without Uses for every token serve like priority.
func Select(pool *Pool, toks []*Token, q Query) (*Token, error) {
	mode := pickFirst
	switch pool.Selection {
	case SelectRoundRobin:
		if q.Counter != nil {
			mode = pickRoundRobin
		}
	case SelectRandom:
		mode = pickRandom
	case SelectLeastUsed:
		if len(q.Uses) == len(toks) {
			mode = pickLeastUsed
		}
	}
	// Field by field: newView's composite literal is built in a temporary
	// and copied, which stalls on every call.
	var v view
	v.now, v.overlay, v.exclude = q.Now, q.Overlay, q.Exclude
	v.live = v.now.Add(ExpiryMargin)
	var (
		best  = classCount // the best class seen so far
		n     int          // how many eligible tokens of class best
		pick  int          // the index of the first or, for least_used, of the least used
		least uint64       // for least_used, the Uses of pick
		// cands holds the indexes of the first eligible tokens of class
		// best, for round_robin and random. int32 is plenty: a pool holds
		// at most MaxTokensPerPool tokens.
		cands [maxCandidates]int32
		local Health
	)
	// This loop is class with its calls inlined (they cost more than the
	// rest), in the order that costs least: the tests on replicated state,
	// then the overlay lookup, then exclusion, which only a token that would
	// be served needs. A token that cannot beat the best one found is
	// dropped as soon as that shows. It looks for eligible tokens only:
	// when there is none, noEligible works out why, cooldowns included.
	for i, t := range toks {
		var c int
		switch t.Lifecycle {
		case LifecycleActive:
			c = classActiveHealthy
		case LifecycleRetiring:
			c = classRetiringHealthy
		default:
			continue
		}
		if c > best || t.Health.State == Failed ||
			!t.ExpiresAt.IsZero() && !v.live.Before(t.ExpiresAt) ||
			!t.NotBefore.IsZero() && v.now.Before(t.NotBefore) {
			continue // !v.usable(t)
		}
		h := &t.Health
		if _, ok := v.overlay[t.ID]; ok {
			local = v.overlay.Health(t)
			h = &local
		}
		switch h.StateAt(v.now) {
		case Healthy:
		case Degraded:
			c++
		default:
			continue
		}
		if c > best || v.excluded(t.ID) {
			continue
		}
		if c < best {
			if c == classActiveHealthy && mode == pickFirst {
				return t, nil // toks are in priority order: the first is best
			}
			best, n, pick = c, 0, i
			if mode == pickLeastUsed {
				least = q.Uses[i].Load()
			}
		} else if mode == pickLeastUsed {
			if u := q.Uses[i].Load(); u < least {
				least, pick = u, i
			}
		}
		if n < len(cands) {
			cands[n] = int32(i)
		}
		n++
	}
	if n == 0 {
		return nil, v.noEligible(pool, toks)
	}
	k := 0 // serve the k-th eligible token of class best
	switch mode {
	case pickLeastUsed:
		// Concurrent fetches may both pick the token with the fewest uses:
		// the counts stay exact, the balance close.
		q.Uses[pick].Add(1)
		return toks[pick], nil
	case pickRoundRobin:
		if n > 1 {
			k = int(q.Counter.Add(1) % uint64(n))
		}
	case pickRandom:
		if n > 1 {
			k = rand.IntN(n)
		}
	}
	switch {
	case k == 0:
		return toks[pick], nil
	case k < len(cands):
		return toks[cands[k]], nil
	}
	return v.nth(toks, int(cands[len(cands)-1])+1, best, k-len(cands)), nil
}

// nth returns the n-th token (from 0) of class c in toks[from:].
func (v *view) nth(toks []*Token, from, c, n int) *Token {
	for _, t := range toks[from:] {
		if tc, _ := v.class(t); tc == c {
			if n == 0 {
				return t
			}
			n--
		}
	}
	return nil // unreachable: the caller counted n+1 tokens of class c
}

// noEligible is Select's error when no token in toks is eligible.
func (v *view) noEligible(pool *Pool, toks []*Token) error {
	var (
		retryAt  time.Time
		anyToken bool
	)
	for _, t := range toks {
		if t.Lifecycle != LifecycleRevoked {
			anyToken = true
		}
		if c, until := v.class(t); c == coolingDown && (retryAt.IsZero() || until.Before(retryAt)) {
			retryAt = until
		}
	}
	switch {
	case !anyToken:
		return Errorf(CodePoolEmpty, "pool %q has no tokens", pool.Name)
	case !retryAt.IsZero():
		e := Errorf(CodeAllCoolingDown, "every usable token in pool %q is rate limited; retry after %s", pool.Name, retryAt.UTC().Format(time.RFC3339))
		e.RetryAt = retryAt
		return e
	}
	return Errorf(CodeNoHealthy, "pool %q has no healthy token: every token is failed, expired or excluded", pool.Name)
}
