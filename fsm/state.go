package fsm

import (
	"maps"
	"slices"
	"sort"

	"github.com/tokend/tokend/tokens"
)

// State is one immutable version of the replicated state. Apply builds a new
// State and publishes it with an atomic swap, so readers never lock and never
// see a half-applied entry. Nothing reachable from a State is ever modified.
type State struct {
	pools map[string]*PoolState
}

// PoolState is a pool and its tokens, which are kept in tokens.Less order so
// that the priority policy picks the first eligible one.
type PoolState struct {
	Pool   *tokens.Pool
	Tokens []*tokens.Token
}

func emptyState() *State { return &State{pools: map[string]*PoolState{}} }

// Pool returns the named pool.
func (s *State) Pool(name string) (*PoolState, bool) {
	p, ok := s.pools[name]
	return p, ok
}

// Pools returns every pool, by name.
func (s *State) Pools() []*PoolState {
	out := make([]*PoolState, 0, len(s.pools))
	for _, p := range s.pools {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Pool.Name < out[j].Pool.Name })
	return out
}

// Token returns a token by pool and id.
func (s *State) Token(pool, id string) (*tokens.Token, bool) {
	p, ok := s.pools[pool]
	if !ok {
		return nil, false
	}
	i := p.indexOf(id)
	if i < 0 {
		return nil, false
	}
	return p.Tokens[i], true
}

// lookup finds a token, or returns the rejection naming what is missing.
func (s *State) lookup(pool, id string) (*PoolState, int, error) {
	ps, ok := s.pools[pool]
	if !ok {
		return nil, 0, tokens.Errorf(tokens.CodePoolNotFound, "pool %q does not exist", pool)
	}
	i := ps.indexOf(id)
	if i < 0 {
		return nil, 0, tokens.Errorf(tokens.CodeTokenNotFound, "token %q does not exist in pool %q", id, pool)
	}
	return ps, i, nil
}

func (p *PoolState) indexOf(id string) int {
	return slices.IndexFunc(p.Tokens, func(t *tokens.Token) bool { return t.ID == id })
}

// withPool returns a copy of s in which name maps to ps (nil deletes it).
func (s *State) withPool(name string, ps *PoolState) *State {
	next := &State{pools: maps.Clone(s.pools)}
	if ps == nil {
		delete(next.pools, name)
	} else {
		next.pools[name] = ps
	}
	return next
}

// withToken returns a copy of p with t added, or replacing the token with
// the same id, keeping Less order.
func (p *PoolState) withToken(t *tokens.Token) *PoolState {
	toks := make([]*tokens.Token, 0, len(p.Tokens)+1)
	for _, old := range p.Tokens {
		if old.ID != t.ID {
			toks = append(toks, old)
		}
	}
	i, _ := slices.BinarySearchFunc(toks, t, compareTokens)
	toks = slices.Insert(toks, i, t)
	return &PoolState{Pool: p.Pool, Tokens: toks}
}

// withoutToken returns a copy of p without the token at index i.
func (p *PoolState) withoutToken(i int) *PoolState {
	return &PoolState{Pool: p.Pool, Tokens: slices.Delete(slices.Clone(p.Tokens), i, i+1)}
}

func compareTokens(a, b *tokens.Token) int {
	switch {
	case tokens.Less(a, b):
		return -1
	case tokens.Less(b, a):
		return 1
	}
	return 0
}
