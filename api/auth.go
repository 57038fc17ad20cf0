package api

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/tokend/tokend/tokens"
)

// PeerCred is the process on the other end of a unix socket connection, as the
// kernel reports it (SO_PEERCRED). UID -1 means it could not be told.
type PeerCred struct {
	UID, GID, PID int
}

type peerKey struct{}

// WithPeer marks ctx as a unix socket connection's, from peer. The agent
// sets it in the socket server's ConnContext; requests whose context lacks
// it came over TCP.
func WithPeer(ctx context.Context, p PeerCred) context.Context {
	return context.WithValue(ctx, peerKey{}, p)
}

// Principal is who sent a request.
type Principal struct {
	// Socket is set for a unix socket caller, identified by Peer.
	Socket bool
	Peer   PeerCred
	// Accessor names the ACL token of a TCP caller; SecretHash is the hash
	// of its secret, which writes carry to the leader to be checked again.
	Accessor   string
	SecretHash string
	// Remote is a TCP caller's address.
	Remote string
	authz  *tokens.Authorizer
}

// String names the principal in audit events and logs; never a secret.
func (p *Principal) String() string {
	switch {
	case p == nil:
		return "anonymous"
	case p.Socket:
		return fmt.Sprintf("uid:%d", p.Peer.UID)
	case p.Accessor != "":
		return "acl:" + p.Accessor
	}
	return "anonymous:" + p.Remote
}

type principalKey struct{}

// PrincipalFrom returns the principal of the request ctx belongs to.
func PrincipalFrom(ctx context.Context) (*Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(*Principal)
	return p, ok
}

// access says who may call an endpoint.
type access int

const (
	// accessOpen: anyone, token or not (health, ACL bootstrap).
	accessOpen access = iota
	// accessAny: any authenticated caller; the handler filters what it
	// shows (the pool list).
	accessAny
	// accessPoolView shows a pool's or its tokens' metadata: read or write.
	accessPoolView
	// accessPoolRead fetches tokens.
	accessPoolRead
	accessPoolReport
	accessPoolWrite
	// accessClusterRead: members, status, events, alerts, metrics. Over
	// TCP the operator capability; over the socket anyone who can connect.
	accessClusterRead
	// accessOperator: the keyring, ACLs, the audit log. Over TCP the
	// operator capability; over the socket root or the agent's own user.
	accessOperator
)

// HeaderToken carries an ACL token's secret, as does "Authorization:
// Bearer".
const HeaderToken = "X-Tokend-Token"

// Options configure the API.
type Options struct {
	// ACL requires an ACL token on the TCP listener.
	ACL bool
	// ReportRate and ReportBurst limit each principal's reports; zero takes
	// DefaultReportRate and DefaultReportBurst.
	ReportRate  float64
	ReportBurst int
}

// Report limits per principal.
const (
	DefaultReportRate  = 100
	DefaultReportBurst = 200
)

// secret returns the ACL token secret a request carries.
func secret(r *http.Request) string {
	if v := r.Header.Get(HeaderToken); v != "" {
		return strings.TrimSpace(v)
	}
	if v, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		return strings.TrimSpace(v)
	}
	return ""
}

// authenticate finds who sent r. A TCP request without a token, when ACLs
// are on, has a nil principal.
func (s *server) authenticate(r *http.Request) (*Principal, error) {
	if peer, ok := r.Context().Value(peerKey{}).(PeerCred); ok {
		return &Principal{Socket: true, Peer: peer}, nil
	}
	remote, _, _ := net.SplitHostPort(r.RemoteAddr)
	if !s.opts.ACL {
		return &Principal{Remote: remote, authz: tokens.AllowAll()}, nil
	}
	sec := secret(r)
	if sec == "" {
		return nil, nil
	}
	hash := tokens.HashACLSecret(sec)
	authz, tok, ok := s.b.View().Authorizer(hash)
	if !ok {
		return nil, tokens.Errorf(tokens.CodeUnauthenticated, "ACL token not found: it was deleted, or the secret is wrong")
	}
	return &Principal{Accessor: tok.AccessorID, SecretHash: hash, Remote: remote, authz: authz}, nil
}

// authorize reports why p may not call an endpoint with access a, if it
// may not.
func (s *server) authorize(p *Principal, a access, r *http.Request) error {
	if a == accessOpen {
		return nil
	}
	if p == nil {
		return tokens.Errorf(tokens.CodeUnauthenticated, "this endpoint needs an ACL token: send it as \"Authorization: Bearer <secret>\" or %s (the CLI reads TOKEND_TOKEN)", HeaderToken)
	}
	if p.Socket {
		return s.authorizeSocket(p, a, r)
	}
	var capability tokens.Capability
	switch a {
	case accessAny:
		return nil
	case accessClusterRead, accessOperator:
		if p.authz.Operator() {
			return nil
		}
		return tokens.Errorf(tokens.CodePermissionDenied, "ACL token %s does not grant operator, which %s %s needs", p.Accessor, r.Method, r.Pattern)
	case accessPoolView:
		pool := r.PathValue("pool")
		if p.authz.Pool(pool, tokens.CapRead) || p.authz.Pool(pool, tokens.CapWrite) {
			return nil
		}
		return tokens.Errorf(tokens.CodePermissionDenied, "ACL token %s grants neither read nor write on pool %q", p.Accessor, pool)
	case accessPoolRead:
		capability = tokens.CapRead
	case accessPoolReport:
		capability = tokens.CapReport
	case accessPoolWrite:
		capability = tokens.CapWrite
	}
	pool := r.PathValue("pool")
	if p.authz.Pool(pool, capability) {
		return nil
	}
	return tokens.Errorf(tokens.CodePermissionDenied, "ACL token %s does not grant %s on pool %q", p.Accessor, capability, pool)
}

// trustedUID reports whether uid owns the agent anyway: root, or the user
// the agent runs as, who can read its data dir and keys.
func trustedUID(uid int) bool { return uid == 0 || uid == os.Geteuid() }

// authorizeSocket applies the socket's rules: whoever can connect (the
// socket's mode and group decide) may do what is not restricted; a pool
// with allow_uids or allow_gids admits only the callers they list; cluster
// operations need root or the agent's own user.
func (s *server) authorizeSocket(p *Principal, a access, r *http.Request) error {
	uid, gid := p.Peer.UID, p.Peer.GID
	switch a {
	case accessOperator:
		if trustedUID(uid) {
			return nil
		}
		return tokens.Errorf(tokens.CodePermissionDenied, "uid %d may not %s %s over the socket: cluster operations need root or the agent's user", uid, r.Method, r.Pattern)
	case accessPoolView, accessPoolRead, accessPoolReport, accessPoolWrite:
		pool, _, ok := s.b.View().Pool(r.PathValue("pool"))
		if !ok || socketAllowed(pool, p.Peer) {
			return nil
		}
		return tokens.Errorf(tokens.CodePermissionDenied, "uid %d (gid %d) may not use pool %q: its allow_uids and allow_gids do not list it", uid, gid, pool.Name)
	}
	return nil
}

// socketAllowed reports whether a socket caller may use pool.
func socketAllowed(pool *tokens.Pool, peer PeerCred) bool {
	if len(pool.AllowUIDs) == 0 && len(pool.AllowGIDs) == 0 {
		return true
	}
	if peer.UID < 0 {
		return false
	}
	return trustedUID(peer.UID) || slices.Contains(pool.AllowUIDs, peer.UID) || slices.Contains(pool.AllowGIDs, peer.GID)
}

// canRead reports whether p may see pool: the pool list shows no other.
func (p *Principal) canRead(pool *tokens.Pool) bool {
	if p.Socket {
		return socketAllowed(pool, p.Peer)
	}
	return p.authz.Pool(pool.Name, tokens.CapRead) || p.authz.Pool(pool.Name, tokens.CapWrite)
}

// reportLimiter limits reports per principal.
type reportLimiter struct {
	rate  rate.Limit
	burst int
	mu    sync.Mutex
	byKey map[string]*limiterEntry
}

type limiterEntry struct {
	lim  *rate.Limiter
	seen time.Time
}

// maxLimiters bounds the principals remembered; idle ones go first.
const maxLimiters = 10000

func newReportLimiter(r float64, burst int) *reportLimiter {
	if r <= 0 {
		r = DefaultReportRate
	}
	if burst <= 0 {
		burst = DefaultReportBurst
	}
	return &reportLimiter{rate: rate.Limit(r), burst: burst, byKey: map[string]*limiterEntry{}}
}

// allow takes one report of key, or says how long until one is allowed.
func (l *reportLimiter) allow(key string, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.byKey[key]
	if !ok {
		if len(l.byKey) >= maxLimiters {
			for k, old := range l.byKey {
				if now.Sub(old.seen) > time.Minute {
					delete(l.byKey, k)
				}
			}
			if len(l.byKey) >= maxLimiters {
				return false, time.Second
			}
		}
		e = &limiterEntry{lim: rate.NewLimiter(l.rate, l.burst)}
		l.byKey[key] = e
	}
	e.seen = now
	res := e.lim.ReserveN(now, 1)
	if d := res.DelayFrom(now); d > 0 {
		res.CancelAt(now)
		return false, d
	}
	return true, 0
}
