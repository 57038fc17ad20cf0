package cluster

import (
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// voteGuard counts a vote only from the server it was asked of.
//
// A candidate asks each voter of its configuration at that voter's address
// and hashicorp/raft v1.8.0 counts the answer as that voter's vote, whoever
// gave it. An agent whose data dir was wiped comes back on its old address
// with a new id and an empty configuration, and raft grants votes with an
// empty configuration (it may be bootstrapping). Its answer would then count
// as its old self's vote — a vote backed by none of the log the old self had
// acknowledged — and a candidate missing acknowledged entries could win and
// truncate them on the others (seen in the chaos suite: entries 63–76
// cleared). Answers carry their sender's id, so a vote or pre-vote from any
// other server than the one asked is counted as refused.
type voteGuard struct {
	*raft.NetworkTransport
	logger hclog.Logger
}

func (g voteGuard) RequestVote(id raft.ServerID, target raft.ServerAddress, args *raft.RequestVoteRequest, resp *raft.RequestVoteResponse) error {
	if err := g.NetworkTransport.RequestVote(id, target, args, resp); err != nil {
		return err
	}
	if resp.Granted && !g.from(id, target, resp.ID) {
		resp.Granted = false
	}
	return nil
}

func (g voteGuard) RequestPreVote(id raft.ServerID, target raft.ServerAddress, args *raft.RequestPreVoteRequest, resp *raft.RequestPreVoteResponse) error {
	if err := g.NetworkTransport.RequestPreVote(id, target, args, resp); err != nil {
		return err
	}
	if resp.Granted && !g.from(id, target, resp.ID) {
		resp.Granted = false
	}
	return nil
}

// from reports whether an answer from target came from server id.
func (g voteGuard) from(id raft.ServerID, target raft.ServerAddress, sender []byte) bool {
	if len(sender) == 0 || raft.ServerID(sender) == id {
		return true // servers before raft protocol 3 send no id
	}
	g.logger.Warn("ignoring a vote from another server than the one asked: its data dir was probably wiped; the leader replaces it",
		"asked", id, "address", target, "answered", string(sender))
	return false
}
