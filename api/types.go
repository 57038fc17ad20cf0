package api

import (
	"time"

	"github.com/tokend/tokend/tokens"
)

// Wire types of the HTTP API, shared by the server and api/client. Field
// names are the API contract.

// PoolRequest is the body of PUT /v1/pools/{pool}.
type PoolRequest struct {
	Selection  string            `json:"selection,omitempty"`
	MinHealthy int               `json:"min_healthy,omitempty"`
	Provider   *Provider         `json:"provider,omitempty"`
	Labels     map[string]string `json:"labels,omitempty"`
	// Health tunes how reports become health; omitted fields take the
	// defaults.
	Health *tokens.HealthPolicy `json:"health,omitempty"`
	// Size is how many active tokens the leader keeps issued (default 2,
	// for a provider that issues).
	Size        int                    `json:"size,omitempty"`
	Rotation    *tokens.RotationPolicy `json:"rotation,omitempty"`
	HealthCheck *tokens.HealthCheck    `json:"health_check,omitempty"`
	// AllowUIDs and AllowGIDs restrict the pool on the unix socket.
	AllowUIDs []int `json:"allow_uids,omitempty"`
	AllowGIDs []int `json:"allow_gids,omitempty"`
}

// Provider says how a pool's tokens are issued: tokens.ProviderSpec on the
// wire, with secrets as plain strings. Secrets are write-only: a pool read
// back shows client ids and header names, never client secrets or header
// values.
type Provider struct {
	Type    string          `json:"type"`
	Timeout tokens.Duration `json:"timeout,omitzero"`
	// exec
	Command       []string `json:"command,omitempty"`
	RevokeCommand []string `json:"revoke_command,omitempty"`
	Env           []string `json:"env,omitempty"`
	// oauth2
	TokenURL     string            `json:"token_url,omitempty"`
	ClientID     string            `json:"client_id,omitempty"`
	ClientSecret string            `json:"client_secret,omitempty"`
	Clients      []OAuth2Client    `json:"clients,omitempty"`
	Scopes       []string          `json:"scopes,omitempty"`
	Params       map[string]string `json:"params,omitempty"`
	// http
	URL            string            `json:"url,omitempty"`
	Method         string            `json:"method,omitempty"`
	Headers        map[string]string `json:"headers,omitempty"`
	Body           string            `json:"body,omitempty"`
	TokenField     string            `json:"token_field,omitempty"`
	ExpiresAtField string            `json:"expires_at_field,omitempty"`
	ExpiresInField string            `json:"expires_in_field,omitempty"`
	RevokeURL      string            `json:"revoke_url,omitempty"`
}

// OAuth2Client is one client credential of an oauth2 provider.
type OAuth2Client struct {
	ClientID     string `json:"client_id"`
	ClientSecret string `json:"client_secret,omitempty"`
}

// Pool is a pool as the API shows it.
type Pool struct {
	Name       string            `json:"name"`
	Selection  string            `json:"selection"`
	MinHealthy int               `json:"min_healthy"`
	Provider   Provider          `json:"provider"`
	Labels     map[string]string `json:"labels,omitempty"`
	// Health is the pool's health policy, defaults filled in.
	Health      tokens.HealthPolicy   `json:"health"`
	Size        int                   `json:"size,omitempty"`
	Rotation    tokens.RotationPolicy `json:"rotation"`
	HealthCheck *tokens.HealthCheck   `json:"health_check,omitempty"`
	// RotationStatus records the pool's rotations: failures, backoff, last
	// success; OpenRotations are the ones in progress.
	RotationStatus tokens.RotationStatus `json:"rotation_status"`
	OpenRotations  []tokens.Rotation     `json:"open_rotations,omitempty"`
	// Tokens counts the pool's tokens; Eligible those this agent would serve
	// now.
	Tokens      int       `json:"tokens"`
	Eligible    int       `json:"eligible"`
	AllowUIDs   []int     `json:"allow_uids,omitempty"`
	AllowGIDs   []int     `json:"allow_gids,omitempty"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
	CreateIndex uint64    `json:"create_index"`
	ModifyIndex uint64    `json:"modify_index"`
}

// TokenRequest is the body of POST /v1/pools/{pool}/tokens.
type TokenRequest struct {
	Value     string            `json:"value"`
	ExpiresAt *time.Time        `json:"expires_at,omitempty"`
	NotBefore *time.Time        `json:"not_before,omitempty"`
	Priority  int               `json:"priority,omitempty"`
	Labels    map[string]string `json:"labels,omitempty"`
}

// Health is a token's health.
type Health struct {
	State    string     `json:"state"`
	Reason   string     `json:"reason,omitempty"`
	Since    *time.Time `json:"since,omitempty"`
	Until    *time.Time `json:"until,omitempty"`
	Reporter string     `json:"reporter,omitempty"`
}

// TokenInfo is a token's metadata. It never carries the value.
type TokenInfo struct {
	ID        string            `json:"id"`
	Pool      string            `json:"pool"`
	Priority  int               `json:"priority"`
	Labels    map[string]string `json:"labels,omitempty"`
	ExpiresAt *time.Time        `json:"expires_at,omitempty"`
	NotBefore *time.Time        `json:"not_before,omitempty"`
	Lifecycle string            `json:"lifecycle"`
	Health    Health            `json:"health"`
	// Metadata is what the provider said about the token; RotationID and
	// Generation name the rotation that issued it; RetireAt is when a
	// retiring token is revoked.
	Metadata   map[string]string `json:"metadata,omitempty"`
	RotationID string            `json:"rotation_id,omitempty"`
	Generation uint64            `json:"generation,omitempty"`
	RetireAt   *time.Time        `json:"retire_at,omitempty"`
	// Reports counts the reports this agent received about the token.
	Reports     *ReportStats `json:"reports,omitempty"`
	CreatedAt   time.Time    `json:"created_at"`
	CreateIndex uint64       `json:"create_index"`
	ModifyIndex uint64       `json:"modify_index"`
}

// ReportStats counts the reports one agent received about a token.
type ReportStats struct {
	OK            uint64     `json:"ok"`
	Unauthorized  uint64     `json:"unauthorized"`
	Forbidden     uint64     `json:"forbidden"`
	RateLimited   uint64     `json:"rate_limited"`
	Error         uint64     `json:"error"`
	Timeout       uint64     `json:"timeout"`
	LastLatencyMS int64      `json:"last_latency_ms,omitempty"`
	LastReportAt  *time.Time `json:"last_report_at,omitempty"`
}

// Token is the answer to GET /v1/pools/{pool}/token: the value to use.
type Token struct {
	ID        string            `json:"id"`
	Pool      string            `json:"pool"`
	Value     string            `json:"value"`
	ExpiresAt *time.Time        `json:"expires_at,omitempty"`
	Priority  int               `json:"priority"`
	Labels    map[string]string `json:"labels,omitempty"`
	Health    string            `json:"health"`
}

// ReportRequest is the body of POST /v1/pools/{pool}/tokens/{id}/report.
type ReportRequest struct {
	Outcome           string `json:"outcome"`
	RetryAfterSeconds *int   `json:"retry_after_seconds,omitempty"`
	// LatencyMS is how long the upstream call took, for ok reports.
	LatencyMS *int64 `json:"latency_ms,omitempty"`
}

// ReportResponse says what a report did. Health is the token's health on
// the agent that took the report, which applies unauthorized, forbidden and
// rate_limited at once; Changed says that changed it there. Committed says
// what the report asks for is also in the cluster's replicated state, so
// every agent acts on it: Index is the commit that holds it (this report's
// change, another report's change for the token that was being committed
// when this one reached the leader, or the token's last modification when
// the state already held it), and this agent has applied it. Pending says
// why not yet (no leader, a report quorum not reached, the pool's last
// eligible token, the commit it waited for failed). ok, error and timeout
// reports only count toward degraded, which the leader decides: they come
// back with changed and committed both false.
type ReportResponse struct {
	Pool      string `json:"pool"`
	ID        string `json:"id"`
	Health    Health `json:"health"`
	Changed   bool   `json:"changed"`
	Committed bool   `json:"committed"`
	Index     uint64 `json:"index,omitempty"`
	Pending   string `json:"pending,omitempty"`
}

// Events is the answer to GET /v1/events.
type Events struct {
	// Index is the Raft index this agent had applied: pass it as since to
	// wait for what comes next.
	Index  uint64         `json:"index"`
	Events []tokens.Event `json:"events"`
	// Truncated says events after since were already dropped from the
	// bounded log.
	Truncated bool `json:"truncated,omitempty"`
}

// RotateResponse answers POST /v1/pools/{pool}/rotate: the rotations the
// leader opened; their results arrive as events.
type RotateResponse struct {
	Rotations []string `json:"rotations"`
}

// Alert is a condition the leader watches for, while it holds. Name is one
// of token_expiring, rotation_failing, pool_below_min_healthy,
// token_degraded, static_token_due.
type Alert struct {
	Name     string `json:"name"`
	Pool     string `json:"pool"`
	Token    string `json:"token,omitempty"`
	Severity string `json:"severity"`
	Summary  string `json:"summary"`
	// Since is when the condition began to hold; LastSent when the sinks
	// were last told.
	Since    time.Time  `json:"since"`
	LastSent *time.Time `json:"last_sent,omitempty"`
}

// Alerts is the answer to GET /v1/alerts: what the leader has firing.
type Alerts struct {
	Leader string  `json:"leader"`
	Alerts []Alert `json:"alerts"`
}

// WriteResponse answers a write with no other result.
type WriteResponse struct {
	Index uint64 `json:"index"`
}

// AgentHealth is the answer to GET /v1/health.
type AgentHealth struct {
	Status        string `json:"status"`
	Node          string `json:"node"`
	ID            string `json:"id"`
	RaftState     string `json:"raft_state"`
	KnownLeader   bool   `json:"known_leader"`
	AppliedIndex  uint64 `json:"applied_index"`
	LastContactMS int64  `json:"last_contact_ms"`
	// MissingKeys lists keys the cluster's secrets are sealed with that
	// this agent lacks; Status is then "missing_keys".
	MissingKeys []string `json:"missing_keys,omitempty"`
}

// Leader is the answer to GET /v1/status/leader; empty fields mean no
// leader is known.
type Leader struct {
	ID       string `json:"id"`
	Node     string `json:"node"`
	RaftAddr string `json:"raft_addr"`
}

// Peer is one server in the Raft configuration.
type Peer struct {
	ID       string `json:"id"`
	Node     string `json:"node"`
	Address  string `json:"address"`
	Suffrage string `json:"suffrage"`
	Leader   bool   `json:"leader"`
}

// Member is one agent as gossip sees it.
type Member struct {
	Name       string    `json:"name"`
	ID         string    `json:"id"`
	Status     string    `json:"status"`
	GossipAddr string    `json:"gossip_addr"`
	RaftAddr   string    `json:"raft_addr"`
	APIAddr    string    `json:"api_addr,omitempty"`
	Region     string    `json:"region,omitempty"`
	Zone       string    `json:"zone,omitempty"`
	Voter      bool      `json:"voter"`
	Since      time.Time `json:"since"`
}

// Keyring is the answer to GET /v1/operator/keyring.
type Keyring struct {
	// Primary is the key the cluster seals new secrets with.
	Primary string `json:"primary"`
	// Secrets counts the secrets sealed with each key ("unsealed": written
	// before tokend sealed them).
	Secrets map[string]int `json:"secrets"`
	Nodes   []NodeKeyring  `json:"nodes"`
}

// NodeKeyring is one agent's keyring: key ids, never keys.
type NodeKeyring struct {
	Node string   `json:"node"`
	Keys []string `json:"keys,omitempty"`
	// Default is the key the agent seals with until the cluster chose one.
	Default string `json:"default,omitempty"`
	// Persisted says whether changes are saved to the agent's key file;
	// NotPersisted says why not.
	Persisted    bool   `json:"persisted"`
	NotPersisted string `json:"not_persisted,omitempty"`
	// Error is why the agent could not be asked or could not comply.
	Error string `json:"error,omitempty"`
}

// KeyringChange is the answer to a keyring change.
type KeyringChange struct {
	KeyID string        `json:"key_id"`
	Index uint64        `json:"index,omitempty"`
	Nodes []NodeKeyring `json:"nodes"`
}

// KeyringInstallRequest is the body of POST /v1/operator/keyring.
type KeyringInstallRequest struct {
	Key string `json:"key"`
}

// GossipKeyring is the answer to GET /v1/operator/gossip-keyring: each
// agent's gossip keys, by id.
type GossipKeyring struct {
	Nodes []NodeGossipKeyring `json:"nodes"`
}

// NodeGossipKeyring is one agent's gossip keyring: key ids, never keys.
type NodeGossipKeyring struct {
	Node string `json:"node"`
	// Keys are the ids of the agent's gossip keys, its primary first.
	Keys []string `json:"keys,omitempty"`
	// Primary is the key the agent encrypts gossip with.
	Primary string `json:"primary,omitempty"`
	// Persisted says whether changes are saved in the agent's data dir;
	// NotPersisted says why not.
	Persisted    bool   `json:"persisted"`
	NotPersisted string `json:"not_persisted,omitempty"`
	// Error is why the agent could not be asked or could not comply.
	Error string `json:"error,omitempty"`
}

// GossipKeyringChange is the answer to a gossip keyring change.
type GossipKeyringChange struct {
	KeyID string              `json:"key_id"`
	Nodes []NodeGossipKeyring `json:"nodes"`
}

// ACLPolicyRequest is the body of PUT /v1/acl/policies/{name}.
type ACLPolicyRequest struct {
	Description string            `json:"description,omitempty"`
	Pools       []tokens.PoolRule `json:"pools,omitempty"`
	Operator    bool              `json:"operator,omitempty"`
}

// ACLPolicy is a policy as the API shows it.
type ACLPolicy struct {
	Name        string            `json:"name"`
	Description string            `json:"description,omitempty"`
	Pools       []tokens.PoolRule `json:"pools"`
	Operator    bool              `json:"operator"`
	CreateIndex uint64            `json:"create_index"`
	ModifyIndex uint64            `json:"modify_index"`
}

// ACLTokenRequest is the body of POST /v1/acl/tokens.
type ACLTokenRequest struct {
	Description string   `json:"description,omitempty"`
	Policies    []string `json:"policies"`
}

// ACLToken is a token as listings show it: never its secret.
type ACLToken struct {
	AccessorID  string    `json:"accessor_id"`
	Description string    `json:"description,omitempty"`
	Policies    []string  `json:"policies,omitempty"`
	Management  bool      `json:"management,omitempty"`
	CreatedAt   time.Time `json:"created_at"`
	CreateIndex uint64    `json:"create_index"`
}

// ACLTokenSecret is the answer to a token's creation, and the one place its
// secret is ever shown.
type ACLTokenSecret struct {
	AccessorID  string   `json:"accessor_id"`
	SecretID    string   `json:"secret_id"`
	Description string   `json:"description,omitempty"`
	Policies    []string `json:"policies,omitempty"`
	Management  bool     `json:"management,omitempty"`
	Index       uint64   `json:"index"`
}

// AuditEvent is one denied request or admin action on one agent. It names
// the principal (acl:<accessor>, uid:<uid>, anonymous:<ip>), never a secret.
type AuditEvent struct {
	At        time.Time `json:"at"`
	Node      string    `json:"node"`
	Principal string    `json:"principal"`
	PID       int       `json:"pid,omitempty"`
	Remote    string    `json:"remote"`
	// Action is the method and route, e.g. "PUT /v1/pools/{pool}".
	Action string `json:"action"`
	// Target names what it acted on: "pool=github id=tok_1".
	Target string `json:"target,omitempty"`
	// Result is ok, denied or failed; Code is the error's code.
	Result string `json:"result"`
	Status int    `json:"status"`
	Code   string `json:"code,omitempty"`
}

// ErrorResponse is the body of every error.
type ErrorResponse struct {
	Error ErrorBody `json:"error"`
}

// ErrorBody says what went wrong, in a stable code and a message for people.
type ErrorBody struct {
	Code    string     `json:"code"`
	Message string     `json:"message"`
	RetryAt *time.Time `json:"retry_at,omitempty"`
}

// Response headers that say how fresh a read is.
const (
	HeaderIndex       = "X-Tokend-Index"
	HeaderKnownLeader = "X-Tokend-Known-Leader"
	HeaderLastContact = "X-Tokend-Last-Contact"
	HeaderTokenID     = "X-Tokend-Token-Id"
	// HeaderConsistent is "true" on a consistent read (?consistent):
	// the leader confirmed it, and this agent had applied everything the
	// cluster had committed when the request arrived.
	HeaderConsistent = "X-Tokend-Consistent"
)

// Error codes the API adds to those of package tokens.
const (
	CodeBodyTooLarge     = "body_too_large"
	CodeMethodNotAllowed = "method_not_allowed"
	CodeInternal         = "internal"
)
