package load

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

// fakeClock advances by step on every operation, so that which operations
// fall into the window is exact.
type fakeClock struct{ t time.Time }

func TestLoopCountsOnlyTheWindow(t *testing.T) {
	t0 := time.Unix(1000, 0)
	c := &fakeClock{t: t0}
	calls := 0
	op := func(context.Context) error {
		calls++
		c.t = c.t.Add(10 * time.Millisecond) // every operation takes 10 ms
		if calls%4 == 0 {
			return errors.New("boom")
		}
		return nil
	}
	// Operations complete at 10, 20, …: the window [25 ms, 105 ms) holds
	// those completing at 30..100 ms (calls 3..10); call 11 starts at
	// 100 ms and completes at 110 ms, outside; none starts at or after
	// 105 ms.
	out := loop(context.Background(), op, t0.Add(25*time.Millisecond), t0.Add(105*time.Millisecond), func() time.Time { return c.t })
	if calls != 11 {
		t.Errorf("%d operations sent, want 11", calls)
	}
	// Calls 3..10 complete inside; 4 and 8 fail.
	if len(out.samples) != 6 || out.errors != 2 || out.firstErr == nil {
		t.Errorf("samples %d errors %d (%v), want 6 and 2", len(out.samples), out.errors, out.firstErr)
	}
	for _, s := range out.samples {
		if s != 10*time.Millisecond {
			t.Errorf("latency %v, want 10ms", s)
		}
	}
}

func TestLoopStopsWhenCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	t0 := time.Unix(1000, 0)
	n := 0
	op := func(context.Context) error {
		n++
		if n == 3 {
			cancel()
			return context.Canceled
		}
		return nil
	}
	out := loop(ctx, op, t0, t0.Add(time.Hour), func() time.Time { return t0.Add(time.Minute) })
	if n != 3 || out.errors != 0 || len(out.samples) != 2 {
		t.Errorf("sent %d, %d samples, %d errors; want 3, 2, 0", n, len(out.samples), out.errors)
	}
}

func TestRunAggregatesWorkers(t *testing.T) {
	var made, closed atomic.Int32
	var ops atomic.Int64
	res, err := Run(context.Background(), Config{Concurrency: 4, Warmup: 10 * time.Millisecond, Duration: 50 * time.Millisecond}, func(i int) (Worker, error) {
		made.Add(1)
		return Worker{
			Op: func(context.Context) error {
				ops.Add(1)
				if i == 3 {
					return errors.New("worker 3 always fails")
				}
				time.Sleep(100 * time.Microsecond) // a slow operation, so that the loop does not spin
				return nil
			},
			Close: func() { closed.Add(1) },
		}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if made.Load() != 4 || closed.Load() != 4 {
		t.Errorf("made %d closed %d workers", made.Load(), closed.Load())
	}
	if res.Concurrency != 4 || res.Window != 50*time.Millisecond {
		t.Errorf("result %+v", res)
	}
	if res.Ops == 0 || res.Errors == 0 || res.FirstError != "worker 3 always fails" {
		t.Errorf("ops %d errors %d first %q", res.Ops, res.Errors, res.FirstError)
	}
	if int64(res.Ops+res.Errors) > ops.Load() {
		t.Errorf("counted %d+%d of %d operations", res.Ops, res.Errors, ops.Load())
	}
	if want := float64(res.Ops) / 0.05; res.Throughput != want {
		t.Errorf("throughput %v, want %v", res.Throughput, want)
	}
	if res.Latency.N != res.Ops || res.Latency.P50 < 100*time.Microsecond || res.Latency.P50 > res.Latency.P99 || res.Latency.P99 > res.Latency.Max {
		t.Errorf("latency %+v", res.Latency)
	}
}

func TestRunClosesMadeWorkersWhenOneFails(t *testing.T) {
	var closed atomic.Int32
	_, err := Run(context.Background(), Config{Concurrency: 3, Duration: time.Second}, func(i int) (Worker, error) {
		if i == 2 {
			return Worker{}, errors.New("no connection")
		}
		return Worker{Op: func(context.Context) error { return nil }, Close: func() { closed.Add(1) }}, nil
	})
	if err == nil || closed.Load() != 2 {
		t.Errorf("err %v, closed %d of the 2 made", err, closed.Load())
	}
}

func TestRunRejectsBadConfig(t *testing.T) {
	for _, cfg := range []Config{{Concurrency: 0, Duration: time.Second}, {Concurrency: 1}, {Concurrency: 1, Duration: time.Second, Warmup: -1}} {
		if _, err := Run(context.Background(), cfg, nil); err == nil {
			t.Errorf("%+v accepted", cfg)
		}
	}
}
