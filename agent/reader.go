package agent

import (
	"context"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tokend/tokend/fsm"
	"github.com/tokend/tokend/tokens"
)

// reader answers reads from the FSM's current state and this agent's
// overlay of reports that have not been committed yet. It never takes a lock
// that Apply holds.
type reader struct {
	fsm     *fsm.FSM
	overlay atomic.Pointer[tokens.Overlay]
	// mu serializes overlay writers; readers only load the pointer.
	mu       sync.Mutex
	counters sync.Map // pool name -> *atomic.Uint64, for round_robin
}

func newReader(f *fsm.FSM) *reader {
	r := &reader{fsm: f}
	r.overlay.Store(&tokens.Overlay{})
	return r
}

func (r *reader) view() *view {
	return &view{state: r.fsm.State(), overlay: *r.overlay.Load(), now: time.Now(), r: r}
}

func (r *reader) counter(pool string) *atomic.Uint64 {
	if c, ok := r.counters.Load(pool); ok {
		return c.(*atomic.Uint64)
	}
	c, _ := r.counters.LoadOrStore(pool, new(atomic.Uint64))
	return c.(*atomic.Uint64)
}

// report applies rep to this agent's overlay at once, so the next fetch here
// already sees it. It returns the token's health as this agent now sees it,
// whether the report changed it, and whether the replicated state already
// holds that health.
func (r *reader) report(rep tokens.Report) (h tokens.Health, changed, committed bool, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t, ok := r.fsm.State().Token(rep.Pool, rep.TokenID)
	if !ok {
		return h, false, false, tokens.Errorf(tokens.CodeTokenNotFound, "token %q does not exist in pool %q", rep.TokenID, rep.Pool)
	}
	cur := *r.overlay.Load()
	h, changed = tokens.Transition(cur.Health(t), rep)
	if !changed {
		return h, false, tokens.Covered(t, rep), nil
	}
	next := maps.Clone(cur)
	next[rep.TokenID] = rep
	r.overlay.Store(&next)
	return h, true, false, nil
}

// prune drops overlay entries the replicated state has caught up with, whose
// token is gone, or whose cooldown is over.
func (r *reader) prune(now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	cur := *r.overlay.Load()
	if len(cur) == 0 {
		return
	}
	state := r.fsm.State()
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
	return tokens.Select(ps.Pool, ps.Tokens, tokens.Query{Now: v.now, Overlay: v.overlay, Exclude: exclude, Counter: v.r.counter(pool)})
}

func (v *view) Health(t *tokens.Token) tokens.Health { return v.overlay.Health(t) }

func (v *view) Eligible(t *tokens.Token) bool {
	return tokens.Eligible(t, &tokens.Query{Now: v.now, Overlay: v.overlay})
}
