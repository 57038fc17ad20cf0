package tokens

import (
	"sort"
	"time"
)

// RotationPolicy says when a pool's tokens are replaced. Zero fields take
// the defaults.
type RotationPolicy struct {
	// MaxAge replaces a token this long after it was issued (0: never for
	// age alone).
	MaxAge Duration `json:"max_age,omitzero"`
	// RenewBefore replaces a token this long before it stops being served,
	// which is ExpiryMargin before it expires (default: a third of its
	// lifetime). See RenewAt.
	RenewBefore Duration `json:"renew_before,omitzero"`
	// Grace is how long a replaced token stays valid, as retiring, before
	// it is revoked (default 1m, and never past its own expiry).
	Grace Duration `json:"grace,omitzero"`
	// MinActive keeps retiring tokens unrevoked while fewer active tokens
	// than this are eligible (default 1).
	MinActive int `json:"min_active,omitempty"`
	// RetryMin and RetryMax bound the backoff after failed rotations
	// (defaults 1s and 5m); each delay gets up to 20 % jitter.
	RetryMin Duration `json:"retry_min,omitzero"`
	RetryMax Duration `json:"retry_max,omitzero"`
	// AlertBefore raises an alert when a token expires within it and no
	// replacement is active (default: half of the token's renew_before).
	AlertBefore Duration `json:"alert_before,omitzero"`
}

// Rotation defaults.
const (
	DefaultPoolSize  = 2
	MaxPoolSize      = 100
	DefaultGrace     = time.Minute
	DefaultRetryMin  = time.Second
	DefaultRetryMax  = 5 * time.Minute
	DefaultMinActive = 1
)

// WithDefaults returns p with zero fields set to their defaults; the
// token-dependent ones (RenewBefore, AlertBefore) stay zero and are worked
// out per token.
func (p RotationPolicy) WithDefaults() RotationPolicy {
	if p.Grace == 0 {
		p.Grace = Duration(DefaultGrace)
	}
	if p.MinActive == 0 {
		p.MinActive = DefaultMinActive
	}
	if p.RetryMin == 0 {
		p.RetryMin = Duration(DefaultRetryMin)
	}
	if p.RetryMax == 0 {
		p.RetryMax = Duration(DefaultRetryMax)
	}
	return p
}

// RenewBeforeFor is how long before t expires it is replaced.
func (p RotationPolicy) RenewBeforeFor(t *Token) time.Duration {
	if p.RenewBefore > 0 {
		return time.Duration(p.RenewBefore)
	}
	if t.ExpiresAt.IsZero() {
		return 0
	}
	return t.ExpiresAt.Sub(t.CreatedAt) / 3
}

// RenewAt is when t is due for replacement because of its expiry: its
// renew_before ahead of the moment selection stops serving it (ExpiryMargin
// before it expires), but never before a quarter of that serving life has
// passed, so a renew_before longer than the token lives does not replace
// it the moment it is issued. Zero for a token without expiry.
func (p RotationPolicy) RenewAt(t *Token) time.Time {
	if t.ExpiresAt.IsZero() {
		return time.Time{}
	}
	lastServed := t.ExpiresAt.Add(-ExpiryMargin)
	at := lastServed.Add(-p.RenewBeforeFor(t))
	if earliest := t.CreatedAt.Add(lastServed.Sub(t.CreatedAt) / 4); at.Before(earliest) {
		return earliest
	}
	return at
}

// AlertBeforeFor is how long before t expires an unreplaced t raises an
// alert.
func (p RotationPolicy) AlertBeforeFor(t *Token) time.Duration {
	if p.AlertBefore > 0 {
		return time.Duration(p.AlertBefore)
	}
	return p.RenewBeforeFor(t) / 2
}

// RetryDelay is the backoff after the given number of consecutive failed
// rotations; jitter, in [0, 1), adds up to 20 % so that pools do not retry
// in step.
func (p RotationPolicy) RetryDelay(failures int, jitter float64) time.Duration {
	p = p.WithDefaults()
	d := time.Duration(p.RetryMin)
	for i := 1; i < failures && d < time.Duration(p.RetryMax); i++ {
		d *= 2
	}
	d = min(d, time.Duration(p.RetryMax))
	return d + time.Duration(float64(d)*0.2*jitter)
}

// Rotation is one replacement in progress, recorded through Raft before the
// provider is called so that no two collide and no issued credential is lost
// track of.
type Rotation struct {
	ID   string `json:"id"`
	Pool string `json:"pool"`
	// Replaces is the token being replaced; empty when the pool is only
	// topped up to its size.
	Replaces string `json:"replaces,omitempty"`
	Reason   string `json:"reason"`
	// Generation orders the pool's rotations.
	Generation uint64 `json:"generation"`
	// Term is the leader term allowed to finish the rotation: a deposed
	// leader's late result carries an older term and is refused.
	Term      uint64    `json:"term"`
	Leader    string    `json:"leader"`
	StartedAt time.Time `json:"started_at"`
	// Attempts counts the leaders that have called the provider for it.
	Attempts int `json:"attempts"`
}

// RotationStatus is a pool's record of its rotations.
type RotationStatus struct {
	// Generation is the generation of the pool's latest rotation.
	Generation  uint64    `json:"generation,omitempty"`
	Failures    int       `json:"failures,omitempty"`
	NextAttempt time.Time `json:"next_attempt,omitzero"`
	LastError   string    `json:"last_error,omitempty"`
	LastSuccess time.Time `json:"last_success,omitzero"`
}

// Reasons a token needs replacing.
const (
	ReasonMaxAge      = "max_age"
	ReasonRenewBefore = "renew_before"
	ReasonFailed      = "failed"
	ReasonSize        = "size"
	ReasonManual      = "manual"
)

// RotationNeed is one rotation a pool needs now.
type RotationNeed struct {
	// Replaces is the token to replace, empty to add one.
	Replaces string
	Reason   string
}

// PlanRotations returns the rotations pool p needs at now, given its tokens
// (in Less order), its open rotations and its status. A token is due when
// it is older than max_age, reaches its RenewAt, or is failed;
// then the pool is topped up to its size. Nothing is planned for a token
// that already has an open rotation, nor while the pool backs off after
// failures. For a static pool the needs are what should be rotated; its
// provider cannot, so the leader alerts instead.
func PlanRotations(p *Pool, toks []*Token, open []*Rotation, status RotationStatus, now time.Time) []RotationNeed {
	if now.Before(status.NextAttempt) {
		return nil
	}
	rotating := map[string]bool{}
	for _, r := range open {
		rotating[r.Replaces] = true
	}
	var needs []RotationNeed
	// Active tokens that are neither due nor failed, nor being replaced: a
	// token with an open rotation is counted through that rotation, or it
	// and its replacement would both count.
	healthy := 0
	for _, t := range toks {
		if t.Lifecycle != LifecycleActive || rotating[t.ID] {
			continue
		}
		reason := dueReason(p, t, now)
		if reason == "" {
			healthy++
			continue
		}
		needs = append(needs, RotationNeed{Replaces: t.ID, Reason: reason})
	}
	size := p.Size
	if size == 0 && p.Provider.Issues() {
		size = DefaultPoolSize
	}
	// Every open rotation and every replacement planned here will add an
	// active token.
	for n := healthy + len(open) + len(needs); n < size; n++ {
		needs = append(needs, RotationNeed{Reason: ReasonSize})
	}
	sort.SliceStable(needs, func(i, j int) bool { return needs[i].Replaces != "" && needs[j].Replaces == "" })
	return needs
}

// dueReason says why active token t needs replacing at now, or "".
func dueReason(p *Pool, t *Token, now time.Time) string {
	switch {
	case t.Health.StateAt(now) == Failed:
		return ReasonFailed
	case !t.ExpiresAt.IsZero() && !now.Before(p.Rotation.RenewAt(t)):
		return ReasonRenewBefore
	case p.Rotation.MaxAge > 0 && !now.Before(t.CreatedAt.Add(time.Duration(p.Rotation.MaxAge))):
		return ReasonMaxAge
	}
	return ""
}
