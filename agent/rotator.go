package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/tokend/tokend/fsm"
	"github.com/tokend/tokend/tokens"
)

// rotator is the leader task that keeps pools issued (DESIGN §5): it plans
// rotations, opens each through Raft, calls the provider off Raft's
// goroutines, and commits the result; it resumes or abandons the rotations a
// previous leader left open; and its reaper revokes retired and orphaned
// tokens at the provider, then removes them.
type rotator struct {
	a         *Agent
	logger    hclog.Logger
	providers *providerCache
	interval  time.Duration

	mu sync.Mutex
	// active is set while this agent leads and the rotator runs; ctx is
	// the leadership's, which provider calls live in.
	active bool
	term   uint64
	ctx    context.Context
	// beginMu serializes opening rotations.
	beginMu sync.Mutex
	// calls tracks provider calls in flight, by rotation id; wg waits for
	// them when leadership ends.
	calls map[string]bool
	wg    sync.WaitGroup
	// wake is signalled when a call has recorded its outcome: the new
	// token's renewal time must be in the next sleep's reckoning.
	wake chan struct{}
	// reapAfter backs off revocations that failed, by token id.
	reapAfter map[string]time.Time
}

// maxRotationAttempts is how many leaders may call the provider for one
// rotation before it is abandoned.
const maxRotationAttempts = 3

// commitRetry bounds how long a result waits for a writable cluster before
// the credential is given up as lost (and logged as such).
const commitRetry = 30 * time.Second

func newRotator(a *Agent, interval time.Duration) *rotator {
	factory := a.cfg.ProviderFactory
	if factory == nil {
		factory = defaultProviderFactory(a.cfg.NodeName)
	}
	return &rotator{a: a, logger: a.logger.Named("rotator"), providers: newProviderCache(factory, a.keys), interval: interval, wake: make(chan struct{}, 1)}
}

// run is the leader task.
func (r *rotator) run(ctx context.Context) {
	r.mu.Lock()
	r.active, r.term, r.ctx = true, r.a.cluster.Term(), ctx
	r.calls, r.reapAfter = map[string]bool{}, map[string]time.Time{}
	r.mu.Unlock()
	defer func() {
		r.wg.Wait() // calls end soon: their contexts are cancelled
		r.mu.Lock()
		r.active = false
		r.mu.Unlock()
	}()
	r.takeOver(ctx)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-r.wake:
			timer.Stop()
		}
		now := time.Now()
		r.pass(ctx, now)
		timer.Reset(r.nextWake(now))
	}
}

// nextWake is how long to sleep after a pass at now: until the next moment
// something falls due — a token's renewal or max age, a backoff's end, a
// retiring token's revocation — and at most one interval. Short-lived
// tokens are renewed on time, not on the next tick: a tick could come after
// the token has stopped being served.
func (r *rotator) nextWake(now time.Time) time.Duration {
	next := now.Add(r.interval)
	consider := func(t time.Time) {
		if t.After(now) && t.Before(next) {
			next = t
		}
	}
	for _, ps := range r.a.fsm.State().Pools() {
		p := ps.Pool
		consider(ps.Status.NextAttempt)
		for _, t := range ps.Tokens {
			switch t.Lifecycle {
			case tokens.LifecycleRetiring, tokens.LifecycleOrphaned:
				consider(t.RetireAt)
				consider(t.ExpiresAt) // when the provider cannot revoke
			case tokens.LifecycleActive:
				if !p.Provider.Issues() {
					continue
				}
				consider(p.Rotation.RenewAt(t))
				if p.Rotation.MaxAge > 0 {
					consider(t.CreatedAt.Add(time.Duration(p.Rotation.MaxAge)))
				}
			}
		}
	}
	return max(next.Sub(now), time.Millisecond)
}

// takeOver resumes the rotations a previous leader left open, in this
// term, or abandons those that have had their attempts.
func (r *rotator) takeOver(ctx context.Context) {
	for _, ps := range r.a.fsm.State().Pools() {
		for _, rot := range ps.Rotations {
			if rot.Term == r.term {
				continue
			}
			if rot.Attempts >= maxRotationAttempts {
				r.apply(ctx, fsm.RotationAbandonType, fsm.RotationAbandonRequest{
					Pool: rot.Pool, ID: rot.ID, At: time.Now(),
					Reason: fmt.Sprintf("%d leaders tried it; any credential they were issued is untracked unless the issuer honours idempotency keys", rot.Attempts),
				})
				continue
			}
			if _, err := r.apply(ctx, fsm.RotationResumeType, fsm.RotationResumeRequest{Pool: rot.Pool, ID: rot.ID, Term: r.term, Leader: r.a.cfg.NodeName, At: time.Now()}); err != nil {
				continue
			}
			resumed := *rot
			resumed.Term = r.term
			r.call(ctx, ps.Pool, &resumed)
		}
	}
}

// pass makes one round: rotations that are due, then the reaper.
func (r *rotator) pass(ctx context.Context, now time.Time) {
	for _, ps := range r.a.fsm.State().Pools() {
		if ctx.Err() != nil {
			return
		}
		if ps.Pool.Provider.Issues() {
			for _, need := range tokens.PlanRotations(ps.Pool, ps.Tokens, ps.Rotations, ps.Status, now) {
				if err := r.begin(ctx, ps.Pool.Name, need); err != nil {
					break // the pool changed or writes fail: plan again next pass
				}
			}
		}
		r.reap(ctx, ps, now)
	}
}

// begin opens a rotation for need and starts its provider call.
func (r *rotator) begin(ctx context.Context, pool string, need tokens.RotationNeed) error {
	_, err := r.beginID(ctx, pool, need)
	return err
}

// beginID is begin, returning the rotation's id. The state is read again so
// the generation follows the latest committed one; rotations of one pool
// open one at a time (beginMu), or two would claim the same generation.
func (r *rotator) beginID(ctx context.Context, pool string, need tokens.RotationNeed) (string, error) {
	r.beginMu.Lock()
	defer r.beginMu.Unlock()
	ps, ok := r.a.fsm.State().Pool(pool)
	if !ok {
		return "", tokens.Errorf(tokens.CodePoolNotFound, "pool %q does not exist", pool)
	}
	rot := tokens.Rotation{
		ID: newRotationID(), Pool: pool, Replaces: need.Replaces, Reason: need.Reason,
		Generation: ps.Status.Generation + 1, Term: r.term, Leader: r.a.cfg.NodeName,
	}
	if _, err := r.apply(ctx, fsm.RotationBeginType, fsm.RotationBeginRequest{Rotation: rot, At: time.Now()}); err != nil {
		return "", err
	}
	r.logger.Info("rotation begun", "pool", pool, "rotation", rot.ID, "replaces", need.Replaces, "reason", need.Reason)
	rot.StartedAt, rot.Attempts = time.Now(), 1
	r.mu.Lock()
	lctx := r.ctx
	r.mu.Unlock()
	r.call(lctx, ps.Pool, &rot)
	return rot.ID, nil
}

// call runs the provider for an open rotation in its own goroutine.
func (r *rotator) call(ctx context.Context, pool *tokens.Pool, rot *tokens.Rotation) {
	r.mu.Lock()
	if !r.active || r.calls[rot.ID] {
		r.mu.Unlock()
		return
	}
	r.calls[rot.ID] = true
	r.wg.Add(1)
	r.mu.Unlock()
	go func() {
		defer func() {
			r.mu.Lock()
			delete(r.calls, rot.ID)
			r.mu.Unlock()
			select {
			case r.wake <- struct{}{}:
			default:
			}
			r.wg.Done()
		}()
		r.issue(ctx, pool, rot)
	}()
}

// issue calls the provider once and records the outcome.
func (r *rotator) issue(ctx context.Context, pool *tokens.Pool, rot *tokens.Rotation) {
	p, err := r.providers.get(pool)
	var issued tokens.Issued
	if err == nil {
		cctx, cancel := context.WithTimeout(ctx, pool.Provider.CallTimeout())
		issued, err = p.Provider.Issue(cctx, r.issueRequest(pool.Name, rot))
		cancel()
	}
	// A result is recorded even if leadership ended meanwhile: the commit
	// is then refused and the credential kept as an orphan, never lost.
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), commitRetry)
	defer cancel()
	if err != nil {
		if ctx.Err() != nil {
			return // deposed mid-call: the next leader resumes the rotation
		}
		status := tokens.RotationStatus{}
		if ps, ok := r.a.fsm.State().Pool(pool.Name); ok {
			status = ps.Status
		}
		next := time.Now().Add(pool.Rotation.RetryDelay(status.Failures+1, rand.Float64()))
		r.logger.Warn("rotation failed", "pool", pool.Name, "rotation", rot.ID, "replaces", rot.Replaces, "error", err, "retry_at", next)
		r.retryApply(wctx, fsm.RotationFailType, fsm.RotationFailRequest{Pool: pool.Name, ID: rot.ID, Term: rot.Term, Error: err.Error(), NextAttempt: next, At: time.Now()})
		return
	}
	tok := tokens.Token{
		ID: newTokenID(), Pool: pool.Name,
		ExpiresAt: issued.ExpiresAt, Metadata: issued.Metadata, RotationID: rot.ID, Generation: rot.Generation,
	}
	tok.Value, tok.Fingerprint, err = r.a.keys.sealValue(r.a.fsm.State(), pool.Name, tok.ID, issued.Value)
	if err != nil {
		r.logger.Error("a provider issued a credential that this leader cannot seal, so it is not recorded", "pool", pool.Name, "rotation", rot.ID, "error", err)
		return
	}
	_, err = r.retryApply(wctx, fsm.RotationCommitType, fsm.RotationCommitRequest{Pool: pool.Name, ID: rot.ID, Term: rot.Term, Token: tok, At: time.Now()})
	if err == nil {
		r.logger.Info("rotation committed", "pool", pool.Name, "rotation", rot.ID, "token", tok.ID, "replaces", rot.Replaces, "expires_at", tok.ExpiresAt)
		return
	}
	if retryable(err) {
		r.logger.Error("a provider issued a credential that could not be recorded", "pool", pool.Name, "rotation", rot.ID, "error", err)
		return
	}
	r.logger.Warn("rotation result refused; keeping the credential as an orphan to revoke", "pool", pool.Name, "rotation", rot.ID, "error", err)
	if _, err := r.retryApply(wctx, fsm.TokenOrphanType, fsm.TokenOrphanRequest{Token: tok, Reason: err.Error(), At: time.Now()}); err != nil {
		r.logger.Error("a provider issued a credential that could not be recorded as an orphan", "pool", pool.Name, "rotation", rot.ID, "error", err)
	}
}

// issueRequest tells the provider what it replaces and what is active.
func (r *rotator) issueRequest(pool string, rot *tokens.Rotation) tokens.IssueRequest {
	req := tokens.IssueRequest{Key: rot.ID}
	ps, ok := r.a.fsm.State().Pool(pool)
	if !ok {
		return req
	}
	for _, t := range ps.Tokens {
		if t.Lifecycle != tokens.LifecycleActive {
			continue
		}
		req.Active = append(req.Active, t.Metadata)
		if t.ID == rot.Replaces {
			req.Replacing = t.Metadata
		}
	}
	return req
}

// reap revokes and removes retiring tokens past their RetireAt and orphans.
// A retiring token stays while fewer than min_active active tokens are
// eligible: it is the last fallback. When the provider cannot revoke, a
// token stays tracked until it expires, so no live credential is forgotten.
func (r *rotator) reap(ctx context.Context, ps *fsm.PoolState, now time.Time) {
	policy := ps.Pool.Rotation.WithDefaults()
	eligible := 0
	q := &tokens.Query{Now: now}
	for _, t := range ps.Tokens {
		if t.Lifecycle == tokens.LifecycleActive && tokens.Eligible(t, q) {
			eligible++
		}
	}
	for _, t := range ps.Tokens {
		switch {
		case t.Lifecycle != tokens.LifecycleRetiring && t.Lifecycle != tokens.LifecycleOrphaned,
			now.Before(t.RetireAt),
			t.Lifecycle == tokens.LifecycleRetiring && eligible < policy.MinActive && tokens.Eligible(t, q),
			now.Before(r.reapAfter[t.ID]):
			continue
		}
		reason := "expired; the provider cannot revoke"
		p, perr := r.providers.get(ps.Pool)
		if perr != nil || p.Revoker == nil {
			// Nothing can end it early: it stays tracked until it expires.
			// One without expiry lives on at the issuer, untracked.
			if now.Before(t.ExpiresAt) {
				continue
			}
			if t.ExpiresAt.IsZero() {
				reason = "retired; the provider cannot revoke it and it does not expire"
				r.logger.Warn("forgetting a retired token that stays valid at the issuer: it cannot be revoked and does not expire", "pool", ps.Pool.Name, "token", t.ID)
			}
		} else {
			value, err := r.a.keys.openToken(t)
			if err == nil {
				cctx, cancel := context.WithTimeout(ctx, ps.Pool.Provider.CallTimeout())
				err = p.Revoker.Revoke(cctx, tokens.RevokeRequest{Value: value, Metadata: t.Metadata})
				cancel()
			}
			if err != nil {
				r.logger.Warn("revoking a retired token failed; will retry", "pool", ps.Pool.Name, "token", t.ID, "lifecycle", t.Lifecycle, "error", err)
				r.reapAfter[t.ID] = now.Add(policy.RetryDelay(2, rand.Float64()))
				continue
			}
			reason = "revoked at the provider"
		}
		if t.Lifecycle == tokens.LifecycleOrphaned {
			reason = "orphan " + reason
		}
		if _, err := r.apply(ctx, fsm.TokenRemoveType, fsm.TokenRemoveRequest{Pool: ps.Pool.Name, ID: t.ID, Reason: reason, At: time.Now()}); err == nil {
			r.logger.Info("token reaped", "pool", ps.Pool.Name, "token", t.ID, "reason", reason)
			delete(r.reapAfter, t.ID)
		}
	}
}

func (r *rotator) apply(ctx context.Context, t fsm.MessageType, req any) (uint64, error) {
	entry, err := fsm.Encode(t, req)
	if err != nil {
		return 0, err
	}
	index, err := r.a.cluster.Apply(ctx, entry)
	if err != nil && ctx.Err() == nil {
		r.logger.Debug("write refused", "type", t.String(), "error", err)
	}
	return index, err
}

// retryApply writes until the cluster takes or refuses the entry, or ctx
// ends: the result of a provider call must not be lost to an election.
func (r *rotator) retryApply(ctx context.Context, t fsm.MessageType, req any) (uint64, error) {
	delay := 50 * time.Millisecond
	for {
		index, err := r.apply(ctx, t, req)
		if err == nil || !retryable(err) {
			return index, err
		}
		select {
		case <-ctx.Done():
			return 0, err
		case <-time.After(delay):
		}
		delay = min(2*delay, 2*time.Second)
	}
}

func retryable(err error) bool {
	return errors.Is(err, tokens.ErrNoLeader) || errors.Is(err, tokens.ErrUnavailable)
}

// newRotationID returns "rot_" and 16 random hex digits.
func newRotationID() string { return "rot_" + newTokenID()[len("tok_"):] }

// leaderRotate is the name under which agents ask the leader to rotate now.
const leaderRotate = "rotate"

// rotateRequest asks for the rotation of one token, or of every active
// token of a pool.
type rotateRequest struct {
	Pool  string `json:"pool"`
	Token string `json:"token,omitempty"`
	// AuthHash is the caller's ACL token, checked again here.
	AuthHash string `json:"auth_hash,omitempty"`
}

// handleRotate is the leader's handler for manual rotations: it opens a
// rotation (reason manual) for each token asked for that has none open, and
// returns their ids. Backoff does not apply: an operator asked.
func (r *rotator) handleRotate(ctx context.Context, body []byte) ([]byte, error) {
	var req rotateRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, tokens.Errorf(tokens.CodeInvalid, "rotate: %v", err)
	}
	r.mu.Lock()
	active := r.active
	r.mu.Unlock()
	if !active {
		return nil, tokens.Errorf(tokens.CodeNoLeader, "this agent is not leading yet, or no longer")
	}
	if err := recheck(r.a.fsm.State(), req.AuthHash, req.Pool, tokens.CapWrite); err != nil {
		return nil, err
	}
	ps, ok := r.a.fsm.State().Pool(req.Pool)
	if !ok {
		return nil, tokens.Errorf(tokens.CodePoolNotFound, "pool %q does not exist", req.Pool)
	}
	if !ps.Pool.Provider.Issues() {
		return nil, tokens.Errorf(tokens.CodeConflict, "pool %q has a static provider, which cannot issue: add a new token instead", req.Pool)
	}
	var ids []string
	for _, t := range ps.Tokens {
		if req.Token != "" && t.ID != req.Token {
			continue
		}
		if t.Lifecycle != tokens.LifecycleActive {
			if req.Token != "" {
				return nil, tokens.Errorf(tokens.CodeConflict, "token %q is %s: only active tokens are rotated", t.ID, t.Lifecycle)
			}
			continue
		}
		if slices.ContainsFunc(ps.Rotations, func(o *tokens.Rotation) bool { return o.Replaces == t.ID }) {
			if req.Token != "" {
				return nil, tokens.Errorf(tokens.CodeConflict, "token %q has a rotation open already", t.ID)
			}
			continue
		}
		id, err := r.beginID(ctx, req.Pool, tokens.RotationNeed{Replaces: t.ID, Reason: tokens.ReasonManual})
		if err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	if req.Token != "" && len(ids) == 0 {
		return nil, tokens.Errorf(tokens.CodeTokenNotFound, "token %q does not exist in pool %q", req.Token, req.Pool)
	}
	return json.Marshal(ids)
}
