package e2e

import (
	"fmt"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokend/tokend/api"
	"github.com/tokend/tokend/internal/testutil"
)

// TestThreeAgents walks through what a new user does with a 3-agent cluster
// on loopback: write through followers, read on every agent over HTTP and
// the unix socket, report a dead token, SIGKILL the leader while clients
// fetch, write to the new leader, restart the killed agent from its data dir,
// and send bad input.
func TestThreeAgents(t *testing.T) {
	procs := newCluster(t, 3)
	for _, p := range procs {
		p.start()
	}
	l := leader(t, procs)
	var followers []*agentProc
	for _, p := range procs {
		if p != l {
			followers = append(followers, p)
		}
	}
	f0, f1 := followers[0], followers[1]

	// Writes through followers.
	f0.must("PUT", "/v1/pools/github", api.PoolRequest{MinHealthy: 1}, http.StatusOK, nil)
	var backup, primary api.TokenInfo
	f1.must("POST", "/v1/pools/github/tokens", api.TokenRequest{Value: "ghp_backup", Priority: 10}, http.StatusCreated, &backup)
	f0.must("POST", "/v1/pools/github/tokens", api.TokenRequest{Value: "ghp_primary"}, http.StatusCreated, &primary)
	waitServes(t, procs, "github", primary.ID)

	// Socket permissions are 0660.
	for _, p := range procs {
		fi, err := os.Stat(p.socket)
		if err != nil || fi.Mode().Perm() != 0o660 {
			t.Fatalf("%s socket: %v mode %v", p.name, err, fi.Mode())
		}
	}

	// A token reported unauthorized on one agent stops being served there at
	// once and everywhere soon after.
	var rep api.ReportResponse
	f1.must("POST", "/v1/pools/github/tokens/"+primary.ID+"/report", api.ReportRequest{Outcome: "unauthorized"}, http.StatusOK, &rep)
	if id, err := fetch(f1.httpC, "github"); err != nil || id != backup.ID {
		t.Fatalf("reporting agent serves %s (%v) right after the report", id, err)
	}
	start := time.Now()
	waitServes(t, procs, "github", backup.ID)
	t.Logf("every agent stopped serving the reported token %s after the report returned", time.Since(start))

	// SIGKILL the leader while clients fetch on the other agents.
	var (
		stop              atomic.Bool
		fetches, failures atomic.Int64
		wg                sync.WaitGroup
		errMu             sync.Mutex
		firstErr          error
	)
	for _, p := range followers {
		for _, c := range []*testutil.HTTP{p.httpC, p.unixC} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for !stop.Load() {
					id, err := fetch(c, "github")
					fetches.Add(1)
					if err == nil && id != backup.ID {
						err = fmt.Errorf("%s served %s", p.name, id)
					}
					if err != nil {
						failures.Add(1)
						errMu.Lock()
						if firstErr == nil {
							firstErr = err
						}
						errMu.Unlock()
					}
				}
			}()
		}
	}
	oldID := nodeID(t, l)
	l.kill()
	newLeader := leader(t, followers)
	// A new leader takes writes, here through the other follower.
	var other *agentProc
	for _, p := range followers {
		if p != newLeader {
			other = p
		}
	}
	other.must("PUT", "/v1/pools/after", api.PoolRequest{}, http.StatusOK, nil)
	var after api.TokenInfo
	other.must("POST", "/v1/pools/after/tokens", api.TokenRequest{Value: "after-kill"}, http.StatusCreated, &after)
	stop.Store(true)
	wg.Wait()
	if failures.Load() > 0 || fetches.Load() == 0 {
		t.Fatalf("%d of %d fetches failed while the leader was killed; first: %v", failures.Load(), fetches.Load(), firstErr)
	}
	t.Logf("%d fetches on the surviving agents, none failed, while the leader was killed and replaced", fetches.Load())

	// The killed agent restarts from its data dir, keeps its identity and
	// catches up.
	l.start()
	waitServes(t, []*agentProc{l}, "after", after.ID)
	if id := nodeID(t, l); id != oldID {
		t.Fatalf("restarted agent has id %s, was %s", id, oldID)
	}
	leader(t, procs)

	// Bad input gets a 4xx and changes nothing.
	before := snapshot(t, procs[0])
	bad := []struct {
		method, path string
		body         any
		status       int
		code         string
	}{
		{"PUT", "/v1/pools/Bad_Name", `{}`, 400, "invalid_request"},
		{"PUT", "/v1/pools/ok", `{"selection":"fastest"}`, 400, "invalid_request"},
		{"PUT", "/v1/pools/ok", `{"surprise":1}`, 400, "invalid_request"},
		{"POST", "/v1/pools/github/tokens", `{"value":""}`, 400, "invalid_request"},
		{"POST", "/v1/pools/github/tokens", `{"value":"x","expires_at":"2001-01-01T00:00:00Z"}`, 400, "invalid_request"},
		{"POST", "/v1/pools/nope/tokens", `{"value":"x"}`, 404, "pool_not_found"},
		{"POST", "/v1/pools/github/tokens/tok_0000000000000000/report", `{"outcome":"unauthorized"}`, 404, "token_not_found"},
		{"POST", "/v1/pools/github/tokens/" + backup.ID + "/report", `{"outcome":"exploded"}`, 400, "invalid_request"},
		{"DELETE", "/v1/pools/github", nil, 409, "conflict"},
		{"GET", "/v1/pools/nope/token", nil, 404, "pool_not_found"},
	}
	for _, b := range bad {
		for _, p := range procs {
			r, err := p.httpC.Do(b.method, b.path, b.body)
			if err != nil || r.Status != b.status || r.ErrorCode() != b.code {
				t.Fatalf("%s %s %v on %s: %d %s (%v), want %d %s", b.method, b.path, b.body, p.name, r.Status, r.Body, err, b.status, b.code)
			}
		}
	}
	if after := snapshot(t, procs[0]); after != before {
		t.Fatalf("bad input changed the state:\nbefore %s\nafter  %s", before, after)
	}

	// Stop the whole cluster. One agent started alone has no quorum and no
	// leader, yet serves what was committed, from its own log.
	for _, p := range procs {
		p.stop()
	}
	lone := procs[0]
	lone.start()
	if h, err := lone.health(); err != nil || h.KnownLeader {
		t.Fatalf("lone agent: %+v, %v", h, err)
	}
	waitServes(t, []*agentProc{lone}, "after", after.ID)
	// A second agent started without --join finds the first through the
	// members it saved, and the two elect a leader that takes writes.
	second := procs[1]
	second.args = withoutJoin(second.args)
	second.start()
	leader(t, []*agentProc{lone, second})
	second.must("PUT", "/v1/pools/reunited", api.PoolRequest{}, http.StatusOK, nil)
}

func withoutJoin(args []string) []string {
	var out []string
	for i := 0; i < len(args); i++ {
		if args[i] == "--join" {
			i++
			continue
		}
		out = append(out, args[i])
	}
	return out
}

func nodeID(t *testing.T, p *agentProc) string {
	t.Helper()
	var id string
	testutil.WaitFor(t, 10*time.Second, func() error {
		h, err := p.health()
		id = h.ID
		return err
	})
	return id
}

// snapshot renders an agent's pools and tokens for comparison.
func snapshot(t *testing.T, p *agentProc) string {
	t.Helper()
	var pools []api.Pool
	r := p.must("GET", "/v1/pools", nil, http.StatusOK, &pools)
	out := string(r.Body)
	for _, pool := range pools {
		out += string(p.must("GET", "/v1/pools/"+pool.Name+"/tokens", nil, http.StatusOK, nil).Body)
	}
	return out
}
