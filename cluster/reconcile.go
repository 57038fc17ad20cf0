package cluster

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/raft"
)

// maxPromotionLag is how many log entries a non-voter may trail the leader
// by and still be promoted.
const maxPromotionLag = 256

// reconcileLoop runs on the leader: it makes the Raft configuration follow
// gossip membership, on every gossip change and every ReconcileInterval.
func (c *Cluster) reconcileLoop(ctx context.Context) {
	// healthySince tracks when each non-voter was first seen alive and caught
	// up; it belongs to this term of leadership only.
	healthySince := map[raft.ServerID]time.Time{}
	ticker := time.NewTicker(c.cfg.Timing.ReconcileInterval)
	defer ticker.Stop()
	for {
		if err := c.reconcile(ctx, healthySince); err != nil && ctx.Err() == nil {
			c.logger.Warn("membership reconciliation incomplete; will retry", "error", err)
		}
		select {
		case <-ticker.C:
		case <-c.reconcileCh:
		case <-ctx.Done():
			return
		}
	}
}

// reconcile makes one pass:
//   - alive servers missing from Raft join as non-voters once they answer
//     over the agent RPC as themselves (checkNewServer); a server whose
//     Raft address changed is updated, and an id that another server's
//     address now belongs to is removed first;
//   - servers failed in gossip for longer than DeadServerTimeout, or that
//     left, are removed, voters only while they are a minority of voters;
//   - non-voters alive and caught up for ServerStabilization are promoted,
//     up to MaxVoters, keeping an odd number of voters, spreading voters
//     over zones.
//
// The leader never removes or demotes itself.
func (c *Cluster) reconcile(ctx context.Context, healthySince map[raft.ServerID]time.Time) error {
	f := c.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return err
	}
	servers := f.Configuration().Servers
	byID := map[string]Member{}
	for _, m := range c.members.list() {
		if old, ok := byID[m.ID]; !ok || old.Status != StatusAlive {
			byID[m.ID] = m
		}
	}
	timeout := c.cfg.Timing.ApplyTimeout

	for _, m := range byID {
		if m.Status != StatusAlive || ctx.Err() != nil {
			continue
		}
		i := slices.IndexFunc(servers, func(s raft.Server) bool { return string(s.ID) == m.ID })
		switch {
		case i < 0:
			if err := c.checkNewServer(ctx, m); err != nil {
				c.logger.Warn("not adding server to Raft: it does not answer over the agent RPC", "node", m.Name, "id", m.ID, "address", m.RaftAddr, "error", err)
				continue
			}
			for _, s := range servers {
				if string(s.Address) == m.RaftAddr && string(s.ID) != c.cfg.NodeID {
					c.logger.Info("removing server whose address a new server now uses", "old_id", s.ID, "new_id", m.ID, "address", m.RaftAddr)
					if err := c.raft.RemoveServer(s.ID, 0, timeout).Error(); err != nil {
						return err
					}
				}
			}
			c.logger.Info("adding server as non-voter", "node", m.Name, "id", m.ID, "address", m.RaftAddr)
			if err := c.raft.AddNonvoter(raft.ServerID(m.ID), raft.ServerAddress(m.RaftAddr), 0, timeout).Error(); err != nil {
				return err
			}
		case string(servers[i].Address) != m.RaftAddr:
			c.logger.Info("updating server address", "node", m.Name, "id", m.ID, "from", servers[i].Address, "to", m.RaftAddr)
			add := c.raft.AddNonvoter
			if servers[i].Suffrage == raft.Voter {
				add = c.raft.AddVoter
			}
			if err := add(raft.ServerID(m.ID), raft.ServerAddress(m.RaftAddr), 0, timeout).Error(); err != nil {
				return err
			}
		case servers[i].Suffrage == raft.Voter && !m.Voter && m.ID != c.cfg.NodeID:
			c.logger.Info("demoting server that is configured as non-voter", "node", m.Name, "id", m.ID)
			if err := c.raft.DemoteVoter(raft.ServerID(m.ID), 0, timeout).Error(); err != nil {
				return err
			}
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	if f = c.raft.GetConfiguration(); f.Error() != nil {
		return f.Error()
	}
	servers = f.Configuration().Servers
	if err := c.removeDeadServers(servers, byID); err != nil {
		return err
	}
	if ctx.Err() != nil {
		return nil
	}
	if f = c.raft.GetConfiguration(); f.Error() != nil {
		return f.Error()
	}
	return c.promoteNonVoters(ctx, f.Configuration().Servers, byID, healthySince)
}

func (c *Cluster) removeDeadServers(servers []raft.Server, byID map[string]Member) error {
	var voters int
	var dead []raft.Server
	for _, s := range servers {
		if s.Suffrage == raft.Voter {
			voters++
		}
		m, known := byID[string(s.ID)]
		if string(s.ID) == c.cfg.NodeID || !known {
			continue // unknown is not dead: gossip may not have caught up
		}
		if m.Status == StatusLeft || (m.Status == StatusFailed && time.Since(m.Since) >= c.cfg.DeadServerTimeout) {
			dead = append(dead, s)
		}
	}
	var deadVoters int
	for _, s := range dead {
		if s.Suffrage == raft.Voter {
			deadVoters++
		}
	}
	// Removing a majority of voters at once would let a partitioned leader
	// shrink the cluster to itself; leave that to an operator.
	removeVoters := deadVoters*2 < voters
	if deadVoters > 0 && !removeVoters {
		c.logger.Warn("not removing dead voters: they are not a minority", "dead_voters", deadVoters, "voters", voters)
	}
	for _, s := range dead {
		if s.Suffrage == raft.Voter && !removeVoters {
			continue
		}
		m := byID[string(s.ID)]
		c.logger.Info("removing dead server", "node", m.Name, "id", s.ID, "status", m.Status, "since", m.Since)
		if err := c.raft.RemoveServer(s.ID, 0, c.cfg.Timing.ApplyTimeout).Error(); err != nil {
			return err
		}
	}
	return nil
}

func (c *Cluster) promoteNonVoters(ctx context.Context, servers []raft.Server, byID map[string]Member, healthySince map[raft.ServerID]time.Time) error {
	var voters int
	votersInZone := map[string]int{}
	var ready []Member
	now := time.Now()
	for _, s := range servers {
		m, known := byID[string(s.ID)]
		if s.Suffrage == raft.Voter {
			voters++
			votersInZone[m.Zone]++
			continue
		}
		if !known || m.Status != StatusAlive || !m.Voter || !c.caughtUp(ctx, s.Address) {
			delete(healthySince, s.ID)
			continue
		}
		since, ok := healthySince[s.ID]
		if !ok {
			healthySince[s.ID] = now
			since = now
		}
		if now.Sub(since) >= c.cfg.Timing.ServerStabilization {
			ready = append(ready, m)
		}
	}
	target := min(voters+len(ready), c.cfg.MaxVoters)
	if target%2 == 0 && target > voters {
		target-- // an even voter count tolerates no more failures than one less
	}
	for n := target - voters; n > 0; n-- {
		// Prefer the zone with fewest voters, so a zone outage takes out as
		// few votes as possible.
		slices.SortFunc(ready, func(a, b Member) int {
			if d := votersInZone[a.Zone] - votersInZone[b.Zone]; d != 0 {
				return d
			}
			return strings.Compare(a.ID, b.ID)
		})
		m := ready[0]
		ready = ready[1:]
		c.logger.Info("promoting server to voter", "node", m.Name, "id", m.ID, "zone", m.Zone)
		if err := c.raft.AddVoter(raft.ServerID(m.ID), raft.ServerAddress(m.RaftAddr), 0, c.cfg.Timing.ApplyTimeout).Error(); err != nil {
			return err
		}
		votersInZone[m.Zone]++
		delete(healthySince, raft.ServerID(m.ID))
	}
	return nil
}

// caughtUp asks a server for its status and reports whether it follows the
// current term and is close to the leader's log.
func (c *Cluster) caughtUp(ctx context.Context, addr raft.ServerAddress) bool {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timing.ApplyTimeout)
	defer cancel()
	s, err := c.fetchStatus(ctx, addr)
	if err != nil {
		return false
	}
	return s.Term == c.raft.CurrentTerm() && s.LastIndex+maxPromotionLag >= c.raft.LastIndex()
}

// checkNewServer asks a server gossip reports for its status over the agent
// RPC, and checks that it answers as the id it gossips. With TLS this proves
// that it holds an agent certificate of the cluster's CA, so a server
// without one never enters the Raft configuration, and the leader does not
// spend itself replicating to a server that cannot take part.
func (c *Cluster) checkNewServer(ctx context.Context, m Member) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timing.ApplyTimeout)
	defer cancel()
	s, err := c.fetchStatus(ctx, raft.ServerAddress(m.RaftAddr))
	if err != nil {
		return err
	}
	if s.ID != m.ID {
		return fmt.Errorf("it answers as server %q", s.ID)
	}
	return nil
}
