package agent

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/tokend/tokend/cluster"
	"github.com/tokend/tokend/tokens"
)

// forwarder sends the reports this agent receives to the leader's monitor.
// Everything waiting when a send starts goes in one request, so a burst of
// reports costs one round trip and at most one commit. While there is no
// leader, reports are kept (up to maxPendingReports) and retried with
// backoff; meanwhile the overlay keeps this agent from serving a token
// reported dead here.
type forwarder struct {
	cluster *cluster.Cluster
	logger  hclog.Logger

	mu      sync.Mutex
	pending []queuedReport
	wake    chan struct{}
}

type queuedReport struct {
	rep tokens.Report
	// done receives the leader's verdict; nil when nobody waits.
	done chan verdictResult
}

type verdictResult struct {
	verdict
	err error
}

const (
	reportRetryMin = 50 * time.Millisecond
	reportRetryMax = 5 * time.Second
	// maxPendingReports bounds the queue while there is no leader; the
	// oldest reports are dropped first.
	maxPendingReports = 10000
	// maxReportBatch bounds one request to the leader.
	maxReportBatch = 1000
)

func newForwarder(c *cluster.Cluster, logger hclog.Logger) *forwarder {
	return &forwarder{cluster: c, logger: logger, wake: make(chan struct{}, 1)}
}

// send queues rep for the leader. With wait, the returned channel receives
// the leader's verdict, or why it will never come (a refusal, a full queue).
func (f *forwarder) send(rep tokens.Report, wait bool) <-chan verdictResult {
	var done chan verdictResult
	if wait {
		done = make(chan verdictResult, 1)
	}
	f.mu.Lock()
	f.pending = append(f.pending, queuedReport{rep: rep, done: done})
	f.trimLocked()
	f.mu.Unlock()
	select {
	case f.wake <- struct{}{}:
	default:
	}
	return done
}

func (f *forwarder) run(ctx context.Context) {
	backoff := time.Duration(0)
	for {
		var retry <-chan time.Time
		if backoff > 0 {
			retry = time.After(backoff)
		}
		select {
		case <-ctx.Done():
			return
		case <-f.wake:
			if backoff > 0 {
				continue // the retry timer takes these too
			}
		case <-retry:
		}
		if f.flush(ctx) {
			backoff = 0
		} else {
			backoff = min(max(2*backoff, reportRetryMin), reportRetryMax)
		}
	}
}

// flush sends what is pending, in batches. It reports false when the leader
// could not be reached and the reports went back in the queue.
func (f *forwarder) flush(ctx context.Context) bool {
	for {
		f.mu.Lock()
		n := min(len(f.pending), maxReportBatch)
		batch := slices.Clone(f.pending[:n])
		f.pending = slices.Delete(f.pending, 0, n)
		f.mu.Unlock()
		if n == 0 {
			return true
		}
		if !f.sendBatch(ctx, batch) {
			return false
		}
	}
}

func (f *forwarder) sendBatch(ctx context.Context, batch []queuedReport) bool {
	reps := make([]tokens.Report, len(batch))
	for i, qr := range batch {
		reps[i] = qr.rep
	}
	body, err := json.Marshal(reps)
	var verdicts []verdict
	if err == nil {
		var out []byte
		if out, err = f.cluster.CallLeader(ctx, leaderReports, body); err == nil {
			err = json.Unmarshal(out, &verdicts)
		}
	}
	if err == nil && len(verdicts) != len(batch) {
		err = tokens.Errorf(tokens.CodeUnavailable, "the leader answered %d verdicts for %d reports", len(verdicts), len(batch))
	}
	if retry := err != nil && (errors.Is(err, tokens.ErrNoLeader) || errors.Is(err, tokens.ErrUnavailable)); retry {
		// Waiters stay attached: they get the answer of the retry that
		// reaches a leader, or give up on their own deadline.
		f.logger.Warn("could not reach the leader with reports; will retry", "reports", len(batch), "error", err)
		f.mu.Lock()
		f.pending = append(batch, f.pending...)
		f.trimLocked()
		f.mu.Unlock()
		return false
	}
	var again []queuedReport
	for i := range batch {
		if err == nil && (verdicts[i].Retry || verdicts[i].Change && !verdicts[i].Committed) {
			// Decided, but the commit it rests on failed (the leader
			// stepped down): the next leader decides again.
			again = append(again, batch[i])
			continue
		}
		if batch[i].done != nil {
			res := verdictResult{err: err}
			if err == nil {
				res.verdict = verdicts[i]
			}
			batch[i].done <- res
		}
	}
	if err != nil {
		f.logger.Error("the leader refused reports; dropped", "reports", len(batch), "error", err)
	}
	if len(again) > 0 {
		f.mu.Lock()
		f.pending = append(again, f.pending...)
		f.trimLocked()
		f.mu.Unlock()
		return false
	}
	return true
}

func (f *forwarder) trimLocked() {
	if n := len(f.pending) - maxPendingReports; n > 0 {
		f.logger.Error("too many reports waiting for a leader; dropping the oldest", "dropped", n)
		for _, qr := range f.pending[:n] {
			if qr.done != nil {
				qr.done <- verdictResult{err: tokens.Errorf(tokens.CodeUnavailable, "dropped from a full report queue")}
			}
		}
		f.pending = slices.Delete(f.pending, 0, n)
	}
}
