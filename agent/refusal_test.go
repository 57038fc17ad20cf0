package agent_test

import (
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/tokend/tokend/agent"
	"github.com/tokend/tokend/api"
	"github.com/tokend/tokend/internal/testutil"
)

// A leader cut off from the majority, deposed without knowing it yet (its
// lease is long, as a leader frozen for a while has no idea time passed),
// must not refuse a write from its stale state: a delete of a token the new
// leader added meanwhile is not "not found" there. It fails with no_leader
// and deletes nothing. Found by the container suite: a leader thawed after
// docker pause refused, as token_not_found, a delete of a token its
// successor had acknowledged while it was frozen.
func TestDeposedLeaderRefusesNothingFromStaleState(t *testing.T) {
	const slow = "node0"
	c := testutil.NewClusterWith(t, 3, func(cfg *agent.Config) {
		if cfg.NodeName == slow {
			cfg.Timing.RaftHeartbeat, cfg.Timing.RaftElection, cfg.Timing.RaftLeaderLease = 5*time.Second, 5*time.Second, 5*time.Second
		}
	})
	var old *testutil.Node
	testutil.WaitFor(t, 20*time.Second, func() error {
		l := c.Leader()
		if l.Name == slow {
			old = l
			return nil
		}
		if err := l.TransferLeadership(); err != nil {
			return err
		}
		return fmt.Errorf("%s leads, not %s", l.Name, slow)
	})
	oh := tcpClient(old)
	oh.Must(t, "PUT", "/v1/pools/p", api.PoolRequest{}, http.StatusOK, nil)
	first := oh.AddToken(t, "p", "first", 10)
	waitServes(t, c.Running(), "p", first)

	old.Isolate(true)
	defer old.Isolate(false)
	var added api.TokenInfo
	testutil.WaitFor(t, 10*time.Second, func() error {
		for _, n := range c.Running() {
			if n != old && n.IsLeader() {
				r, err := tcpClient(n).Do("POST", "/v1/pools/p/tokens", api.TokenRequest{Value: "second"})
				if err != nil || r.Status != http.StatusCreated {
					return fmt.Errorf("write on the new leader %s: %v %d %s", n.Name, err, r.Status, r.Body)
				}
				return jsonUnmarshal(r.Body, &added)
			}
		}
		return errors.New("the majority has not elected a leader yet")
	})
	if !old.IsLeader() {
		t.Fatal("the cut-off leader stepped down before the majority committed: its lease is too short for this test")
	}
	r, err := oh.Do("DELETE", "/v1/pools/p/tokens/"+added.ID, nil)
	if err != nil || r.Status != http.StatusServiceUnavailable || r.ErrorCode() != "no_leader" {
		t.Fatalf("delete on the deposed leader of %s, added by its successor: %d %s (%v); want 503 no_leader", added.ID, r.Status, r.Body, err)
	}

	old.Isolate(false)
	testutil.WaitFor(t, 15*time.Second, func() error {
		for _, n := range c.Running() {
			if _, code, err := tcpClient(n).Fetch("p", first); err != nil || code != "" {
				return fmt.Errorf("%s: %s %v", n.Name, code, err)
			}
			if r, err := tcpClient(n).Do("GET", "/v1/pools/p/tokens/"+added.ID, nil); err != nil || r.Status != http.StatusOK {
				return fmt.Errorf("%s lacks %s: %d %v", n.Name, added.ID, r.Status, err)
			}
		}
		return nil
	})
}
