package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tokend/tokend/api"
)

// LabelKey is the label that carries a token's key: the name the workload
// gave it. Values are unique per run, so a token is known by its key even
// when the add that created it timed out and its id was never seen.
const LabelKey = "chaos"

// StableKey is the key of each pool's stable token: added before the
// faults begin and never deleted or reported, so every agent always holds
// an eligible token for the pool.
const StableKey = "stable"

// stablePriority puts the stable token behind every token the writers add
// (priorities 0-9), so that fetches return those, and see them go.
const stablePriority = 1000

// poolKinds are the pools the workload writes and reads: one served by
// priority (the lowest-numbered eligible token: fetches follow each add,
// delete and failure closely), one round robin (every eligible token in
// turn).
var poolKinds = []struct{ suffix, selection string }{
	{"priority", "priority"},
	{"rr", "round_robin"},
}

// PoolSpec is a pool the workload uses: its name and selection policy.
type PoolSpec struct{ Name, Selection string }

// Pools returns the pools a run with seed uses: chaos-<seed>-priority and
// chaos-<seed>-rr, so that runs against a cluster that keeps its data do
// not meet each other's tokens.
func Pools(seed int64) []PoolSpec {
	out := make([]PoolSpec, len(poolKinds))
	for i, k := range poolKinds {
		out[i] = PoolSpec{fmt.Sprintf("chaos-%06x-%s", uint64(seed)&0xffffff, k.suffix), k.selection}
	}
	return out
}

// tokenRef is a token a writer may delete or report: one whose add was
// acknowledged with its id.
type tokenRef struct {
	pool, key, id string
	deleted       bool
}

// workload runs writers, fetchers and consistent readers until stopped,
// recording every operation.
type workload struct {
	cfg     *Config
	pools   []PoolSpec
	c       *client
	h       *History
	stopped atomic.Bool
	wg      sync.WaitGroup
	// writes left in the budget.
	writes atomic.Int64
	seq    atomic.Int64
	procs  atomic.Int64

	mu    sync.Mutex
	known []*tokenRef
}

func newWorkload(cfg *Config, c *client, h *History) *workload {
	w := &workload{cfg: cfg, c: c, h: h, pools: Pools(cfg.Seed)}
	w.writes.Store(int64(cfg.MaxWrites))
	return w
}

func (w *workload) process() int { return int(w.procs.Add(1)) - 1 }

// setup creates the pools and their stable tokens, then waits until every
// agent serves each stable token.
func (w *workload) setup(ctx context.Context) error {
	setupProc := w.process()
	for i, p := range w.pools {
		t := w.cfg.Targets[i%len(w.cfg.Targets)]
		err := poll(ctx, w.cfg.ReadyTimeout, func() error {
			a := w.c.do(ctx, "PUT", t.URL+"/v1/pools/"+p.Name, api.PoolRequest{Selection: p.Selection})
			return a.failure(http.StatusOK)
		})
		if err != nil {
			return fmt.Errorf("create pool %s on %s: %w", p.Name, t.Name, err)
		}
		// One logical add, retried until answered: a retry of an add that
		// was applied after all is a 409, and the token is then found by
		// its key.
		op := Op{Process: setupProc, Node: t.Name, Kind: KindAdd, Pool: p.Name, Key: StableKey, Call: time.Now(), Outcome: OK, Status: http.StatusCreated}
		err = poll(ctx, w.cfg.ReadyTimeout, func() error {
			a := w.c.do(ctx, "POST", t.URL+"/v1/pools/"+p.Name+"/tokens", api.TokenRequest{
				Value: w.value(StableKey, p.Name), Priority: stablePriority, Labels: map[string]string{LabelKey: StableKey},
			})
			switch {
			case a.err == nil && a.status == http.StatusCreated:
				var info api.TokenInfo
				if err := a.decode(&info); err != nil {
					return err
				}
				op.TokenID, op.Index = info.ID, a.index()
				return nil
			case a.err == nil && a.status == http.StatusConflict:
				return nil
			}
			return a.failure(http.StatusCreated)
		})
		if err != nil {
			return fmt.Errorf("add the stable token of %s on %s: %w", p.Name, t.Name, err)
		}
		op.Return = time.Now()
		w.h.Add(op)
	}
	return poll(ctx, w.cfg.ReadyTimeout, func() error {
		for _, t := range w.cfg.Targets {
			for _, p := range w.pools {
				var tok api.Token
				a := w.c.do(ctx, "GET", t.URL+"/v1/pools/"+p.Name+"/token", nil)
				if err := a.failure(http.StatusOK); err != nil {
					return fmt.Errorf("%s: fetch %s: %w", t.Name, p.Name, err)
				}
				if err := a.decode(&tok); err != nil {
					return err
				}
				if tok.Labels[LabelKey] != StableKey {
					return fmt.Errorf("%s serves %s from %s, want its stable token", t.Name, tok.ID, p.Name)
				}
			}
		}
		return nil
	})
}

func (w *workload) value(key, pool string) string {
	return fmt.Sprintf("chaos-%d-%s-%s", w.cfg.Seed, pool, key)
}

// start launches every worker.
func (w *workload) start() {
	for i := range w.cfg.Writers {
		rng := rand.New(rand.NewPCG(uint64(w.cfg.Seed), uint64(100+i)))
		w.goLoop(w.cfg.WritePause, rng, w.write)
	}
	for i, t := range w.cfg.Targets {
		for j := range w.cfg.FetchersPerNode {
			rng := rand.New(rand.NewPCG(uint64(w.cfg.Seed), uint64(1000+i*100+j)))
			w.goLoop(w.cfg.FetchPause, rng, func(proc int, rng *rand.Rand) bool { return w.fetch(proc, rng, t) })
		}
	}
	for i := range w.cfg.ConsistentReaders {
		rng := rand.New(rand.NewPCG(uint64(w.cfg.Seed), uint64(100000+i)))
		w.goLoop(w.cfg.ReadPause, rng, w.read)
	}
}

// goLoop runs op with pauses drawn from pause until the workload stops or
// op returns false. Requests in flight when it stops run to their end, so
// that their results are recorded.
func (w *workload) goLoop(pause Range, rng *rand.Rand, op func(proc int, rng *rand.Rand) bool) {
	proc := w.process()
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		for !w.stopped.Load() {
			if !op(proc, rng) {
				return
			}
			// A pause of the workload's own pace; nothing is waited for.
			time.Sleep(pause.draw(rng))
		}
	}()
}

func (w *workload) stop() {
	w.stopped.Store(true)
	w.wg.Wait()
}

func (w *workload) target(rng *rand.Rand) Target {
	return w.cfg.Targets[rng.IntN(len(w.cfg.Targets))]
}

// write makes one write: an add, or a delete or report of a token whose add
// was acknowledged.
func (w *workload) write(proc int, rng *rand.Rand) bool {
	if w.writes.Add(-1) < 0 {
		return false
	}
	ref := w.pick(rng)
	switch r := rng.Float64(); {
	case ref == nil || r < 0.5:
		w.add(proc, rng)
	case r < 0.75:
		w.remove(proc, rng, ref)
	default:
		w.report(proc, rng, ref)
	}
	return true
}

// pick returns a token to delete or report: usually one not known to be
// deleted, sometimes any (a delete of a deleted token must find nothing).
func (w *workload) pick(rng *rand.Rand) *tokenRef {
	w.mu.Lock()
	defer w.mu.Unlock()
	var live []*tokenRef
	for _, r := range w.known {
		if !r.deleted {
			live = append(live, r)
		}
	}
	switch {
	case len(live) > 0 && rng.Float64() < 0.9:
		return live[rng.IntN(len(live))]
	case len(w.known) > 0:
		return w.known[rng.IntN(len(w.known))]
	}
	return nil
}

func (w *workload) add(proc int, rng *rand.Rand) {
	pool := w.pools[rng.IntN(len(w.pools))].Name
	key := fmt.Sprintf("k%d", w.seq.Add(1))
	t := w.target(rng)
	req := api.TokenRequest{Value: w.value(key, pool), Priority: rng.IntN(10), Labels: map[string]string{LabelKey: key}}
	op := Op{Process: proc, Node: t.Name, Kind: KindAdd, Pool: pool, Key: key}
	if rng.Float64() < w.cfg.ExpiringFraction {
		exp := time.Now().Add(w.cfg.ExpiresIn.draw(rng)).Truncate(time.Millisecond)
		req.ExpiresAt, op.ExpiresAt = &exp, exp
	}
	p := w.h.Invoke(op)
	a := w.c.do(context.Background(), "POST", t.URL+"/v1/pools/"+pool+"/tokens", req)
	record(p, a)
	if p.Status == http.StatusCreated {
		var info api.TokenInfo
		if err := a.decode(&info); err == nil {
			p.TokenID, p.Outcome = info.ID, OK
		}
	}
	w.h.Complete(p)
	if p.Outcome == OK {
		w.mu.Lock()
		w.known = append(w.known, &tokenRef{pool: pool, key: key, id: p.TokenID})
		w.mu.Unlock()
	}
}

func (w *workload) remove(proc int, rng *rand.Rand, ref *tokenRef) {
	t := w.target(rng)
	p := w.h.Invoke(Op{Process: proc, Node: t.Name, Kind: KindDelete, Pool: ref.pool, Key: ref.key, TokenID: ref.id})
	a := w.c.do(context.Background(), "DELETE", t.URL+"/v1/pools/"+ref.pool+"/tokens/"+ref.id, nil)
	record(p, a)
	switch {
	case p.Status == http.StatusOK:
		var wr api.WriteResponse
		if err := a.decode(&wr); err == nil {
			p.Outcome = OK
			p.Index = max(p.Index, wr.Index)
		}
	case p.Status == http.StatusNotFound && p.Code == "token_not_found":
		// The state machine found no such token: a definite answer.
		p.Outcome = OK
	}
	w.h.Complete(p)
	if p.Outcome == OK {
		w.mu.Lock()
		ref.deleted = true
		w.mu.Unlock()
	}
}

func (w *workload) report(proc int, rng *rand.Rand, ref *tokenRef) {
	t := w.target(rng)
	p := w.h.Invoke(Op{Process: proc, Node: t.Name, Kind: KindReport, Pool: ref.pool, Key: ref.key, TokenID: ref.id})
	a := w.c.do(context.Background(), "POST", t.URL+"/v1/pools/"+ref.pool+"/tokens/"+ref.id+"/report", api.ReportRequest{Outcome: "unauthorized"})
	record(p, a)
	switch {
	case p.Status == http.StatusOK || p.Status == http.StatusAccepted:
		var rr api.ReportResponse
		if err := a.decode(&rr); err == nil {
			// The reporting agent stopped serving the token at once; the
			// failure is in the replicated state only when committed, at
			// the body's index (this report's commit, the one it waited
			// for, or the token's last modification), which the agent
			// applied before answering. Without an index the answer's
			// X-Tokend-Index is only this agent's applied index.
			p.Committed = rr.Committed
			p.Index = rr.Index
			p.Outcome = Info
			if rr.Committed {
				p.Outcome = OK
			}
		}
	case p.Status == http.StatusNotFound:
		// This agent does not know the token (yet): it reported nothing.
		p.Outcome = Fail
	}
	w.h.Complete(p)
}

// record fills in op's result from a. Writes default to Info (unknown),
// except those certainly not applied: refused connections and rule
// rejections (4xx). Callers refine OK.
func record(op *Op, a answer) {
	op.Status, op.Index = a.status, a.index()
	if a.err != nil {
		op.Err = a.err.Error()
	}
	if a.status >= 400 {
		op.Code = a.code()
	}
	switch {
	case a.refused:
		op.Outcome = Fail
	case a.err == nil && a.status >= 400 && a.status < 500:
		op.Outcome = Fail
	default:
		op.Outcome = Info
	}
}

// fetch makes one plain fetch on t.
func (w *workload) fetch(proc int, rng *rand.Rand, t Target) bool {
	pool := w.pools[rng.IntN(len(w.pools))].Name
	p := w.h.Invoke(Op{Process: proc, Node: t.Name, Kind: KindFetch, Pool: pool})
	a := w.c.do(context.Background(), "GET", t.URL+"/v1/pools/"+pool+"/token", nil)
	recordRead(p, a)
	if p.Outcome == OK {
		var tok api.Token
		if err := a.decode(&tok); err != nil {
			p.Outcome, p.Err = Fail, err.Error()
		} else {
			p.TokenID, p.Key = tok.ID, tok.Labels[LabelKey]
			if tok.ExpiresAt != nil {
				p.ExpiresAt = *tok.ExpiresAt
			}
		}
	}
	w.h.Complete(p)
	return true
}

// read makes one consistent read of a pool's tokens on a random agent.
func (w *workload) read(proc int, rng *rand.Rand) bool {
	pool := w.pools[rng.IntN(len(w.pools))].Name
	t := w.target(rng)
	p := w.h.Invoke(Op{Process: proc, Node: t.Name, Kind: KindRead, Pool: pool})
	path := "/v1/pools/" + pool + "/tokens?consistent"
	if w.cfg.LocalReads {
		path = "/v1/pools/" + pool + "/tokens"
	}
	a := w.c.do(context.Background(), "GET", t.URL+path, nil)
	recordRead(p, a)
	if p.Outcome == OK {
		var infos []api.TokenInfo
		if err := a.decode(&infos); err != nil {
			p.Outcome, p.Err = Fail, err.Error()
		} else {
			p.Tokens, p.Foreign = tokenStates(infos)
		}
	}
	w.h.Complete(p)
	return true
}

// recordRead fills in a read's result: a read either answered 200 or had
// no effect.
func recordRead(op *Op, a answer) {
	op.Status, op.Index = a.status, a.index()
	if a.err != nil {
		op.Err = a.err.Error()
	}
	op.Outcome = Fail
	if a.err == nil && a.status == http.StatusOK {
		op.Outcome = OK
	} else if a.status >= 400 {
		op.Code = a.code()
	}
}

// tokenStates maps a pool's tokens to key → state; tokens without a key
// are returned by id.
func tokenStates(infos []api.TokenInfo) (map[string]string, []string) {
	states := map[string]string{}
	var foreign []string
	for _, ti := range infos {
		key := ti.Labels[LabelKey]
		if key == "" {
			foreign = append(foreign, ti.ID)
			continue
		}
		states[key] = tokenState(ti)
	}
	return states, foreign
}

func tokenState(ti api.TokenInfo) string {
	if ti.Health.State == "failed" {
		return StateFailed
	}
	return StateActive
}
