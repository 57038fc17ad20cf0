package agent

import (
	"context"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/tokend/tokend/fsm"
	"github.com/tokend/tokend/tokens"
)

// resealer is the leader task that keeps every secret sealed with the
// cluster's sealing key: it records the leader's default key as that key
// when the cluster has none, and after `keyring use` (or an upgrade from a
// version that did not seal) it seals the other secrets again, in batches,
// through Raft. Readers keep opening the old values meanwhile: every agent
// holds both keys.
type resealer struct {
	a      *Agent
	logger hclog.Logger
	// poll bounds how long the resealer sleeps without a state change, so
	// that a key installed locally is noticed.
	poll time.Duration
	// clean holds, for the key cleanKey, each pool whose every secret was
	// found sealed with it, as the pool's state was then. States are
	// immutable and any change to a pool or its tokens makes a new one, so
	// a pool whose state is the same pointer needs no second look: after a
	// write, only the pool it changed is walked again, not every token of
	// every pool.
	clean    map[string]*fsm.PoolState
	cleanKey string
	// cleanState and cleanKeys are the state and keyring of the last step
	// that found every secret sealed with the cluster's key. Both are
	// immutable, so while neither changes a step has nothing to look at:
	// an idle leader does not walk every token every poll (at 10,000
	// tokens that walk was about a fifth of an idle leader's CPU).
	cleanState *fsm.State
	cleanKeys  *tokens.Keyring
	// scans counts the walks over every secret, for tests.
	scans atomic.Int64
}

// resealBatch caps the secrets one SecretsReseal entry carries.
const resealBatch = 64

func newResealer(a *Agent) *resealer {
	return &resealer{a: a, logger: a.logger.Named("resealer"), poll: time.Second}
}

func (r *resealer) run(ctx context.Context) {
	var lastErr string
	for ctx.Err() == nil {
		state := r.a.fsm.State()
		applied := r.a.fsm.AppliedIndex()
		err := r.step(ctx, state)
		switch {
		case err == nil:
			lastErr = ""
		case err.Error() != lastErr:
			lastErr = err.Error()
			r.logger.Error("cannot seal secrets with the cluster's key", "error", err)
		}
		if err == nil && r.a.fsm.AppliedIndex() != applied {
			continue // it committed something: look again at once
		}
		wctx, cancel := context.WithTimeout(ctx, r.poll)
		_ = r.a.cluster.WaitForIndex(wctx, applied+1)
		cancel()
	}
}

// step does one round: choose the key, or seal one batch again.
func (r *resealer) step(ctx context.Context, state *fsm.State) error {
	keys := r.a.keys.load()
	if state == r.cleanState && keys == r.cleanKeys {
		return nil
	}
	primary := state.Keyring().Primary
	if primary == "" {
		_, err := r.apply(ctx, fsm.KeyringUseType, fsm.KeyringUseRequest{KeyID: keys.Default(), By: r.a.cfg.NodeName, At: time.Now()})
		return err
	}
	if !keys.Has(primary) {
		return tokens.Errorf(tokens.CodeKeyMissing, "the cluster seals with key %s, which this leader does not hold", primary)
	}
	req, skipped := r.batch(state, primary)
	if len(req.Tokens)+len(req.Pools) == 0 {
		if len(skipped) > 0 {
			return tokens.Errorf(tokens.CodeKeyMissing, "secrets sealed with key %s cannot be sealed again: this leader does not hold it", strings.Join(skipped, ", "))
		}
		r.cleanState, r.cleanKeys = state, keys
		return nil
	}
	req.At = time.Now()
	if _, err := r.apply(ctx, fsm.SecretsResealType, req); err != nil {
		return err
	}
	r.logger.Info("sealed secrets with the cluster's key", "key", primary, "tokens", len(req.Tokens), "pools", len(req.Pools))
	return nil
}

// batch collects up to resealBatch secrets not sealed with primary, opened
// and sealed with it; skipped lists keys it could not open.
func (r *resealer) batch(state *fsm.State, primary string) (req fsm.SecretsResealRequest, skipped []string) {
	skip := func(err error, id string) {
		if !slices.Contains(skipped, id) {
			skipped = append(skipped, id)
		}
		r.logger.Debug("cannot open a secret to seal it again", "key", id, "error", err)
	}
	if r.cleanKey != primary {
		r.clean, r.cleanKey = nil, primary
	}
	clean := make(map[string]*fsm.PoolState, len(r.clean))
	defer func() { r.clean = clean }()
	r.scans.Add(1)
	n := 0
	for _, ps := range state.Pools() {
		if n >= resealBatch {
			break
		}
		if r.clean[ps.Pool.Name] == ps {
			clean[ps.Pool.Name] = ps
			continue
		}
		before, skips := n, len(skipped)
		stale := false
		ps.Pool.Provider.SecretKeyIDs(func(id string) { stale = stale || id != primary })
		if stale {
			spec, err := r.a.keys.openSpec(ps.Pool.Name, ps.Pool.Provider)
			if err == nil {
				spec, err = r.a.keys.sealSpecWith(primary, ps.Pool.Name, spec)
			}
			if err != nil {
				skip(err, "provider of pool "+ps.Pool.Name)
			} else {
				req.Pools = append(req.Pools, fsm.ResealedPool{Name: ps.Pool.Name, ModifyIndex: ps.Pool.ModifyIndex, Provider: spec})
				n++
			}
		}
		for _, t := range ps.Tokens {
			if n >= resealBatch {
				break
			}
			if t.Value.SealedWith(primary) {
				continue
			}
			plain, err := r.a.keys.openToken(t)
			var sealed tokens.Sealed
			var fp string
			if err == nil {
				sealed, fp, err = r.a.keys.sealValueWith(primary, t.Pool, t.ID, plain)
			}
			if err != nil {
				id, _ := t.Value.KeyID()
				skip(err, id)
				continue
			}
			req.Tokens = append(req.Tokens, fsm.ResealedToken{Pool: t.Pool, ID: t.ID, ModifyIndex: t.ModifyIndex, Value: sealed, Fingerprint: fp})
			n++
		}
		if n == before && len(skipped) == skips && !stale && n < resealBatch {
			clean[ps.Pool.Name] = ps
		}
	}
	return req, skipped
}

func (r *resealer) apply(ctx context.Context, t fsm.MessageType, req any) (uint64, error) {
	entry, err := fsm.Encode(t, req)
	if err != nil {
		return 0, err
	}
	return r.a.cluster.Apply(ctx, entry)
}
