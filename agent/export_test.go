package agent

import (
	"context"

	"github.com/tokend/tokend/tokens"
)

// Names of leader RPCs, for tests that play another agent.
const (
	LeaderReports = leaderReports
	LeaderRotate  = leaderRotate
)

// CallLeader sends body to the leader's handler name, as another agent
// forwarding a request would.
func (a *Agent) CallLeader(ctx context.Context, name string, body []byte) ([]byte, error) {
	return a.cluster.CallLeader(ctx, name, body)
}

// BlockApply holds back this agent's state machine until release is called
// (cluster.BlockApply): a slow follower.
func (a *Agent) BlockApply() (release func()) { return a.cluster.BlockApply() }

// Isolate cuts this agent off from every other agent's Raft and RPC, or
// heals it (cluster.Isolate): a network partition.
func (a *Agent) Isolate(on bool) { a.cluster.Isolate(on) }

// InstallKeyLocally adds a key to this agent's keyring only, as if only it
// had been given the key.
func (a *Agent) InstallKeyLocally(key string) error {
	raw, err := tokens.ParseKey(key)
	if err != nil {
		return err
	}
	return a.keys.change(func(kr *tokens.Keyring) (*tokens.Keyring, error) {
		next, _, err := kr.With(raw)
		return next, err
	})
}

// HealthChangesInFlight is how many tokens have a health change the leader's
// monitor proposed and has not seen commit or fail yet.
func (a *Agent) HealthChangesInFlight() int {
	a.monitor.mu.Lock()
	defer a.monitor.mu.Unlock()
	return len(a.monitor.pending)
}

// SnapshotChecks is how many times this agent has checked a snapshot
// file's state (decoded it, opened every value).
func (a *Agent) SnapshotChecks() int64 { return a.snapshotChecks.Load() }

// ResealStep runs one step of this agent's resealer on its current state,
// as the leader's task does, and says how many times it walked every
// secret. Only on an agent that does not lead, whose resealer is not
// running.
func (a *Agent) ResealStep(ctx context.Context) (walks int64, err error) {
	before := a.resealer.scans.Load()
	err = a.resealer.step(ctx, a.fsm.State())
	return a.resealer.scans.Load() - before, err
}
