package agent_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path"
	"sync"
	"testing"
	"time"

	"github.com/tokend/tokend/agent"
	"github.com/tokend/tokend/api"
	"github.com/tokend/tokend/cluster"
	"github.com/tokend/tokend/internal/testutil"
	"github.com/tokend/tokend/tokens"
)

// BenchmarkFetch measures one token fetch, end to end, from a client on the
// same host: HTTP over loopback TCP and over the unix socket, keep-alive, a
// pool of 10 tokens under the priority policy. One fetch at a time, so ns/op
// is the latency a client sees.
func BenchmarkFetch(b *testing.B) {
	a := testutil.StartAgent(b, nil)
	n := &testutil.Node{Name: "bench", Agent: a}
	setup := tcpClient(n)
	if r, err := setup.Do("PUT", "/v1/pools/bench", api.PoolRequest{}); err != nil || r.Status != http.StatusOK {
		b.Fatal(r.Status, err)
	}
	for i := range 10 {
		if r, err := setup.Do("POST", "/v1/pools/bench/tokens", api.TokenRequest{Value: fmt.Sprintf("value-%d", i), Priority: i}); err != nil || r.Status != http.StatusCreated {
			b.Fatal(r.Status, err)
		}
	}
	for _, tc := range []struct {
		name string
		c    *testutil.HTTP
	}{{"tcp", tcpClient(n)}, {"unix", unixClient(n)}, {"tcp-acl", aclBenchClient(b)}} {
		for _, format := range []string{"json", "raw"} {
			b.Run(tc.name+"/"+format, func(b *testing.B) {
				path := "/v1/pools/bench/token?format=" + format
				b.ReportAllocs()
				for b.Loop() {
					resp, err := tc.c.Get(path)
					if err != nil {
						b.Fatal(err)
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						b.Fatal(resp.Status)
					}
				}
			})
		}
	}
}

// aclBenchClient starts an agent with ACLs on, holding the bench pool of 10
// tokens, and returns a TCP client whose token may read pools matching
// "bench*", one of 8 policies of 8 rules each.
func aclBenchClient(b *testing.B) *testutil.HTTP {
	_, c, _ := aclBenchAgent(b)
	return c
}

// aclBenchAgent is aclBenchClient's agent, client and token secret.
func aclBenchAgent(b *testing.B) (*agent.Agent, *testutil.HTTP, string) {
	a := testutil.StartAgent(b, func(cfg *agent.Config) { cfg.ACL = true })
	var boot api.ACLTokenSecret
	testutil.TCP(a.HTTPAddr()).Must(b, "POST", "/v1/acl/bootstrap", nil, http.StatusOK, &boot)
	mgmt := testutil.TCP(a.HTTPAddr()).WithToken(boot.SecretID)
	mgmt.Must(b, "PUT", "/v1/pools/bench", api.PoolRequest{}, http.StatusOK, nil)
	for i := range 10 {
		mgmt.AddToken(b, "bench", fmt.Sprintf("value-%d", i), i)
	}
	var policies []string
	for p := range 8 {
		var rules []tokens.PoolRule
		for r := range 8 {
			rules = append(rules, tokens.PoolRule{Pattern: fmt.Sprintf("team%d-svc%d-*", p, r), Capabilities: []tokens.Capability{tokens.CapRead}})
		}
		if p == 7 {
			rules[7].Pattern = "bench*"
		}
		name := fmt.Sprintf("p%d", p)
		mgmt.Must(b, "PUT", "/v1/acl/policies/"+name, api.ACLPolicyRequest{Pools: rules}, http.StatusOK, nil)
		policies = append(policies, name)
	}
	var tok api.ACLTokenSecret
	mgmt.Must(b, "POST", "/v1/acl/tokens", api.ACLTokenRequest{Policies: policies}, http.StatusCreated, &tok)
	return a, testutil.TCP(a.HTTPAddr()).WithToken(tok.SecretID), tok.SecretID
}

// BenchmarkReportPropagation measures how long a token reported
// unauthorized on one node of a 3-node cluster keeps being served anywhere:
// from sending the report until every node (the reporter, the leader and
// the other follower, each polled in a tight loop over HTTP) serves another
// token. ns/op is that time for the slowest node.
func BenchmarkReportPropagation(b *testing.B) {
	b.Run("test-timing", func(b *testing.B) { benchPropagation(b, cluster.FastTiming()) })
	// Production Raft timing (tokend's DefaultTiming); gossip stays fast so
	// the cluster forms quickly.
	prod := cluster.FastTiming()
	def := cluster.DefaultTiming()
	prod.RaftHeartbeat, prod.RaftElection, prod.RaftLeaderLease, prod.RaftCommit = def.RaftHeartbeat, def.RaftElection, def.RaftLeaderLease, def.RaftCommit
	b.Run("production-raft-timing", func(b *testing.B) { benchPropagation(b, prod) })
}

func benchPropagation(b *testing.B, timing cluster.Timing) {
	c := testutil.NewClusterWith(b, 3, func(cfg *agent.Config) { cfg.Timing = timing })
	leader := c.Leader()
	nodes := c.Running()
	reporter := c.Followers()[0]
	lh := tcpClient(leader)
	if r, err := lh.Do("PUT", "/v1/pools/bench", api.PoolRequest{}); err != nil || r.Status != http.StatusOK {
		b.Fatal(r.Status, err)
	}
	// A backup far down the priority order, so the pool never runs out.
	if r, err := lh.Do("POST", "/v1/pools/bench/tokens", api.TokenRequest{Value: "backup", Priority: 1_000_000}); err != nil || r.Status != http.StatusCreated {
		b.Fatal(r.Status, err)
	}
	clients := make([]*testutil.HTTP, len(nodes))
	for i, n := range nodes {
		clients[i] = tcpClient(n)
	}
	i := 0
	for b.Loop() {
		b.StopTimer()
		i++
		var info api.TokenInfo
		r, err := lh.Do("POST", "/v1/pools/bench/tokens", api.TokenRequest{Value: fmt.Sprintf("v%d", i), Priority: -i})
		if err != nil || r.Status != http.StatusCreated || jsonUnmarshal(r.Body, &info) != nil {
			b.Fatal(r.Status, err)
		}
		if err := testutil.Poll(5*time.Second, func() error {
			for _, h := range clients {
				if id, _, err := h.Fetch("bench"); err != nil || id != info.ID {
					return fmt.Errorf("not served everywhere yet")
				}
			}
			return nil
		}); err != nil {
			b.Fatal(err)
		}
		var wg sync.WaitGroup
		stuck := make(chan string, len(clients))
		b.StartTimer()
		for j, h := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				// Poll every 100 µs: spinning flat out would starve the
				// agents of the CPU they need to commit.
				for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
					if id, _, err := h.Fetch("bench"); err == nil && id != info.ID {
						return
					}
					time.Sleep(100 * time.Microsecond)
				}
				stuck <- nodes[j].Name
			}()
		}
		r, err = tcpClient(reporter).Do("POST", "/v1/pools/bench/tokens/"+info.ID+"/report", api.ReportRequest{Outcome: "unauthorized"})
		if err != nil || r.Status != http.StatusOK {
			b.Fatal(r.Status, string(r.Body), err)
		}
		wg.Wait()
		close(stuck)
		for name := range stuck {
			b.Fatalf("%s still served token %d (%s) 10 s after it was reported; report answer: %s", name, i, info.ID, r.Body)
		}
	}
}

// BenchmarkFetchHandler measures the agent's side of a token fetch alone:
// the API handler called directly, with no network and no HTTP client, over
// a pool of 10 tokens (priority policy).
func BenchmarkFetchHandler(b *testing.B) {
	a := testutil.StartAgent(b, nil)
	h := testutil.TCP(a.HTTPAddr())
	h.Must(b, "PUT", "/v1/pools/bench", api.PoolRequest{}, http.StatusOK, nil)
	for i := range 10 {
		h.AddToken(b, "bench", fmt.Sprintf("value-%d", i), i)
	}
	aclAgent, _, secret := aclBenchAgent(b)
	for _, tc := range []struct {
		name    string
		handler http.Handler
		secret  string
	}{{"json", a.Handler(), ""}, {"raw", a.Handler(), ""}, {"acl/json", aclAgent.Handler(), secret}, {"acl/raw", aclAgent.Handler(), secret}} {
		format, handler := path.Base(tc.name), tc.handler
		b.Run(tc.name, func(b *testing.B) {
			req := httptest.NewRequest("GET", "/v1/pools/bench/token?format="+format, nil)
			if tc.secret != "" {
				req.Header.Set(api.HeaderToken, tc.secret)
			}
			b.ReportAllocs()
			for b.Loop() {
				w := httptest.NewRecorder()
				handler.ServeHTTP(w, req)
				if w.Code != http.StatusOK {
					b.Fatal(w.Code, w.Body.String())
				}
			}
		})
	}
}

// BenchmarkConsistentRead compares a consistent token fetch (?consistent)
// with a local one, on the leader and on a follower of a three-node
// cluster, end to end over loopback TCP like BenchmarkFetch (raw format, a
// pool of 10 tokens). A consistent read on the leader costs one quorum
// round of heartbeats (VerifyLeader); on a follower, also one RPC to the
// leader, then the wait to apply the read index (nothing, here: no writes
// run meanwhile). Raft runs on tokend's production timing; VerifyLeader
// sends its heartbeats at once, whatever the interval.
func BenchmarkConsistentRead(b *testing.B) {
	timing := cluster.FastTiming()
	def := cluster.DefaultTiming()
	timing.RaftHeartbeat, timing.RaftElection, timing.RaftLeaderLease, timing.RaftCommit = def.RaftHeartbeat, def.RaftElection, def.RaftLeaderLease, def.RaftCommit
	timing.LeaderWait = def.LeaderWait
	c := testutil.NewClusterWith(b, 3, func(cfg *agent.Config) { cfg.Timing = timing })
	leader := c.Leader()
	lh := tcpClient(leader)
	lh.Must(b, "PUT", "/v1/pools/bench", api.PoolRequest{}, http.StatusOK, nil)
	var first string
	for i := range 10 {
		id := lh.AddToken(b, "bench", fmt.Sprintf("value-%d", i), i)
		if i == 0 {
			first = id
		}
	}
	follower := c.Followers()[0]
	testutil.WaitFor(b, 10*time.Second, func() error {
		if id, _, err := tcpClient(follower).Fetch("bench"); err != nil || id != first {
			return fmt.Errorf("follower serves %q, %v", id, err)
		}
		return nil
	})
	for _, n := range []struct {
		role string
		node *testutil.Node
	}{{"leader", leader}, {"follower", follower}} {
		for _, mode := range []string{"local", "consistent"} {
			b.Run(n.role+"/"+mode, func(b *testing.B) {
				h := tcpClient(n.node)
				path := "/v1/pools/bench/token?format=raw"
				if mode == "consistent" {
					path += "&consistent"
				}
				b.ReportAllocs()
				for b.Loop() {
					resp, err := h.Get(path)
					if err != nil {
						b.Fatal(err)
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						b.Fatal(resp.Status)
					}
				}
			})
		}
	}
}
