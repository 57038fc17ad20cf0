package main

import (
	"strings"
	"testing"
	"time"

	"github.com/tokend/tokend/bench/internal/procs"
)

func TestFirstCommitCountsOnlyWritesSentAfterTheKill(t *testing.T) {
	t0 := time.Unix(1000, 0)
	reaped := t0.Add(time.Millisecond)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	writes := []write{
		// Sent before the dead leader was reaped, answered late: it may
		// have been committed by the dead leader.
		{node: "a", start: at(-5 * time.Millisecond), end: at(100 * time.Millisecond), ok: true},
		{node: "a", start: at(500 * time.Microsecond), end: at(150 * time.Millisecond), ok: true},
		// Failures do not count, however early.
		{node: "b", start: at(2 * time.Millisecond), end: at(3 * time.Millisecond)},
		{node: "b", start: at(400 * time.Millisecond), end: at(460 * time.Millisecond), ok: true},
		{node: "a", start: at(300 * time.Millisecond), end: at(470 * time.Millisecond), ok: true},
	}
	d, w, ok := firstCommit(t0, reaped, writes)
	if !ok || d != 460*time.Millisecond || w.node != "b" {
		t.Fatalf("firstCommit = %s, %+v, %v; want 460ms by b", d, w, ok)
	}
	if _, _, ok := firstCommit(t0, reaped, writes[:3]); ok {
		t.Fatal("firstCommit found a write among none that counts")
	}
}

func TestPropagationIsTheSlowestAgent(t *testing.T) {
	sent := time.Unix(1000, 0)
	nodes := []*procs.TokendNode{{Name: "node1"}, {Name: "node2"}, {Name: "node3"}}
	s, err := propagation(sent, nodes, []time.Time{sent.Add(5 * time.Millisecond), sent.Add(21 * time.Millisecond), sent.Add(time.Millisecond)})
	if err != nil || s.Slowest != 21*time.Millisecond || s.SlowestNode != "node2" {
		t.Fatalf("propagation = %+v, %v; want node2 at 21ms", s, err)
	}
	_, err = propagation(sent, nodes, []time.Time{sent, {}, sent})
	if err == nil || !strings.Contains(err.Error(), "node2 still serves") {
		t.Fatalf("an agent never seen to change: error %v, want one naming node2", err)
	}
}

func TestFailoverReportRenders(t *testing.T) {
	r := failoverReport{
		Command: "tokend-bench failover -raft-multiplier 1", RaftMultiplier: 1,
		Machine: failoverMachine{machine: machine{CPUs: 2, LoadStart: "0.50 0.40 0.30"}, LoadEnd: "0.60 0.40 0.30"},
		Failovers: []failoverSample{
			{Time: 400 * time.Millisecond, Path: "direct"},
			{Time: 600 * time.Millisecond, Path: "forwarded"},
		},
		Reports: []reportSample{{Slowest: 20 * time.Millisecond}, {Slowest: 10 * time.Millisecond}, {Slowest: 30 * time.Millisecond}},
	}
	out := r.render()
	for _, want := range []string{
		"raft multiplier 1",
		"load average 0.50 0.40 0.30 at start, 0.60 0.40 0.30 at end",
		"| leader SIGKILL → first write committed by the new leader | 2 | 400.0 ms | 600.0 ms | 600.0 ms | 600.0 ms |",
		"in 1 of 2 kills",
		"samples (ms, in order): 400.0 600.0",
		"| report on a follower → no agent serves the token (slowest agent) | 3 | 20.0 ms | 30.0 ms | 30.0 ms | 30.0 ms |",
		"slowest agent, samples (ms, in order): 20.0 10.0 30.0",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}

func TestFailoverOptionsCheck(t *testing.T) {
	ok := failoverOptions{tokend: "/bin/sh", multiplier: 1, kills: 1, reports: 1, poll: time.Millisecond, retry: time.Millisecond}
	if err := ok.check(); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []func(*failoverOptions){
		func(o *failoverOptions) { o.multiplier = 11 },
		func(o *failoverOptions) { o.multiplier = -1 },
		func(o *failoverOptions) { o.kills = -1 },
		func(o *failoverOptions) { o.poll = 0 },
		func(o *failoverOptions) { o.tokend = "/nonexistent/tokend" },
	} {
		o := ok
		bad(&o)
		if o.check() == nil {
			t.Errorf("%+v passed the check", o)
		}
	}
}
