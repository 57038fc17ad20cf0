package agent

import (
	"context"

	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tokend/tokend/api"

	"github.com/tokend/tokend/fsm"
	"github.com/tokend/tokend/tokens"
)

// reader answers reads from the FSM's current state and this agent's
// overlay of reports that have not been committed yet. It never takes a lock
// that Apply holds.
type reader struct {
	fsm     *fsm.FSM
	keys    *keyring
	overlay atomic.Pointer[tokens.Overlay]
	// mu serializes overlay writers; readers only load the pointer.
	mu       sync.Mutex
	counters sync.Map // pool name -> *atomic.Uint64, for round_robin
	stats    sync.Map // tokenKey -> *tokenStats
	// uses holds, per pool, least_used's fetch counts, aligned with one
	// version of the pool's tokens; usesMu serializes rebuilding them.
	uses   sync.Map // pool name -> *poolUses
	usesMu sync.Mutex
}

// poolUses counts fetches per token of one version of a pool.
type poolUses struct {
	ps     *fsm.PoolState
	counts []atomic.Uint64
}

// poolUseCounts returns the fetch counts aligned with ps.Tokens, carrying
// counts over from the previous version of the pool. A new token starts at
// the lowest count, not at zero, so it does not draw every fetch until it
// catches up.
func (r *reader) poolUseCounts(ps *fsm.PoolState) []atomic.Uint64 {
	if v, ok := r.uses.Load(ps.Pool.Name); ok && v.(*poolUses).ps == ps {
		return v.(*poolUses).counts
	}
	r.usesMu.Lock()
	defer r.usesMu.Unlock()
	var old *poolUses
	if v, ok := r.uses.Load(ps.Pool.Name); ok {
		if old = v.(*poolUses); old.ps == ps {
			return old.counts
		}
	}
	counts := make([]atomic.Uint64, len(ps.Tokens))
	if old != nil {
		prev := map[string]uint64{}
		lowest := ^uint64(0)
		for i, t := range old.ps.Tokens {
			n := old.counts[i].Load()
			prev[t.ID] = n
			lowest = min(lowest, n)
		}
		for i, t := range ps.Tokens {
			if n, ok := prev[t.ID]; ok {
				counts[i].Store(n)
			} else if len(prev) > 0 {
				counts[i].Store(lowest)
			}
		}
	}
	r.uses.Store(ps.Pool.Name, &poolUses{ps: ps, counts: counts})
	return counts
}

// tokenStats counts the reports this agent received about one token.
type tokenStats struct {
	outcomes      [len(reportOutcomes)]atomic.Uint64
	lastLatencyMS atomic.Int64
	lastReport    atomic.Int64 // unix nanoseconds
}

var reportOutcomes = [...]tokens.Outcome{tokens.OutcomeOK, tokens.OutcomeUnauthorized, tokens.OutcomeForbidden, tokens.OutcomeRateLimited, tokens.OutcomeError, tokens.OutcomeTimeout}

// record counts rep in the token's statistics.
func (r *reader) record(rep tokens.Report) {
	key := tokenKey{rep.Pool, rep.TokenID}
	v, ok := r.stats.Load(key)
	if !ok {
		v, _ = r.stats.LoadOrStore(key, &tokenStats{})
	}
	st := v.(*tokenStats)
	for i, o := range reportOutcomes {
		if o == rep.Outcome {
			st.outcomes[i].Add(1)
		}
	}
	if rep.Outcome == tokens.OutcomeOK && rep.LatencyMS > 0 {
		st.lastLatencyMS.Store(rep.LatencyMS)
	}
	st.lastReport.Store(rep.At.UnixNano())
}

func newReader(f *fsm.FSM, keys *keyring) *reader {
	r := &reader{fsm: f, keys: keys}
	r.overlay.Store(&tokens.Overlay{})
	return r
}

func (r *reader) view() *view {
	return &view{state: r.fsm.State(), overlay: *r.overlay.Load(), now: time.Now(), r: r}
}

// committedView is a view of the replicated state without the overlay.
func (r *reader) committedView() *view {
	return &view{state: r.fsm.State(), now: time.Now(), r: r}
}

func (r *reader) counter(pool string) *atomic.Uint64 {
	if c, ok := r.counters.Load(pool); ok {
		return c.(*atomic.Uint64)
	}
	c, _ := r.counters.LoadOrStore(pool, new(atomic.Uint64))
	return c.(*atomic.Uint64)
}

// localReport is what a report did to this agent's overlay.
type localReport struct {
	// health is the token's health as this agent now sees it.
	health tokens.Health
	// changed says the report changed it; covered says the replicated
	// state already holds that (or a stronger) health.
	changed, covered bool
	// guarded says the report would fail the pool's last eligible token,
	// which one agent's reports alone never do.
	guarded bool
}

// report applies rep to this agent's overlay at once, so that the next fetch
// here already skips the token, unless it would fail the pool's last
// eligible token.
func (r *reader) report(rep tokens.Report) (localReport, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	state := r.fsm.State()
	ps, ok := state.Pool(rep.Pool)
	if !ok {
		return localReport{}, tokens.Errorf(tokens.CodePoolNotFound, "pool %q does not exist", rep.Pool)
	}
	t, ok := state.Token(rep.Pool, rep.TokenID)
	if !ok {
		return localReport{}, tokens.Errorf(tokens.CodeTokenNotFound, "token %q does not exist in pool %q", rep.TokenID, rep.Pool)
	}
	cur := *r.overlay.Load()
	h, changed := tokens.Transition(cur.Health(t), rep)
	if !changed {
		return localReport{health: cur.Health(t), covered: tokens.Covered(t, rep)}, nil
	}
	if h.State == tokens.Failed && lastEligible(ps.Tokens, t, &tokens.Query{Now: rep.At, Overlay: cur}) {
		return localReport{health: cur.Health(t), guarded: true}, nil
	}
	next := maps.Clone(cur)
	next[rep.TokenID] = rep
	r.overlay.Store(&next)
	return localReport{health: h, changed: true}, nil
}

// lastEligible reports whether no token in toks but t is eligible under q.
func lastEligible(toks []*tokens.Token, t *tokens.Token, q *tokens.Query) bool {
	for _, other := range toks {
		if other.ID != t.ID && tokens.Eligible(other, q) {
			return false
		}
	}
	return true
}

// prune drops overlay entries the replicated state has caught up with, whose
// token is gone, or whose cooldown is over, and the counters and statistics
// of pools and tokens that are gone.
func (r *reader) prune(now time.Time) {
	state := r.fsm.State()
	r.stats.Range(func(k, _ any) bool {
		if key := k.(tokenKey); !tokenExists(state, key) {
			r.stats.Delete(k)
		}
		return true
	})
	for _, m := range []*sync.Map{&r.counters, &r.uses} {
		m.Range(func(k, _ any) bool {
			if _, ok := state.Pool(k.(string)); !ok {
				m.Delete(k)
			}
			return true
		})
	}
	r.keys.prune(state)
	r.mu.Lock()
	defer r.mu.Unlock()
	cur := *r.overlay.Load()
	if len(cur) == 0 {
		return
	}
	state = r.fsm.State()
	next := maps.Clone(cur)
	maps.DeleteFunc(next, func(_ string, rep tokens.Report) bool {
		t, ok := state.Token(rep.Pool, rep.TokenID)
		return !ok || tokens.Covered(t, rep) || (rep.Outcome == tokens.OutcomeRateLimited && !now.Before(rep.Until))
	})
	if len(next) != len(cur) {
		r.overlay.Store(&next)
	}
}

func (r *reader) pruneLoop(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			r.prune(now)
		}
	}
}

// view is one consistent read: a state, an overlay and a time.
type view struct {
	state   *fsm.State
	overlay tokens.Overlay
	now     time.Time
	r       *reader
}

func (v *view) Now() time.Time { return v.now }

func (v *view) Pools() []*tokens.Pool {
	ps := v.state.Pools()
	out := make([]*tokens.Pool, len(ps))
	for i, p := range ps {
		out[i] = p.Pool
	}
	return out
}

func (v *view) Pool(name string) (*tokens.Pool, []*tokens.Token, bool) {
	ps, ok := v.state.Pool(name)
	if !ok {
		return nil, nil, false
	}
	return ps.Pool, ps.Tokens, true
}

func (v *view) Select(pool string, exclude []string) (*tokens.Token, error) {
	ps, ok := v.state.Pool(pool)
	if !ok {
		return nil, tokens.Errorf(tokens.CodePoolNotFound, "pool %q does not exist", pool)
	}
	q := tokens.Query{Now: v.now, Overlay: v.overlay, Exclude: exclude}
	switch ps.Pool.Selection {
	case tokens.SelectRoundRobin:
		q.Counter = v.r.counter(pool)
	case tokens.SelectLeastUsed:
		q.Uses = v.r.poolUseCounts(ps)
	}
	return tokens.Select(ps.Pool, ps.Tokens, q)
}

func (v *view) Health(t *tokens.Token) tokens.Health { return v.overlay.Health(t) }

func (v *view) Open(t *tokens.Token) (tokens.Secret, error) { return v.r.keys.openToken(t) }

func (v *view) Eligible(t *tokens.Token) bool {
	return tokens.Eligible(t, &tokens.Query{Now: v.now, Overlay: v.overlay})
}

func tokenExists(s *fsm.State, key tokenKey) bool {
	_, ok := s.Token(key.pool, key.id)
	return ok
}

func (v *view) ReportStats(t *tokens.Token) *api.ReportStats {
	st, ok := v.r.stats.Load(tokenKey{t.Pool, t.ID})
	if !ok {
		return nil
	}
	s := st.(*tokenStats)
	out := &api.ReportStats{
		OK:            s.outcomes[0].Load(),
		Unauthorized:  s.outcomes[1].Load(),
		Forbidden:     s.outcomes[2].Load(),
		RateLimited:   s.outcomes[3].Load(),
		Error:         s.outcomes[4].Load(),
		Timeout:       s.outcomes[5].Load(),
		LastLatencyMS: s.lastLatencyMS.Load(),
	}
	if ns := s.lastReport.Load(); ns != 0 {
		at := time.Unix(0, ns).UTC()
		out.LastReportAt = &at
	}
	return out
}

func (v *view) Rotations(pool string) ([]*tokens.Rotation, tokens.RotationStatus) {
	ps, ok := v.state.Pool(pool)
	if !ok {
		return nil, tokens.RotationStatus{}
	}
	return ps.Rotations, ps.Status
}
