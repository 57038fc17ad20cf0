package fsm

import (
	"fmt"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/go-hclog"

	"github.com/tokend/tokend/tokens"
)

// The rotation commands follow DESIGN §5: RotationBegin is committed before
// the provider is called; RotationCommit or RotationFail closes it; a new
// leader resumes it (RotationResume) or gives up (RotationAbandon); a
// credential whose rotation was closed meanwhile is kept as an orphan.

// maxOpenRotations bounds a pool's open rotations.
const maxOpenRotations = tokens.MaxPoolSize

func applyRotationBegin(s *State, index uint64, body []byte, _ hclog.Logger) (*State, []tokens.Event, error) {
	var req RotationBeginRequest
	if err := decode(body, &req); err != nil {
		return nil, nil, err
	}
	r := req.Rotation
	if !tokens.ValidName(r.ID) || r.Term == 0 || r.Reason == "" {
		return nil, nil, tokens.Errorf(tokens.CodeInvalid, "rotation needs a valid id, a term and a reason")
	}
	ps, ok := s.pools[r.Pool]
	if !ok {
		return nil, nil, tokens.Errorf(tokens.CodePoolNotFound, "pool %q does not exist", r.Pool)
	}
	switch {
	case !ps.Pool.Provider.Issues():
		return nil, nil, tokens.Errorf(tokens.CodeConflict, "pool %q has a %s provider, which cannot issue tokens", r.Pool, ps.Pool.Provider.Type)
	case r.Generation != ps.Status.Generation+1:
		return nil, nil, tokens.Errorf(tokens.CodeConflict, "rotation generation %d does not follow pool %q's %d: another plan was committed first", r.Generation, r.Pool, ps.Status.Generation)
	case len(ps.Rotations) >= maxOpenRotations:
		return nil, nil, tokens.Errorf(tokens.CodeConflict, "pool %q has %d rotations open already", r.Pool, len(ps.Rotations))
	}
	if _, open := ps.Rotation(r.ID); open {
		return nil, nil, tokens.Errorf(tokens.CodeConflict, "rotation %q is open already", r.ID)
	}
	if r.Replaces != "" {
		_, i, err := s.lookup(r.Pool, r.Replaces)
		if err != nil {
			return nil, nil, err
		}
		if t := ps.Tokens[i]; t.Lifecycle != tokens.LifecycleActive {
			return nil, nil, tokens.Errorf(tokens.CodeConflict, "token %q is %s: only active tokens are rotated", t.ID, t.Lifecycle)
		}
		if slices.ContainsFunc(ps.Rotations, func(o *tokens.Rotation) bool { return o.Replaces == r.Replaces }) {
			return nil, nil, tokens.Errorf(tokens.CodeConflict, "token %q has a rotation open already", r.Replaces)
		}
	}
	r.StartedAt, r.Attempts = req.At, 1
	next := ps.withRotation(&r)
	next.Status.Generation = r.Generation
	ev := tokens.Event{Index: index, At: req.At, Type: tokens.EventRotationBegun, Pool: r.Pool, Token: r.Replaces, Reason: r.Reason, Reporter: r.Leader, Rotation: r.ID}
	return s.withPool(r.Pool, next), []tokens.Event{ev}, nil
}

func applyRotationResume(s *State, index uint64, body []byte, _ hclog.Logger) (*State, []tokens.Event, error) {
	var req RotationResumeRequest
	if err := decode(body, &req); err != nil {
		return nil, nil, err
	}
	ps, r, err := s.openRotation(req.Pool, req.ID)
	if err != nil {
		return nil, nil, err
	}
	if req.Term <= r.Term {
		return nil, nil, tokens.Errorf(tokens.CodeConflict, "rotation %q belongs to term %d already, not before %d", req.ID, r.Term, req.Term)
	}
	c := *r
	c.Term, c.Leader, c.Attempts = req.Term, req.Leader, r.Attempts+1
	ev := tokens.Event{
		Index: index, At: req.At, Type: tokens.EventRotationResumed, Pool: req.Pool, Token: r.Replaces, Reporter: req.Leader, Rotation: r.ID,
		Reason: fmt.Sprintf("attempt %d; attempt %d by %s may have issued a credential that was never recorded, unless the issuer honours idempotency keys", c.Attempts, r.Attempts, r.Leader),
	}
	return s.withPool(req.Pool, ps.withRotation(&c)), []tokens.Event{ev}, nil
}

func applyRotationCommit(s *State, index uint64, body []byte, _ hclog.Logger) (*State, []tokens.Event, error) {
	var req RotationCommitRequest
	if err := decode(body, &req); err != nil {
		return nil, nil, err
	}
	ps, r, err := s.openRotation(req.Pool, req.ID)
	if err != nil {
		return nil, nil, err
	}
	if req.Term != r.Term {
		return nil, nil, tokens.Errorf(tokens.CodeConflict, "rotation %q belongs to term %d, not %d: its leader was deposed", req.ID, r.Term, req.Term)
	}
	t := req.Token
	if t.Pool != req.Pool {
		return nil, nil, tokens.Errorf(tokens.CodeInvalid, "token belongs to pool %q, not %q", t.Pool, req.Pool)
	}
	// An issuer that honours the idempotency key hands a resumed rotation
	// the credential it gave the deposed leader, whose late result was kept
	// as an orphan: the orphan is that very credential, and becomes the
	// committed token instead of being revoked.
	var promoted []tokens.Event
	if i := slices.IndexFunc(ps.Tokens, func(o *tokens.Token) bool {
		return o.Lifecycle == tokens.LifecycleOrphaned && o.RotationID == r.ID && o.Fingerprint == t.Fingerprint
	}); i >= 0 {
		promoted = append(promoted, tokens.Event{Index: index, At: req.At, Type: tokens.EventTokenRemoved, Pool: req.Pool, Token: ps.Tokens[i].ID, Reason: "the orphan is the credential its rotation committed", Rotation: r.ID})
		ps = ps.withoutToken(i)
	}
	if err := checkNewToken(ps, &t, req.At, true); err != nil {
		return nil, nil, err
	}
	t.Lifecycle = tokens.LifecycleActive
	t.Health = tokens.Health{State: tokens.Healthy, Since: req.At}
	t.CreatedAt, t.CreateIndex, t.ModifyIndex = req.At, index, index
	t.Generation, t.RotationID, t.RetireAt = r.Generation, r.ID, time.Time{}
	next := ps.withoutRotation(r.ID).withToken(&t)
	next.Status.Failures, next.Status.LastError, next.Status.LastSuccess = 0, "", req.At
	next.Status.NextAttempt = time.Time{}
	events := append(promoted, tokens.Event{Index: index, At: req.At, Type: tokens.EventRotationCommitted, Pool: req.Pool, Token: t.ID, To: tokens.Healthy, Reason: r.Reason, Reporter: r.Leader, Rotation: r.ID})
	if r.Replaces != "" {
		// Looked up before t joined: when the replaced token was removed
		// meanwhile, t may have taken its id, and must not be retired.
		if i := ps.indexOf(r.Replaces); i >= 0 && ps.Tokens[i].Lifecycle == tokens.LifecycleActive {
			old := *ps.Tokens[i]
			old.Lifecycle, old.ModifyIndex = tokens.LifecycleRetiring, index
			old.RetireAt = req.At.Add(time.Duration(ps.Pool.Rotation.WithDefaults().Grace))
			if !old.ExpiresAt.IsZero() && old.ExpiresAt.Before(old.RetireAt) {
				old.RetireAt = old.ExpiresAt
			}
			next = next.withToken(&old)
			events = append(events, tokens.Event{Index: index, At: req.At, Type: tokens.EventTokenRetiring, Pool: req.Pool, Token: old.ID, Reason: "replaced by " + t.ID, Rotation: r.ID})
		}
	}
	return s.withPool(req.Pool, next), events, nil
}

func applyRotationFail(s *State, index uint64, body []byte, _ hclog.Logger) (*State, []tokens.Event, error) {
	var req RotationFailRequest
	if err := decode(body, &req); err != nil {
		return nil, nil, err
	}
	ps, r, err := s.openRotation(req.Pool, req.ID)
	if err != nil {
		return nil, nil, err
	}
	if req.Term != r.Term {
		return nil, nil, tokens.Errorf(tokens.CodeConflict, "rotation %q belongs to term %d, not %d: its leader was deposed", req.ID, r.Term, req.Term)
	}
	next := ps.withoutRotation(r.ID)
	next.Status.Failures++
	next.Status.NextAttempt, next.Status.LastError = req.NextAttempt, truncateError(req.Error)
	ev := tokens.Event{Index: index, At: req.At, Type: tokens.EventRotationFailed, Pool: req.Pool, Token: r.Replaces, Reason: next.Status.LastError, Reporter: r.Leader, Rotation: r.ID}
	return s.withPool(req.Pool, next), []tokens.Event{ev}, nil
}

func applyRotationAbandon(s *State, index uint64, body []byte, _ hclog.Logger) (*State, []tokens.Event, error) {
	var req RotationAbandonRequest
	if err := decode(body, &req); err != nil {
		return nil, nil, err
	}
	ps, r, err := s.openRotation(req.Pool, req.ID)
	if err != nil {
		return nil, nil, err
	}
	ev := tokens.Event{Index: index, At: req.At, Type: tokens.EventRotationAbandoned, Pool: req.Pool, Token: r.Replaces, Reason: truncateError(req.Reason), Rotation: r.ID}
	return s.withPool(req.Pool, ps.withoutRotation(r.ID)), []tokens.Event{ev}, nil
}

// applyTokenOrphan keeps a credential that no rotation can record, so that
// it is revoked rather than lost track of. A value the pool already holds
// (an issuer that honoured the idempotency key) is tracked already.
func applyTokenOrphan(s *State, index uint64, body []byte, _ hclog.Logger) (*State, []tokens.Event, error) {
	var req TokenOrphanRequest
	if err := decode(body, &req); err != nil {
		return nil, nil, err
	}
	t := req.Token
	ps, ok := s.pools[t.Pool]
	if !ok {
		return nil, nil, tokens.Errorf(tokens.CodePoolNotFound, "pool %q does not exist", t.Pool)
	}
	if slices.ContainsFunc(ps.Tokens, func(o *tokens.Token) bool { return o.Fingerprint == t.Fingerprint && t.Fingerprint != "" }) {
		return s, nil, nil
	}
	if err := checkNewToken(ps, &t, req.At, false); err != nil {
		return nil, nil, err
	}
	t.Lifecycle, t.RetireAt = tokens.LifecycleOrphaned, req.At
	t.Health = tokens.Health{State: tokens.Healthy, Since: req.At}
	t.CreatedAt, t.CreateIndex, t.ModifyIndex = req.At, index, index
	ev := tokens.Event{Index: index, At: req.At, Type: tokens.EventTokenOrphaned, Pool: t.Pool, Token: t.ID, Reason: truncateError(req.Reason), Rotation: t.RotationID}
	return s.withPool(t.Pool, ps.withToken(&t)), []tokens.Event{ev}, nil
}

// openRotation finds an open rotation, or the rejection saying it is not.
func (s *State) openRotation(pool, id string) (*PoolState, *tokens.Rotation, error) {
	ps, ok := s.pools[pool]
	if !ok {
		return nil, nil, tokens.Errorf(tokens.CodePoolNotFound, "pool %q does not exist", pool)
	}
	r, ok := ps.Rotation(id)
	if !ok {
		return nil, nil, tokens.Errorf(tokens.CodeConflict, "rotation %q is not open in pool %q: it was finished or abandoned", id, pool)
	}
	return ps, r, nil
}

// checkNewToken checks a token about to join ps. Tokens a provider just
// issued are validated like an operator's (checkExpiry); an orphan is kept
// whatever its expiry.
func checkNewToken(ps *PoolState, t *tokens.Token, at time.Time, checkExpiry bool) error {
	probe := *t
	if !checkExpiry {
		probe.ExpiresAt, probe.NotBefore = time.Time{}, time.Time{}
	}
	if err := probe.Validate(at); err != nil {
		return err
	}
	for _, old := range ps.Tokens {
		switch {
		case old.ID == t.ID:
			return tokens.Errorf(tokens.CodeConflict, "token %q already exists in pool %q", t.ID, t.Pool)
		case old.Fingerprint == t.Fingerprint:
			return tokens.Errorf(tokens.CodeConflict, "pool %q already holds this value as token %q", t.Pool, old.ID)
		}
	}
	if len(ps.Tokens) >= tokens.MaxTokensPerPool {
		return tokens.Errorf(tokens.CodeConflict, "pool %q is full: it holds %d tokens", t.Pool, len(ps.Tokens))
	}
	return nil
}

// truncateError cuts s to at most 512 bytes, between characters: a cut
// inside one would leave invalid UTF-8, which snapshots write as U+FFFD, so
// an agent that restored one would hold another string than one that
// replayed the log.
func truncateError(s string) string {
	if len(s) <= 512 {
		return s
	}
	n := 512
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "..."
}
