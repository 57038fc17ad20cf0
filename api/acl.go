package api

import (
	"fmt"
	"net/http"

	"github.com/tokend/tokend/tokens"
)

func (s *server) aclBootstrap(w http.ResponseWriter, r *http.Request) error {
	if err := onlyParams(r); err != nil {
		return err
	}
	tok, err := s.b.ACLBootstrap(r.Context())
	if err != nil {
		return err
	}
	s.logger.Warn("ACLs bootstrapped: the management token was handed out", "accessor", tok.AccessorID)
	writeJSON(w, http.StatusOK, tok)
	return nil
}

func (s *server) aclPolicies(w http.ResponseWriter, r *http.Request) error {
	if err := onlyParams(r, "consistent"); err != nil {
		return err
	}
	if err := s.beginRead(w, r); err != nil {
		return err
	}
	out := []ACLPolicy{}
	for _, p := range s.b.View().ACLPolicies() {
		out = append(out, toACLPolicy(p))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *server) aclPolicy(w http.ResponseWriter, r *http.Request) error {
	name, err := pathName(r, "name", "policy")
	if err != nil {
		return err
	}
	if err := onlyParams(r, "consistent"); err != nil {
		return err
	}
	if err := s.beginRead(w, r); err != nil {
		return err
	}
	p, ok := s.b.View().ACLPolicy(name)
	if !ok {
		return tokens.Errorf(tokens.CodeNotFound, "policy %q does not exist", name)
	}
	writeJSON(w, http.StatusOK, toACLPolicy(p))
	return nil
}

func (s *server) aclPolicyApply(w http.ResponseWriter, r *http.Request) error {
	name, err := pathName(r, "name", "policy")
	if err != nil {
		return err
	}
	if err := onlyParams(r); err != nil {
		return err
	}
	var req ACLPolicyRequest
	if err := decodeBody(w, r, &req); err != nil {
		return err
	}
	p := tokens.ACLPolicy{Name: name, Description: req.Description, Pools: req.Pools, Operator: req.Operator}
	if err := p.Validate(); err != nil {
		return err
	}
	index, err := s.b.ACLPolicyApply(r.Context(), p)
	if err != nil {
		return err
	}
	setIndex(w, index)
	writeJSON(w, http.StatusOK, WriteResponse{Index: index})
	return nil
}

func (s *server) aclPolicyDelete(w http.ResponseWriter, r *http.Request) error {
	name, err := pathName(r, "name", "policy")
	if err != nil {
		return err
	}
	if err := onlyParams(r); err != nil {
		return err
	}
	index, err := s.b.ACLPolicyDelete(r.Context(), name)
	if err != nil {
		return err
	}
	setIndex(w, index)
	writeJSON(w, http.StatusOK, WriteResponse{Index: index})
	return nil
}

func (s *server) aclTokens(w http.ResponseWriter, r *http.Request) error {
	if err := onlyParams(r, "consistent"); err != nil {
		return err
	}
	if err := s.beginRead(w, r); err != nil {
		return err
	}
	out := []ACLToken{}
	for _, t := range s.b.View().ACLTokens() {
		out = append(out, toACLToken(t))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func pathAccessor(r *http.Request) (string, error) {
	id := r.PathValue("accessor")
	if !tokens.ValidAccessorID(id) {
		return "", badRequest(fmt.Sprintf("accessor id %q is invalid: it is acc_ and 16 hex digits, as tokend acl token list shows", truncate(id)))
	}
	return id, nil
}

func (s *server) aclToken(w http.ResponseWriter, r *http.Request) error {
	id, err := pathAccessor(r)
	if err != nil {
		return err
	}
	if err := onlyParams(r, "consistent"); err != nil {
		return err
	}
	if err := s.beginRead(w, r); err != nil {
		return err
	}
	t, ok := s.b.View().ACLToken(id)
	if !ok {
		return tokens.Errorf(tokens.CodeNotFound, "ACL token %s does not exist", id)
	}
	writeJSON(w, http.StatusOK, toACLToken(t))
	return nil
}

// aclTokenSelf shows the caller's own token.
func (s *server) aclTokenSelf(w http.ResponseWriter, r *http.Request) error {
	if err := onlyParams(r, "consistent"); err != nil {
		return err
	}
	p, _ := PrincipalFrom(r.Context())
	if p == nil || p.Accessor == "" {
		return badRequest("this request carries no ACL token: tokens are sent over TCP as \"Authorization: Bearer <secret>\"")
	}
	if err := s.beginRead(w, r); err != nil {
		return err
	}
	t, ok := s.b.View().ACLToken(p.Accessor)
	if !ok {
		return tokens.Errorf(tokens.CodeUnauthenticated, "ACL token not found")
	}
	writeJSON(w, http.StatusOK, toACLToken(t))
	return nil
}

func (s *server) aclTokenCreate(w http.ResponseWriter, r *http.Request) error {
	if err := onlyParams(r); err != nil {
		return err
	}
	var req ACLTokenRequest
	if err := decodeBody(w, r, &req); err != nil {
		return err
	}
	tok, err := s.b.ACLTokenCreate(r.Context(), req.Description, req.Policies)
	if err != nil {
		return err
	}
	s.logger.Info("ACL token created", "accessor", tok.AccessorID)
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusCreated, tok)
	return nil
}

func (s *server) aclTokenDelete(w http.ResponseWriter, r *http.Request) error {
	id, err := pathAccessor(r)
	if err != nil {
		return err
	}
	if err := onlyParams(r); err != nil {
		return err
	}
	index, err := s.b.ACLTokenDelete(r.Context(), id)
	if err != nil {
		return err
	}
	s.logger.Info("ACL token deleted", "accessor", id)
	setIndex(w, index)
	writeJSON(w, http.StatusOK, WriteResponse{Index: index})
	return nil
}

func toACLPolicy(p *tokens.ACLPolicy) ACLPolicy {
	pools := p.Pools
	if pools == nil {
		pools = []tokens.PoolRule{}
	}
	return ACLPolicy{Name: p.Name, Description: p.Description, Pools: pools, Operator: p.Operator, CreateIndex: p.CreateIndex, ModifyIndex: p.ModifyIndex}
}

// toACLToken shows a token: never its secret, nor the secret's hash.
func toACLToken(t *tokens.ACLToken) ACLToken {
	return ACLToken{AccessorID: t.AccessorID, Description: t.Description, Policies: t.Policies, Management: t.Management, CreatedAt: t.CreatedAt, CreateIndex: t.CreateIndex}
}
