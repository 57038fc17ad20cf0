package cluster

import (
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// A wiped agent answers on its old address with a new id and an empty
// configuration, so raft grants; the candidate must not count that as the
// vote of the server it asked.
func TestVoteGuardCountsOnlyTheServerAsked(t *testing.T) {
	tc := newTestCluster(t)
	wiped := tc.add(0, func(c *Config) { c.Join = nil })
	candidate := tc.add(0, func(c *Config) { c.Join = nil })
	g := voteGuard{candidate.transport, hclog.NewNullLogger()}
	preVote := func(asked raft.ServerID) bool {
		t.Helper()
		var resp raft.RequestPreVoteResponse
		req := &raft.RequestPreVoteRequest{
			RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(candidate.cfg.NodeID), Addr: []byte(candidate.RaftAddr())},
			Term:      5, LastLogIndex: 100, LastLogTerm: 4,
		}
		if err := g.RequestPreVote(asked, raft.ServerAddress(wiped.RaftAddr()), req, &resp); err != nil {
			t.Fatal(err)
		}
		return resp.Granted
	}
	if !preVote(raft.ServerID(wiped.cfg.NodeID)) {
		t.Fatal("a server asked by its own id did not grant: the test proves nothing")
	}
	if preVote("id-of-the-server-before-the-wipe") {
		t.Fatal("a pre-vote from another server than the one asked was counted")
	}
	vote := func(asked raft.ServerID) bool {
		t.Helper()
		var resp raft.RequestVoteResponse
		req := &raft.RequestVoteRequest{
			RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(candidate.cfg.NodeID), Addr: []byte(candidate.RaftAddr())},
			Term:      6, LastLogIndex: 100, LastLogTerm: 5,
		}
		if err := g.RequestVote(asked, raft.ServerAddress(wiped.RaftAddr()), req, &resp); err != nil {
			t.Fatal(err)
		}
		return resp.Granted
	}
	// Raft grants the same candidate again in the same term.
	if !vote(raft.ServerID(wiped.cfg.NodeID)) {
		t.Fatal("a server asked by its own id did not vote: the test proves nothing")
	}
	if vote("id-of-the-server-before-the-wipe") {
		t.Fatal("a vote from another server than the one asked was counted")
	}
}
