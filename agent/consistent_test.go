package agent_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tokend/tokend/agent"
	"github.com/tokend/tokend/api"
	"github.com/tokend/tokend/internal/testutil"
)

// consistentAnswer is one read's answer: status, index, and the token ids
// it showed (a list) or served (a fetch).
type consistentAnswer struct {
	status     int
	code       string
	index      uint64
	consistent bool
	ids        []string
	err        error
}

func readAnswer(h *testutil.HTTP, path string) consistentAnswer {
	r, err := h.Do("GET", path, nil)
	if err != nil {
		return consistentAnswer{err: err}
	}
	a := consistentAnswer{status: r.Status, code: r.ErrorCode(), consistent: r.Header.Get(api.HeaderConsistent) == "true"}
	a.index, _ = strconv.ParseUint(r.Header.Get(api.HeaderIndex), 10, 64)
	if r.Status != http.StatusOK {
		return a
	}
	if strings.HasSuffix(strings.SplitN(path, "?", 2)[0], "/token") {
		var tok api.Token
		a.err = json.Unmarshal(r.Body, &tok)
		a.ids = []string{tok.ID}
		return a
	}
	var list []api.TokenInfo
	a.err = json.Unmarshal(r.Body, &list)
	for _, t := range list {
		a.ids = append(a.ids, t.ID)
	}
	return a
}

func (a consistentAnswer) has(id string) bool {
	for _, x := range a.ids {
		if x == id {
			return true
		}
	}
	return false
}

func metricValue(t *testing.T, n *testutil.Node, name string, labels map[string]string) float64 {
	t.Helper()
	v, _ := scrape(t, tcpClient(n)).value(name, labels)
	return v
}

// Linearizable reads on a follower that lags: its state machine is held
// back, so it has not applied a write the leader acknowledged. A plain read
// there answers from its stale state; a consistent read never does: it
// waits until the follower has caught up with the leader's read index, and
// then shows the write. A consistent fetch applies the selection rules to
// that state.
func TestConsistentReadOnALaggingFollower(t *testing.T) {
	c := testutil.NewClusterWith(t, 3, func(cfg *agent.Config) { cfg.Timing.LeaderWait = 5 * time.Second })
	leader := c.Leader()
	lh := tcpClient(leader)
	lh.Must(t, "PUT", "/v1/pools/p", api.PoolRequest{}, http.StatusOK, nil)
	old := lh.AddToken(t, "p", "old-value", 10)
	lag := c.Followers()[0]
	fh := tcpClient(lag)
	waitServes(t, []*testutil.Node{lag}, "p", old)
	release := lag.BlockApply()
	t.Cleanup(release)

	var added api.TokenInfo
	r := lh.Must(t, "POST", "/v1/pools/p/tokens", api.TokenRequest{Value: "new-value", Priority: 1}, http.StatusCreated, &added)
	written, _ := strconv.ParseUint(r.Header.Get(api.HeaderIndex), 10, 64)

	// Plain reads on the lagging follower are stale.
	if a := readAnswer(fh, "/v1/pools/p/tokens"); a.err != nil || a.status != 200 || a.has(added.ID) || a.index >= written || a.consistent {
		t.Fatalf("plain token list on the lagging follower = %+v; want the stale state before index %d", a, written)
	}
	if a := readAnswer(fh, "/v1/pools/p/token"); a.status != 200 || a.ids[0] != old {
		t.Fatalf("plain fetch on the lagging follower = %+v; want the stale %s", a, old)
	}

	// A consistent read does not answer while the follower cannot catch
	// up: a client that gives up after 300 ms gets nothing, not stale data.
	impatient := &http.Client{Timeout: 300 * time.Millisecond}
	if resp, err := impatient.Get("http://" + lag.HTTPAddr() + "/v1/pools/p/tokens?consistent"); err == nil {
		resp.Body.Close()
		t.Fatalf("consistent read on the stuck follower answered %s", resp.Status)
	}
	testutil.WaitFor(t, 5*time.Second, func() error {
		if v := metricValue(t, lag, "tokend_consistent_reads_waiting", nil); v != 0 {
			return fmt.Errorf("%v consistent reads still waiting after their client left", v)
		}
		return nil
	})

	// Two consistent reads park until the follower catches up.
	paths := []string{"/v1/pools/p/tokens?consistent", "/v1/pools/p/token?consistent=true"}
	answers := make(chan consistentAnswer, len(paths))
	for _, path := range paths {
		go func() { answers <- readAnswer(fh, path) }()
	}
	testutil.WaitFor(t, 5*time.Second, func() error {
		if v := metricValue(t, lag, "tokend_consistent_reads_waiting", nil); v != 2 {
			return fmt.Errorf("%v consistent reads waiting, want 2", v)
		}
		return nil
	})
	if a := readAnswer(fh, "/v1/pools/p/tokens"); a.has(added.ID) {
		t.Fatal("the stuck follower applied the write")
	}
	release()
	for range paths {
		a := <-answers
		if a.err != nil || a.status != 200 || !a.consistent || a.index < written || !a.has(added.ID) {
			t.Fatalf("consistent read after the follower caught up = %+v; want %s at index >= %d", a, added.ID, written)
		}
	}
	m := scrape(t, fh)
	if v, _ := m.value("tokend_consistent_reads_total", map[string]string{"result": "ok"}); v != 2 {
		t.Errorf("tokend_consistent_reads_total{result=ok} = %v, want 2", v)
	}
	if v, _ := m.value("tokend_consistent_read_wait_seconds_count", nil); v != 3 {
		t.Errorf("tokend_consistent_read_wait_seconds_count = %v, want 3 (the abandoned read too)", v)
	}
}

// With no quorum no leader can confirm a read: a consistent read answers
// 503 no_leader within LeaderWait and says what to do instead, while plain
// reads keep serving the local state.
func TestConsistentReadWithoutQuorum(t *testing.T) {
	c := testutil.NewCluster(t, 3)
	leader := c.Leader()
	lh := tcpClient(leader)
	lh.Must(t, "PUT", "/v1/pools/p", api.PoolRequest{}, http.StatusOK, nil)
	id := lh.AddToken(t, "p", "value", 0)
	survivor := c.Followers()[0]
	waitServes(t, []*testutil.Node{survivor}, "p", id)
	for _, n := range c.Running() {
		if n != survivor {
			c.Stop(n)
		}
	}
	h := tcpClient(survivor)
	bound := survivor.Config.Timing.LeaderWait
	for _, path := range []string{"/v1/pools/p/tokens?consistent", "/v1/pools/p/token?consistent", "/v1/pools?consistent"} {
		start := time.Now()
		r, err := h.Do("GET", path, nil)
		elapsed := time.Since(start)
		if err != nil {
			t.Fatal(err)
		}
		var e api.ErrorResponse
		if r.Status != http.StatusServiceUnavailable || json.Unmarshal(r.Body, &e) != nil || e.Error.Code != "no_leader" ||
			!strings.Contains(e.Error.Message, "no leader could confirm") || !strings.Contains(e.Error.Message, "without ?consistent") {
			t.Fatalf("GET %s without a quorum = %d %s; want 503 no_leader suggesting a retry or a local read", path, r.Status, r.Body)
		}
		if elapsed > bound+2*time.Second {
			t.Errorf("GET %s took %s to fail, want about %s", path, elapsed, bound)
		}
	}
	if got, code, err := h.Fetch("p"); err != nil || got != id {
		t.Fatalf("plain fetch without a quorum = %q, %q, %v; want %s", got, code, err, id)
	}
	if a := readAnswer(h, "/v1/pools/p/tokens"); a.status != 200 || !a.has(id) {
		t.Fatalf("plain token list without a quorum = %+v", a)
	}
	if v := metricValue(t, survivor, "tokend_consistent_reads_total", map[string]string{"result": "no_leader"}); v != 3 {
		t.Errorf("tokend_consistent_reads_total{result=no_leader} = %v, want 3", v)
	}
}

// A leader partitioned from the majority is deposed: the majority elects
// another and commits a write the old one never sees. The old leader cannot
// confirm a read — its quorum round fails, then it steps down — so its
// consistent reads answer 503, never its stale state, while its plain reads
// do serve that state. Healed, it catches up and answers consistently.
// (cluster's TestConsistentReadOnADeposedLeaderFails makes sure the old
// leader still believes it leads when asked; here it may have stepped down.)
func TestConsistentReadOnADeposedLeader(t *testing.T) {
	c := testutil.NewClusterWith(t, 3, func(cfg *agent.Config) {
		cfg.Timing.RaftHeartbeat, cfg.Timing.RaftElection, cfg.Timing.RaftLeaderLease = 500*time.Millisecond, 500*time.Millisecond, 500*time.Millisecond
		cfg.Timing.LeaderWait = 2 * time.Second
	})
	old := c.Leader()
	oh := tcpClient(old)
	oh.Must(t, "PUT", "/v1/pools/p", api.PoolRequest{}, http.StatusOK, nil)
	first := oh.AddToken(t, "p", "first", 10)
	rest := c.Followers()
	waitServes(t, c.Running(), "p", first)

	old.Isolate(true)
	var (
		newLeader *testutil.Node
		added     api.TokenInfo
	)
	testutil.WaitFor(t, 10*time.Second, func() error {
		for _, n := range rest {
			if n.IsLeader() {
				newLeader = n
			}
		}
		if newLeader == nil {
			return errors.New("the majority has not elected a leader yet")
		}
		r, err := tcpClient(newLeader).Do("POST", "/v1/pools/p/tokens", api.TokenRequest{Value: "second", Priority: 1})
		if err != nil || r.Status != http.StatusCreated {
			return fmt.Errorf("write on the new leader %s: %v %d %s", newLeader.Name, err, r.Status, r.Body)
		}
		return json.Unmarshal(r.Body, &added)
	})

	t.Logf("the old leader still believes it leads: %v", old.IsLeader())
	for _, path := range []string{"/v1/pools/p/tokens?consistent", "/v1/pools/p/token?consistent"} {
		if a := readAnswer(oh, path); a.err != nil || a.status != http.StatusServiceUnavailable || a.code != "no_leader" || a.has(added.ID) {
			t.Fatalf("GET %s on the deposed leader after the majority's write = %+v, want 503 no_leader", path, a)
		}
	}
	if a := readAnswer(oh, "/v1/pools/p/tokens"); a.status != 200 || a.has(added.ID) || !a.has(first) {
		t.Fatalf("plain read on the deposed leader = %+v; want its stale state", a)
	}
	if a := readAnswer(oh, "/v1/pools/p/token"); a.status != 200 || a.ids[0] != first {
		t.Fatalf("plain fetch on the deposed leader = %+v; want the stale %s", a, first)
	}

	old.Isolate(false)
	testutil.WaitFor(t, 15*time.Second, func() error {
		a := readAnswer(oh, "/v1/pools/p/token?consistent")
		if a.err != nil || a.status != 200 || !a.consistent || a.ids[0] != added.ID {
			return fmt.Errorf("consistent fetch on the healed old leader = %+v, want %s", a, added.ID)
		}
		return nil
	})
}
