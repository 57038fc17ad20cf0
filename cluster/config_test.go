package cluster

import (
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// The default multiplier is DefaultTiming itself, so an agent started
// without --raft-multiplier runs on the timing it always had.
func TestDefaultRaftMultiplierIsDefaultTiming(t *testing.T) {
	if got, want := DefaultTiming().WithRaftMultiplier(DefaultRaftMultiplier), DefaultTiming(); got != want {
		t.Fatalf("DefaultTiming with the default multiplier = %+v, want %+v", got, want)
	}
}

func TestRaftMultiplierScalesRaftTimeouts(t *testing.T) {
	for _, c := range []struct {
		m                          int
		heartbeat, election, lease time.Duration
	}{
		{1, 200 * time.Millisecond, 200 * time.Millisecond, 100 * time.Millisecond},
		{3, 600 * time.Millisecond, 600 * time.Millisecond, 300 * time.Millisecond},
		{5, time.Second, time.Second, 500 * time.Millisecond},
		{10, 2 * time.Second, 2 * time.Second, time.Second},
	} {
		base := DefaultTiming()
		got := base.WithRaftMultiplier(c.m)
		if got.RaftHeartbeat != c.heartbeat || got.RaftElection != c.election || got.RaftLeaderLease != c.lease {
			t.Errorf("multiplier %d: heartbeat %s, election %s, lease %s; want %s, %s, %s",
				c.m, got.RaftHeartbeat, got.RaftElection, got.RaftLeaderLease, c.heartbeat, c.election, c.lease)
		}
		// Only the three failure-detection timeouts move: the commit
		// timeout (report propagation) and everything else stay.
		rest := got
		rest.RaftHeartbeat, rest.RaftElection, rest.RaftLeaderLease = base.RaftHeartbeat, base.RaftElection, base.RaftLeaderLease
		if rest != base {
			t.Errorf("multiplier %d changed more than the Raft timeouts: %+v", c.m, got)
		}
		// What raft itself checks (LeaderLeaseTimeout ≤ HeartbeatTimeout,
		// CommitTimeout and the others positive) holds at every multiplier.
		conf := raft.DefaultConfig()
		conf.LocalID = "a"
		conf.HeartbeatTimeout, conf.ElectionTimeout, conf.LeaderLeaseTimeout, conf.CommitTimeout = got.RaftHeartbeat, got.RaftElection, got.RaftLeaderLease, got.RaftCommit
		if err := raft.ValidateConfig(conf); err != nil {
			t.Errorf("multiplier %d: raft refuses the timing: %v", c.m, err)
		}
	}
}
