package chaos

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/tokend/tokend/api"
)

// NodeState is one agent's replicated state at the end of a run.
type NodeState struct {
	Node string
	// Index is the X-Tokend-Index of the agent's pool listing.
	Index uint64
	// Digest is a hash of Canonical.
	Digest string
	// Canonical is the agent's pools and their tokens, without the fields
	// that are the agent's own (see Canonical).
	Canonical string
	// Tokens holds, per pool, the workload's tokens by key.
	Tokens map[string]map[string]TokenState
}

// TokenState is one token as an agent holds it.
type TokenState struct {
	ID    string
	State string // StateActive or StateFailed
}

// Canonical renders an agent's pools and tokens for comparison across
// agents: every replicated field, none of an agent's own. Dropped: a
// pool's Eligible (what this agent would serve now, by its clock and
// overlay), a token's Reports (this agent's report counts and latencies)
// and its health apart from the state (an agent's overlay of reports not
// committed yet carries its own since, reason and reporter).
func Canonical(pools []api.Pool, tokens map[string][]api.TokenInfo) string {
	type poolOut struct {
		Pool   api.Pool
		Tokens []api.TokenInfo
	}
	out := make([]poolOut, 0, len(pools))
	for _, p := range pools {
		p.Eligible = 0
		toks := slices.Clone(tokens[p.Name])
		for i := range toks {
			toks[i].Reports = nil
			toks[i].Health = api.Health{State: toks[i].Health.State}
		}
		slices.SortFunc(toks, func(a, b api.TokenInfo) int { return strings.Compare(a.ID, b.ID) })
		out = append(out, poolOut{p, toks})
	}
	slices.SortFunc(out, func(a, b poolOut) int { return strings.Compare(a.Pool.Name, b.Pool.Name) })
	b, _ := json.MarshalIndent(out, "", " ")
	return string(b)
}

// State reads one agent's pools and tokens.
func State(ctx context.Context, hc *http.Client, token string, t Target) (NodeState, error) {
	c := &client{hc: hc, token: token}
	st := NodeState{Node: t.Name, Tokens: map[string]map[string]TokenState{}}
	var pools []api.Pool
	a := c.do(ctx, "GET", t.URL+"/v1/pools", nil)
	if err := a.failure(http.StatusOK); err != nil {
		return st, fmt.Errorf("%s: pools: %w", t.Name, err)
	}
	if err := a.decode(&pools); err != nil {
		return st, err
	}
	st.Index = a.index()
	all := map[string][]api.TokenInfo{}
	for _, p := range pools {
		var infos []api.TokenInfo
		a := c.do(ctx, "GET", t.URL+"/v1/pools/"+p.Name+"/tokens", nil)
		if err := a.failure(http.StatusOK); err != nil {
			return st, fmt.Errorf("%s: tokens of %s: %w", t.Name, p.Name, err)
		}
		if err := a.decode(&infos); err != nil {
			return st, err
		}
		if a.index() != st.Index {
			return st, fmt.Errorf("%s applied %d between its pools (%d) and the tokens of %s", t.Name, a.index()-st.Index, st.Index, p.Name)
		}
		all[p.Name] = infos
		byKey := map[string]TokenState{}
		for _, ti := range infos {
			if k := ti.Labels[LabelKey]; k != "" {
				byKey[k] = TokenState{ID: ti.ID, State: tokenState(ti)}
			}
		}
		st.Tokens[p.Name] = byKey
	}
	st.Canonical = Canonical(pools, all)
	sum := sha256.Sum256([]byte(st.Canonical))
	st.Digest = hex.EncodeToString(sum[:8])
	return st, nil
}

// Converge waits until every target holds the same state (same digest) and
// returns each one's. On timeout the error shows how the last states
// differ.
func Converge(ctx context.Context, hc *http.Client, token string, targets []Target, timeout time.Duration) ([]NodeState, error) {
	var states []NodeState
	err := poll(ctx, timeout, func() error {
		states = states[:0]
		for _, t := range targets {
			st, err := State(ctx, hc, token, t)
			if err != nil {
				return err
			}
			states = append(states, st)
		}
		return divergence(states)
	})
	if err != nil {
		return states, err
	}
	return states, nil
}

// divergence says how states differ, or nil.
func divergence(states []NodeState) error {
	for _, st := range states[1:] {
		if st.Digest != states[0].Digest {
			return fmt.Errorf("%s has digest %s at index %d, %s %s at index %d; first difference:\n%s", st.Node, st.Digest, st.Index, states[0].Node, states[0].Digest, states[0].Index, firstDiff(states[0].Canonical, st.Canonical))
		}
	}
	return nil
}

// firstDiff shows the first differing line of two renderings, with a
// little context.
func firstDiff(a, b string) string {
	la, lb := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := 0; i < max(len(la), len(lb)); i++ {
		var x, y string
		if i < len(la) {
			x = la[i]
		}
		if i < len(lb) {
			y = lb[i]
		}
		if x != y {
			from := max(0, i-3)
			return fmt.Sprintf("line %d:\n  context: %s\n  - %s\n  + %s", i+1, strings.Join(la[from:i], "\n           "), x, y)
		}
	}
	return "(none)"
}
