package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/tokend/tokend/api"
	"github.com/tokend/tokend/internal/testutil"
)

// TestCrashRestartServesCommittedState SIGKILLs every agent at once while
// writes and reads flow, then starts each agent alone — no quorum, so no
// election can complete — and requires its very first answer to hold every
// write it acknowledged and to be at least as new as anything it served
// before the crash. Then all three start together and converge.
func TestCrashRestartServesCommittedState(t *testing.T) {
	procs := newCluster(t, 3)
	for _, p := range procs {
		p.start()
	}
	leader(t, procs)
	procs[0].must("PUT", "/v1/pools/fresh", api.PoolRequest{}, http.StatusOK, nil)
	procs[0].httpC.AddToken(t, "fresh", "fresh-base", 1_000_000)
	waitServes(t, procs, "fresh", fetchID(t, procs[0]))

	// Per agent: the ids it acknowledged and the highest index it showed.
	type seen struct {
		mu    sync.Mutex
		acked []string
		index uint64
	}
	seens := make([]*seen, len(procs))
	var (
		wg       sync.WaitGroup
		stop     = make(chan struct{})
		enough   sync.WaitGroup
		writeErr = make(chan error, len(procs))
	)
	for i, p := range procs {
		s := &seen{}
		seens[i] = s
		enough.Add(1)
		wg.Add(2)
		go func() { // writer: newest token has the best priority
			defer wg.Done()
			for k := 0; ; k++ {
				select {
				case <-stop:
					return
				default:
				}
				r, err := p.httpC.Do("POST", "/v1/pools/fresh/tokens", api.TokenRequest{
					Value: fmt.Sprintf("fresh-%s-%d", p.name, k), Priority: 100_000 - k,
				})
				if err != nil {
					return // killed: the outcome of this write is unknown
				}
				if r.Status != http.StatusCreated {
					writeErr <- fmt.Errorf("%s: write answered %d %s", p.name, r.Status, r.Body)
					return
				}
				var info api.TokenInfo
				if err := json.Unmarshal(r.Body, &info); err != nil {
					writeErr <- err
					return
				}
				s.mu.Lock()
				s.acked = append(s.acked, info.ID)
				s.index = max(s.index, headerIndex(r))
				s.mu.Unlock()
				if k == 30 {
					enough.Done()
				}
			}
		}()
		go func() { // reader
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				r, err := p.unixC.Do("GET", "/v1/pools/fresh/token", nil)
				if err != nil {
					return
				}
				if r.Status == http.StatusOK {
					s.mu.Lock()
					s.index = max(s.index, headerIndex(r))
					s.mu.Unlock()
				}
			}
		}()
	}
	enough.Wait()
	select {
	case err := <-writeErr:
		t.Fatal(err)
	default:
	}
	// Kill all three at once, in the middle of writing.
	var kills sync.WaitGroup
	for _, p := range procs {
		kills.Add(1)
		go func() { defer kills.Done(); p.kill() }()
	}
	kills.Wait()
	close(stop)
	wg.Wait()

	for i, p := range procs {
		s := seens[i]
		start := time.Now()
		p.start()
		first := firstAnswer(t, p)
		took := time.Since(start)
		if first.Status != http.StatusOK {
			t.Fatalf("%s: first answer after restart %d %s, want the committed pool", p.name, first.Status, first.Body)
		}
		if idx := headerIndex(first); idx < s.index {
			t.Fatalf("%s: first answer at index %d, but it had shown index %d before the crash", p.name, idx, s.index)
		}
		var tok api.Token
		if err := json.Unmarshal(first.Body, &tok); err != nil {
			t.Fatal(err)
		}
		last := s.acked[len(s.acked)-1]
		if tok.Priority > tokenPriority(t, p, last) {
			t.Fatalf("%s serves %s (priority %d), older than its last acknowledged write %s", p.name, tok.ID, tok.Priority, last)
		}
		var list []api.TokenInfo
		p.must("GET", "/v1/pools/fresh/tokens", nil, http.StatusOK, &list)
		have := map[string]bool{}
		for _, ti := range list {
			have[ti.ID] = true
		}
		for _, id := range s.acked {
			if !have[id] {
				t.Fatalf("%s lost %s, which it acknowledged before the crash", p.name, id)
			}
		}
		if h, err := p.health(); err != nil || h.KnownLeader {
			t.Fatalf("%s: health %+v, %v: alone it cannot have a leader", p.name, h, err)
		}
		t.Logf("%s alone, no leader: first read correct %s after start (index %d >= %d shown before; %d acknowledged writes kept)",
			p.name, took.Round(time.Millisecond), headerIndex(first), s.index, len(s.acked))
		p.kill()
	}

	// Together again: a leader, and every acknowledged write on every agent.
	for _, p := range procs {
		p.start()
	}
	leader(t, procs)
	testutil.WaitFor(t, 10*time.Second, func() error {
		for _, p := range procs {
			var list []api.TokenInfo
			r, err := p.httpC.Do("GET", "/v1/pools/fresh/tokens", nil)
			if err != nil || json.Unmarshal(r.Body, &list) != nil {
				return fmt.Errorf("%s: %v", p.name, err)
			}
			have := map[string]bool{}
			for _, ti := range list {
				have[ti.ID] = true
			}
			for _, s := range seens {
				for _, id := range s.acked {
					if !have[id] {
						return fmt.Errorf("%s lacks acknowledged %s", p.name, id)
					}
				}
			}
		}
		return nil
	})
}

// firstAnswer polls p's fetch route until the agent answers at all, and
// returns that first answer.
func firstAnswer(t *testing.T, p *agentProc) testutil.Response {
	t.Helper()
	var first testutil.Response
	testutil.WaitFor(t, 10*time.Second, func() error {
		r, err := p.unixC.Do("GET", "/v1/pools/fresh/token", nil)
		if err != nil {
			return err
		}
		first = r
		return nil
	})
	return first
}

func headerIndex(r testutil.Response) uint64 {
	idx, _ := strconv.ParseUint(r.Header.Get(api.HeaderIndex), 10, 64)
	return idx
}

func fetchID(t *testing.T, p *agentProc) string {
	t.Helper()
	id, err := fetch(p.httpC, "fresh")
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func tokenPriority(t *testing.T, p *agentProc, id string) int {
	t.Helper()
	var info api.TokenInfo
	p.must("GET", "/v1/pools/fresh/tokens/"+id, nil, http.StatusOK, &info)
	return info.Priority
}
