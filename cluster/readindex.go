package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/hashicorp/raft"

	"github.com/tokend/tokend/tokens"
)

// Consistent reads follow Raft's ReadIndex protocol (Ongaro's thesis,
// §6.4). The leader notes its commit index, confirms with a quorum round
// (raft's VerifyLeader) that no newer leader can have committed anything
// since, and hands the index back; the reading agent waits until its state
// machine has applied it, then reads its own state. Every write
// acknowledged before the read began is then in what it reads.
//
// Two things make the leader's commit index usable:
//   - A new leader's commit index can lag what earlier leaders committed
//     until an entry of its own term commits. leaderLoop's Barrier is that
//     entry: the leader answers read indexes only once the barrier of its
//     current term is done (barrierTerm).
//   - The state machine's AppliedIndex only moves on command entries; Raft's
//     no-op, barrier and configuration entries never reach it. So the
//     leader answers with the last command entry at or below its commit
//     index, which every agent's state machine does reach.
//
// hashicorp/raft counts toward VerifyLeader the answer to a heartbeat or
// append already in flight when it was called, so the confirmation can be
// older than the read by up to a round trip. Another leader could commit
// in that window only after winning an election within it, which takes an
// election timeout without heartbeats, except when this leader hands
// leadership over itself (TimeoutNow): so the leader answers no read index
// while it transfers leadership, nor one whose quorum round overlapped a
// transfer (transfers).
//
// What it costs: one RPC to the leader (none on the leader) and one quorum
// round of heartbeats, then the wait to catch up. Without a quorum there is
// no answer: the read fails within LeaderWait.

// leaderReadIndex names the leader RPC that answers read indexes.
const leaderReadIndex = "read-index"

// readRetryPause is how long a consistent read waits before asking again
// after a leader could not confirm it (an election, a new leader's barrier).
const readRetryPause = 10 * time.Millisecond

type readIndexResponse struct {
	Index uint64 `json:"index"`
}

// ConsistentRead waits until this agent's state machine holds every entry
// the cluster had committed when it was called, as confirmed by the leader
// with a quorum round, so that a read of local state right after it returns
// is linearizable. It rides out an election for up to LeaderWait, the
// budget writes have for one, which bounds the whole call. It returns the
// read index it waited for and when the leader confirmed it.
func (c *Cluster) ConsistentRead(ctx context.Context) (index uint64, confirmed time.Time, err error) {
	budget := c.cfg.Timing.LeaderWait
	ctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	for {
		index, err = c.readIndex(ctx)
		if err == nil {
			break
		}
		if !errors.Is(err, tokens.ErrNoLeader) {
			return 0, time.Time{}, err
		}
		select {
		case <-ctx.Done():
			return 0, time.Time{}, tokens.Errorf(tokens.CodeNoLeader,
				"no leader could confirm this consistent read within %s (last: %v): retry, or read without ?consistent to get this agent's local state",
				budget, err)
		case <-c.shutdownCh:
			return 0, time.Time{}, tokens.Errorf(tokens.CodeUnavailable, "the agent is shutting down")
		case <-time.After(readRetryPause):
		}
	}
	confirmed = time.Now()
	if err := c.WaitForIndex(ctx, index); err != nil {
		return index, confirmed, tokens.Errorf(tokens.CodeUnavailable,
			"the leader confirmed the read at index %d, but this agent had applied only %d within %s: retry, or read without ?consistent to get this agent's local state",
			index, c.sm.AppliedIndex(), budget)
	}
	return index, confirmed, nil
}

// readIndex asks the leader for a read index: itself when it leads,
// otherwise over the agent RPC. Every failure to get one from a leader is
// no_leader, which ConsistentRead retries.
func (c *Cluster) readIndex(ctx context.Context) (uint64, error) {
	addr, err := c.waitForLeader(ctx)
	if err != nil {
		if errors.Is(err, tokens.ErrNoLeader) {
			return 0, tokens.Errorf(tokens.CodeNoLeader, "this agent knows no leader")
		}
		return 0, err
	}
	out, err := c.callLeaderAt(ctx, addr, leaderReadIndex, nil)
	if err != nil {
		return 0, err
	}
	var resp readIndexResponse
	if err := json.Unmarshal(out, &resp); err != nil {
		return 0, tokens.Errorf(tokens.CodeUnavailable, "decode the leader's read index: %v", err)
	}
	return resp.Index, nil
}

// serveReadIndex is the leader's handler for leaderReadIndex.
func (c *Cluster) serveReadIndex(ctx context.Context, _ []byte) ([]byte, error) {
	index, err := c.leaderReadIndex(ctx)
	if err != nil {
		return nil, err
	}
	return json.Marshal(readIndexResponse{Index: index})
}

// leaderReadIndex returns, on the leader, the index a linearizable read
// must wait for. It fails with no_leader whenever it cannot be sure that
// this agent led throughout: the caller asks again.
func (c *Cluster) leaderReadIndex(ctx context.Context) (uint64, error) {
	term := c.raft.CurrentTerm()
	if !c.IsLeader() {
		return 0, tokens.Errorf(tokens.CodeNoLeader, "this agent is not the leader")
	}
	// Every term's leader runs a barrier before its duties; wait for this
	// term's, or for leadership to move on.
	err := c.barrierDone.wait(ctx, func() bool {
		return c.barrierTerm.Load() == term || c.raft.CurrentTerm() != term || !c.IsLeader()
	})
	switch {
	case err != nil:
		return 0, tokens.Errorf(tokens.CodeNoLeader, "the leader has not yet committed an entry of its term, so its commit index may still lag: it cannot confirm reads yet")
	case c.barrierTerm.Load() != term:
		return 0, tokens.Errorf(tokens.CodeNoLeader, "leadership changed while the read waited")
	}
	transfers := c.transfers.Load()
	if transfers%2 == 1 {
		return 0, tokens.Errorf(tokens.CodeNoLeader, "the leader is handing leadership over")
	}
	commit := c.raft.CommitIndex()
	if err := awaitFuture(ctx, c.raft.VerifyLeader()); err != nil {
		if ctx.Err() != nil {
			return 0, tokens.Errorf(tokens.CodeNoLeader, "a quorum did not confirm the leader in time")
		}
		return 0, tokens.Errorf(tokens.CodeNoLeader, "a quorum did not confirm the leader: %v", err)
	}
	// The term is the same after the quorum round as before it: this agent
	// led the whole time, in a term whose barrier had committed.
	if c.raft.CurrentTerm() != term || c.transfers.Load() != transfers {
		return 0, tokens.Errorf(tokens.CodeNoLeader, "leadership changed while the read was confirmed")
	}
	return c.lastCommandAtOrBelow(commit)
}

// lastCommandAtOrBelow returns the index of the last command entry at or
// below index, which must be committed: the AppliedIndex of a state machine
// that has applied everything up to index. 0 means there is none.
func (c *Cluster) lastCommandAtOrBelow(index uint64) (uint64, error) {
	var l raft.Log
	for i := index; i > 0; i-- {
		err := c.logs.GetLog(i, &l)
		if errors.Is(err, raft.ErrLogNotFound) {
			// Compacted into a snapshot, which this agent's state machine
			// has applied: its AppliedIndex is at least the last command
			// at or below i, and is itself a committed command's index.
			return c.sm.AppliedIndex(), nil
		}
		if err != nil {
			return 0, tokens.Errorf(tokens.CodeUnavailable, "read log entry %d: %v", i, err)
		}
		if l.Type == raft.LogCommand {
			return i, nil
		}
	}
	return 0, nil
}

// awaitFuture waits for f until ctx ends. hashicorp/raft v1.8.0 never
// answers some futures at shutdown (a barrier still queued for the FSM, a
// leader verification still queued for the main loop), and their Error has
// no ShutdownCh, so waiting on the future alone could hold Shutdown
// forever; the goroutine left waiting in that case is the price (tests'
// goleak ignores it).
func awaitFuture(ctx context.Context, f raft.Future) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}
