// Package load runs a closed loop: C workers, each sending one request,
// waiting for its answer and sending the next, for a warmup and then a
// measured window.
//
// An operation counts when it completes inside the measured window
// [start, start+Duration): throughput is the successful operations so
// counted divided by the window, and every one of them contributes its
// latency (time from just before it was sent to just after its answer was
// read) to exact percentiles (package stats). Operations completing during
// the warmup only warm connections and caches; one still running at the
// end of the window is not counted.
package load

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/tokend/tokend/bench/internal/stats"
)

// Op performs one operation and returns when its answer is complete.
type Op func(ctx context.Context) error

// ErrSkip, returned by an Op, says that it did housekeeping rather than
// the operation measured (a write worker making a new pool): it counts as
// neither an operation nor an error.
var ErrSkip = errors.New("load: not an operation")

// Worker is one closed-loop client: its operation and what to release
// after the run.
type Worker struct {
	Op    Op
	Close func()
}

// NewWorker makes worker i (0-based) of a run; each gets its own
// connection so that C workers are C clients.
type NewWorker func(i int) (Worker, error)

// Config is one run.
type Config struct {
	Concurrency int
	Warmup      time.Duration
	Duration    time.Duration
	// Grace is how long an operation still running at the end of the
	// window may take before it is cancelled (default 10 s). Operations
	// get no deadline of their own: a timer per operation would cost the
	// driver more than some of the operations it measures.
	Grace time.Duration
}

// Result is what one run measured.
type Result struct {
	Concurrency int           `json:"concurrency"`
	Window      time.Duration `json:"window_ns"`
	Ops         int           `json:"ops"`
	Errors      int           `json:"errors"`
	FirstError  string        `json:"first_error,omitempty"`
	Throughput  float64       `json:"ops_per_sec"`
	Latency     stats.Summary `json:"latency"`
}

// String is a one-line text form of r.
func (r Result) String() string {
	s := fmt.Sprintf("c=%d %.0f ops/s p50=%s p99=%s p99.9=%s max=%s (n=%d",
		r.Concurrency, r.Throughput, us(r.Latency.P50), us(r.Latency.P99), us(r.Latency.P999), us(r.Latency.Max), r.Latency.N)
	if r.Errors > 0 {
		s += fmt.Sprintf(", %d errors, first: %s", r.Errors, r.FirstError)
	}
	return s + ")"
}

func us(d time.Duration) string {
	return fmt.Sprintf("%.1fµs", float64(d)/float64(time.Microsecond))
}

// Run makes cfg.Concurrency workers with newWorker, runs them for
// cfg.Warmup + cfg.Duration and returns what the window measured. A worker
// that cannot be made fails the run before anything is sent.
func Run(ctx context.Context, cfg Config, newWorker NewWorker) (Result, error) {
	if cfg.Concurrency < 1 || cfg.Duration <= 0 || cfg.Warmup < 0 {
		return Result{}, fmt.Errorf("load: concurrency %d, warmup %s, duration %s: need c ≥ 1, warmup ≥ 0, duration > 0", cfg.Concurrency, cfg.Warmup, cfg.Duration)
	}
	if cfg.Grace <= 0 {
		cfg.Grace = 10 * time.Second
	}
	workers := make([]Worker, 0, cfg.Concurrency)
	defer func() {
		for _, w := range workers {
			if w.Close != nil {
				w.Close()
			}
		}
	}()
	for i := range cfg.Concurrency {
		w, err := newWorker(i)
		if err != nil {
			return Result{}, fmt.Errorf("load: worker %d: %w", i, err)
		}
		workers = append(workers, w)
	}

	start := time.Now().Add(cfg.Warmup)
	end := start.Add(cfg.Duration)
	runCtx, cancel := context.WithDeadline(ctx, end.Add(cfg.Grace))
	defer cancel()
	outs := make([]workerOut, len(workers))
	var wg sync.WaitGroup
	for i, w := range workers {
		wg.Go(func() { outs[i] = loop(runCtx, w.Op, start, end, time.Now) })
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}

	res := Result{Concurrency: cfg.Concurrency, Window: cfg.Duration}
	var all []time.Duration
	for _, o := range outs {
		all = append(all, o.samples...)
		res.Errors += o.errors
		if res.FirstError == "" && o.firstErr != nil {
			res.FirstError = o.firstErr.Error()
		}
	}
	res.Ops = len(all)
	res.Throughput = float64(res.Ops) / cfg.Duration.Seconds()
	res.Latency = stats.Summarize(all)
	return res, nil
}

type workerOut struct {
	samples  []time.Duration
	errors   int
	firstErr error
}

// loop is one worker: it sends until an operation would start at or after
// end, and keeps what completes in [start, end).
func loop(ctx context.Context, op Op, start, end time.Time, now func() time.Time) workerOut {
	var o workerOut
	o.samples = make([]time.Duration, 0, 4096)
	for ctx.Err() == nil {
		t0 := now()
		if !t0.Before(end) {
			break
		}
		err := op(ctx)
		t1 := now()
		if t1.Before(start) || !t1.Before(end) {
			continue
		}
		if err == ErrSkip {
			continue
		}
		if err != nil {
			if errors.Is(err, context.Canceled) && ctx.Err() != nil {
				break
			}
			o.errors++
			if o.firstErr == nil {
				o.firstErr = err
			}
			continue
		}
		o.samples = append(o.samples, t1.Sub(t0))
	}
	return o
}
