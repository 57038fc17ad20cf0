package agent_test

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokend/tokend/agent"
	"github.com/tokend/tokend/api"
	"github.com/tokend/tokend/internal/testutil"
	"github.com/tokend/tokend/tokens"
)

// rotationCluster is a 3-node cluster whose providers are one fake, each
// node's calls marked with its name.
func rotationCluster(t *testing.T, fp *testutil.FakeProvider) *testutil.Cluster {
	t.Helper()
	return testutil.NewClusterWith(t, 3, func(cfg *agent.Config) {
		cfg.ProviderFactory = fp.Factory(cfg.NodeName)
		cfg.RotationInterval = 50 * time.Millisecond
	})
}

func issuingPool(t *testing.T, h *testutil.HTTP, name string, req api.PoolRequest) {
	t.Helper()
	if req.Provider == nil {
		req.Provider = &api.Provider{Type: "exec", Command: []string{"/bin/true"}}
	}
	h.Must(t, "PUT", "/v1/pools/"+name, req, http.StatusOK, nil)
}

func listTokens(t *testing.T, h *testutil.HTTP, pool string) []api.TokenInfo {
	t.Helper()
	var toks []api.TokenInfo
	h.Must(t, "GET", "/v1/pools/"+pool+"/tokens", nil, http.StatusOK, &toks)
	return toks
}

// The leader keeps a pool issued: it fills it to its size, replaces tokens
// before they expire, retires and revokes the old ones; only the leader
// calls the provider, and clients on every node never get an expired token.
func TestRotationKeepsPoolIssued(t *testing.T) {
	fp := testutil.NewFakeProvider(3 * time.Second)
	c := rotationCluster(t, fp)
	leader := c.Leader()
	issuingPool(t, tcpClient(leader), "p", api.PoolRequest{Rotation: &tokens.RotationPolicy{Grace: tokens.Duration(500 * time.Millisecond)}})

	var (
		stop    atomic.Bool
		fetches atomic.Int64
		wg      sync.WaitGroup
		mu      sync.Mutex
		bad     []string
	)
	for _, n := range c.Running() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := tcpClient(n)
			for !stop.Load() {
				var tok api.Token
				r, err := h.Do("GET", "/v1/pools/p/token", nil)
				if err != nil || r.Status != http.StatusOK || jsonUnmarshal(r.Body, &tok) != nil {
					continue // an empty pool at the start is fine; an expired token is not
				}
				fetches.Add(1)
				if tok.ExpiresAt == nil || !time.Now().Before(*tok.ExpiresAt) {
					mu.Lock()
					bad = append(bad, fmt.Sprintf("%s served %s expiring %v", n.Name, tok.ID, tok.ExpiresAt))
					mu.Unlock()
				}
			}
		}()
	}
	// Long enough for every token to be replaced at least twice.
	testutil.WaitFor(t, 20*time.Second, func() error {
		if n := len(fp.Issued()); n < 6 {
			return fmt.Errorf("%d credentials issued", n)
		}
		revoked := 0
		for _, cr := range fp.Issued() {
			if fp.Revoked(cr.Value) {
				revoked++
			}
		}
		if revoked < 2 {
			return fmt.Errorf("%d retired credentials revoked", revoked)
		}
		return nil
	})
	stop.Store(true)
	wg.Wait()
	if len(bad) > 0 || fetches.Load() == 0 {
		t.Fatalf("%d fetches; expired tokens served: %v", fetches.Load(), bad)
	}
	for _, cr := range fp.Issued() {
		if cr.Node != leader.Name {
			t.Fatalf("%s called the provider; only the leader %s may", cr.Node, leader.Name)
		}
	}
	toks := listTokens(t, tcpClient(leader), "p")
	active := 0
	for _, tk := range toks {
		if tk.Lifecycle == "active" {
			active++
		}
	}
	if active != 2 {
		t.Fatalf("%d active tokens, want the pool's size 2: %+v", active, toks)
	}
}

// A failing provider backs off, and the pool recovers when it works again.
func TestRotationFailureBacksOffAndRecovers(t *testing.T) {
	fp := testutil.NewFakeProvider(time.Hour)
	fp.Fail(errors.New("issuer is down"))
	c := rotationCluster(t, fp)
	h := tcpClient(c.Leader())
	issuingPool(t, h, "p", api.PoolRequest{Size: 1, Rotation: &tokens.RotationPolicy{RetryMin: tokens.Duration(100 * time.Millisecond), RetryMax: tokens.Duration(200 * time.Millisecond)}})
	testutil.WaitFor(t, 10*time.Second, func() error {
		var evs api.Events
		h.Must(t, "GET", "/v1/events", nil, http.StatusOK, &evs)
		failed := 0
		for _, e := range evs.Events {
			if e.Type == tokens.EventRotationFailed && strings.Contains(e.Reason, "issuer is down") {
				failed++
			}
		}
		if failed < 2 {
			return fmt.Errorf("%d rotation failures recorded", failed)
		}
		return nil
	})
	fp.Fail(nil)
	waitServes(t, c.Running(), "p", func() string {
		var id string
		testutil.WaitFor(t, 10*time.Second, func() error {
			toks := listTokens(t, h, "p")
			if len(toks) != 1 {
				return fmt.Errorf("%d tokens", len(toks))
			}
			id = toks[0].ID
			return nil
		})
		return id
	}())
}

// A leader deposed while its provider call is in flight cannot record the
// result: the new leader resumed the rotation in its own term, so the late
// commit is refused, and the credential is kept as an orphan and revoked.
// Every credential the provider issued is accounted for.
func TestDeposedLeaderResultBecomesOrphan(t *testing.T) {
	fp := testutil.NewFakeProvider(time.Hour)
	c := rotationCluster(t, fp)
	old := c.Leader()
	fp.Hold(true) // the first leader's call issues even after it is cancelled
	issuingPool(t, tcpClient(old), "p", api.PoolRequest{Size: 1})
	testutil.WaitFor(t, 5*time.Second, func() error {
		if fp.Waiting() == 0 {
			return errors.New("no provider call in flight yet")
		}
		return nil
	})
	if err := old.TransferLeadership(); err != nil {
		t.Fatal(err)
	}
	newLeader := c.WaitForLeader()
	if newLeader == old {
		t.Fatal("leadership did not move")
	}
	// Release only once the new leader has resumed the rotation in its term
	// and called the provider itself; released earlier, the deposed leader's
	// result may legitimately commit first and there is no orphan to test.
	testutil.WaitFor(t, 5*time.Second, func() error {
		if n := fp.Waiting(); n < 2 {
			return fmt.Errorf("%d provider calls held; want the new leader's too", n)
		}
		return nil
	})
	fp.Release() // both the deposed leader's call and the new leader's go through
	h := tcpClient(newLeader)
	testutil.WaitFor(t, 10*time.Second, func() error {
		issued := fp.Issued()
		if len(issued) < 2 {
			return fmt.Errorf("%d credentials issued", len(issued))
		}
		toks := listTokens(t, h, "p")
		active := 0
		for _, tk := range toks {
			if tk.Lifecycle == "active" {
				active++
			}
		}
		if active != 1 {
			return fmt.Errorf("%d active tokens", active)
		}
		// The orphan is revoked and removed.
		revoked := 0
		for _, cr := range issued {
			if fp.Revoked(cr.Value) {
				revoked++
			}
		}
		if revoked != len(issued)-1 {
			return fmt.Errorf("%d of %d extra credentials revoked", revoked, len(issued)-1)
		}
		return nil
	})
	testutil.WaitFor(t, 5*time.Second, func() error {
		var evs api.Events
		h.Must(t, "GET", "/v1/events?limit=1000", nil, http.StatusOK, &evs)
		var types []string
		for _, e := range evs.Events {
			types = append(types, string(e.Type))
		}
		all := strings.Join(types, ",")
		for _, want := range []string{"rotation_begun", "rotation_resumed", "rotation_committed", "token_orphaned", "token_removed"} {
			if !strings.Contains(all, want) {
				return fmt.Errorf("events %s lack %s", all, want)
			}
		}
		return nil
	})
}

// A leader killed while its provider call is in flight: the new leader
// resumes the rotation with the same idempotency key and finishes it.
func TestLeaderKilledMidRotationIsResumed(t *testing.T) {
	fp := testutil.NewFakeProvider(time.Hour)
	c := rotationCluster(t, fp)
	old := c.Leader()
	fp.Hold(false)
	issuingPool(t, tcpClient(old), "p", api.PoolRequest{Size: 1})
	testutil.WaitFor(t, 5*time.Second, func() error {
		if fp.Waiting() == 0 {
			return errors.New("no provider call in flight yet")
		}
		return nil
	})
	c.Stop(old)
	fp.Release()
	newLeader := c.WaitForLeader()
	h := tcpClient(newLeader)
	testutil.WaitFor(t, 10*time.Second, func() error {
		toks := listTokens(t, h, "p")
		if len(toks) != 1 || toks[0].Lifecycle != "active" {
			return fmt.Errorf("tokens %+v", toks)
		}
		return nil
	})
	issued := fp.Issued()
	if len(issued) != 1 || issued[0].Node != newLeader.Name {
		t.Fatalf("issued %+v; want one credential, from the new leader", issued)
	}
	var evs api.Events
	h.Must(t, "GET", "/v1/events?limit=1000", nil, http.StatusOK, &evs)
	resumed := false
	for _, e := range evs.Events {
		if e.Type == tokens.EventRotationResumed && e.Rotation == issued[0].Key && strings.Contains(e.Reason, "idempotency") {
			resumed = true
		}
	}
	if !resumed {
		t.Fatalf("no rotation_resumed event for %s: %+v", issued[0].Key, evs.Events)
	}
}

// POST /v1/pools/{pool}/rotate on any node has the leader replace tokens
// now; a static pool cannot be rotated.
func TestManualRotate(t *testing.T) {
	fp := testutil.NewFakeProvider(time.Hour)
	c := rotationCluster(t, fp)
	f := tcpClient(c.Followers()[0])
	issuingPool(t, f, "p", api.PoolRequest{Size: 2})
	var before []api.TokenInfo
	testutil.WaitFor(t, 10*time.Second, func() error {
		before = listTokens(t, f, "p")
		if len(before) != 2 {
			return fmt.Errorf("%d tokens", len(before))
		}
		return nil
	})
	var rr api.RotateResponse
	f.Must(t, "POST", "/v1/pools/p/rotate?token="+before[0].ID, nil, http.StatusAccepted, &rr)
	if len(rr.Rotations) != 1 {
		t.Fatalf("rotate one token = %+v", rr)
	}
	testutil.WaitFor(t, 10*time.Second, func() error {
		for _, tk := range listTokens(t, f, "p") {
			if tk.ID == before[0].ID && tk.Lifecycle == "active" {
				return fmt.Errorf("%s still active", tk.ID)
			}
		}
		return nil
	})
	f.Must(t, "POST", "/v1/pools/p/rotate", nil, http.StatusAccepted, &rr)
	if len(rr.Rotations) != 2 {
		t.Fatalf("rotate every active token = %+v", rr)
	}
	if r, _ := f.Do("POST", "/v1/pools/p/rotate?token=tok_0000000000000000", nil); r.Status != http.StatusNotFound {
		t.Fatalf("rotate an unknown token: %d %s", r.Status, r.Body)
	}
	f.Must(t, "PUT", "/v1/pools/static", api.PoolRequest{}, http.StatusOK, nil)
	if r, _ := f.Do("POST", "/v1/pools/static/rotate", nil); r.Status != http.StatusConflict || !strings.Contains(string(r.Body), "static") {
		t.Fatalf("rotate a static pool: %d %s", r.Status, r.Body)
	}
}
