package agent_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/tokend/tokend/agent"
	"github.com/tokend/tokend/api"
	"github.com/tokend/tokend/internal/testutil"
	"github.com/tokend/tokend/tokens"
)

// leaderVerdict is the part of the leader's answer about a report that
// these tests look at.
type leaderVerdict struct {
	Change    bool   `json:"change"`
	Committed bool   `json:"committed"`
	Index     uint64 `json:"index"`
	Detail    string `json:"detail"`
}

// reportAsAgent sends unauthorized reports of pool/id, one per reporter, in
// one request to the leader's monitor through n, as another agent's
// forwarder would, and returns the leader's verdicts.
func reportAsAgent(n *testutil.Node, pool, id string, reporters ...string) ([]leaderVerdict, error) {
	var reps []tokens.Report
	for _, r := range reporters {
		reps = append(reps, tokens.Report{Pool: pool, TokenID: id, Outcome: tokens.OutcomeUnauthorized, Reporter: r, At: time.Now()})
	}
	body, err := json.Marshal(reps)
	if err != nil {
		return nil, err
	}
	out, err := n.CallLeader(context.Background(), agent.LeaderReports, body)
	if err != nil {
		return nil, err
	}
	var vs []leaderVerdict
	if err := json.Unmarshal(out, &vs); err != nil || len(vs) != len(reps) {
		return nil, fmt.Errorf("verdicts %s: %v", out, err)
	}
	return vs, nil
}

// consistentHealth is pool/id's health in n's replicated state, read with
// ?consistent.
func consistentHealth(n *testutil.Node, pool, id string) (string, error) {
	r, err := tcpClient(n).Do("GET", "/v1/pools/"+pool+"/tokens/"+id+"?consistent", nil)
	if err != nil {
		return "", err
	}
	if r.Status != http.StatusOK {
		return "", fmt.Errorf("%s: %d %s", n.Name, r.Status, r.Body)
	}
	var info api.TokenInfo
	if err := json.Unmarshal(r.Body, &info); err != nil {
		return "", err
	}
	return info.Health.State, nil
}

// A report that reaches the leader while another report's change for the
// same token is still being committed makes no change of its own: its
// answer is that commit's. Here the commit fails — the leader is cut off
// from the majority and steps down — so the second report must not be
// answered committed: the failure is in no replicated state. Once healed,
// both reports reach the new leader and the token fails everywhere.
func TestReportWaitingOnAFailedCommitIsNotCommitted(t *testing.T) {
	c := testutil.NewClusterWith(t, 3, func(cfg *agent.Config) {
		// A leader lease long enough for both reports to reach the cut-off
		// leader while it still believes it leads.
		cfg.Timing.RaftHeartbeat, cfg.Timing.RaftElection, cfg.Timing.RaftLeaderLease = time.Second, time.Second, time.Second
		cfg.Timing.LeaderWait = 3 * time.Second
		cfg.ReportCommitWait = 3 * time.Second
	})
	ids := healthPool(t, c, "p", nil, 2)
	leader := c.Leader()
	rest := c.Followers()

	leader.Isolate(true)
	first := make(chan leaderVerdict, 1)
	go func() {
		vs, err := reportAsAgent(leader, "p", ids[0], rest[0].Name)
		if err != nil {
			t.Errorf("report from %s: %v", rest[0].Name, err)
			vs = make([]leaderVerdict, 1)
		}
		first <- vs[0]
	}()
	testutil.WaitFor(t, 5*time.Second, func() error {
		if leader.HealthChangesInFlight() == 0 {
			return errors.New("the first report's change is not in flight yet")
		}
		return nil
	})
	if !leader.IsLeader() {
		t.Fatal("the cut-off leader stepped down before the second report; the lease is too short for this machine")
	}
	// The second report, on the leader's own API, while the first one's
	// change cannot commit.
	rep, status := report(t, leader, "p", ids[0], api.ReportRequest{Outcome: "unauthorized"})
	if v := <-first; !v.Change || v.Committed {
		t.Fatalf("the first report's verdict = %+v, want a change that did not commit", v)
	}
	if rep.Committed || status != http.StatusAccepted || rep.Pending == "" {
		t.Fatalf("second report = %d %+v; its failure is not committed, so it must be pending", status, rep)
	}
	// Indeed not: the majority's replicated state has the token healthy.
	testutil.WaitFor(t, 10*time.Second, func() error {
		h, err := consistentHealth(rest[0], "p", ids[0])
		if err == nil && h != "healthy" {
			t.Fatalf("the majority has %s %s before the reports reached it", ids[0], h)
		}
		return err
	})

	leader.Isolate(false)
	testutil.WaitFor(t, 15*time.Second, func() error {
		for _, n := range c.Running() {
			if h, err := consistentHealth(n, "p", ids[0]); err != nil || h != "failed" {
				return fmt.Errorf("%s: %s %v", n.Name, h, err)
			}
		}
		return nil
	})
}

// The same, when the commit succeeds: the second report is answered
// committed at the first one's index, and only once that is applied on the
// agent that answers. The leader's state machine is held back, so the
// first report's change is committed but its commit does not return yet.
func TestReportWaitingOnACommitGetsItsIndex(t *testing.T) {
	c := testutil.NewCluster(t, 3)
	ids := healthPool(t, c, "p", nil, 2)
	leader := c.Leader()
	follower := c.Followers()[0]
	release := leader.BlockApply()
	t.Cleanup(release)
	first := make(chan leaderVerdict, 1)
	go func() {
		vs, err := reportAsAgent(leader, "p", ids[0], follower.Name)
		if err != nil {
			t.Errorf("report from %s: %v", follower.Name, err)
			vs = make([]leaderVerdict, 1)
		}
		first <- vs[0]
	}()
	testutil.WaitFor(t, 5*time.Second, func() error {
		if leader.HealthChangesInFlight() == 0 {
			return errors.New("the first report's change is not in flight yet")
		}
		return nil
	})
	type answer struct {
		rep    api.ReportResponse
		status int
	}
	second := make(chan answer, 1)
	go func() {
		var a answer
		r, err := tcpClient(leader).Do("POST", "/v1/pools/p/tokens/"+ids[0]+"/report", api.ReportRequest{Outcome: "unauthorized"})
		if err == nil {
			a.status = r.Status
			err = json.Unmarshal(r.Body, &a.rep)
		}
		if err != nil {
			t.Errorf("second report: %v", err)
		}
		second <- a
	}()
	// The leader took the second report before the first one's commit
	// returns (almost surely: its forwarder sends it at once; if not, the
	// state it reads holds the change, at the same index).
	testutil.WaitFor(t, 5*time.Second, func() error {
		if v := metricValue(t, leader, "tokend_reports_total", map[string]string{"pool": "p", "outcome": "unauthorized"}); v != 1 {
			return fmt.Errorf("the leader counted %v reports", v)
		}
		return nil
	})
	release()
	v := <-first
	if !v.Change || !v.Committed || v.Index == 0 {
		t.Fatalf("the first report's verdict = %+v, want its change committed", v)
	}
	a := <-second
	if a.status != http.StatusOK || !a.rep.Committed || a.rep.Index != v.Index || a.rep.Health.State != "failed" {
		t.Fatalf("second report = %d %+v, want committed at the first one's index %d", a.status, a.rep, v.Index)
	}
	if got := appliedIndex(t, leader); got < v.Index {
		t.Fatalf("the answering agent has applied %d, below the index %d it answered", got, v.Index)
	}
}

// Two reports of one token in one request: the first changes it, the
// second asks for nothing more and is answered by the same commit.
func TestReportsInOneBatchShareTheCommit(t *testing.T) {
	c := testutil.NewCluster(t, 3)
	ids := healthPool(t, c, "p", nil, 2)
	nodes := c.Followers()
	vs, err := reportAsAgent(c.Leader(), "p", ids[0], nodes[0].Name, nodes[1].Name)
	if err != nil {
		t.Fatal(err)
	}
	if !vs[0].Change || !vs[0].Committed || vs[0].Index == 0 {
		t.Fatalf("first verdict = %+v, want its change committed", vs[0])
	}
	if vs[1].Change || !vs[1].Committed || vs[1].Index != vs[0].Index {
		t.Fatalf("second verdict = %+v, want the first one's commit at %d", vs[1], vs[0].Index)
	}
	// A report of a token the replicated state already has failed is
	// committed at the token's last modification.
	again, err := reportAsAgent(c.Leader(), "p", ids[0], nodes[0].Name)
	if err != nil {
		t.Fatal(err)
	}
	if again[0].Change || !again[0].Committed || again[0].Index != vs[0].Index {
		t.Fatalf("report of a failed token = %+v, want committed at %d", again[0], vs[0].Index)
	}
}
