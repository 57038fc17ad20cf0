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
	pools   map[string]*PoolState
	keyring KeyringState
	acl     aclState
}

// PoolState is a pool and its tokens, which are kept in tokens.Less order so
// that the priority policy picks the first eligible one, with the pool's
// open rotations and the record of its rotations.
type PoolState struct {
	Pool      *tokens.Pool
	Tokens    []*tokens.Token
	Rotations []*tokens.Rotation
	Status    tokens.RotationStatus
}

// shallow returns a copy of p that shares its (immutable) contents.
func (p *PoolState) shallow() *PoolState {
	c := *p
	return &c
}

// Rotation returns the open rotation with the given id.
func (p *PoolState) Rotation(id string) (*tokens.Rotation, bool) {
	for _, r := range p.Rotations {
		if r.ID == id {
			return r, true
		}
	}
	return nil, false
}

// withRotation returns a copy of p with r added, or replacing the rotation
// with the same id.
func (p *PoolState) withRotation(r *tokens.Rotation) *PoolState {
	c := p.shallow()
	c.Rotations = slices.DeleteFunc(slices.Clone(p.Rotations), func(o *tokens.Rotation) bool { return o.ID == r.ID })
	c.Rotations = append(c.Rotations, r)
	return c
}

// withoutRotation returns a copy of p without the rotation id.
func (p *PoolState) withoutRotation(id string) *PoolState {
	c := p.shallow()
	c.Rotations = slices.DeleteFunc(slices.Clone(p.Rotations), func(o *tokens.Rotation) bool { return o.ID == id })
	return c
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
	next := *s
	next.pools = maps.Clone(s.pools)
	if ps == nil {
		delete(next.pools, name)
	} else {
		next.pools[name] = ps
	}
	return &next
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
	c := p.shallow()
	c.Tokens = slices.Insert(toks, i, t)
	return c
}

// withoutToken returns a copy of p without the token at index i.
func (p *PoolState) withoutToken(i int) *PoolState {
	c := p.shallow()
	c.Tokens = slices.Delete(slices.Clone(p.Tokens), i, i+1)
	return c
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
