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
	PoolUpsertType  MessageType = 1
	PoolDeleteType  MessageType = 2
	TokenAddType    MessageType = 3
	TokenRemoveType MessageType = 4
	TokenHealthType MessageType = 5
	TokenResetType  MessageType = 6
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

// Encode returns the log entry for a command.
func Encode(t MessageType, req any) ([]byte, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", t, err)
	}
	return append([]byte{byte(t)}, body...), nil
}
