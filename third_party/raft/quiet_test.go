package raft

import (
	"sync/atomic"
	"testing"
	"time"
)

// tokend's change (replication.go: quietTick, tickTimeout).

func quietRaft(commit uint64) *Raft {
	r := &Raft{}
	conf := DefaultConfig()
	conf.CommitTimeout = 10 * time.Millisecond
	conf.HeartbeatTimeout = time.Second
	r.conf.Store(*conf)
	r.setCommitIndex(commit)
	return r
}

func TestQuietTick(t *testing.T) {
	r := quietRaft(7)
	s := &followerReplication{}
	atomic.StoreUint64(&s.nextIndex, 8)
	acked := func(commit uint64, ago time.Duration) {
		s.commitAcked.Store(commit)
		s.commitAckedAt.Store(time.Now().Add(-ago).UnixNano())
	}

	acked(7, 0)
	if !r.quietTick(s, 7) {
		t.Error("a follower holding every entry and the commit index it accepted just now: the tick has no news, yet it is not quiet")
	}
	if r.quietTick(s, 8) {
		t.Error("a follower lacking entry 8 is sent it")
	}
	acked(6, 0)
	if r.quietTick(s, 7) {
		t.Error("a follower that last accepted commit index 6 is told 7")
	}
	acked(7, 600*time.Millisecond)
	if r.quietTick(s, 7) {
		t.Error("the commit index is sent again half a heartbeat timeout after it was accepted (a follower may have restarted)")
	}
	if r.quietTick(&followerReplication{}, 0) {
		t.Error("a follower that accepted nothing yet is sent the commit index")
	}
}

func TestTickTimeout(t *testing.T) {
	r := quietRaft(0)
	for quiet, want := range map[int]time.Duration{
		0:                           10 * time.Millisecond,
		quietTicksBeforeBackoff:     10 * time.Millisecond,
		quietTicksBeforeBackoff + 1: 20 * time.Millisecond,
		quietTicksBeforeBackoff + 3: 80 * time.Millisecond,
		quietTicksBeforeBackoff + 6: 500 * time.Millisecond, // half the heartbeat timeout
		1 << 20:                     500 * time.Millisecond,
	} {
		if got := r.tickTimeout(quiet); got != want {
			t.Errorf("tickTimeout(%d) = %v, want %v", quiet, got, want)
		}
	}
	// A heartbeat timeout too short to back off under keeps CommitTimeout.
	conf := r.config()
	conf.HeartbeatTimeout = 15 * time.Millisecond
	r.conf.Store(conf)
	if got := r.tickTimeout(100); got != 10*time.Millisecond {
		t.Errorf("tickTimeout with a 15 ms heartbeat timeout = %v, want CommitTimeout", got)
	}
}
