// Package tokens is the domain of tokend: pools, tokens, their health, and the
// pure rules that pick a token to serve. It depends on the standard library
// only, takes the time as an argument, and never does I/O.
//
// The JSON field names of Pool and Token are part of the replicated state's
// encoding (Raft log and snapshots): rename a field and old entries no longer
// decode into it.
package tokens

import "time"

// SelectionPolicy chooses among a pool's eligible tokens.
type SelectionPolicy string

const (
	// SelectPriority serves the token with the lowest priority number; the
	// rest are backups. The default.
	SelectPriority SelectionPolicy = "priority"
	// SelectRoundRobin spreads fetches over every eligible token in turn.
	SelectRoundRobin SelectionPolicy = "round_robin"
	// SelectLeastUsed serves the eligible token this agent has served least.
	SelectLeastUsed SelectionPolicy = "least_used"
	// SelectRandom picks uniformly among the eligible tokens.
	SelectRandom SelectionPolicy = "random"
)

// SelectionPolicies lists every policy, the default first.
var SelectionPolicies = []SelectionPolicy{SelectPriority, SelectRoundRobin, SelectLeastUsed, SelectRandom}

// Lifecycle is where a token is in its life; it changes only through Raft.
type Lifecycle string

const (
	LifecycleActive Lifecycle = "active"
	// LifecycleRetiring: replaced, still valid until RetireAt, served only
	// when no active token is eligible, then revoked and removed.
	LifecycleRetiring Lifecycle = "retiring"
	LifecycleRevoked  Lifecycle = "revoked"
	// LifecycleOrphaned: issued by a rotation that was closed before it
	// could record the token (a deposed leader's late result). Never
	// served; revoked and removed like a retiring token.
	LifecycleOrphaned Lifecycle = "orphaned"
)

// HealthState says whether a token may be served.
type HealthState string

const (
	Healthy  HealthState = "healthy"
	Degraded HealthState = "degraded"
	Cooldown HealthState = "cooldown"
	Failed   HealthState = "failed"
)

// Health is a token's health and why it is so.
type Health struct {
	State  HealthState `json:"state"`
	Reason string      `json:"reason,omitempty"`
	// Since is when the token entered State.
	Since time.Time `json:"since,omitzero"`
	// Until ends a cooldown. A cooldown whose Until has passed is healthy
	// again without any write.
	Until    time.Time `json:"until,omitzero"`
	Reporter string    `json:"reporter,omitempty"`
}

// ProviderType names how a pool's tokens are issued.
type ProviderType string

// Provider types.
const (
	// ProviderStatic: operators add tokens; tokend tracks, checks and fails
	// over, and alerts when one is due, but never issues.
	ProviderStatic ProviderType = "static"
	// ProviderExec runs a command that prints a token, like
	// credential_process.
	ProviderExec ProviderType = "exec"
	// ProviderOAuth2 runs the OAuth 2.0 client-credentials grant.
	ProviderOAuth2 ProviderType = "oauth2"
	// ProviderHTTP calls an issuing endpoint.
	ProviderHTTP ProviderType = "http"
)

// ProviderTypes lists every provider type.
var ProviderTypes = []ProviderType{ProviderStatic, ProviderExec, ProviderOAuth2, ProviderHTTP}

// Pool is a named set of interchangeable tokens for one upstream API.
type Pool struct {
	Name       string            `json:"name"`
	Selection  SelectionPolicy   `json:"selection"`
	MinHealthy int               `json:"min_healthy"`
	Provider   ProviderSpec      `json:"provider"`
	Labels     map[string]string `json:"labels,omitempty"`
	// Health holds the pool's rules for reports; zero fields are defaults.
	Health HealthPolicy `json:"health,omitzero"`
	// Size is how many active tokens the leader keeps issued, for a
	// provider that issues (default 2).
	Size int `json:"size,omitempty"`
	// Rotation says when tokens are replaced; zero fields are defaults.
	Rotation RotationPolicy `json:"rotation,omitzero"`
	// HealthCheck, when set, has the leader probe every token.
	HealthCheck *HealthCheck `json:"health_check,omitempty"`
	// AllowUIDs and AllowGIDs, when either is set, admit only those users
	// and groups to the pool over the unix socket (the agent's own user and
	// root always); otherwise the socket's mode and group decide.
	AllowUIDs []int `json:"allow_uids,omitempty"`
	AllowGIDs []int `json:"allow_gids,omitempty"`

	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
	CreateIndex uint64    `json:"create_index"`
	ModifyIndex uint64    `json:"modify_index"`
}

// Token is one separately issued credential in a pool. Values reachable from
// the replicated state are shared by concurrent readers and never mutated;
// a change makes a new Token.
type Token struct {
	ID   string `json:"id"`
	Pool string `json:"pool"`
	// Value is sealed: only an agent holding the keyring opens it.
	Value Sealed `json:"value"`
	// Fingerprint detects a value added twice without comparing secrets:
	// a keyed HMAC, see Keyring.Fingerprint.
	Fingerprint string `json:"fingerprint"`
	// Priority orders tokens for the priority policy: lower is preferred.
	Priority  int               `json:"priority"`
	Labels    map[string]string `json:"labels,omitempty"`
	ExpiresAt time.Time         `json:"expires_at,omitzero"`
	NotBefore time.Time         `json:"not_before,omitzero"`
	Lifecycle Lifecycle         `json:"lifecycle"`
	Health    Health            `json:"health"`
	// Metadata is what the provider said about the token (issuer, scopes,
	// client id); never secret.
	Metadata map[string]string `json:"metadata,omitempty"`
	// RotationID names the rotation that issued the token, and Generation
	// its place in the pool's sequence of rotations; empty and zero for
	// tokens an operator added.
	RotationID string `json:"rotation_id,omitempty"`
	Generation uint64 `json:"generation,omitempty"`
	// RetireAt is when a retiring or orphaned token is revoked and removed.
	RetireAt time.Time `json:"retire_at,omitzero"`

	CreatedAt   time.Time `json:"created_at"`
	CreateIndex uint64    `json:"create_index"`
	ModifyIndex uint64    `json:"modify_index"`
}

// Less orders tokens the way the priority policy prefers them: lower
// priority first, then older first, then by id so the order is total.
func Less(a, b *Token) bool {
	if a.Priority != b.Priority {
		return a.Priority < b.Priority
	}
	if a.CreateIndex != b.CreateIndex {
		return a.CreateIndex < b.CreateIndex
	}
	return a.ID < b.ID
}
