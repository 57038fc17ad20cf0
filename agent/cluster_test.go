package agent_test

import (
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokend/tokend/api"
	"github.com/tokend/tokend/internal/testutil"
)

// A write on a follower is forwarded to the leader and answered only after
// the follower has applied it; every node then serves it, over HTTP and over
// its unix socket.
func TestWriteOnFollowerReadEverywhere(t *testing.T) {
	c := testutil.NewCluster(t, 3)
	f := tcpClient(c.Followers()[0])

	var pool api.Pool
	r := f.Must(t, "PUT", "/v1/pools/github", api.PoolRequest{MinHealthy: 1}, http.StatusOK, &pool)
	if pool.Name != "github" || pool.Selection != "priority" || pool.Provider.Type != "static" {
		t.Fatalf("pool = %+v", pool)
	}
	if idx, _ := strconv.ParseUint(r.Header.Get(api.HeaderIndex), 10, 64); idx == 0 {
		t.Fatalf("write answered without an index: %v", r.Header)
	}
	primary := f.AddToken(t, "github", "ghp_primary", 0)
	f.AddToken(t, "github", "ghp_backup", 10)

	// Read-your-writes on the follower, with no polling.
	if id, code, err := f.Fetch("github"); err != nil || id != primary {
		t.Fatalf("follower serves %q (%q, %v) right after its write, want %q", id, code, err, primary)
	}
	waitServes(t, c.Running(), "github", primary)
	for _, n := range c.Running() {
		var tok api.Token
		unixClient(n).Must(t, "GET", "/v1/pools/github/token", nil, http.StatusOK, &tok)
		if tok.ID != primary || tok.Value != "ghp_primary" {
			t.Fatalf("%s over its socket serves %+v", n.Name, tok)
		}
	}
}

// Killing the leader never fails a read on the other nodes, and a new leader
// takes writes.
func TestLeaderLossKeepsReadsAndElectsNewLeader(t *testing.T) {
	c := testutil.NewCluster(t, 3)
	leader := c.Leader()
	lc := tcpClient(leader)
	lc.Must(t, "PUT", "/v1/pools/p", api.PoolRequest{}, http.StatusOK, nil)
	want := lc.AddToken(t, "p", "v1", 0)
	followers := c.Followers()
	waitServes(t, followers, "p", want)

	var (
		stop     atomic.Bool
		fetches  atomic.Int64
		failures atomic.Int64
		wg       sync.WaitGroup
		failMu   sync.Mutex
		firstErr string
	)
	for _, n := range followers {
		for _, h := range []*testutil.HTTP{tcpClient(n), unixClient(n)} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for !stop.Load() {
					id, code, err := h.Fetch("p")
					fetches.Add(1)
					if err != nil || id != want {
						failures.Add(1)
						failMu.Lock()
						if firstErr == "" {
							firstErr = fmt.Sprintf("%s: id %q code %q err %v", n.Name, id, code, err)
						}
						failMu.Unlock()
					}
				}
			}()
		}
	}
	before := fetches.Load()
	c.Stop(leader)
	newLeader := c.WaitForLeader()
	if newLeader == leader {
		t.Fatal("the stopped node is still the leader")
	}
	// Keep fetching until well after the election, then stop the clients.
	testutil.WaitFor(t, 5*time.Second, func() error {
		if n := fetches.Load() - before; n < 500 {
			return fmt.Errorf("%d fetches since the leader died", n)
		}
		return nil
	})
	stop.Store(true)
	wg.Wait()
	if failures.Load() != 0 {
		t.Fatalf("%d of %d fetches failed while the leader died; first: %s", failures.Load(), fetches.Load(), firstErr)
	}

	// The new leader takes writes, directly and through the other follower.
	nl := tcpClient(newLeader)
	nl.Must(t, "PUT", "/v1/pools/after", api.PoolRequest{}, http.StatusOK, nil)
	for _, n := range c.Running() {
		if n != newLeader {
			tcpClient(n).AddToken(t, "after", "v2", 0)
		}
	}
}

// A report on one node stops that node serving the token at once, and the
// others within a commit.
func TestReportStopsTokenEverywhere(t *testing.T) {
	c := testutil.NewCluster(t, 3)
	nodes := c.Running()
	h0 := tcpClient(nodes[0])
	h0.Must(t, "PUT", "/v1/pools/p", api.PoolRequest{}, http.StatusOK, nil)
	// good first: once a node serves bad, it has applied both.
	good := h0.AddToken(t, "p", "good", 1)
	bad := h0.AddToken(t, "p", "bad", 0)
	waitServes(t, nodes, "p", bad)

	reporter := tcpClient(nodes[1])
	var rep api.ReportResponse
	reporter.Must(t, "POST", "/v1/pools/p/tokens/"+bad+"/report", api.ReportRequest{Outcome: "unauthorized"}, http.StatusOK, &rep)
	if !rep.Changed || !rep.Committed || rep.Health.State != "failed" {
		t.Fatalf("report response = %+v", rep)
	}
	if id, _, err := reporter.Fetch("p"); err != nil || id != good {
		t.Fatalf("reporting node serves %q (%v) right after the report, want %q", id, err, good)
	}
	waitServes(t, nodes, "p", good)
	for _, n := range nodes {
		var toks []api.TokenInfo
		tcpClient(n).Must(t, "GET", "/v1/pools/p/tokens", nil, http.StatusOK, &toks)
		i := slices.IndexFunc(toks, func(ti api.TokenInfo) bool { return ti.ID == bad })
		if i < 0 || toks[i].Health.State != "failed" || toks[i].Health.Reporter != nodes[1].Name {
			t.Fatalf("%s lists the reported token as %+v", n.Name, toks)
		}
	}
}

// The report reaches the receiving node's overlay even when there is no
// leader to commit it, and is committed once a leader is back.
func TestReportWithoutLeaderAppliesLocallyThenCommits(t *testing.T) {
	c := testutil.NewCluster(t, 3)
	leader := c.Leader()
	lc := tcpClient(leader)
	lc.Must(t, "PUT", "/v1/pools/p", api.PoolRequest{}, http.StatusOK, nil)
	good := lc.AddToken(t, "p", "good", 1)
	bad := lc.AddToken(t, "p", "bad", 0)
	waitServes(t, c.Running(), "p", bad)

	// Two of three down: the survivor has no quorum and no leader.
	followers := c.Followers()
	survivor, other := followers[0], followers[1]
	c.Stop(leader)
	c.Stop(other)
	sc := tcpClient(survivor)
	testutil.WaitFor(t, 5*time.Second, func() error {
		var h api.AgentHealth
		sc.Must(t, "GET", "/v1/health", nil, http.StatusOK, &h)
		if h.KnownLeader {
			return fmt.Errorf("survivor still knows a leader")
		}
		return nil
	})
	var rep api.ReportResponse
	sc.Must(t, "POST", "/v1/pools/p/tokens/"+bad+"/report", api.ReportRequest{Outcome: "forbidden"}, http.StatusAccepted, &rep)
	if !rep.Changed || rep.Committed || rep.Pending == "" {
		t.Fatalf("report without leader = %+v", rep)
	}
	if id, _, _ := sc.Fetch("p"); id != good {
		t.Fatalf("survivor serves %q after the report, want %q", id, good)
	}
	// Writes fail with no_leader and change nothing.
	r, err := sc.Do("PUT", "/v1/pools/q", api.PoolRequest{})
	if err != nil || r.Status != http.StatusServiceUnavailable || r.ErrorCode() != "no_leader" {
		t.Fatalf("write without leader: %d %s %v", r.Status, r.Body, err)
	}

	c.Restart(other)
	c.WaitForLeader()
	// The queued report commits by itself and reaches the restarted node.
	waitServes(t, []*testutil.Node{survivor, other}, "p", good)
}

// A node restarted with its data dir comes back as the same server and
// catches up on what it missed.
func TestRestartedNodeRejoinsAndCatchesUp(t *testing.T) {
	c := testutil.NewCluster(t, 3)
	victim := c.Followers()[0]
	id := victim.NodeID()
	c.Stop(victim)

	lc := tcpClient(c.Leader())
	lc.Must(t, "PUT", "/v1/pools/missed", api.PoolRequest{}, http.StatusOK, nil)
	want := lc.AddToken(t, "missed", "v", 0)

	c.Restart(victim)
	if victim.NodeID() != id {
		t.Fatalf("restarted node has id %s, was %s", victim.NodeID(), id)
	}
	waitServes(t, []*testutil.Node{victim}, "missed", want)
	var peers []api.Peer
	tcpClient(victim).Must(t, "GET", "/v1/status/peers", nil, http.StatusOK, &peers)
	if len(peers) != 3 || !slices.ContainsFunc(peers, func(p api.Peer) bool { return p.ID == id && p.Suffrage == "voter" }) {
		t.Fatalf("peers after restart = %+v", peers)
	}
}

// After the whole cluster stops, one agent started alone — no quorum, no
// leader — serves what was committed before the stop, from its own log.
func TestLoneRestartedAgentServesCommittedState(t *testing.T) {
	c := testutil.NewCluster(t, 3)
	lc := tcpClient(c.Leader())
	lc.Must(t, "PUT", "/v1/pools/p", api.PoolRequest{}, http.StatusOK, nil)
	want := lc.AddToken(t, "p", "v", 0)
	waitServes(t, c.Running(), "p", want)
	nodes := c.Running()
	for _, n := range nodes {
		c.Stop(n)
	}
	for _, n := range nodes {
		c.Restart(n)
		h := tcpClient(n)
		var health api.AgentHealth
		h.Must(t, "GET", "/v1/health", nil, http.StatusOK, &health)
		if health.KnownLeader {
			t.Fatalf("%s knows a leader while alone", n.Name)
		}
		if id, code, err := h.Fetch("p"); err != nil || id != want {
			t.Fatalf("%s restarted alone serves %q (code %q, %v), want %q", n.Name, id, code, err, want)
		}
		c.Stop(n)
	}
}
