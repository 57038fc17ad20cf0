package api

import "time"

// Wire types of the HTTP API, shared by the server and api/client. Field
// names are the API contract.

// PoolRequest is the body of PUT /v1/pools/{pool}.
type PoolRequest struct {
	Selection  string            `json:"selection,omitempty"`
	MinHealthy int               `json:"min_healthy,omitempty"`
	Provider   *Provider         `json:"provider,omitempty"`
	Labels     map[string]string `json:"labels,omitempty"`
}

// Provider says how a pool's tokens are issued.
type Provider struct {
	Type string `json:"type"`
}

// Pool is a pool as the API shows it.
type Pool struct {
	Name       string            `json:"name"`
	Selection  string            `json:"selection"`
	MinHealthy int               `json:"min_healthy"`
	Provider   Provider          `json:"provider"`
	Labels     map[string]string `json:"labels,omitempty"`
	// Tokens counts the pool's tokens; Eligible those this agent would serve
	// now.
	Tokens      int       `json:"tokens"`
	Eligible    int       `json:"eligible"`
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
	ID          string            `json:"id"`
	Pool        string            `json:"pool"`
	Priority    int               `json:"priority"`
	Labels      map[string]string `json:"labels,omitempty"`
	ExpiresAt   *time.Time        `json:"expires_at,omitempty"`
	NotBefore   *time.Time        `json:"not_before,omitempty"`
	Lifecycle   string            `json:"lifecycle"`
	Health      Health            `json:"health"`
	CreatedAt   time.Time         `json:"created_at"`
	CreateIndex uint64            `json:"create_index"`
	ModifyIndex uint64            `json:"modify_index"`
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
}

// ReportResponse says what a report did. Health is the token's health on
// the agent that took the report, which applies it at once; Committed says
// whether the change has also gone through Raft to every agent.
type ReportResponse struct {
	Pool      string `json:"pool"`
	ID        string `json:"id"`
	Health    Health `json:"health"`
	Changed   bool   `json:"changed"`
	Committed bool   `json:"committed"`
	Index     uint64 `json:"index,omitempty"`
	// Pending explains why a change is not committed yet; the agent keeps
	// retrying it.
	Pending string `json:"pending,omitempty"`
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
)

// Error codes the API adds to those of package tokens.
const (
	CodeBodyTooLarge     = "body_too_large"
	CodeMethodNotAllowed = "method_not_allowed"
	CodeInternal         = "internal"
)
