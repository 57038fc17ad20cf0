package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/raft"
)

// bootstrapLoop bootstraps a new cluster once BootstrapExpect servers have
// found each other in gossip. It bootstraps only when
//   - this server has no Raft state (a restarted server never bootstraps),
//   - every server it sees agrees on BootstrapExpect,
//   - none of them already belongs to a cluster, and
//   - this server is among the BootstrapExpect lowest ids, and every one of
//     those servers reports the same BootstrapExpect lowest ids (asked over
//     RPC), so they all propose one identical configuration.
//
// A server that finds an existing cluster stops and waits for its leader to
// add it.
func (c *Cluster) bootstrapLoop() {
	ticker := time.NewTicker(c.cfg.Timing.JoinRetry)
	defer ticker.Stop()
	for {
		done, err := c.tryBootstrap()
		if err != nil {
			c.logger.Warn("not bootstrapping yet", "reason", err)
		}
		if done {
			return
		}
		select {
		case <-ticker.C:
		case <-c.reconcileCh:
		case <-c.shutdownCh:
			return
		}
	}
}

// bootstrapCandidates returns the ids of the alive voting servers this
// server sees, lowest first, and the first BootstrapExpect of them.
func (c *Cluster) bootstrapCandidates() (all []Member, chosen []string, err error) {
	expect := c.cfg.BootstrapExpect
	for _, m := range c.members.list() {
		if m.Status != StatusAlive || !m.Voter {
			continue
		}
		if m.expect != 0 && m.expect != expect {
			return nil, nil, fmt.Errorf("member %s has --bootstrap-expect %d and this server %d: every server must use the same value", m.Name, m.expect, expect)
		}
		all = append(all, m)
	}
	slices.SortFunc(all, func(a, b Member) int { return strings.Compare(a.ID, b.ID) })
	for i := 0; i < len(all) && i < expect; i++ {
		chosen = append(chosen, all[i].ID)
	}
	return all, chosen, nil
}

// tryBootstrap reports done when bootstrapping is no longer this server's
// job: it bootstrapped, or a cluster exists.
func (c *Cluster) tryBootstrap() (done bool, err error) {
	if c.hasState() {
		return true, nil
	}
	all, chosen, err := c.bootstrapCandidates()
	if err != nil || len(chosen) < c.cfg.BootstrapExpect {
		return false, err
	}
	ctx, cancel := context.WithTimeout(c.ctx, c.cfg.Timing.ApplyTimeout)
	defer cancel()
	for _, m := range all {
		if m.ID == c.cfg.NodeID {
			continue
		}
		s, err := c.fetchStatus(ctx, raft.ServerAddress(m.RaftAddr))
		if err != nil {
			return false, fmt.Errorf("cannot ask %s whether it has a cluster: %v", m.Name, err)
		}
		if s.HasState {
			c.logger.Info("found an existing cluster; waiting for its leader to add this server", "member", m.Name)
			return true, nil
		}
		if slices.Contains(chosen, m.ID) && !slices.Equal(s.BootstrapCandidates, chosen) {
			return false, fmt.Errorf("%s does not see the same servers yet", m.Name)
		}
	}
	if !slices.Contains(chosen, c.cfg.NodeID) {
		return false, nil // a lower-id server bootstraps; keep checking until it has
	}
	var conf raft.Configuration
	for _, m := range all[:len(chosen)] {
		conf.Servers = append(conf.Servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(m.ID), Address: raft.ServerAddress(m.RaftAddr)})
	}
	c.logger.Info("bootstrapping cluster", "servers", chosen)
	if err := c.raft.BootstrapCluster(conf).Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
		return false, err
	}
	return true, nil
}
