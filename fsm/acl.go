package fsm

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/tokend/tokend/tokens"
)

// aclState holds the ACL system: policies, and tokens by accessor and by
// the hash of their secret.
type aclState struct {
	bootstrapped bool
	policies     map[string]*tokens.ACLPolicy
	tokens       map[string]*tokens.ACLToken
	byHash       map[string]*tokens.ACLToken
	// authorizers caches each token's Authorizer, by secret hash, so a
	// request does not merge its policies again. It belongs to these
	// policies and tokens: every change to them starts a new cache, and
	// states that share them share it.
	authorizers *sync.Map
}

func (a aclState) clone() aclState {
	return aclState{bootstrapped: a.bootstrapped, policies: maps.Clone(a.policies), tokens: maps.Clone(a.tokens), byHash: maps.Clone(a.byHash), authorizers: new(sync.Map)}
}

func (a *aclState) putToken(t *tokens.ACLToken) {
	if a.authorizers == nil {
		a.authorizers = new(sync.Map)
	}
	if a.tokens == nil {
		a.tokens, a.byHash = map[string]*tokens.ACLToken{}, map[string]*tokens.ACLToken{}
	}
	a.tokens[t.AccessorID] = t
	a.byHash[t.SecretHash] = t
}

func (a *aclState) putPolicy(p *tokens.ACLPolicy) {
	if a.policies == nil {
		a.policies = map[string]*tokens.ACLPolicy{}
	}
	a.policies[p.Name] = p
}

// ACLBootstrapped reports whether the bootstrap token was created.
func (s *State) ACLBootstrapped() bool { return s.acl.bootstrapped }

// ACLPolicy returns a policy by name.
func (s *State) ACLPolicy(name string) (*tokens.ACLPolicy, bool) {
	p, ok := s.acl.policies[name]
	return p, ok
}

// ACLPolicies returns every policy, by name.
func (s *State) ACLPolicies() []*tokens.ACLPolicy {
	return slices.SortedFunc(maps.Values(s.acl.policies), func(a, b *tokens.ACLPolicy) int { return strings.Compare(a.Name, b.Name) })
}

// ACLToken returns a token by accessor id.
func (s *State) ACLToken(accessor string) (*tokens.ACLToken, bool) {
	t, ok := s.acl.tokens[accessor]
	return t, ok
}

// ACLTokens returns every token, oldest first.
func (s *State) ACLTokens() []*tokens.ACLToken {
	return slices.SortedFunc(maps.Values(s.acl.tokens), func(a, b *tokens.ACLToken) int {
		if a.CreateIndex != b.CreateIndex {
			return cmp.Compare(a.CreateIndex, b.CreateIndex)
		}
		return strings.Compare(a.AccessorID, b.AccessorID)
	})
}

// Authorizer returns what the token whose secret hashes to secretHash may
// do, and the token; false if no token has that secret.
func (s *State) Authorizer(secretHash string) (*tokens.Authorizer, *tokens.ACLToken, bool) {
	t, ok := s.acl.byHash[secretHash]
	if !ok {
		return nil, nil, false
	}
	if a, ok := s.acl.authorizers.Load(secretHash); ok {
		return a.(*tokens.Authorizer), t, true
	}
	a := tokens.NewAuthorizer(t, s.ACLPolicy)
	s.acl.authorizers.Store(secretHash, a)
	return a, t, true
}

func aclEvent(index uint64, at time.Time, typ tokens.EventType, reason string) []tokens.Event {
	return []tokens.Event{{Index: index, At: at, Type: typ, Reason: reason}}
}

func applyACLBootstrap(s *State, index uint64, body []byte, _ hclog.Logger) (*State, []tokens.Event, error) {
	var req ACLTokenRequest
	if err := decode(body, &req); err != nil {
		return nil, nil, err
	}
	if s.acl.bootstrapped {
		return nil, nil, tokens.Errorf(tokens.CodeConflict, "ACLs were bootstrapped already: the management token was handed out once; create tokens with it")
	}
	t := req.Token
	t.Management, t.Policies = true, nil
	if err := t.Validate(); err != nil {
		return nil, nil, err
	}
	t.CreatedAt, t.CreateIndex = req.At, index
	next := *s
	next.acl = s.acl.clone()
	next.acl.bootstrapped = true
	next.acl.putToken(&t)
	return &next, aclEvent(index, req.At, tokens.EventACLBootstrapped, "management token "+t.AccessorID), nil
}

func applyACLPolicyUpsert(s *State, index uint64, body []byte, _ hclog.Logger) (*State, []tokens.Event, error) {
	var req ACLPolicyUpsertRequest
	if err := decode(body, &req); err != nil {
		return nil, nil, err
	}
	p := req.Policy
	if err := p.Validate(); err != nil {
		return nil, nil, err
	}
	p.CreateIndex, p.ModifyIndex = index, index
	if old, ok := s.acl.policies[p.Name]; ok {
		p.CreateIndex = old.CreateIndex
	}
	next := *s
	next.acl = s.acl.clone()
	next.acl.putPolicy(&p)
	return &next, aclEvent(index, req.At, tokens.EventACLPolicyApplied, "policy "+p.Name), nil
}

func applyACLPolicyDelete(s *State, index uint64, body []byte, _ hclog.Logger) (*State, []tokens.Event, error) {
	var req ACLNameRequest
	if err := decode(body, &req); err != nil {
		return nil, nil, err
	}
	if _, ok := s.acl.policies[req.Name]; !ok {
		return nil, nil, tokens.Errorf(tokens.CodeNotFound, "policy %q does not exist", truncateError(req.Name))
	}
	// In token order, so every agent names the same token.
	for _, t := range s.ACLTokens() {
		if slices.Contains(t.Policies, req.Name) {
			return nil, nil, tokens.Errorf(tokens.CodeConflict, "policy %q is used by token %s: delete the tokens that use it first", req.Name, t.AccessorID)
		}
	}
	next := *s
	next.acl = s.acl.clone()
	delete(next.acl.policies, req.Name)
	return &next, aclEvent(index, req.At, tokens.EventACLPolicyDeleted, "policy "+req.Name), nil
}

func applyACLTokenCreate(s *State, index uint64, body []byte, _ hclog.Logger) (*State, []tokens.Event, error) {
	var req ACLTokenRequest
	if err := decode(body, &req); err != nil {
		return nil, nil, err
	}
	t := req.Token
	if t.Management {
		return nil, nil, tokens.Errorf(tokens.CodeInvalid, "only the bootstrap token is a management token: give tokens policies")
	}
	if err := t.Validate(); err != nil {
		return nil, nil, err
	}
	for _, p := range t.Policies {
		if _, ok := s.acl.policies[p]; !ok {
			return nil, nil, tokens.Errorf(tokens.CodeNotFound, "policy %q does not exist: create it first", p)
		}
	}
	if _, dup := s.acl.tokens[t.AccessorID]; dup {
		return nil, nil, tokens.Errorf(tokens.CodeConflict, "token %s already exists", t.AccessorID)
	}
	if _, dup := s.acl.byHash[t.SecretHash]; dup {
		return nil, nil, tokens.Errorf(tokens.CodeConflict, "a token with this secret already exists")
	}
	t.CreatedAt, t.CreateIndex = req.At, index
	next := *s
	next.acl = s.acl.clone()
	next.acl.putToken(&t)
	return &next, aclEvent(index, req.At, tokens.EventACLTokenCreated, "token "+t.AccessorID), nil
}

func applyACLTokenDelete(s *State, index uint64, body []byte, _ hclog.Logger) (*State, []tokens.Event, error) {
	var req ACLNameRequest
	if err := decode(body, &req); err != nil {
		return nil, nil, err
	}
	t, ok := s.acl.tokens[req.Name]
	if !ok {
		return nil, nil, tokens.Errorf(tokens.CodeNotFound, "token %q does not exist", truncateError(req.Name))
	}
	next := *s
	next.acl = s.acl.clone()
	delete(next.acl.tokens, t.AccessorID)
	delete(next.acl.byHash, t.SecretHash)
	return &next, aclEvent(index, req.At, tokens.EventACLTokenDeleted, "token "+t.AccessorID), nil
}

// applyAuthorized applies a client's command after checking, against the
// state at this index, that the ACL token it was sent with allows it. The
// agent that took the request checked too; this check is the one every
// agent makes the same way, so a token revoked a moment before counts.
func (f *FSM) applyAuthorized(logger hclog.Logger, s *State, index uint64, body []byte) (*State, []tokens.Event, error) {
	var req AuthorizedRequest
	if err := decode(body, &req); err != nil {
		return nil, nil, err
	}
	authz, tok, ok := s.Authorizer(req.SecretHash)
	if !ok {
		return nil, nil, tokens.Errorf(tokens.CodeUnauthenticated, "the ACL token this write was sent with does not exist (deleted?)")
	}
	if len(req.Entry) == 0 {
		return nil, nil, &decodeError{fmt.Errorf("authorized entry without a command")}
	}
	if err := authorize(authz, tok, MessageType(req.Entry[0]), req.Entry[1:]); err != nil {
		return nil, nil, err
	}
	next, events, err := f.runEntry(logger, s, index, req.Entry, true)
	for i := range events {
		if events[i].Reporter == "" {
			events[i].Reporter = tok.AccessorID
		}
	}
	return next, events, err
}

// authorize checks that authz allows command t with body.
func authorize(authz *tokens.Authorizer, tok *tokens.ACLToken, t MessageType, body []byte) error {
	var pool string
	switch t {
	case PoolUpsertType:
		var req PoolUpsertRequest
		if err := decode(body, &req); err != nil {
			return err
		}
		pool = req.Pool.Name
	case PoolDeleteType:
		var req PoolDeleteRequest
		if err := decode(body, &req); err != nil {
			return err
		}
		pool = req.Name
	case TokenAddType:
		var req TokenAddRequest
		if err := decode(body, &req); err != nil {
			return err
		}
		pool = req.Token.Pool
	case TokenRemoveType, TokenResetType:
		var req struct {
			Pool string `json:"pool"`
		}
		if err := decode(body, &req); err != nil {
			return err
		}
		pool = req.Pool
	case KeyringUseType, ACLPolicyUpsertType, ACLPolicyDeleteType, ACLTokenCreateType, ACLTokenDeleteType:
		if !authz.Operator() {
			return tokens.Errorf(tokens.CodePermissionDenied, "ACL token %s does not grant operator", tok.AccessorID)
		}
		return nil
	default:
		return tokens.Errorf(tokens.CodePermissionDenied, "%s is not a command clients send", t)
	}
	if !authz.Pool(pool, tokens.CapWrite) {
		return tokens.Errorf(tokens.CodePermissionDenied, "ACL token %s does not grant write on pool %q", tok.AccessorID, pool)
	}
	return nil
}
