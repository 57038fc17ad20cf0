package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"time"

	"github.com/tokend/tokend/api"
	"github.com/tokend/tokend/fsm"
	"github.com/tokend/tokend/tokens"
)

// backend implements api.Backend: reads from the reader, writes as FSM
// commands through the cluster. This agent is the proposer of the writes it
// receives: it stamps their times and ids.
type backend struct{ a *Agent }

func (b *backend) View() api.View { return b.a.reads.view() }

func (b *backend) CommittedView() api.View { return b.a.reads.committedView() }

func (b *backend) Freshness() api.Freshness {
	applied, known, lc := b.a.cluster.Freshness()
	return api.Freshness{AppliedIndex: applied, KnownLeader: known, LastContact: lc}
}

func (b *backend) ConsistentRead(ctx context.Context) (time.Time, error) {
	m := b.a.metrics
	m.consistentInFlight.Inc()
	start := time.Now()
	_, confirmed, err := b.a.cluster.ConsistentRead(ctx)
	m.consistentInFlight.Dec()
	m.consistentWait.Observe(time.Since(start).Seconds())
	result := "ok"
	if err != nil {
		result = tokens.AsError(err).Code
	}
	m.consistentReads.WithLabelValues(result).Inc()
	return confirmed, err
}

// apply commits a client's command. With ACLs, it carries the hash of the
// caller's token secret, so every agent checks the token again when it
// applies it (the API checked it here already).
func (b *backend) apply(ctx context.Context, t fsm.MessageType, req any) (uint64, error) {
	entry, err := fsm.Encode(t, req)
	if err != nil {
		return 0, err
	}
	if hash := authHash(ctx); hash != "" {
		if entry, err = fsm.Authorize(hash, entry); err != nil {
			return 0, err
		}
	}
	return b.a.cluster.Apply(ctx, entry)
}

func (b *backend) ApplyPool(ctx context.Context, p tokens.Pool) (uint64, error) {
	spec, err := b.a.keys.sealSpec(b.a.fsm.State(), p.Name, p.Provider)
	if err != nil {
		return 0, err
	}
	p.Provider = spec
	return b.apply(ctx, fsm.PoolUpsertType, fsm.PoolUpsertRequest{Pool: p, At: time.Now()})
}

func (b *backend) DeletePool(ctx context.Context, name string, force bool) (uint64, error) {
	return b.apply(ctx, fsm.PoolDeleteType, fsm.PoolDeleteRequest{Name: name, Force: force, At: time.Now()})
}

func (b *backend) AddToken(ctx context.Context, t tokens.Token, value tokens.Secret) (string, uint64, error) {
	now := time.Now()
	if err := tokens.ValidateValue(value); err != nil {
		return "", 0, err
	}
	t.ID = newTokenID()
	var err error
	if t.Value, t.Fingerprint, err = b.a.keys.sealValue(b.a.fsm.State(), t.Pool, t.ID, value); err != nil {
		return "", 0, err
	}
	if err := t.Validate(now); err != nil {
		return "", 0, err
	}
	index, err := b.apply(ctx, fsm.TokenAddType, fsm.TokenAddRequest{Token: t, At: now})
	return t.ID, index, err
}

func (b *backend) RemoveToken(ctx context.Context, pool, id string) (uint64, error) {
	return b.apply(ctx, fsm.TokenRemoveType, fsm.TokenRemoveRequest{Pool: pool, ID: id, At: time.Now()})
}

func (b *backend) Report(ctx context.Context, pool, id string, outcome tokens.Outcome, retryAfter, latency time.Duration) (api.ReportResponse, error) {
	now := time.Now()
	p, _, ok := b.a.reads.view().Pool(pool)
	if !ok {
		return api.ReportResponse{}, tokens.Errorf(tokens.CodePoolNotFound, "pool %q does not exist", pool)
	}
	rep := tokens.Report{Pool: pool, TokenID: id, Outcome: outcome, Reporter: b.a.cfg.NodeName, At: now, LatencyMS: latency.Milliseconds(), AuthHash: authHash(ctx)}
	if outcome == tokens.OutcomeRateLimited {
		if retryAfter == 0 {
			retryAfter = time.Duration(p.Health.WithDefaults().DefaultCooldown)
		}
		rep.Until = now.Add(retryAfter)
	}
	local, err := b.a.reads.report(rep)
	if err != nil {
		return api.ReportResponse{}, err
	}
	b.a.reads.record(rep)
	b.a.metrics.reports.WithLabelValues(pool, string(outcome)).Inc()
	resp := api.ReportResponse{Pool: pool, ID: id, Changed: local.changed}
	if _, asks := tokens.Target(rep); !asks {
		// ok, error and timeout only feed the leader's error window.
		if outcome != tokens.OutcomeOK {
			b.a.logger.Info("token reported", "pool", pool, "token", id, "outcome", outcome, "reporter", rep.Reporter)
		}
		b.a.forward.send(rep, false)
		resp.Health = apiHealth(local.health, now)
		return resp, nil
	}
	b.a.logger.Warn("token reported", "pool", pool, "token", id, "outcome", outcome, "reporter", rep.Reporter, "until", rep.Until, "local_change", local.changed, "guarded", local.guarded)
	done := b.a.forward.send(rep, true)
	wait := time.NewTimer(b.a.cfg.ReportCommitWait)
	defer wait.Stop()
	select {
	case res := <-done:
		switch {
		case res.err != nil:
			resp.Pending = "the leader could not be reached; this agent keeps trying: " + res.err.Error()
		case res.Committed && res.Index != 0:
			// Committed by this report, by an earlier one whose commit it
			// waited for, or already in the state the leader read.
			resp.Index = res.Index
			if err := b.a.cluster.WaitForIndex(ctx, res.Index); err != nil {
				resp.Pending = "committed, but not yet applied on this agent"
			} else {
				resp.Committed = true
			}
		case res.Detail != "":
			resp.Pending = res.Detail
		default:
			// Only a verdict that names the commit is a claim about the
			// replicated state.
			resp.Pending = "the leader did not say where the change is committed"
		}
	case <-wait.C:
		resp.Pending = "no answer from the leader yet; this agent keeps trying"
	case <-ctx.Done():
		resp.Pending = "the request ended before the leader answered; this agent keeps trying"
	}
	resp.Health = apiHealth(b.a.reads.view().Health(mustToken(b.a, pool, id, local.health)), time.Now())
	return resp, nil
}

// mustToken returns the token as the state now holds it, or a stand-in with
// health h if it was removed meanwhile.
func mustToken(a *Agent, pool, id string, h tokens.Health) *tokens.Token {
	if t, ok := a.fsm.State().Token(pool, id); ok {
		return t
	}
	return &tokens.Token{ID: id, Pool: pool, Health: h}
}

func (b *backend) ResetToken(ctx context.Context, pool, id string) (uint64, error) {
	return b.apply(ctx, fsm.TokenResetType, fsm.TokenResetRequest{Pool: pool, ID: id, By: principalName(ctx, b.a.cfg.NodeName), At: time.Now()})
}

func (b *backend) Alerts(ctx context.Context) (api.Alerts, error) {
	out, err := b.a.cluster.CallLeader(ctx, leaderAlerts, nil)
	if err != nil {
		return api.Alerts{}, err
	}
	var alerts api.Alerts
	return alerts, json.Unmarshal(out, &alerts)
}

func (b *backend) Rotate(ctx context.Context, pool, token string) ([]string, error) {
	body, err := json.Marshal(rotateRequest{Pool: pool, Token: token, AuthHash: authHash(ctx)})
	if err != nil {
		return nil, err
	}
	out, err := b.a.cluster.CallLeader(ctx, leaderRotate, body)
	if err != nil {
		return nil, err
	}
	var ids []string
	return ids, json.Unmarshal(out, &ids)
}

func (b *backend) Events(ctx context.Context, since uint64, limit int, wait time.Duration) (api.Events, error) {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	for {
		applied := b.a.fsm.AppliedIndex()
		events, truncated := b.a.fsm.Events(since, limit)
		if len(events) > 0 || wait == 0 || ctx.Err() != nil {
			// Index is where the next read resumes: after a full page, its
			// last event (pages end on entry boundaries); otherwise what
			// this agent has applied.
			index := applied
			if n := len(events); n > 0 && (n >= limit || events[n-1].Index > applied) {
				index = events[n-1].Index
			}
			if events == nil {
				events = []tokens.Event{}
			}
			return api.Events{Index: index, Events: events, Truncated: truncated}, nil
		}
		b.WaitForChange(ctx, applied)
	}
}

func (b *backend) WaitForChange(ctx context.Context, index uint64) {
	_ = b.a.cluster.WaitForIndex(ctx, index+1)
}

func (b *backend) ObserveFetch(pool, result string, d time.Duration) {
	b.a.metrics.observeFetch(b.a, pool, result, d)
}

func (b *backend) Metrics() http.Handler { return b.a.metrics.handler }

func apiHealth(h tokens.Health, now time.Time) api.Health {
	h = h.AsOf(now)
	out := api.Health{State: string(h.State), Reason: h.Reason, Reporter: h.Reporter}
	if !h.Since.IsZero() {
		out.Since = &h.Since
	}
	if !h.Until.IsZero() {
		out.Until = &h.Until
	}
	return out
}

func (b *backend) Health() api.AgentHealth {
	applied, known, lc := b.a.cluster.Freshness()
	ms := lc.Milliseconds()
	if lc < 0 {
		ms = -1
	}
	status, missing := "ok", b.a.keys.missingNow()
	if len(missing) > 0 {
		status = "missing_keys"
	}
	return api.AgentHealth{
		MissingKeys:   missing,
		Status:        status,
		Node:          b.a.cfg.NodeName,
		ID:            b.a.nodeID,
		RaftState:     b.a.cluster.RaftState(),
		KnownLeader:   known,
		AppliedIndex:  applied,
		LastContactMS: ms,
	}
}

func (b *backend) Leader() api.Leader {
	id, addr := b.a.cluster.Leader()
	l := api.Leader{ID: id, RaftAddr: addr}
	if id != "" {
		for _, m := range b.a.cluster.Members() {
			if m.ID == id {
				l.Node = m.Name
			}
		}
	}
	return l
}

func (b *backend) Peers() ([]api.Peer, error) {
	peers, err := b.a.cluster.Peers()
	if err != nil {
		return nil, err
	}
	out := make([]api.Peer, len(peers))
	for i, p := range peers {
		out[i] = api.Peer{ID: p.ID, Node: p.Node, Address: p.Address, Suffrage: p.Suffrage, Leader: p.Leader}
	}
	return out, nil
}

func (b *backend) Members() []api.Member {
	ms := b.a.cluster.Members()
	out := make([]api.Member, len(ms))
	for i, m := range ms {
		out[i] = api.Member{
			Name: m.Name, ID: m.ID, Status: string(m.Status), GossipAddr: m.GossipAddr, RaftAddr: m.RaftAddr,
			APIAddr: m.APIAddr, Region: m.Region, Zone: m.Zone, Voter: m.Voter, Since: m.Since,
		}
	}
	return out
}

// newTokenID returns "tok_" and 16 random hex digits.
func newTokenID() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on Linux
	return "tok_" + hex.EncodeToString(b[:])
}
