package fsm

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/tokend/tokend/tokens"
)

// MessageType is the first byte of every log entry. Numbers are only ever
// appended: a number, once released, keeps its meaning forever.
type MessageType uint8

const (
	PoolUpsertType      MessageType = 1
	PoolDeleteType      MessageType = 2
	TokenAddType        MessageType = 3
	TokenRemoveType     MessageType = 4
	TokenHealthType     MessageType = 5
	TokenResetType      MessageType = 6
	RotationBeginType   MessageType = 7
	RotationResumeType  MessageType = 8
	RotationCommitType  MessageType = 9
	RotationFailType    MessageType = 10
	RotationAbandonType MessageType = 11
	TokenOrphanType     MessageType = 12
	KeyringUseType      MessageType = 13
	SecretsResealType   MessageType = 14
	ACLBootstrapType    MessageType = 15
	ACLPolicyUpsertType MessageType = 16
	ACLPolicyDeleteType MessageType = 17
	ACLTokenCreateType  MessageType = 18
	ACLTokenDeleteType  MessageType = 19
	// AuthorizedType wraps a client's command with the ACL token it came
	// with; Apply checks the token before it applies the command.
	AuthorizedType MessageType = 20
	// SnapshotRestoredType records, right after Raft installed an
	// operator's snapshot on every agent, that it did so. It only adds an
	// event, so an older agent may skip it.
	SnapshotRestoredType MessageType = IgnoreUnknownTypeFlag | 21
)

// IgnoreUnknownTypeFlag marks a type that an older agent may skip safely. A
// new command that older agents must not misapply leaves it clear, so they
// reject it instead.
const IgnoreUnknownTypeFlag MessageType = 128

func (t MessageType) String() string {
	switch t {
	case PoolUpsertType:
		return "PoolUpsert"
	case PoolDeleteType:
		return "PoolDelete"
	case TokenAddType:
		return "TokenAdd"
	case TokenRemoveType:
		return "TokenRemove"
	case TokenHealthType:
		return "TokenHealth"
	case TokenResetType:
		return "TokenReset"
	case RotationBeginType:
		return "RotationBegin"
	case RotationResumeType:
		return "RotationResume"
	case RotationCommitType:
		return "RotationCommit"
	case RotationFailType:
		return "RotationFail"
	case RotationAbandonType:
		return "RotationAbandon"
	case TokenOrphanType:
		return "TokenOrphan"
	case KeyringUseType:
		return "KeyringUse"
	case SecretsResealType:
		return "SecretsReseal"
	case ACLBootstrapType:
		return "ACLBootstrap"
	case ACLPolicyUpsertType:
		return "ACLPolicyUpsert"
	case ACLPolicyDeleteType:
		return "ACLPolicyDelete"
	case ACLTokenCreateType:
		return "ACLTokenCreate"
	case ACLTokenDeleteType:
		return "ACLTokenDelete"
	case AuthorizedType:
		return "Authorized"
	case SnapshotRestoredType:
		return "SnapshotRestored"
	}
	return fmt.Sprintf("MessageType(%d)", uint8(t))
}

// Every request carries the proposer's time in At: Apply never reads a clock.

// PoolUpsertRequest creates a pool or replaces its definition.
type PoolUpsertRequest struct {
	Pool tokens.Pool `json:"pool"`
	At   time.Time   `json:"at"`
}

// PoolDeleteRequest deletes a pool; with Force, also the tokens in it.
type PoolDeleteRequest struct {
	Name  string    `json:"name"`
	Force bool      `json:"force,omitempty"`
	At    time.Time `json:"at"`
}

// TokenAddRequest adds a token whose id the proposer generated.
type TokenAddRequest struct {
	Token tokens.Token `json:"token"`
	At    time.Time    `json:"at"`
}

// TokenRemoveRequest removes a token from a pool.
type TokenRemoveRequest struct {
	Pool string    `json:"pool"`
	ID   string    `json:"id"`
	At   time.Time `json:"at"`
	// Reason says why, for the event: set by the reaper ("revoked at the
	// provider"), empty for an operator.
	Reason string `json:"reason,omitempty"`
}

// TokenHealthRequest carries the leader's health decisions. Many travel in
// one entry so the log grows with events, not traffic.
type TokenHealthRequest struct {
	Changes []HealthChange `json:"changes"`
}

// HealthChange is a health a token should move to; Apply merges it with
// tokens.Merge. Health.Since is the time of the decision.
type HealthChange struct {
	Pool    string        `json:"pool"`
	TokenID string        `json:"token_id"`
	Health  tokens.Health `json:"health"`
}

// TokenResetRequest is an operator bringing a token back to healthy.
type TokenResetRequest struct {
	Pool string    `json:"pool"`
	ID   string    `json:"id"`
	By   string    `json:"by"`
	At   time.Time `json:"at"`
}

// RotationBeginRequest opens a rotation before the provider is called. Its
// Generation must follow the pool's last one, so that two leaders' plans
// cannot both open.
type RotationBeginRequest struct {
	Rotation tokens.Rotation `json:"rotation"`
	At       time.Time       `json:"at"`
}

// RotationResumeRequest hands an open rotation to a new leader's term.
type RotationResumeRequest struct {
	Pool   string    `json:"pool"`
	ID     string    `json:"id"`
	Term   uint64    `json:"term"`
	Leader string    `json:"leader"`
	At     time.Time `json:"at"`
}

// RotationCommitRequest records the token a rotation issued. It is refused
// unless the rotation is open and Term is the rotation's: a deposed leader's
// late result then records the token as an orphan instead.
type RotationCommitRequest struct {
	Pool  string       `json:"pool"`
	ID    string       `json:"id"`
	Term  uint64       `json:"term"`
	Token tokens.Token `json:"token"`
	At    time.Time    `json:"at"`
}

// RotationFailRequest closes a rotation whose provider call failed, and sets
// the pool's backoff.
type RotationFailRequest struct {
	Pool        string    `json:"pool"`
	ID          string    `json:"id"`
	Term        uint64    `json:"term"`
	Error       string    `json:"error"`
	NextAttempt time.Time `json:"next_attempt"`
	At          time.Time `json:"at"`
}

// RotationAbandonRequest closes a rotation no leader will finish; a
// credential its provider call issued may exist untracked, so the event says
// so.
type RotationAbandonRequest struct {
	Pool   string    `json:"pool"`
	ID     string    `json:"id"`
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
}

// TokenOrphanRequest records a credential a provider issued for a rotation
// that was closed before it could be committed. It is kept, never served,
// and revoked and removed by the reaper.
type TokenOrphanRequest struct {
	Token  tokens.Token `json:"token"`
	Reason string       `json:"reason"`
	At     time.Time    `json:"at"`
}

// KeyringUseRequest makes KeyID the key every agent seals new secrets with.
// The proposer has checked that every agent holds it.
type KeyringUseRequest struct {
	KeyID string    `json:"key_id"`
	By    string    `json:"by"`
	At    time.Time `json:"at"`
}

// SecretsResealRequest replaces secrets with the same secrets sealed under
// another key. Each item applies only if its token or pool is unchanged
// since the proposer read it (ModifyIndex), so a reseal never undoes a
// write that raced with it.
type SecretsResealRequest struct {
	Tokens []ResealedToken `json:"tokens,omitempty"`
	Pools  []ResealedPool  `json:"pools,omitempty"`
	At     time.Time       `json:"at"`
}

// ResealedToken is one token's value sealed again.
type ResealedToken struct {
	Pool        string        `json:"pool"`
	ID          string        `json:"id"`
	ModifyIndex uint64        `json:"modify_index"`
	Value       tokens.Sealed `json:"value"`
	Fingerprint string        `json:"fingerprint"`
}

// ResealedPool is one pool's provider spec with its credentials sealed
// again; everything else in it must be unchanged.
type ResealedPool struct {
	Name        string              `json:"name"`
	ModifyIndex uint64              `json:"modify_index"`
	Provider    tokens.ProviderSpec `json:"provider"`
}

// ACLTokenRequest creates an ACL token (for ACLBootstrap, the management
// token) whose secret and accessor the proposer generated; only the
// secret's hash is in it.
type ACLTokenRequest struct {
	Token tokens.ACLToken `json:"token"`
	At    time.Time       `json:"at"`
}

// ACLPolicyUpsertRequest creates or replaces a policy.
type ACLPolicyUpsertRequest struct {
	Policy tokens.ACLPolicy `json:"policy"`
	At     time.Time        `json:"at"`
}

// ACLNameRequest deletes a policy (by name) or a token (by accessor id).
type ACLNameRequest struct {
	Name string    `json:"name"`
	At   time.Time `json:"at"`
}

// SnapshotRestoredRequest says which snapshot replaced the state: where it
// was taken (its Raft index and term in the cluster it came from, the agent
// that saved it and when) and what it held, and who restored it.
type SnapshotRestoredRequest struct {
	FromIndex uint64    `json:"from_index"`
	FromTerm  uint64    `json:"from_term"`
	SavedAt   time.Time `json:"saved_at"`
	SavedBy   string    `json:"saved_by"`
	Pools     int       `json:"pools"`
	Tokens    int       `json:"tokens"`
	By        string    `json:"by"`
	At        time.Time `json:"at"`
}

// AuthorizedRequest is a client's command and the hash of the ACL token's
// secret it came with.
type AuthorizedRequest struct {
	SecretHash string `json:"secret_hash"`
	Entry      []byte `json:"entry"`
}

// Authorize wraps entry, a client's command, with the hash of its ACL
// token's secret.
func Authorize(secretHash string, entry []byte) ([]byte, error) {
	return Encode(AuthorizedType, AuthorizedRequest{SecretHash: secretHash, Entry: entry})
}

// Encode returns the log entry for a command.
func Encode(t MessageType, req any) ([]byte, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", t, err)
	}
	return append([]byte{byte(t)}, body...), nil
}
