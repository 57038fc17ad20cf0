package tokens

import "time"

// EventType names what an event records.
type EventType string

const (
	EventPoolApplied  EventType = "pool_applied"
	EventPoolDeleted  EventType = "pool_deleted"
	EventTokenAdded   EventType = "token_added"
	EventTokenRemoved EventType = "token_removed"
	EventTokenHealth  EventType = "token_health"
	EventTokenReset   EventType = "token_reset"

	EventRotationBegun     EventType = "rotation_begun"
	EventRotationResumed   EventType = "rotation_resumed"
	EventRotationCommitted EventType = "rotation_committed"
	EventRotationFailed    EventType = "rotation_failed"
	EventRotationAbandoned EventType = "rotation_abandoned"
	EventTokenRetiring     EventType = "token_retiring"
	EventTokenOrphaned     EventType = "token_orphaned"

	EventKeyringUse      EventType = "keyring_use"
	EventSecretsResealed EventType = "secrets_resealed"

	EventACLBootstrapped  EventType = "acl_bootstrapped"
	EventACLPolicyApplied EventType = "acl_policy_applied"
	EventACLPolicyDeleted EventType = "acl_policy_deleted"
	EventACLTokenCreated  EventType = "acl_token_created"
	EventACLTokenDeleted  EventType = "acl_token_deleted"

	// EventSnapshotRestored: an operator replaced the whole state with a
	// snapshot (tokend snapshot restore).
	EventSnapshotRestored EventType = "snapshot_restored"
)

// MaxEvents is how many recent events the replicated state keeps.
const MaxEvents = 1024

// Event is one transition or admin action, kept in the replicated state so
// that every agent can show what happened. It never carries a secret.
type Event struct {
	// Index is the Raft index of the entry that caused the event; one entry
	// may cause several.
	Index    uint64      `json:"index"`
	At       time.Time   `json:"at"`
	Type     EventType   `json:"type"`
	Pool     string      `json:"pool,omitempty"`
	Token    string      `json:"token,omitempty"`
	From     HealthState `json:"from,omitempty"`
	To       HealthState `json:"to,omitempty"`
	Reason   string      `json:"reason,omitempty"`
	Reporter string      `json:"reporter,omitempty"`
	// Rotation names the rotation a rotation or lifecycle event belongs to.
	Rotation string `json:"rotation,omitempty"`
}
