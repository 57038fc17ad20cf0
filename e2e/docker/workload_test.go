//go:build docker

package docker

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokend/tokend/api"
	"github.com/tokend/tokend/internal/testutil"
)

// The suite's own workload and checks: clients fetch on every node while
// writers add and delete tokens through random nodes; every operation is
// recorded, and after the fault heals the records are checked against the
// state every node converged to.
//
// Pools: "flow" holds three static tokens nobody touches, so every fetch
// there must succeed and return the primary; "w" (round_robin, so fetches
// visit every token) is where the writers add and delete.

const (
	flowPool  = "flow"
	writePool = "w"

	fetchTimeout = 2 * time.Second
	// writeTimeout outlasts the agent's own bound on a write (10 s), so a
	// write's answer is always read.
	writeTimeout = 20 * time.Second
)

// writeRec is one write as a client saw it.
type writeRec struct {
	op     int64
	kind   string // "add" or "delete"
	node   string
	start  time.Time
	end    time.Time
	status int // 0 when no answer came
	code   string
	err    string
	token  string // the added token's id (from the answer), or the deleted one
	index  uint64 // X-Tokend-Index of the answer: the write's commit
	// probe marks a write sent to a minority partition after the majority
	// had elected a leader, answered before the partition healed: a
	// non-2xx answer to it means it can never commit.
	probe bool
	// reserved marks an add whose token the workload's writers leave
	// alone: a scenario deletes it itself.
	reserved bool
}

func (r *writeRec) acked() bool { return r.status/100 == 2 }

// refused says the write certainly changed nothing.
func (r *writeRec) refused() bool {
	return r.status/100 == 4 || (r.probe && r.status != 0 && !r.acked())
}

func (r *writeRec) String() string {
	s := fmt.Sprintf("op %d %s via %s at %s (%s)", r.op, r.kind, r.node, r.start.Format("15:04:05.000"), r.end.Sub(r.start).Round(time.Millisecond))
	if r.token != "" {
		s += " token " + r.token
	}
	switch {
	case r.status != 0:
		s += fmt.Sprintf(": %d %s index %d", r.status, r.code, r.index)
	default:
		s += ": " + r.err
	}
	return s
}

// ledger holds every write made on a cluster.
type ledger struct {
	mu     sync.Mutex
	writes []*writeRec
	seq    int64
	// alive are acked adds no delete has been sent for: delete candidates.
	alive []string
}

func (l *ledger) next() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seq++
	return l.seq
}

func (l *ledger) record(r *writeRec) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.writes = append(l.writes, r)
	switch {
	case r.kind == "add" && r.acked() && !r.reserved:
		l.alive = append(l.alive, r.token)
	case r.kind == "delete" && r.refused() && !r.reserved:
		l.alive = append(l.alive, r.token)
	}
}

// pick takes a delete candidate out of alive.
func (l *ledger) pick(rng *rand.Rand) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.alive) == 0 {
		return ""
	}
	i := rng.IntN(len(l.alive))
	id := l.alive[i]
	l.alive[i] = l.alive[len(l.alive)-1]
	l.alive = l.alive[:len(l.alive)-1]
	return id
}

// add adds a token to the write pool through n, labelled with its op.
func (c *Cluster) add(ctx context.Context, n *Node, priority int, probe bool) *writeRec {
	return c.addWith(ctx, n, &writeRec{probe: probe}, priority)
}

// addWith is add recording into r, whose probe and reserved are set.
func (c *Cluster) addWith(ctx context.Context, n *Node, r *writeRec, priority int) *writeRec {
	op := c.ledger.next()
	r.op, r.kind, r.node, r.start = op, "add", n.Name, time.Now()
	labels := map[string]string{"op": strconv.FormatInt(op, 10)}
	resp, err := c.do(ctx, n, writeTimeout, "POST", "/v1/pools/"+writePool+"/tokens",
		api.TokenRequest{Value: fmt.Sprintf("value-%s-%d", runID, op), Priority: priority, Labels: labels})
	r.end = time.Now()
	r.fill(resp, err)
	if r.acked() {
		var info api.TokenInfo
		if err := json.Unmarshal(resp.body, &info); err != nil || info.ID == "" {
			r.err = fmt.Sprintf("acked without a token id: %s", resp.body)
		}
		r.token = info.ID
	}
	c.ledger.record(r)
	return r
}

// remove deletes token id from the write pool through n.
func (c *Cluster) remove(ctx context.Context, n *Node, id string) *writeRec {
	return c.removeWith(ctx, n, &writeRec{}, id)
}

// removeReserved deletes a reserved token (see writeRec.reserved).
func (c *Cluster) removeReserved(ctx context.Context, n *Node, id string) *writeRec {
	return c.removeWith(ctx, n, &writeRec{reserved: true}, id)
}

func (c *Cluster) removeWith(ctx context.Context, n *Node, r *writeRec, id string) *writeRec {
	r.op, r.kind, r.node, r.token, r.start = c.ledger.next(), "delete", n.Name, id, time.Now()
	resp, err := c.do(ctx, n, writeTimeout, "DELETE", "/v1/pools/"+writePool+"/tokens/"+id, nil)
	r.end = time.Now()
	r.fill(resp, err)
	c.ledger.record(r)
	return r
}

func (r *writeRec) fill(resp response, err error) {
	if err != nil {
		r.err = err.Error()
		return
	}
	r.status, r.code, r.index = resp.status, resp.code(), resp.index()
}

// Setup creates the pools the workload uses and waits until every node
// serves the flow pool's primary.
func (c *Cluster) Setup(t testing.TB) {
	t.Helper()
	ctx := context.Background()
	n := c.Nodes[0]
	must := func(method, path string, body any, want int) response {
		r, err := c.do(ctx, n, writeTimeout, method, path, body)
		if err != nil || r.status != want {
			t.Fatalf("%s %s: %d %s (%v), want %d", method, path, r.status, r.body, err, want)
		}
		return r
	}
	must("PUT", "/v1/pools/"+flowPool, api.PoolRequest{MinHealthy: 1}, http.StatusOK)
	must("PUT", "/v1/pools/"+writePool, api.PoolRequest{Selection: "round_robin"}, http.StatusOK)
	var primary api.TokenInfo
	for i := 2; i >= 0; i-- {
		r := must("POST", "/v1/pools/"+flowPool+"/tokens", api.TokenRequest{Value: fmt.Sprintf("flow-%d", i), Priority: i}, http.StatusCreated)
		if err := json.Unmarshal(r.body, &primary); err != nil {
			t.Fatal(err)
		}
	}
	testutil.WaitFor(t, 30*time.Second, func() error {
		for _, n := range c.Nodes {
			r, err := c.do(ctx, n, fetchTimeout, "GET", "/v1/pools/"+flowPool+"/token", nil)
			if err != nil || r.header.Get(api.HeaderTokenID) != primary.ID {
				return fmt.Errorf("%s: %d %s %v", n.Name, r.status, r.body, err)
			}
		}
		return nil
	})
	c.flowPrimary = primary.ID
}

// fetchRec is one fetch as a client saw it.
type fetchRec struct {
	node       *Node
	pool       string
	start, end time.Time
	status     int
	code       string
	err        string
	token      string
	index      uint64
}

// Workload runs clients on a cluster: one fetcher per node and writers
// through random nodes, until Stop.
type Workload struct {
	c       *Cluster
	stop    chan struct{}
	stopped sync.Once
	slots   map[*Node]chan struct{}
	wg      sync.WaitGroup
	started time.Time

	mu      sync.Mutex
	fetches []fetchRec
	acks    atomic.Int64
}

const (
	writers       = 2
	writeInterval = 50 * time.Millisecond // per writer
	maxInFlight   = 64                    // writes waiting on one node
	fetchInterval = 10 * time.Millisecond // per node
)

// StartWorkload starts the clients; rng seeds their choices.
func (c *Cluster) StartWorkload(rng *rand.Rand) *Workload {
	w := &Workload{c: c, stop: make(chan struct{}), started: time.Now(), slots: map[*Node]chan struct{}{}}
	for _, n := range c.Nodes {
		w.slots[n] = make(chan struct{}, maxInFlight)
	}
	for _, n := range c.Nodes {
		w.wg.Add(1)
		go w.fetcher(n)
	}
	for range writers {
		w.wg.Add(1)
		go w.writer(rand.New(rand.NewPCG(rng.Uint64(), rng.Uint64())))
	}
	return w
}

// Stop stops the clients and waits for their last requests; it may be
// called again.
func (w *Workload) Stop() {
	w.stopped.Do(func() {
		close(w.stop)
		w.wg.Wait()
	})
}

// Acked counts the writes acknowledged since the workload started.
func (w *Workload) Acked() int64 { return w.acks.Load() }

// WaitAcked waits until at least k more writes are acknowledged through
// the nodes of among.
func (w *Workload) WaitAcked(t testing.TB, among []*Node, k int, timeout time.Duration) {
	t.Helper()
	since := time.Now()
	names := map[string]bool{}
	for _, n := range among {
		names[n.Name] = true
	}
	testutil.WaitFor(t, timeout, func() error {
		got := 0
		w.c.ledger.mu.Lock()
		for _, r := range w.c.ledger.writes {
			if r.acked() && r.start.After(since) && names[r.node] {
				got++
			}
		}
		w.c.ledger.mu.Unlock()
		if got < k {
			return fmt.Errorf("%d of %d writes acknowledged through %v", got, k, among)
		}
		return nil
	})
}

func (w *Workload) fetcher(n *Node) {
	defer w.wg.Done()
	tick := time.NewTicker(fetchInterval)
	defer tick.Stop()
	ctx := context.Background()
	for i := 0; ; i++ {
		select {
		case <-w.stop:
			return
		case <-tick.C:
		}
		pool := flowPool
		if i%2 == 1 {
			pool = writePool
		}
		rec := fetchRec{node: n, pool: pool, start: time.Now()}
		r, err := w.c.do(ctx, n, fetchTimeout, "GET", "/v1/pools/"+pool+"/token", nil)
		rec.end = time.Now()
		if err != nil {
			rec.err = err.Error()
		} else {
			rec.status, rec.code, rec.index = r.status, r.code(), r.index()
			rec.token = r.header.Get(api.HeaderTokenID)
		}
		w.mu.Lock()
		w.fetches = append(w.fetches, rec)
		w.mu.Unlock()
	}
}

// writer sends a write through a random node every writeInterval, each
// in its own goroutine, so that writes stuck on a paused or cut-off node
// do not hold up the others; a beat whose node already waits on
// maxInFlight answers is skipped.
func (w *Workload) writer(rng *rand.Rand) {
	defer w.wg.Done()
	tick := time.NewTicker(writeInterval)
	defer tick.Stop()
	ctx := context.Background()
	var inflight sync.WaitGroup
	defer inflight.Wait()
	for {
		select {
		case <-w.stop:
			return
		case <-tick.C:
		}
		n := w.c.Nodes[rng.IntN(len(w.c.Nodes))]
		del := rng.IntN(10) < 4
		priority := rng.IntN(10)
		select {
		case w.slots[n] <- struct{}{}:
		default:
			continue
		}
		id := ""
		if del {
			id = w.c.ledger.pick(rng)
		}
		inflight.Add(1)
		go func() {
			defer func() { <-w.slots[n]; inflight.Done() }()
			var r *writeRec
			if id != "" {
				r = w.c.remove(ctx, n, id)
			} else {
				r = w.c.add(ctx, n, priority, false)
			}
			if r.acked() {
				w.acks.Add(1)
			}
		}()
	}
}

// Check checks what the clients saw during the workload, and the whole
// ledger of the cluster's writes against final, the state every node
// converged to. It logs what it counted.
func (w *Workload) Check(t testing.TB, final State) {
	t.Helper()
	for _, v := range w.violations(t, final) {
		t.Error(v)
	}
}

func (w *Workload) violations(t testing.TB, final State) []string {
	t.Helper()
	c := w.c
	w.mu.Lock()
	fetches := slices.Clone(w.fetches)
	w.mu.Unlock()
	c.ledger.mu.Lock()
	writes := slices.Clone(c.ledger.writes)
	c.ledger.mu.Unlock()

	var violations []string
	violate := func(format string, args ...any) {
		if len(violations) < 20 {
			violations = append(violations, fmt.Sprintf(format, args...))
		}
	}

	// Deletes acknowledged, by token, with their commit index.
	deleted := map[string]uint64{}
	for _, r := range writes {
		if r.kind == "delete" && r.acked() {
			deleted[r.token] = r.index
		}
	}

	type nodeStats struct{ ok, failedWhileDown, total int }
	stats := map[*Node]*nodeStats{}
	last := map[*Node]fetchRec{}
	for _, f := range fetches {
		s := stats[f.node]
		if s == nil {
			s = &nodeStats{}
			stats[f.node] = s
		}
		s.total++
		ok := f.status == http.StatusOK || (f.pool == writePool && f.code == "pool_empty")
		if !ok {
			if c.wasDown(f.node, f.start, f.end) {
				s.failedWhileDown++
				continue
			}
			violate("fetch %s on %s at %s failed while the node was up: %d %s %s", f.pool, f.node, f.start.Format("15:04:05.000"), f.status, f.code, f.err)
			continue
		}
		s.ok++
		if f.pool == flowPool && f.token != c.flowPrimary {
			violate("fetch flow on %s at %s served %s, not the primary %s", f.node, f.start.Format("15:04:05.000"), f.token, c.flowPrimary)
		}
		if d, ok := deleted[f.token]; ok && f.pool == writePool && f.index >= d {
			violate("fetch on %s at %s served %s at index %d, deleted at index %d", f.node, f.start.Format("15:04:05.000"), f.token, f.index, d)
		}
		// Reads on one node never go back in index, not even across a
		// SIGKILL and restart.
		if p, ok := last[f.node]; ok && f.index < p.index {
			violate("fetch on %s at %s answered index %d after %d at %s", f.node, f.start.Format("15:04:05.000"), f.index, p.index, p.start.Format("15:04:05.000"))
		}
		last[f.node] = f
	}
	for _, n := range c.Nodes {
		s := stats[n]
		if s == nil || s.ok == 0 {
			violate("no fetch on %s succeeded", n.Name)
			continue
		}
		t.Logf("%s: %d fetches, %d served, %d failed while it was killed or paused", n.Name, s.total, s.ok, s.failedWhileDown)
	}

	// Writes against the converged state.
	present := final.Tokens[writePool]
	adds := map[string]*writeRec{} // by op label
	deleteSent := map[string]bool{}
	var acked, refused, unknown int
	for _, r := range writes {
		switch {
		case r.acked():
			acked++
		case r.refused():
			refused++
		default:
			unknown++
		}
		if r.kind == "add" {
			adds[strconv.FormatInt(r.op, 10)] = r
		} else if !r.refused() {
			deleteSent[r.token] = true
		}
	}
	for _, r := range writes {
		switch {
		case r.kind == "add" && r.acked() && !deleteSent[r.token]:
			if _, ok := present[r.token]; !ok {
				violate("lost write: %s is on no node", r)
			}
		case r.kind == "delete" && r.acked():
			if _, ok := present[r.token]; ok {
				violate("lost delete: %s, yet the token is still there", r)
			}
		}
	}
	for id, tok := range present {
		r := adds[tok.Labels["op"]]
		switch {
		case r == nil:
			violate("token %s (labels %v) was added by no write of this suite", id, tok.Labels)
		case r.refused():
			violate("refused write applied: %s, yet token %s exists", r, id)
		case r.acked() && r.token != id:
			violate("%s answered token %s, but its label is on %s", r, r.token, id)
		}
	}
	t.Logf("writes so far: %d acknowledged, %d refused, %d without a certain outcome; %d tokens in %s", acked, refused, unknown, len(present), writePool)
	if acked == 0 {
		violate("no write was acknowledged")
	}
	return violations
}

// State is the replicated state every node must agree on: pools and their
// tokens, without what is local to an agent (a pool's eligible count, a
// token's report counters).
type State struct {
	Digest string
	Index  map[string]uint64 // each node's applied index when read
	Tokens map[string]map[string]api.TokenInfo
}

// readState reads n's replicated state.
func (c *Cluster) readState(ctx context.Context, n *Node) (string, map[string]map[string]api.TokenInfo, error) {
	var pools []map[string]any
	if err := c.getJSON(ctx, n, "/v1/pools", &pools); err != nil {
		return "", nil, err
	}
	sort.Slice(pools, func(i, j int) bool { return fmt.Sprint(pools[i]["name"]) < fmt.Sprint(pools[j]["name"]) })
	var b strings.Builder
	toks := map[string]map[string]api.TokenInfo{}
	for _, p := range pools {
		delete(p, "eligible")
		raw, _ := json.Marshal(p)
		b.Write(raw)
		name := fmt.Sprint(p["name"])
		r, err := c.do(ctx, n, 5*time.Second, "GET", "/v1/pools/"+name+"/tokens", nil)
		if err != nil || r.status != http.StatusOK {
			return "", nil, fmt.Errorf("tokens of %s: %d %v", name, r.status, err)
		}
		var list []map[string]any
		var infos []api.TokenInfo
		if err := json.Unmarshal(r.body, &list); err != nil {
			return "", nil, err
		}
		if err := json.Unmarshal(r.body, &infos); err != nil {
			return "", nil, err
		}
		sort.Slice(list, func(i, j int) bool { return fmt.Sprint(list[i]["id"]) < fmt.Sprint(list[j]["id"]) })
		for _, tk := range list {
			delete(tk, "reports")
		}
		raw, _ = json.Marshal(list)
		b.Write(raw)
		toks[name] = map[string]api.TokenInfo{}
		for _, info := range infos {
			toks[name][info.ID] = info
		}
	}
	return b.String(), toks, nil
}

// WaitConverged waits until every node holds the same replicated state and
// returns it.
func (c *Cluster) WaitConverged(t testing.TB, timeout time.Duration) State {
	t.Helper()
	ctx := context.Background()
	start := time.Now()
	var st State
	testutil.WaitFor(t, timeout, func() error {
		st = State{Index: map[string]uint64{}}
		var first *Node
		for _, n := range c.Nodes {
			h, err := c.Health(ctx, n)
			if err != nil {
				return fmt.Errorf("%s: %v", n.Name, err)
			}
			d, toks, err := c.readState(ctx, n)
			if err != nil {
				return fmt.Errorf("%s: %v", n.Name, err)
			}
			st.Index[n.Name] = h.AppliedIndex
			if first == nil {
				first, st.Digest, st.Tokens = n, d, toks
				continue
			}
			if d != st.Digest {
				return fmt.Errorf("%s (index %d, %d tokens in %s) differs from %s (index %d, %d tokens)", n.Name, h.AppliedIndex,
					len(toks[writePool]), writePool, first.Name, st.Index[first.Name], len(st.Tokens[writePool]))
			}
		}
		return nil
	})
	t.Logf("every node holds the same state (%d tokens in %s, indexes %v), %s after asked", len(st.Tokens[writePool]), writePool, st.Index, time.Since(start).Round(time.Millisecond))
	return st
}
