package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/tokend/tokend/cluster"
	"github.com/tokend/tokend/fsm"
	"github.com/tokend/tokend/tokens"
)

// leaderReports is the name under which agents send reports to the leader.
const leaderReports = "reports"

// monitorTick is how often the leader re-evaluates error windows, so that a
// degraded token nobody uses recovers.
const monitorTick = time.Second

// monitor runs on the leader only. Every agent forwards the reports it
// receives; the monitor keeps a tokens.Tracker per token, decides health
// changes (error windows, report quorums, the last-eligible guard) and
// commits them, many per Raft entry. Its memory is soft state: a new leader
// starts afresh.
type monitor struct {
	fsm     *fsm.FSM
	logger  hclog.Logger
	cluster *cluster.Cluster

	mu     sync.Mutex
	active bool
	// trackers and pending are keyed by pool and token id. pending holds
	// decisions proposed but not applied yet, so that the next decision
	// builds on them, with the commit that carries each.
	trackers map[tokenKey]*tokens.Tracker
	pending  map[tokenKey]pendingChange
}

type tokenKey struct{ pool, id string }

// pendingChange is a health decision on its way through Raft.
type pendingChange struct {
	health tokens.Health
	commit *healthCommit
}

// healthCommit is one Raft entry of health changes, from its proposal to
// its result: done is closed once index and err are set.
type healthCommit struct {
	changes []fsm.HealthChange
	done    chan struct{}
	index   uint64
	err     error
}

func (m *monitor) newCommit() *healthCommit { return &healthCommit{done: make(chan struct{})} }

// verdict is the leader's answer about one report.
type verdict struct {
	Health tokens.Health `json:"health"`
	// Change says this report made the change to Health.
	Change bool `json:"change,omitempty"`
	// Committed says Health is in the replicated state at Index: this
	// report's own change, or another one for the token that was still
	// being committed when this report arrived and that this report
	// waited for, committed there; or the state the leader read already
	// held it (Index is then the token's last modification).
	Committed bool   `json:"committed,omitempty"`
	Index     uint64 `json:"index,omitempty"`
	Detail    string `json:"detail,omitempty"`
	// Retry says the commit this verdict rests on failed: the reporting
	// agent sends the report again, for the next leader to decide.
	Retry bool `json:"retry,omitempty"`
}

// settle fills in v from the commit it rests on, once that has ended.
func (v *verdict) settle(c *healthCommit) {
	if c.err != nil {
		v.Retry = true
		if v.Change {
			v.Detail = c.err.Error()
		} else {
			v.Detail = "the change already on its way for this token did not commit: " + c.err.Error()
		}
		return
	}
	v.Committed, v.Index = true, c.index
}

func newMonitor(f *fsm.FSM, logger hclog.Logger) *monitor {
	return &monitor{fsm: f, logger: logger}
}

// run is the leader task: the monitor takes reports from the moment this
// agent leads until ctx ends.
func (m *monitor) run(ctx context.Context) {
	m.mu.Lock()
	m.active = true
	m.trackers = map[tokenKey]*tokens.Tracker{}
	m.pending = map[tokenKey]pendingChange{}
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		m.active, m.trackers, m.pending = false, nil, nil
		m.mu.Unlock()
	}()
	t := time.NewTicker(monitorTick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if err := m.commit(ctx, m.tick(now)); err != nil && ctx.Err() == nil {
				m.logger.Warn("could not commit health changes from the error window; will retry", "error", err)
			}
		}
	}
}

// handle is the leader's handler for reports from every agent.
func (m *monitor) handle(ctx context.Context, body []byte) ([]byte, error) {
	var reports []tokens.Report
	if err := json.Unmarshal(body, &reports); err != nil {
		return nil, tokens.Errorf(tokens.CodeInvalid, "reports: %v", err)
	}
	verdicts, err := m.submit(ctx, reports)
	if err != nil {
		return nil, err
	}
	return json.Marshal(verdicts)
}

// submit decides what reports mean and commits the changes they cause. A
// report that asks for a health the token is already on its way to (a
// change decided for an earlier report, not committed yet) waits for that
// commit and gets its verdict: it is committed only if that is.
func (m *monitor) submit(ctx context.Context, reports []tokens.Report) ([]verdict, error) {
	verdicts, own, waits, err := m.observe(reports)
	if err != nil {
		return nil, err
	}
	_ = m.commit(ctx, own)
	for i, c := range waits {
		if c == nil {
			continue
		}
		select {
		case <-c.done:
			verdicts[i].settle(c)
		case <-ctx.Done():
			verdicts[i].Retry = true
			verdicts[i].Detail = "the change already on its way for this token had not committed when the request ended"
		}
	}
	return verdicts, nil
}

// observe decides what each report means, in order. It returns the verdicts,
// the commit of the changes they decided (nil if none) and, per verdict,
// the commit it rests on: that one for a report that changed the token, an
// earlier one still in flight for a report that asked for nothing more.
func (m *monitor) observe(reports []tokens.Report) ([]verdict, *healthCommit, []*healthCommit, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.active {
		return nil, nil, nil, tokens.Errorf(tokens.CodeNoLeader, "this agent is not leading yet, or no longer")
	}
	state := m.fsm.State()
	verdicts := make([]verdict, len(reports))
	waits := make([]*healthCommit, len(reports))
	var own *healthCommit
	for i, r := range reports {
		if err := recheck(state, r.AuthHash, r.Pool, tokens.CapReport); err != nil {
			verdicts[i].Detail = "refused: " + err.Error()
			m.logger.Warn("report refused", "pool", r.Pool, "token", r.TokenID, "reporter", r.Reporter, "error", err)
			continue
		}
		ps, ok := state.Pool(r.Pool)
		if !ok {
			verdicts[i].Detail = fmt.Sprintf("pool %q no longer exists", r.Pool)
			continue
		}
		tok, ok := state.Token(r.Pool, r.TokenID)
		if !ok {
			verdicts[i].Detail = fmt.Sprintf("token %q no longer exists", r.TokenID)
			continue
		}
		key := tokenKey{r.Pool, r.TokenID}
		tr := m.trackers[key]
		if tr == nil {
			tr = &tokens.Tracker{}
			m.trackers[key] = tr
		}
		cur := m.current(key, tok)
		v := tr.Observe(ps.Pool.Health, cur, r, m.lastEligible(ps, tok, r.At))
		verdicts[i] = verdict{Health: v.Health, Change: v.Change, Detail: v.Detail}
		_, asks := tokens.Target(r)
		switch {
		case v.Change:
			if own == nil {
				own = m.newCommit()
			}
			m.pending[key] = pendingChange{health: v.Health, commit: own}
			own.changes = append(own.changes, fsm.HealthChange{Pool: r.Pool, TokenID: r.TokenID, Health: v.Health})
			waits[i] = own
			m.logChange(r.Pool, r.TokenID, cur, v.Health)
		case v.Detail != "":
			m.logger.Info("report changes nothing yet", "pool", r.Pool, "token", r.TokenID, "outcome", r.Outcome, "reporter", r.Reporter, "detail", v.Detail)
		case !asks:
			// ok, error and timeout only count: nobody waits for them.
		default:
			// The token already has what the report asks for: in the
			// replicated state, or only in a decision still on its way.
			if p, ok := m.pending[key]; ok {
				waits[i] = p.commit
			} else {
				verdicts[i].Committed, verdicts[i].Index = true, tok.ModifyIndex
			}
		}
	}
	return verdicts, own, waits, nil
}

// tick re-evaluates every tracker at now and drops the ones with nothing
// left to remember. It returns the commit of the changes it decided, nil if
// none.
func (m *monitor) tick(now time.Time) *healthCommit {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.active {
		return nil
	}
	state := m.fsm.State()
	var c *healthCommit
	for key, tr := range m.trackers {
		ps, okPool := state.Pool(key.pool)
		tok, okTok := state.Token(key.pool, key.id)
		if !okPool || !okTok {
			delete(m.trackers, key)
			continue
		}
		cur := m.current(key, tok)
		if v := tr.Tick(ps.Pool.Health, cur, now); v.Change {
			if c == nil {
				c = m.newCommit()
			}
			m.pending[key] = pendingChange{health: v.Health, commit: c}
			c.changes = append(c.changes, fsm.HealthChange{Pool: key.pool, TokenID: key.id, Health: v.Health})
			m.logChange(key.pool, key.id, cur, v.Health)
		}
		if tr.Idle() {
			delete(m.trackers, key)
		}
	}
	return c
}

// current is a token's health with any decision not yet applied on top.
func (m *monitor) current(key tokenKey, t *tokens.Token) tokens.Health {
	h := t.Health
	if p, ok := m.pending[key]; ok {
		h, _ = tokens.Merge(h, p.health)
	}
	return h
}

// lastEligible reports whether no token of the pool but t could be served
// at now, counting decisions not applied yet.
func (m *monitor) lastEligible(ps *fsm.PoolState, t *tokens.Token, now time.Time) bool {
	q := &tokens.Query{Now: now}
	for _, other := range ps.Tokens {
		if other.ID == t.ID {
			continue
		}
		if p, ok := m.pending[tokenKey{other.Pool, other.ID}]; ok {
			c := *other
			c.Health, _ = tokens.Merge(c.Health, p.health)
			other = &c
		}
		if tokens.Eligible(other, q) {
			return false
		}
	}
	return true
}

// commit proposes c's changes in one entry, records the result in c for
// the reports that wait on it, and forgets the changes as pending: applied,
// they are in the state; failed, they may be decided again.
func (m *monitor) commit(ctx context.Context, c *healthCommit) error {
	if c == nil {
		return nil
	}
	defer close(c.done)
	defer m.forget(c)
	entry, err := fsm.Encode(fsm.TokenHealthType, fsm.TokenHealthRequest{Changes: c.changes})
	if err == nil {
		c.index, err = m.cluster.Apply(ctx, entry)
	}
	if err != nil {
		c.index, c.err = 0, err
	}
	return err
}

func (m *monitor) forget(c *healthCommit) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, ch := range c.changes {
		key := tokenKey{ch.Pool, ch.TokenID}
		if p, ok := m.pending[key]; ok && p.commit == c {
			delete(m.pending, key)
		}
	}
}

func (m *monitor) logChange(pool, id string, from, to tokens.Health) {
	log := m.logger.Warn
	if to.State == tokens.Healthy {
		log = m.logger.Info
	}
	log("token health changing", "pool", pool, "token", id, "from", from.State, "to", to.State, "reason", to.Reason, "reporter", to.Reporter, "until", to.Until)
}
