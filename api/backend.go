// Package api serves tokend's HTTP API. The same handler serves the TCP
// listener and the unix socket. Reads are answered from the agent's local
// state and never wait for Raft, unless the client asks for a consistent
// read (?consistent), which first waits for the leader's read index; writes
// go through the Backend, which commits them (forwarding to the leader when
// needed) before the handler answers.
package api

import (
	"context"
	"net/http"
	"time"

	"github.com/tokend/tokend/tokens"
)

// Backend is what the API needs from the agent.
type Backend interface {
	// View returns a consistent read of the replicated state and this
	// agent's overlay; it never blocks.
	View() View
	// Freshness says how current the local state is.
	Freshness() Freshness
	// ConsistentRead waits until this agent has applied everything the
	// cluster had committed when it was called, as the leader confirms
	// with a quorum round (Raft's ReadIndex), and returns when the leader
	// confirmed. It fails within a bounded wait when no leader can.
	ConsistentRead(ctx context.Context) (confirmed time.Time, err error)

	ApplyPool(ctx context.Context, p tokens.Pool) (uint64, error)
	DeletePool(ctx context.Context, name string, force bool) (uint64, error)
	// AddToken seals value into the token, fills in its id and returns it
	// with the index.
	AddToken(ctx context.Context, t tokens.Token, value tokens.Secret) (string, uint64, error)
	RemoveToken(ctx context.Context, pool, id string) (uint64, error)
	// Report applies a report locally at once and sends it to the leader,
	// which decides and commits any change.
	Report(ctx context.Context, pool, id string, outcome tokens.Outcome, retryAfter, latency time.Duration) (ReportResponse, error)
	// ResetToken makes a token healthy again on an operator's word.
	ResetToken(ctx context.Context, pool, id string) (uint64, error)
	// Alerts returns what the leader has firing.
	Alerts(ctx context.Context) (Alerts, error)
	// Rotate has the leader rotate one token of a pool now, or every
	// active one when token is empty, and returns the rotations' ids.
	Rotate(ctx context.Context, pool, token string) ([]string, error)
	// Events returns up to limit events after since, waiting up to wait
	// for the first one.
	Events(ctx context.Context, since uint64, limit int, wait time.Duration) (Events, error)
	// Keyring lists every agent's keys and how many secrets each seals.
	Keyring(ctx context.Context) (Keyring, error)
	// KeyringInstall adds a key to every agent's keyring.
	KeyringInstall(ctx context.Context, key string) (KeyringChange, error)
	// KeyringUse makes every agent seal new secrets with key id, which
	// every agent must hold; the leader then seals the others again.
	// force passes over failed agents.
	KeyringUse(ctx context.Context, id string, force bool) (KeyringChange, error)
	// KeyringRemove removes key id from every agent once nothing is
	// sealed with it.
	KeyringRemove(ctx context.Context, id string) (KeyringChange, error)
	// GossipKeyring lists every agent's gossip keys.
	GossipKeyring(ctx context.Context) (GossipKeyring, error)
	// GossipKeyringInstall adds a gossip key to every agent.
	GossipKeyringInstall(ctx context.Context, key string) (GossipKeyringChange, error)
	// GossipKeyringUse makes every agent encrypt gossip with key id, which
	// every agent must hold; force passes over failed agents.
	GossipKeyringUse(ctx context.Context, id string, force bool) (GossipKeyringChange, error)
	// GossipKeyringRemove removes key id from every agent, once no agent
	// encrypts with it.
	GossipKeyringRemove(ctx context.Context, id string) (GossipKeyringChange, error)
	// ACLBootstrap creates the management token, once.
	ACLBootstrap(ctx context.Context) (ACLTokenSecret, error)
	ACLPolicyApply(ctx context.Context, p tokens.ACLPolicy) (uint64, error)
	ACLPolicyDelete(ctx context.Context, name string) (uint64, error)
	// ACLTokenCreate creates a token with a new secret, returned once.
	ACLTokenCreate(ctx context.Context, description string, policies []string) (ACLTokenSecret, error)
	ACLTokenDelete(ctx context.Context, accessor string) (uint64, error)
	// SaveSnapshot returns the leader's state as it is now, as the
	// payload of a snapshot file, and the file's header. It refuses while
	// any secret in the state is not sealed, so a file never holds one.
	SaveSnapshot(ctx context.Context) (SnapshotInfo, []byte, error)
	// RestoreSnapshot makes a snapshot file's state the state of every
	// agent, through the leader, once it has checked all of it: every
	// record, and that every agent's keyring opens every sealed value.
	// Anything it refuses changes nothing.
	RestoreSnapshot(ctx context.Context, file *SnapshotFile) (SnapshotRestored, error)
	// Audit records a denied request or an admin action; AuditLog returns
	// the newest limit of them, oldest first.
	Audit(e AuditEvent)
	AuditLog(limit int) []AuditEvent
	// WaitForChange blocks until the state moves past index or ctx ends.
	WaitForChange(ctx context.Context, index uint64)

	// ObserveFetch records one token fetch: its pool, result (ok or the
	// error code) and duration.
	ObserveFetch(pool, result string, d time.Duration)
	// Metrics serves the agent's Prometheus metrics.
	Metrics() http.Handler

	Health() AgentHealth
	Leader() Leader
	Peers() ([]Peer, error)
	Members() []Member
}

// View is one immutable version of the state as this agent sees it.
type View interface {
	Pools() []*tokens.Pool
	Pool(name string) (*tokens.Pool, []*tokens.Token, bool)
	// Select picks the token to serve from a pool.
	Select(pool string, exclude []string) (*tokens.Token, error)
	// Open returns a token's value, opened with this agent's keyring.
	Open(t *tokens.Token) (tokens.Secret, error)
	// Health is a token's health with this agent's overlay applied.
	Health(t *tokens.Token) tokens.Health
	// Eligible reports whether this agent would serve t now.
	Eligible(t *tokens.Token) bool
	// ReportStats counts the reports this agent received about t.
	ReportStats(t *tokens.Token) *ReportStats
	// Authorizer resolves the ACL token whose secret hashes to secretHash.
	Authorizer(secretHash string) (*tokens.Authorizer, *tokens.ACLToken, bool)
	ACLPolicies() []*tokens.ACLPolicy
	ACLPolicy(name string) (*tokens.ACLPolicy, bool)
	ACLTokens() []*tokens.ACLToken
	ACLToken(accessor string) (*tokens.ACLToken, bool)
	// Rotations returns a pool's open rotations and rotation record.
	Rotations(pool string) ([]*tokens.Rotation, tokens.RotationStatus)
	Now() time.Time
}

// Freshness is how current an agent's state is.
type Freshness struct {
	AppliedIndex uint64
	KnownLeader  bool
	// LastContact is the time since the leader was last heard from: 0 on
	// the leader, negative if never.
	LastContact time.Duration
}
