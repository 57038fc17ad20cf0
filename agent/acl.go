package agent

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/tokend/tokend/api"
	"github.com/tokend/tokend/fsm"
	"github.com/tokend/tokend/tokens"
)

func (v *view) Authorizer(secretHash string) (*tokens.Authorizer, *tokens.ACLToken, bool) {
	return v.state.Authorizer(secretHash)
}
func (v *view) ACLPolicies() []*tokens.ACLPolicy { return v.state.ACLPolicies() }
func (v *view) ACLPolicy(name string) (*tokens.ACLPolicy, bool) {
	return v.state.ACLPolicy(name)
}
func (v *view) ACLTokens() []*tokens.ACLToken { return v.state.ACLTokens() }
func (v *view) ACLToken(accessor string) (*tokens.ACLToken, bool) {
	return v.state.ACLToken(accessor)
}

// authHash is the hash of the ACL token secret the request in ctx came
// with; empty for socket callers and when ACLs are off.
func authHash(ctx context.Context) string {
	if p, ok := api.PrincipalFrom(ctx); ok && p != nil {
		return p.SecretHash
	}
	return ""
}

// principalName names the principal of the request in ctx, for records:
// an ACL token or a socket user; fallback for anyone else.
func principalName(ctx context.Context, fallback string) string {
	if p, ok := api.PrincipalFrom(ctx); ok && p != nil && (p.Accessor != "" || p.Socket) {
		return p.String()
	}
	return fallback
}

// recheck is the leader's check of a request another agent authorized:
// the ACL token must still exist and grant c on pool. An empty hash came
// from a socket caller or with ACLs off, where that agent decided alone.
func recheck(s *fsm.State, hash, pool string, c tokens.Capability) error {
	if hash == "" {
		return nil
	}
	authz, tok, ok := s.Authorizer(hash)
	if !ok {
		return tokens.Errorf(tokens.CodeUnauthenticated, "the ACL token this request came with no longer exists")
	}
	if !authz.Pool(pool, c) {
		return tokens.Errorf(tokens.CodePermissionDenied, "ACL token %s no longer grants %s on pool %q", tok.AccessorID, c, pool)
	}
	return nil
}

func (b *backend) ACLBootstrap(ctx context.Context) (api.ACLTokenSecret, error) {
	if b.a.fsm.State().ACLBootstrapped() {
		return api.ACLTokenSecret{}, tokens.Errorf(tokens.CodeConflict, "ACLs were bootstrapped already: the management token was handed out once; create tokens with it")
	}
	secret, accessor := tokens.NewACLSecret()
	t := tokens.ACLToken{AccessorID: accessor, SecretHash: tokens.HashACLSecret(secret), Description: "bootstrap management token", Management: true}
	// Not authorized: there is no token yet, and the state machine lets it
	// through once.
	entry, err := fsm.Encode(fsm.ACLBootstrapType, fsm.ACLTokenRequest{Token: t, At: time.Now()})
	if err != nil {
		return api.ACLTokenSecret{}, err
	}
	index, err := b.a.cluster.Apply(ctx, entry)
	if err != nil {
		return api.ACLTokenSecret{}, err
	}
	return api.ACLTokenSecret{AccessorID: accessor, SecretID: secret, Description: t.Description, Management: true, Index: index}, nil
}

func (b *backend) ACLPolicyApply(ctx context.Context, p tokens.ACLPolicy) (uint64, error) {
	return b.apply(ctx, fsm.ACLPolicyUpsertType, fsm.ACLPolicyUpsertRequest{Policy: p, At: time.Now()})
}

func (b *backend) ACLPolicyDelete(ctx context.Context, name string) (uint64, error) {
	return b.apply(ctx, fsm.ACLPolicyDeleteType, fsm.ACLNameRequest{Name: name, At: time.Now()})
}

func (b *backend) ACLTokenCreate(ctx context.Context, description string, policies []string) (api.ACLTokenSecret, error) {
	secret, accessor := tokens.NewACLSecret()
	t := tokens.ACLToken{AccessorID: accessor, SecretHash: tokens.HashACLSecret(secret), Description: description, Policies: policies}
	if err := t.Validate(); err != nil {
		return api.ACLTokenSecret{}, err
	}
	index, err := b.apply(ctx, fsm.ACLTokenCreateType, fsm.ACLTokenRequest{Token: t, At: time.Now()})
	if err != nil {
		return api.ACLTokenSecret{}, err
	}
	return api.ACLTokenSecret{AccessorID: accessor, SecretID: secret, Description: description, Policies: policies, Index: index}, nil
}

func (b *backend) ACLTokenDelete(ctx context.Context, accessor string) (uint64, error) {
	return b.apply(ctx, fsm.ACLTokenDeleteType, fsm.ACLNameRequest{Name: accessor, At: time.Now()})
}

// auditLog keeps this agent's newest audit events and logs each one.
type auditLog struct {
	mu     sync.Mutex
	events []api.AuditEvent
	next   int
	full   bool
}

func (l *auditLog) add(e api.AuditEvent) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.events == nil {
		l.events = make([]api.AuditEvent, api.MaxAuditEvents)
	}
	l.events[l.next] = e
	l.next = (l.next + 1) % len(l.events)
	l.full = l.full || l.next == 0
}

// last returns the newest limit events, oldest first.
func (l *auditLog) last(limit int) []api.AuditEvent {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []api.AuditEvent
	if l.full {
		out = append(out, l.events[l.next:]...)
	}
	out = append(out, l.events[:l.next]...)
	if len(out) > limit {
		out = out[len(out)-limit:]
	}
	return slices.Clone(out)
}

func (b *backend) Audit(e api.AuditEvent) {
	e.Node = b.a.cfg.NodeName
	b.a.audit.add(e)
	b.a.auditLogger.Info("request", "principal", e.Principal, "pid", e.PID, "remote", e.Remote, "action", e.Action,
		"target", e.Target, "result", e.Result, "status", e.Status, "code", e.Code)
}

func (b *backend) AuditLog(limit int) []api.AuditEvent { return b.a.audit.last(limit) }
