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
	// builds on them.
	trackers map[tokenKey]*tokens.Tracker
	pending  map[tokenKey]tokens.Health
}

type tokenKey struct{ pool, id string }

// verdict is the leader's answer about one report.
type verdict struct {
	Health    tokens.Health `json:"health"`
	Change    bool          `json:"change,omitempty"`
	Committed bool          `json:"committed,omitempty"`
	Index     uint64        `json:"index,omitempty"`
	Detail    string        `json:"detail,omitempty"`
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
	m.pending = map[tokenKey]tokens.Health{}
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
			if _, err := m.commit(ctx, m.tick(now)); err != nil && ctx.Err() == nil {
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

// submit decides what reports mean and commits the changes they cause.
func (m *monitor) submit(ctx context.Context, reports []tokens.Report) ([]verdict, error) {
	verdicts, changes, err := m.observe(reports)
	if err != nil {
		return nil, err
	}
	if len(changes) > 0 {
		index, err := m.commit(ctx, changes)
		for i := range verdicts {
			if verdicts[i].Change {
				verdicts[i].Committed, verdicts[i].Index = err == nil, index
				if err != nil {
					verdicts[i].Detail = err.Error()
				}
			}
		}
	}
	return verdicts, nil
}

// observe decides what each report means, in order.
func (m *monitor) observe(reports []tokens.Report) ([]verdict, []fsm.HealthChange, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.active {
		return nil, nil, tokens.Errorf(tokens.CodeNoLeader, "this agent is not leading yet, or no longer")
	}
	state := m.fsm.State()
	verdicts := make([]verdict, len(reports))
	var changes []fsm.HealthChange
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
		switch {
		case v.Change:
			m.pending[key] = v.Health
			changes = append(changes, fsm.HealthChange{Pool: r.Pool, TokenID: r.TokenID, Health: v.Health})
			m.logChange(r.Pool, r.TokenID, cur, v.Health)
		case v.Detail != "":
			m.logger.Info("report changes nothing yet", "pool", r.Pool, "token", r.TokenID, "outcome", r.Outcome, "reporter", r.Reporter, "detail", v.Detail)
		}
	}
	return verdicts, changes, nil
}

// tick re-evaluates every tracker at now and drops the ones with nothing
// left to remember.
func (m *monitor) tick(now time.Time) []fsm.HealthChange {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.active {
		return nil
	}
	state := m.fsm.State()
	var changes []fsm.HealthChange
	for key, tr := range m.trackers {
		ps, okPool := state.Pool(key.pool)
		tok, okTok := state.Token(key.pool, key.id)
		if !okPool || !okTok {
			delete(m.trackers, key)
			continue
		}
		cur := m.current(key, tok)
		if v := tr.Tick(ps.Pool.Health, cur, now); v.Change {
			m.pending[key] = v.Health
			changes = append(changes, fsm.HealthChange{Pool: key.pool, TokenID: key.id, Health: v.Health})
			m.logChange(key.pool, key.id, cur, v.Health)
		}
		if tr.Idle() {
			delete(m.trackers, key)
		}
	}
	return changes
}

// current is a token's health with any decision not yet applied on top.
func (m *monitor) current(key tokenKey, t *tokens.Token) tokens.Health {
	h := t.Health
	if p, ok := m.pending[key]; ok {
		h, _ = tokens.Merge(h, p)
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
			c.Health, _ = tokens.Merge(c.Health, p)
			other = &c
		}
		if tokens.Eligible(other, q) {
			return false
		}
	}
	return true
}

// commit proposes changes in one entry and then forgets them as pending:
// applied, they are in the state; failed, they may be decided again.
func (m *monitor) commit(ctx context.Context, changes []fsm.HealthChange) (uint64, error) {
	if len(changes) == 0 {
		return 0, nil
	}
	defer m.forget(changes)
	entry, err := fsm.Encode(fsm.TokenHealthType, fsm.TokenHealthRequest{Changes: changes})
	if err != nil {
		return 0, err
	}
	return m.cluster.Apply(ctx, entry)
}

func (m *monitor) forget(changes []fsm.HealthChange) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, c := range changes {
		key := tokenKey{c.Pool, c.TokenID}
		if p, ok := m.pending[key]; ok && p == c.Health {
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
