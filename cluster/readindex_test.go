package cluster

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/tokend/tokend/tokens"
)

// threeNodes starts a three-server cluster with timing t (FastTiming when
// zero) and returns it with its leader.
func threeNodes(t *testing.T, timing Timing) (*testCluster, *testNode) {
	t.Helper()
	tc := newTestCluster(t)
	for range 3 {
		tc.add(3, func(c *Config) {
			if timing != (Timing{}) {
				c.Timing = timing
			}
		})
	}
	return tc, tc.leader()
}

func followersOf(tc *testCluster, l *testNode) []*testNode {
	var out []*testNode
	for _, n := range tc.nodes {
		if n != l && !isShutdown(n) {
			out = append(out, n)
		}
	}
	return out
}

// consistentRead is ConsistentRead until it succeeds, riding out the
// elections and barriers right after a cluster forms or a leader moves.
func consistentRead(t *testing.T, n *testNode) uint64 {
	t.Helper()
	var index uint64
	waitFor(t, 10*time.Second, func() error {
		var err error
		index, _, err = n.ConsistentRead(context.Background())
		return err
	})
	return index
}

// On the leader and on every follower, a consistent read returns only once
// the agent has applied every write acknowledged before it began.
func TestConsistentReadSeesAcknowledgedWrites(t *testing.T) {
	tc, l := threeNodes(t, Timing{})
	var total uint64
	for i, n := range tc.nodes {
		v := uint64(i + 1)
		idx, err := tc.nodes[(i+1)%3].Apply(context.Background(), entry(v))
		if err != nil {
			t.Fatalf("apply: %v", err)
		}
		total += v
		got := consistentRead(t, n)
		if got < idx || n.sm.AppliedIndex() < idx || n.sm.value() != total {
			t.Fatalf("%s (leader %v): consistent read at %d, applied %d, value %d; want at least index %d and value %d",
				n.cfg.NodeName, n == l, got, n.sm.AppliedIndex(), n.sm.value(), idx, total)
		}
	}
}

// The leader's commit index points past Raft's own entries (the new term's
// no-op and barrier) that never reach the state machine: the read index is
// the last command at or below it, so followers are not left waiting for an
// index their state machine never reaches.
func TestReadIndexSkipsEntriesThatNeverReachTheStateMachine(t *testing.T) {
	tc, l := threeNodes(t, Timing{})
	idx, err := l.Apply(context.Background(), entry(7))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.TransferLeadership(); err != nil {
		t.Fatalf("transfer leadership: %v", err)
	}
	nl := tc.leader()
	for _, n := range tc.nodes {
		got := consistentRead(t, n)
		if got != idx || n.sm.value() != 7 {
			t.Fatalf("%s: read index %d, value %d; want %d (the only command) and 7", n.cfg.NodeName, got, n.sm.value(), idx)
		}
	}
	if commit := nl.raft.CommitIndex(); commit <= idx {
		t.Fatalf("the new leader's commit index is %d, want past the command at %d (its term's no-op and barrier)", commit, idx)
	}
}

// A follower whose state machine is stuck never answers a consistent read
// from its stale state: it waits, fails when its wait ends, and answers as
// soon as it catches up.
func TestConsistentReadWaitsForALaggingFollower(t *testing.T) {
	tc, l := threeNodes(t, Timing{})
	f := followersOf(tc, l)[0]
	if _, err := l.Apply(context.Background(), entry(1)); err != nil {
		t.Fatal(err)
	}
	consistentRead(t, f)
	release := f.BlockApply()
	t.Cleanup(release)
	idx, err := l.Apply(context.Background(), entry(10))
	if err != nil {
		t.Fatalf("a write with one follower stuck: %v", err)
	}
	if f.sm.value() != 1 {
		t.Fatalf("the stuck follower applied the write: value %d", f.sm.value())
	}

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, _, err = f.ConsistentRead(ctx)
	if !errors.Is(err, tokens.ErrUnavailable) || !strings.Contains(err.Error(), "had applied only") {
		t.Fatalf("consistent read on the stuck follower = %v, want unavailable: not caught up", err)
	}
	if f.sm.value() != 1 {
		t.Fatal("the follower caught up while stuck")
	}

	type result struct {
		index, value uint64
		err          error
	}
	done := make(chan result, 1)
	go func() {
		index, _, err := f.ConsistentRead(context.Background())
		done <- result{index, f.sm.value(), err}
	}()
	release()
	r := <-done
	if r.err != nil || r.index < idx || r.value != 11 {
		t.Fatalf("consistent read after the follower was released = index %d, value %d, %v; want index >= %d, value 11", r.index, r.value, r.err, idx)
	}
}

// A new leader answers read indexes only once the barrier of its term has
// completed: until then its commit index may lag what earlier leaders
// committed. Its state machine is held back here, so the barrier cannot
// complete.
func TestReadIndexWaitsForTheNewLeadersBarrier(t *testing.T) {
	tc, l := threeNodes(t, Timing{})
	if _, err := l.Apply(context.Background(), entry(3)); err != nil {
		t.Fatal(err)
	}
	next := followersOf(tc, l)[0]
	consistentRead(t, next)
	release := next.BlockApply()
	t.Cleanup(release)
	// A command for the held-back state machine to be stuck on; Raft's own
	// entries never reach it.
	if _, err := l.Apply(context.Background(), entry(5)); err != nil {
		t.Fatal(err)
	}
	if err := l.raft.LeadershipTransferToServer(raft.ServerID(next.cfg.NodeID), raft.ServerAddress(next.RaftAddr())).Error(); err != nil {
		t.Fatalf("transfer leadership to %s: %v", next.cfg.NodeName, err)
	}
	if got := tc.leader(); got != next {
		t.Fatalf("leader is %s, want %s", got.cfg.NodeName, next.cfg.NodeName)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := next.leaderReadIndex(ctx); !errors.Is(err, tokens.ErrNoLeader) || !strings.Contains(err.Error(), "not yet committed an entry of its term") {
		t.Fatalf("read index before the barrier = %v, want a refusal", err)
	}
	for _, n := range tc.nodes {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		_, _, err := n.ConsistentRead(ctx)
		cancel()
		if !errors.Is(err, tokens.ErrNoLeader) {
			t.Fatalf("%s: consistent read before the new leader's barrier = %v, want no_leader", n.cfg.NodeName, err)
		}
	}
	release()
	for _, n := range tc.nodes {
		if consistentRead(t, n); n.sm.value() != 8 {
			t.Fatalf("%s: value %d after the barrier, want 8", n.cfg.NodeName, n.sm.value())
		}
	}
}

// Without a quorum no consistent read succeeds, and the refusal comes
// within LeaderWait; the local state is still there to read.
func TestConsistentReadWithoutQuorumFailsInTime(t *testing.T) {
	tc, l := threeNodes(t, Timing{})
	if _, err := l.Apply(context.Background(), entry(4)); err != nil {
		t.Fatal(err)
	}
	survivor := followersOf(tc, l)[0]
	consistentRead(t, survivor)
	for _, n := range tc.nodes {
		if n != survivor {
			n.Shutdown()
		}
	}
	bound := survivor.cfg.Timing.LeaderWait
	start := time.Now()
	_, _, err := survivor.ConsistentRead(context.Background())
	elapsed := time.Since(start)
	if !errors.Is(err, tokens.ErrNoLeader) || !strings.Contains(err.Error(), "retry, or read without ?consistent") {
		t.Fatalf("consistent read without a quorum = %v, want no_leader suggesting a retry or a local read", err)
	}
	if elapsed > bound+time.Second {
		t.Fatalf("consistent read without a quorum took %s, want about %s", elapsed, bound)
	}
	if survivor.sm.value() != 4 {
		t.Fatalf("local state value %d, want 4", survivor.sm.value())
	}
}

// A leader cut off from the majority is deposed: the majority elects
// another and commits a write, while the old leader, whose leader lease is
// long, still believes it leads. Its quorum round (VerifyLeader) cannot
// succeed, so it answers no read index and every consistent read on it
// fails instead of answering from its stale state. Healed, it catches up.
func TestConsistentReadOnADeposedLeaderFails(t *testing.T) {
	slow := FastTiming()
	slow.RaftHeartbeat, slow.RaftElection, slow.RaftLeaderLease = 5*time.Second, 5*time.Second, 5*time.Second
	tc := newTestCluster(t)
	old := tc.add(3, func(c *Config) { c.Timing = slow })
	tc.add(3, nil)
	tc.add(3, nil)
	if l := tc.leader(); l != old {
		if err := l.raft.LeadershipTransferToServer(raft.ServerID(old.cfg.NodeID), raft.ServerAddress(old.RaftAddr())).Error(); err != nil {
			t.Fatalf("transfer leadership to %s: %v", old.cfg.NodeName, err)
		}
	}
	waitFor(t, 10*time.Second, func() error {
		if !old.IsLeader() {
			return errors.New("the slow-lease server does not lead yet")
		}
		return nil
	})
	if _, err := old.Apply(context.Background(), entry(1)); err != nil {
		t.Fatal(err)
	}
	consistentRead(t, old)
	rest := followersOf(tc, old)

	old.Isolate(true)
	var idx uint64
	waitFor(t, 10*time.Second, func() error {
		for _, n := range rest {
			if n.IsLeader() {
				var err error
				idx, err = n.Apply(context.Background(), entry(100))
				return err
			}
		}
		return errors.New("no leader among the majority")
	})
	if !old.IsLeader() {
		t.Fatal("the isolated leader stepped down before the majority committed: its lease is too short for this test")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if _, err := old.leaderReadIndex(ctx); !errors.Is(err, tokens.ErrNoLeader) || !strings.Contains(err.Error(), "quorum did not confirm") {
		t.Fatalf("read index on the deposed leader = %v, want no_leader: no quorum confirmed it", err)
	}
	if _, _, err := old.ConsistentRead(context.Background()); !errors.Is(err, tokens.ErrNoLeader) {
		t.Fatalf("consistent read on the deposed leader = %v, want no_leader", err)
	}
	if old.sm.value() != 1 {
		t.Fatalf("the deposed leader's state has value %d, want the stale 1", old.sm.value())
	}

	old.Isolate(false)
	if got := consistentRead(t, old); got < idx || old.sm.value() != 101 {
		t.Fatalf("healed old leader: read index %d, value %d; want >= %d and 101", got, old.sm.value(), idx)
	}
}

// While the leader hands leadership over, another server may win an
// election at once (TimeoutNow) and commit before this leader's quorum
// round is answered: it answers no read index meanwhile, nor one whose
// quorum round overlapped a transfer.
func TestReadIndexRefusedDuringALeadershipTransfer(t *testing.T) {
	_, l := threeNodes(t, Timing{})
	consistentRead(t, l)
	l.transfers.Add(1)
	if _, err := l.leaderReadIndex(context.Background()); !errors.Is(err, tokens.ErrNoLeader) || !strings.Contains(err.Error(), "handing leadership over") {
		t.Fatalf("read index during a transfer = %v, want a refusal", err)
	}
	l.transfers.Add(1)
	if _, err := l.leaderReadIndex(context.Background()); err != nil {
		t.Fatalf("read index after the transfer ended, still leading = %v", err)
	}
}

// A leader checks a write against a state that holds every committed
// entry: a new leader whose state machine has not yet applied what its
// predecessor committed waits for it instead of refusing the write. Found
// by the chaos suite: after every agent was killed, the first leader
// refused a delete of a token whose add had been acknowledged, as not
// found, because its state machine started behind its log.
func TestNewLeaderChecksWritesAgainstCommittedState(t *testing.T) {
	tc, l := threeNodes(t, Timing{})
	next := followersOf(tc, l)[0]
	consistentRead(t, next)
	release := next.BlockApply()
	t.Cleanup(release)
	if _, err := l.Apply(context.Background(), entry(5)); err != nil {
		t.Fatal(err)
	}
	if err := l.raft.LeadershipTransferToServer(raft.ServerID(next.cfg.NodeID), raft.ServerAddress(next.RaftAddr())).Error(); err != nil {
		t.Fatalf("transfer leadership to %s: %v", next.cfg.NodeName, err)
	}
	if got := tc.leader(); got != next {
		t.Fatalf("leader is %s, want %s", got.cfg.NodeName, next.cfg.NodeName)
	}
	// The new leader's state machine lacks the acknowledged 5, so its
	// first check of a withdrawal of 5 refuses it; only then is it let
	// go. The write must wait for the state and then commit.
	next.sm.refused = make(chan []byte, 1)
	done := make(chan error, 1)
	go func() {
		_, err := next.Apply(context.Background(), withdraw(5))
		done <- err
	}()
	select {
	case <-next.sm.refused:
	case err := <-done:
		t.Fatalf("withdrawal answered %v before the check", err)
	}
	release()
	if err := <-done; err != nil {
		t.Fatalf("withdrawal of an acknowledged deposit on a new leader = %v", err)
	}
	if v := next.sm.value(); v != 0 {
		t.Fatalf("value %d after the withdrawal, want 0", v)
	}
	// A refusal against the caught-up state stands.
	next.sm.refused = nil
	if _, err := next.Apply(context.Background(), withdraw(1)); !errors.Is(err, tokens.ErrNotFound) {
		t.Fatalf("withdrawal from 0 = %v, want not_found", err)
	}
}
