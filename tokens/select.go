package tokens

import (
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
	Counter *atomic.Uint64
	// Uses counts the fetches this agent served per token, index-aligned
	// with the tokens passed to Select; least_used picks the eligible token
	// with the fewest and counts the pick.
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

// class returns the eligibility class of t at q.Now, or ineligible or
// coolingDown (with the time the cooldown ends).
func class(t *Token, q *Query) (int, time.Time) {
	var base int
	switch t.Lifecycle {
	case LifecycleActive:
		base = classActiveHealthy
	case LifecycleRetiring:
		base = classRetiringHealthy
	default:
		return ineligible, time.Time{}
	}
	if !t.ExpiresAt.IsZero() && !q.Now.Add(ExpiryMargin).Before(t.ExpiresAt) {
		return ineligible, time.Time{}
	}
	if !t.NotBefore.IsZero() && q.Now.Before(t.NotBefore) {
		return ineligible, time.Time{}
	}
	for _, id := range q.Exclude {
		if id == t.ID {
			return ineligible, time.Time{}
		}
	}
	h := q.Overlay.Health(t)
	switch h.StateAt(q.Now) {
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

// Eligible reports whether t may be served at q.Now.
func Eligible(t *Token, q *Query) bool {
	c, _ := class(t, q)
	return c >= 0
}

// Select picks the token to serve from toks, which must be in Less order.
// It never returns an expired, not-yet-valid, failed, cooling-down, revoked
// or excluded token; when none is eligible the error says why. Select does
// not allocate unless it fails.
func Select(pool *Pool, toks []*Token, q Query) (*Token, error) {
	policy := pool.Selection
	var (
		counts   [classCount]int
		first    [classCount]*Token
		retryAt  time.Time
		anyToken bool
	)
	for _, t := range toks {
		c, until := class(t, &q)
		if t.Lifecycle != LifecycleRevoked {
			anyToken = true
		}
		switch c {
		case ineligible:
			continue
		case coolingDown:
			if retryAt.IsZero() || until.Before(retryAt) {
				retryAt = until
			}
			continue
		}
		if policy != SelectRoundRobin && c == classActiveHealthy {
			return t, nil // toks are in priority order: the first is best
		}
		if counts[c] == 0 {
			first[c] = t
		}
		counts[c]++
	}
	best := -1
	for c := range counts {
		if counts[c] > 0 {
			best = c
			break
		}
	}
	switch {
	case best >= 0 && (policy != SelectRoundRobin || counts[best] == 1 || q.Counter == nil):
		return first[best], nil
	case best >= 0:
		return nth(toks, &q, best, int(q.Counter.Add(1)%uint64(counts[best]))), nil
	case !anyToken:
		return nil, Errorf(CodePoolEmpty, "pool %q has no tokens", pool.Name)
	case !retryAt.IsZero():
		e := Errorf(CodeAllCoolingDown, "every usable token in pool %q is rate limited; retry after %s", pool.Name, retryAt.UTC().Format(time.RFC3339))
		e.RetryAt = retryAt
		return nil, e
	}
	return nil, Errorf(CodeNoHealthy, "pool %q has no healthy token: every token is failed, expired or excluded", pool.Name)
}

// nth returns the n-th token (from 0) of class c.
func nth(toks []*Token, q *Query, c, n int) *Token {
	for _, t := range toks {
		if tc, _ := class(t, q); tc == c {
			if n == 0 {
				return t
			}
			n--
		}
	}
	return nil // unreachable: the caller counted n+1 tokens of class c
}
