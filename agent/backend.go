package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
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

func (b *backend) Freshness() api.Freshness {
	applied, known, lc := b.a.cluster.Freshness()
	return api.Freshness{AppliedIndex: applied, KnownLeader: known, LastContact: lc}
}

func (b *backend) apply(ctx context.Context, t fsm.MessageType, req any) (uint64, error) {
	entry, err := fsm.Encode(t, req)
	if err != nil {
		return 0, err
	}
	return b.a.cluster.Apply(ctx, entry)
}

func (b *backend) ApplyPool(ctx context.Context, p tokens.Pool) (uint64, error) {
	return b.apply(ctx, fsm.PoolUpsertType, fsm.PoolUpsertRequest{Pool: p, At: time.Now()})
}

func (b *backend) DeletePool(ctx context.Context, name string, force bool) (uint64, error) {
	return b.apply(ctx, fsm.PoolDeleteType, fsm.PoolDeleteRequest{Name: name, Force: force, At: time.Now()})
}

func (b *backend) AddToken(ctx context.Context, t tokens.Token) (string, uint64, error) {
	now := time.Now()
	t.ID = newTokenID()
	t.Fingerprint = tokens.Fingerprint(t.Value)
	if err := t.Validate(now); err != nil {
		return "", 0, err
	}
	index, err := b.apply(ctx, fsm.TokenAddType, fsm.TokenAddRequest{Token: t, At: now})
	return t.ID, index, err
}

func (b *backend) RemoveToken(ctx context.Context, pool, id string) (uint64, error) {
	return b.apply(ctx, fsm.TokenRemoveType, fsm.TokenRemoveRequest{Pool: pool, ID: id, At: time.Now()})
}

func (b *backend) Report(ctx context.Context, pool, id string, outcome tokens.Outcome, retryAfter time.Duration) (api.ReportResponse, error) {
	now := time.Now()
	rep := tokens.Report{Pool: pool, TokenID: id, Outcome: outcome, Reporter: b.a.cfg.NodeName, At: now}
	if outcome == tokens.OutcomeRateLimited {
		if retryAfter == 0 {
			retryAfter = tokens.DefaultCooldown
		}
		rep.Until = now.Add(retryAfter)
	}
	h, changed, committed, err := b.a.reads.report(rep)
	if err != nil {
		return api.ReportResponse{}, err
	}
	resp := api.ReportResponse{Pool: pool, ID: id, Changed: changed, Committed: committed}
	if changed {
		b.a.logger.Warn("token reported", "pool", pool, "token", id, "outcome", outcome, "health", h.State, "until", h.Until, "reporter", rep.Reporter)
		done := b.a.reports.enqueue(rep)
		wait := time.NewTimer(b.a.cfg.ReportCommitWait)
		defer wait.Stop()
		select {
		case res := <-done:
			resp.Index = res.index
			resp.Committed = res.err == nil
			if res.err != nil {
				resp.Pending = res.err.Error()
			}
		case <-wait.C:
			resp.Pending = "the change is not committed yet; this agent keeps retrying"
		case <-ctx.Done():
			resp.Pending = "the request ended before the change committed; this agent keeps retrying"
		}
	}
	resp.Health = apiHealth(h, now)
	return resp, nil
}

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
	return api.AgentHealth{
		Status:        "ok",
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
