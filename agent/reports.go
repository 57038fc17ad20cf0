package agent

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/tokend/tokend/cluster"
	"github.com/tokend/tokend/fsm"
	"github.com/tokend/tokend/tokens"
)

// reportQueue commits health changes that reports caused on this agent. All
// reports waiting when the queue runs go into one Raft entry, so a burst of
// reports costs one commit. A change that cannot be committed (no leader) is
// kept and retried with backoff; meanwhile the overlay keeps this agent from
// serving the token.
type reportQueue struct {
	fsm     *fsm.FSM
	cluster *cluster.Cluster
	reads   *reader
	logger  hclog.Logger

	mu      sync.Mutex
	pending []queuedReport
	wake    chan struct{}
}

type queuedReport struct {
	rep  tokens.Report
	done chan reportResult // nil once its waiter has been answered
}

type reportResult struct {
	index uint64
	err   error
}

const (
	reportRetryMin = 50 * time.Millisecond
	reportRetryMax = 5 * time.Second
	// maxPendingReports bounds the queue while there is no leader; the
	// oldest changes are dropped first (the overlay still holds them here).
	maxPendingReports = 10000
)

func newReportQueue(f *fsm.FSM, c *cluster.Cluster, r *reader, logger hclog.Logger) *reportQueue {
	return &reportQueue{fsm: f, cluster: c, reads: r, logger: logger, wake: make(chan struct{}, 1)}
}

// enqueue queues rep for commit; the channel receives the outcome of the
// first attempt.
func (q *reportQueue) enqueue(rep tokens.Report) <-chan reportResult {
	done := make(chan reportResult, 1)
	q.mu.Lock()
	q.pending = append(q.pending, queuedReport{rep: rep, done: done})
	q.trimLocked()
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
	return done
}

func (q *reportQueue) run(ctx context.Context) {
	backoff := time.Duration(0)
	for {
		var retry <-chan time.Time
		if backoff > 0 {
			retry = time.After(backoff)
		}
		select {
		case <-ctx.Done():
			return
		case <-q.wake:
			if backoff > 0 {
				continue // keep backing off; the retry timer will take this too
			}
		case <-retry:
		}
		if q.flush(ctx) {
			backoff = 0
		} else {
			backoff = min(max(2*backoff, reportRetryMin), reportRetryMax)
		}
	}
}

// flush commits everything pending in one entry. It reports false when the
// entry could not be committed and the reports went back in the queue.
func (q *reportQueue) flush(ctx context.Context) bool {
	q.mu.Lock()
	batch := q.pending
	q.pending = nil
	q.mu.Unlock()

	state := q.fsm.State()
	var reps []tokens.Report
	for _, qr := range batch {
		if t, ok := state.Token(qr.rep.Pool, qr.rep.TokenID); ok && !tokens.Covered(t, qr.rep) {
			reps = append(reps, qr.rep)
		}
	}
	var res reportResult
	if len(reps) > 0 {
		entry, err := fsm.Encode(fsm.TokenReportType, fsm.TokenReportRequest{Reports: reps})
		if err == nil {
			res.index, err = q.cluster.Apply(ctx, entry)
		}
		res.err = err
	}
	retry := res.err != nil && (errors.Is(res.err, tokens.ErrNoLeader) || errors.Is(res.err, tokens.ErrUnavailable))
	for i := range batch {
		if batch[i].done != nil {
			batch[i].done <- res
			batch[i].done = nil
		}
	}
	switch {
	case retry:
		q.logger.Warn("health change not committed; will retry", "reports", len(reps), "error", res.err)
		q.mu.Lock()
		q.pending = append(slices.Clip(batch), q.pending...)
		q.trimLocked()
		q.mu.Unlock()
		return false
	case res.err != nil:
		q.logger.Error("health change rejected; dropped", "reports", len(reps), "error", res.err)
	}
	q.reads.prune(time.Now())
	return true
}

func (q *reportQueue) trimLocked() {
	if n := len(q.pending) - maxPendingReports; n > 0 {
		q.logger.Error("too many uncommitted health changes; dropping the oldest", "dropped", n)
		for _, qr := range q.pending[:n] {
			if qr.done != nil {
				qr.done <- reportResult{err: tokens.Errorf(tokens.CodeUnavailable, "dropped from a full report queue")}
			}
		}
		q.pending = slices.Delete(q.pending, 0, n)
	}
}
