//go:build docker

package docker

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokend/tokend/internal/testutil"
)

// Bounds of the scenarios. Agents run with production timing (1 s Raft
// heartbeat and election timeouts; writes wait up to 5 s for a leader and
// 10 s in all).
const (
	electionTimeout = time.Second // the agents' Raft election timeout

	electionBound = 30 * time.Second // a new leader after a fault
	convergeBound = time.Minute      // every node the same after a heal
	ackBound      = 30 * time.Second // writes acknowledged through a side that should take them
)

// TestThreeAgents runs the faults of a 3-agent cluster one after the
// other, each under the workload and checked after it heals.
func TestThreeAgents(t *testing.T) {
	c := NewCluster(t, 3)
	c.Setup(t)
	for _, s := range []struct {
		name string
		run  func(*testing.T, *Cluster)
	}{
		{"isolate-leader", testIsolateLeader},
		{"pause-leader", testPauseLeader},
		{"latency", testLatency},
		{"kill-leader", testKillLeader},
		{"kill-all", testKillAll},
		{"checks-catch", testChecksCatch}, // last: it breaks the ledger
	} {
		if !t.Run(s.name, func(t *testing.T) { s.run(t, c) }) {
			return
		}
	}
}

// TestFiveAgents splits a 5-agent cluster 2|3, first with the leader on
// the side of two, then on the side of three.
func TestFiveAgents(t *testing.T) {
	c := NewCluster(t, 5)
	c.Setup(t)
	for _, withLeader := range []bool{true, false} {
		f := c.Split(2, withLeader)
		if !t.Run(f.Name(), func(t *testing.T) { testSplit(t, c, f) }) {
			return
		}
	}
}

// testIsolateLeader cuts the leader off the network: the other two elect a
// leader and commit; the old leader keeps serving fetches, knows it has no
// leader, commits nothing and refuses writes with 503; after the heal all
// three converge with every acknowledged write.
func testIsolateLeader(t *testing.T, c *Cluster) {
	testMinority(t, c, c.IsolateLeader())
}

func testSplit(t *testing.T, c *Cluster, f *Fault) {
	testMinority(t, c, f)
}

// testMinority injects a fault whose victims are a minority cut off from
// the rest, and checks both sides, the heal and the convergence.
func testMinority(t *testing.T, c *Cluster, f *Fault) {
	ctx := context.Background()
	rng := testRand(t)
	w := c.StartWorkload(rng)
	defer w.Stop()
	w.WaitAcked(t, c.Nodes, 5, ackBound)
	before := c.WaitLeader(t, c.Nodes, electionBound)

	start := time.Now()
	heal, err := f.Start(ctx, rng)
	if err != nil {
		t.Fatal(err)
	}
	healed := false
	defer func() {
		if !healed {
			_ = heal(ctx)
		}
	}()
	minority := f.Victims()
	majority := c.Others(minority...)
	t.Logf("%s: %v cut off from %v (leader was %s)", f.Name(), minority, majority, before)

	l := c.WaitLeader(t, majority, electionBound)
	t.Logf("the majority follows %s, %s after the cut", l, time.Since(start).Round(time.Millisecond))
	w.WaitAcked(t, majority, 5, ackBound)
	t.Logf("the majority commits: 5 writes acknowledged through it by %s", time.Since(start).Round(time.Millisecond))

	// The minority knows it has no leader, commits nothing, and refuses
	// writes with 503 — while it keeps serving fetches (Check).
	applied := map[*Node]uint64{}
	testutil.WaitFor(t, electionBound, func() error {
		for _, n := range minority {
			h, err := c.Health(ctx, n)
			if err != nil {
				return fmt.Errorf("%s: %v", n, err)
			}
			if h.KnownLeader {
				return fmt.Errorf("%s still knows a leader (%s)", n, h.RaftState)
			}
			applied[n] = h.AppliedIndex
		}
		return nil
	})
	t.Logf("the minority knows no leader %s after the cut; applied %v", time.Since(start).Round(time.Millisecond), applied)
	// Consistent reads on the minority, asked while the probes wait, are
	// refused, never answered stale.
	type answer struct {
		n    *Node
		r    response
		err  error
		took time.Duration
	}
	reads := make(chan answer, len(minority))
	for _, n := range minority {
		go func() {
			begin := time.Now()
			r, err := c.do(ctx, n, writeTimeout, "GET", "/v1/pools/"+writePool+"/tokens?consistent", nil)
			reads <- answer{n, r, err, time.Since(begin)}
		}()
	}
	probes := c.probe(t, minority, 2)
	for range minority {
		a := <-reads
		if a.err != nil || a.r.status != http.StatusServiceUnavailable {
			t.Errorf("consistent read on %s in the minority: %d %s (%v); want 503", a.n, a.r.status, a.r.body, a.err)
			continue
		}
		t.Logf("consistent read on %s in the minority: 503 %s after %s", a.n, a.r.code(), a.took.Round(time.Millisecond))
	}
	// On the majority, a consistent read anywhere sees a write just
	// acknowledged through another of its nodes. Reserved, so that the
	// workload's writers do not delete it before it is read.
	last := c.addWith(ctx, majority[0], &writeRec{reserved: true}, 0)
	if !last.acked() {
		t.Fatalf("write through the majority: %s", last)
	}
	for _, n := range majority {
		r, err := c.do(ctx, n, writeTimeout, "GET", "/v1/pools/"+writePool+"/tokens/"+last.token+"?consistent", nil)
		if err != nil || r.status != http.StatusOK {
			t.Errorf("consistent read on %s in the majority of %s, acknowledged through %s: %d %s (%v)", n, last.token, last.node, r.status, r.body, err)
		}
	}
	for _, n := range minority {
		h, err := c.Health(ctx, n)
		if err != nil {
			t.Fatal(err)
		}
		if h.AppliedIndex != applied[n] {
			t.Errorf("%s, cut off in a minority, applied %d after %d", n, h.AppliedIndex, applied[n])
		}
	}
	for _, p := range probes {
		if p.status != http.StatusServiceUnavailable || (p.code != "no_leader" && p.code != "unavailable") {
			t.Errorf("write to the minority: %s; want 503 no_leader or unavailable", p)
		}
	}
	t.Logf("%d writes to the minority answered %s in %s", len(probes), probes[0].code, spread(probes))

	if err := heal(ctx); err != nil {
		t.Fatal(err)
	}
	healed = true
	healedAt := time.Now()
	l = c.WaitLeader(t, c.Nodes, electionBound)
	t.Logf("healed: every node follows %s, %s after the heal", l, time.Since(healedAt).Round(time.Millisecond))
	w.WaitAcked(t, minority, 2, ackBound)
	w.Stop()
	w.Check(t, c.WaitConverged(t, convergeBound))
}

// probe sends k writes to each node at once, as the partition's minority,
// and waits for every answer.
func (c *Cluster) probe(t *testing.T, nodes []*Node, k int) []*writeRec {
	t.Helper()
	var (
		mu  sync.Mutex
		out []*writeRec
		wg  sync.WaitGroup
	)
	for _, n := range nodes {
		for range k {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := c.add(context.Background(), n, 0, true)
				mu.Lock()
				out = append(out, r)
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	return out
}

// spread renders how long writes took: min–max.
func spread(rs []*writeRec) string {
	var ds []time.Duration
	for _, r := range rs {
		ds = append(ds, r.end.Sub(r.start))
	}
	slices.Sort(ds)
	return fmt.Sprintf("%s–%s", ds[0].Round(time.Millisecond), ds[len(ds)-1].Round(time.Millisecond))
}

// testPauseLeader freezes the leader longer than the election timeout:
// the others elect a leader and commit; thawed, the old leader follows and
// the cluster converges.
func testPauseLeader(t *testing.T, c *Cluster) {
	ctx := context.Background()
	rng := testRand(t)
	w := c.StartWorkload(rng)
	defer w.Stop()
	w.WaitAcked(t, c.Nodes, 5, ackBound)
	f := c.PauseLeader()
	start := time.Now()
	heal, err := f.Start(ctx, rng)
	if err != nil {
		t.Fatal(err)
	}
	old := f.Victims()[0]
	others := c.Others(old)
	l := c.WaitLeader(t, others, electionBound)
	t.Logf("%s paused; %v follow %s %s later", old, others, l, time.Since(start).Round(time.Millisecond))
	w.WaitAcked(t, others, 5, ackBound)
	// Tokens added while the leader is frozen, and a delete of each sent
	// to the frozen leader: they wait in its socket, and it reads them
	// first thing when it wakes up, still believing it leads, with a state
	// that lacks the tokens. Refusing them (404 token_not_found) would
	// answer from a state older than an acknowledged write: the deletes
	// must be forwarded to the new leader (200) or fail without a verdict
	// (503).
	const stales = 3
	added := map[string]*writeRec{}
	stale := make(chan *writeRec, stales)
	for range stales {
		a := c.addWith(ctx, others[0], &writeRec{reserved: true}, 0)
		if !a.acked() {
			t.Fatalf("write through the majority: %s", a)
		}
		added[a.token] = a
		go func() { stale <- c.removeReserved(ctx, old, a.token) }()
	}
	// Held for at least three election timeouts: the others have moved on
	// to a later term when the old leader wakes up.
	time.Sleep(time.Until(start.Add(3 * electionTimeout)))
	if err := heal(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s thawed after %s", old, time.Since(start).Round(time.Millisecond))
	for range stales {
		r := <-stale
		if r.status/100 == 4 {
			t.Errorf("the thawed old leader refused a write from its stale state: %s; %s was acknowledged while it was frozen", r, added[r.token])
		} else {
			t.Logf("delete sent to the frozen leader: %s", r)
		}
	}
	l = c.WaitLeader(t, c.Nodes, electionBound)
	t.Logf("every node follows %s", l)
	w.WaitAcked(t, []*Node{old}, 2, ackBound)
	w.Stop()
	w.Check(t, c.WaitConverged(t, convergeBound))
}

// testKillLeader SIGKILLs the leader while clients fetch: the others never
// fail a fetch, elect a leader and commit; the killed agent restarts from
// its volume and catches up.
func testKillLeader(t *testing.T, c *Cluster) {
	ctx := context.Background()
	rng := testRand(t)
	w := c.StartWorkload(rng)
	defer w.Stop()
	w.WaitAcked(t, c.Nodes, 5, ackBound)
	f := c.KillLeader()
	start := time.Now()
	heal, err := f.Start(ctx, rng)
	if err != nil {
		t.Fatal(err)
	}
	old := f.Victims()[0]
	others := c.Others(old)
	l := c.WaitLeader(t, others, electionBound)
	t.Logf("%s killed; %v follow %s %s later", old, others, l, time.Since(start).Round(time.Millisecond))
	w.WaitAcked(t, others, 5, ackBound)
	restart := time.Now()
	if err := heal(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s restarted, answering %s after docker start", old, time.Since(restart).Round(time.Millisecond))
	ok, failed := w.fetchesOn(others, start, restart)
	if ok == 0 || failed > 0 {
		t.Errorf("while %s was dead: %d fetches on the others served, %d failed", old, ok, failed)
	}
	t.Logf("while %s was dead: %d fetches on the others, %d failed", old, ok, failed)
	t.Logf("every node follows %s", c.WaitLeader(t, c.Nodes, electionBound))
	w.WaitAcked(t, []*Node{old}, 2, ackBound)
	w.Stop()
	w.Check(t, c.WaitConverged(t, convergeBound))
}

// testKillAll SIGKILLs every agent at once in the middle of writes and
// starts them one by one: each, before it can have a leader, answers with
// every write acknowledged through it, and never an index older than it
// served before (Check).
func testKillAll(t *testing.T, c *Cluster) {
	ctx := context.Background()
	w := c.StartWorkload(testRand(t))
	defer w.Stop()
	w.WaitAcked(t, c.Nodes, 10, ackBound)
	if err := c.Kill(ctx, c.Nodes...); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	for i, n := range c.Nodes {
		answered, err := c.start(ctx, n)
		if err != nil {
			t.Fatal(err)
		}
		h, err := c.Health(ctx, n)
		if err != nil {
			t.Fatal(err)
		}
		_, toks, err := c.readState(ctx, n)
		if err != nil {
			t.Fatal(err)
		}
		// Every write acknowledged through n before the kill, unless a
		// delete was sent for it since (the workload goes on once others
		// are back).
		c.ledger.mu.Lock()
		writes := slices.Clone(c.ledger.writes)
		c.ledger.mu.Unlock()
		deleteSent := map[string]bool{}
		for _, r := range writes {
			if r.kind == "delete" && !r.refused() {
				deleteSent[r.token] = true
			}
		}
		var want, missing int
		for _, r := range writes {
			if r.node != n.Name || !r.acked() || r.end.After(killed) {
				continue
			}
			want++
			_, there := toks[writePool][r.token]
			if (r.kind == "add" && !deleteSent[r.token] && !there) || (r.kind == "delete" && there) {
				missing++
				t.Errorf("%s restarted without %s", n, r)
			}
		}
		t.Logf("%s (%d of %d started) answered %s after its process started, at index %d, known leader %v: %d of %d writes acknowledged through it there",
			n, i+1, len(c.Nodes), answered.Round(time.Millisecond), h.AppliedIndex, h.KnownLeader, want-missing, want)
		if i == 0 && h.KnownLeader {
			t.Errorf("%s, started alone, knows a leader", n)
		}
	}
	t.Logf("every node follows %s", c.WaitLeader(t, c.Nodes, electionBound))
	w.WaitAcked(t, c.Nodes, 5, ackBound)
	w.Stop()
	w.Check(t, c.WaitConverged(t, convergeBound))
}

// testLatency delays what a follower sends, then what the leader sends,
// and measures writes through random nodes against the same writes
// without delay. The cluster must keep committing every one of them
// within latencyBound, without an election.
func testLatency(t *testing.T, c *Cluster) {
	ctx := context.Background()
	rng := testRand(t)
	w := c.StartWorkload(rng)
	defer w.Stop()
	const writes = 20
	measure := func(label string) []time.Duration {
		var ds []time.Duration
		for range writes {
			n := c.Nodes[rng.IntN(len(c.Nodes))]
			r := c.add(ctx, n, rng.IntN(10), false)
			if !r.acked() {
				t.Errorf("%s: %s", label, r)
				continue
			}
			ds = append(ds, r.end.Sub(r.start))
		}
		slices.Sort(ds)
		return ds
	}
	base := measure("no delay")
	t.Logf("no delay: %s", quantiles(base))
	for _, s := range []struct {
		onLeader bool
		spec     Netem
	}{
		{false, Netem{Delay: 100 * time.Millisecond, Jitter: 20 * time.Millisecond, Loss: 0.02}},
		{true, Netem{Delay: 100 * time.Millisecond, Jitter: 20 * time.Millisecond}},
	} {
		before := c.WaitLeader(t, c.Nodes, electionBound)
		f := c.Delay(s.onLeader, s.spec)
		heal, err := f.Start(ctx, rng)
		if err != nil {
			t.Fatal(err)
		}
		ds := measure(f.Name())
		after, err := c.Leader(ctx, c.Nodes)
		if herr := heal(ctx); herr != nil {
			t.Fatal(herr)
		}
		if err != nil || after != before {
			t.Errorf("%s: leader %s before, %v (%v) after: an election under %s", f.Name(), before, after, err, s.spec)
		}
		t.Logf("%s (%s on %s): %s", f.Name(), s.spec, f.Victims()[0], quantiles(ds))
		if len(ds) > 0 && ds[len(ds)-1] > latencyBound {
			t.Errorf("%s: slowest write took %s, bound %s", f.Name(), ds[len(ds)-1], latencyBound)
		}
	}
	w.Stop()
	w.Check(t, c.WaitConverged(t, convergeBound))
}

// latencyBound is the longest a write may take with 100 ms ± 20 ms on one
// node's outgoing cluster traffic.
const latencyBound = 2 * time.Second

func quantiles(ds []time.Duration) string {
	if len(ds) == 0 {
		return "no writes"
	}
	q := func(p float64) time.Duration { return ds[int(p*float64(len(ds)-1))].Round(time.Millisecond) }
	return fmt.Sprintf("%d writes, p50 %s, p90 %s, max %s", len(ds), q(0.5), q(0.9), ds[len(ds)-1].Round(time.Millisecond))
}

// fetchesOn counts the fetches on nodes that began between from and to.
func (w *Workload) fetchesOn(nodes []*Node, from, to time.Time) (ok, failed int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, f := range w.fetches {
		if !slices.Contains(nodes, f.node) || f.start.Before(from) || f.start.After(to) {
			continue
		}
		if f.status == http.StatusOK || f.code == "pool_empty" {
			ok++
		} else {
			failed++
		}
	}
	return ok, failed
}

// testChecksCatch shows that the checks can fail: it breaks each rule
// behind the workload's back — a write deleted outside the ledger, a token
// no write added, and fetches a correct agent never answers — and expects
// every one reported.
func testChecksCatch(t *testing.T, c *Cluster) {
	ctx := context.Background()
	w := c.StartWorkload(testRand(t))
	w.WaitAcked(t, c.Nodes, 5, ackBound)
	w.Stop()
	n1, n2 := c.Nodes[0], c.Nodes[1]

	lost := c.add(ctx, n1, 0, false)
	if r, err := c.do(ctx, n1, writeTimeout, "DELETE", "/v1/pools/"+writePool+"/tokens/"+lost.token, nil); err != nil || r.status != http.StatusOK {
		t.Fatalf("delete %s behind the ledger: %d %s %v", lost.token, r.status, r.body, err)
	}
	if r, err := c.do(ctx, n1, writeTimeout, "POST", "/v1/pools/"+writePool+"/tokens",
		map[string]any{"value": "phantom-" + runID, "labels": map[string]string{"op": "0"}}); err != nil || r.status != http.StatusCreated {
		t.Fatalf("add a token behind the ledger: %d %s %v", r.status, r.body, err)
	}
	gone := c.add(ctx, n1, 0, false)
	del := c.remove(ctx, n1, gone.token)
	if !gone.acked() || !del.acked() {
		t.Fatalf("%s; %s", gone, del)
	}
	now := time.Now()
	w.fetches = append(w.fetches,
		fetchRec{node: n1, pool: flowPool, start: now, end: now, status: 503, code: "no_healthy_token"},
		fetchRec{node: n1, pool: flowPool, start: now, end: now, status: 200, token: "tok_0000000000000000", index: del.index},
		fetchRec{node: n1, pool: writePool, start: now, end: now, status: 200, token: gone.token, index: del.index},
		fetchRec{node: n2, pool: writePool, start: now, end: now, status: 503, code: "pool_empty", index: del.index + 100},
		fetchRec{node: n2, pool: writePool, start: now, end: now, status: 503, code: "pool_empty", index: del.index + 99},
	)
	got := strings.Join(w.violations(t, c.WaitConverged(t, convergeBound)), "\n")
	for _, want := range []string{
		"lost write: op " + fmt.Sprint(lost.op),
		"was added by no write",
		"failed while the node was up",
		"not the primary",
		fmt.Sprintf("served %s at index %d, deleted at index %d", gone.token, del.index, del.index),
		fmt.Sprintf("answered index %d after %d", del.index+99, del.index+100),
	} {
		if !strings.Contains(got, want) {
			t.Errorf("the checks missed %q; they reported:\n%s", want, got)
		}
	}
}
