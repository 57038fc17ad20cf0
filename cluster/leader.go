package cluster

import (
	"context"
	"sync"
	"time"
)

// monitorLeadership consumes Raft's leadership notifications and runs
// leaderLoop for exactly as long as this agent leads. When leadership is lost
// it cancels the leader's tasks and waits for all of them before it reads the
// next notification, so two generations of leader tasks never overlap on one
// agent.
func (c *Cluster) monitorLeadership() {
	var (
		stop func()
		wg   sync.WaitGroup
	)
	revoke := func() {
		// Read indexes waiting for this term's barrier give up.
		c.barrierDone.notify()
		if stop != nil {
			stop()
			wg.Wait()
			stop = nil
			c.logger.Info("leader duties stopped")
		}
	}
	for {
		select {
		case isLeader := <-c.leaderNotify:
			if !isLeader {
				revoke()
				continue
			}
			if stop != nil {
				continue
			}
			ctx, cancel := context.WithCancel(context.Background())
			stop = cancel
			wg.Add(1)
			go func() {
				defer wg.Done()
				c.leaderLoop(ctx)
			}()
		case <-c.shutdownCh:
			revoke()
			return
		}
	}
}

// leaderLoop waits for a Barrier, so that every entry committed by earlier
// leaders is applied before this one decides anything, then runs every leader
// task until ctx ends. Once the barrier of a term is done, the leader also
// answers read indexes for that term (readindex.go).
func (c *Cluster) leaderLoop(ctx context.Context) {
	for {
		term := c.raft.CurrentTerm()
		err := c.barrier(ctx)
		if err == nil {
			// The barrier is an entry of this term only if the term did
			// not move meanwhile; if it did, leadership was lost and
			// this loop is about to be cancelled.
			if c.raft.CurrentTerm() == term {
				c.barrierTerm.Store(term)
				c.barrierDone.notify()
			}
			break
		}
		if ctx.Err() != nil {
			return
		}
		c.logger.Warn("barrier failed; leader duties wait", "error", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(c.cfg.Timing.RaftHeartbeat):
		}
	}
	c.logger.Info("leader duties started")
	tasks := append([]func(context.Context){c.reconcileLoop}, c.cfg.LeaderTasks...)
	var wg sync.WaitGroup
	for _, task := range tasks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			task(ctx)
		}()
	}
	wg.Wait()
}

// barrier waits until every entry committed before it has been applied, or
// until ctx ends (awaitFuture).
func (c *Cluster) barrier(ctx context.Context) error {
	return awaitFuture(ctx, c.raft.Barrier(c.cfg.Timing.ApplyTimeout))
}
