package cluster

import (
	"context"
	"sync"
	"time"

	"github.com/tokend/tokend/tokens"
)

// monitorLeadership consumes Raft's leadership notifications and runs
// leaderLoop for exactly as long as this agent leads. When leadership is lost
// it cancels the leader's tasks and waits for all of them before it reads the
// next notification, so two generations of leader tasks never overlap on one
// agent. An operator's restore pauses the tasks the same way while the state
// is replaced (pauseDuties), and they start afresh, after a Barrier, on the
// restored state.
func (c *Cluster) monitorLeadership() {
	var (
		stop   func()
		wg     sync.WaitGroup
		paused bool
	)
	start := func() {
		ctx, cancel := context.WithCancel(context.Background())
		stop = cancel
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.leaderLoop(ctx)
		}()
	}
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
			if stop != nil || paused {
				continue
			}
			start()
		case req := <-c.dutiesCh:
			if req.pause {
				revoke()
				paused = true
			} else {
				paused = false
				if stop == nil && c.IsLeader() {
					start()
				}
			}
			close(req.done)
		case <-c.shutdownCh:
			revoke()
			return
		}
	}
}

// dutiesRequest pauses or resumes the leader's tasks.
type dutiesRequest struct {
	pause bool
	done  chan struct{}
}

// pauseDuties stops the leader's tasks and waits until every one has
// returned; until resumeDuties, none starts, even if this agent wins an
// election meanwhile.
func (c *Cluster) pauseDuties() error { return c.duties(true) }

// resumeDuties lets the leader's tasks run again: at once if this agent
// leads, after a Barrier.
func (c *Cluster) resumeDuties() error { return c.duties(false) }

func (c *Cluster) duties(pause bool) error {
	req := dutiesRequest{pause: pause, done: make(chan struct{})}
	select {
	case c.dutiesCh <- req:
	case <-c.shutdownCh:
		return errShuttingDown()
	}
	select {
	case <-req.done:
		return nil
	case <-c.shutdownCh:
		return errShuttingDown()
	}
}

func errShuttingDown() error {
	return tokens.Errorf(tokens.CodeUnavailable, "the agent is shutting down")
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
