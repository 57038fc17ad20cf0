package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/tokend/tokend/api"
	"github.com/tokend/tokend/cluster"
	"github.com/tokend/tokend/fsm"
	"github.com/tokend/tokend/tokens"
)

// Backups (`tokend snapshot save|restore`), as Consul does them. Save: the
// leader takes a Raft snapshot, and the agent asked wraps it in a snapshot
// file (api/snapshot.go) after checking that no secret in it is unsealed.
// Restore: the agent asked checks the file, then hands it to the leader,
// which checks it again against its own state and keyring and every
// member's keyring, and has Raft install it on every agent
// (cluster.RestoreSnapshot). Nothing changes unless every check passed.

// leaderSnapshotRestore is the name under which agents hand the leader a
// snapshot to restore.
const leaderSnapshotRestore = "snapshot.restore"

// snapshotRestoreTimeout bounds the leader's part of a restore.
const snapshotRestoreTimeout = 2 * time.Minute

// snapshotRestoreRequest precedes the state, after a newline, in the body
// of a leaderSnapshotRestore call.
type snapshotRestoreRequest struct {
	Info   api.SnapshotInfo `json:"info"`
	SHA256 string           `json:"sha256"`
	// AuthHash is the caller's ACL token, checked again by the leader; By
	// names the caller for the event.
	AuthHash string `json:"auth_hash,omitempty"`
	By       string `json:"by"`
}

func (a *Agent) registerSnapshotHandlers() {
	a.cluster.HandleLeaderWith(leaderSnapshotRestore, cluster.CallOptions{
		MaxBody: api.MaxSnapshotFileBytes + 64<<10,
		Timeout: snapshotRestoreTimeout,
	}, a.handleSnapshotRestore)
}

func (b *backend) SaveSnapshot(ctx context.Context) (api.SnapshotInfo, []byte, error) {
	defer releaseMemory()
	meta, payload, err := b.a.cluster.SaveSnapshot(ctx)
	if err != nil {
		return api.SnapshotInfo{}, nil, err
	}
	contents, err := fsm.DecodeSnapshot(bytes.NewReader(payload))
	if err != nil {
		return api.SnapshotInfo{}, nil, fmt.Errorf("the leader's snapshot at index %d does not decode: %w", meta.Index, err)
	}
	if n := contents.State().KeyUsage()[""]; n > 0 {
		return api.SnapshotInfo{}, nil, tokens.Errorf(tokens.CodeConflict,
			"%d secrets in the state are not sealed yet (they were written before tokend sealed secrets), and a snapshot file never holds a plaintext secret: "+
				"the leader is sealing them; retry once `tokend operator keyring list` shows no unsealed secrets", n)
	}
	info := summarizeSnapshot(contents)
	info.Index, info.Term = meta.Index, meta.Term
	info.CreatedAt = time.Now().UTC().Truncate(time.Second)
	info.Node = b.a.cfg.NodeName
	info.Leader = b.Leader().Node
	return info, payload, nil
}

// summarizeSnapshot is what a snapshot file's header says of the state it
// holds.
func summarizeSnapshot(c *fsm.SnapshotContents) api.SnapshotInfo {
	s := c.State()
	info := api.SnapshotInfo{
		StateVersion: c.Version(),
		ACLPolicies:  len(s.ACLPolicies()),
		ACLTokens:    len(s.ACLTokens()),
		Events:       c.Events(),
		SealingKey:   s.Keyring().Primary,
		KeyIDs:       []string{},
	}
	for _, ps := range s.Pools() {
		info.Pools++
		info.Tokens += len(ps.Tokens)
		info.Rotations += len(ps.Rotations)
	}
	for id := range s.KeyUsage() {
		if id != "" {
			info.KeyIDs = append(info.KeyIDs, id)
		}
	}
	slices.Sort(info.KeyIDs)
	return info
}

func (b *backend) RestoreSnapshot(ctx context.Context, file *api.SnapshotFile) (api.SnapshotRestored, error) {
	defer releaseMemory()
	req := snapshotRestoreRequest{Info: file.Info, SHA256: file.SHA256, AuthHash: authHash(ctx), By: principalName(ctx, b.a.cfg.NodeName)}
	var out []byte
	if b.a.cluster.IsLeader() {
		// The leader's part, here and now: it checks everything, so a
		// check before it, and a copy of the file for the call, would
		// only add to the work and to the memory a restore takes (at
		// 10,000 tokens, each check decodes the whole state and opens
		// every value). Were leadership lost meanwhile, Raft refuses the
		// restore and nothing changes.
		ctx, cancel := context.WithTimeout(ctx, snapshotRestoreTimeout)
		defer cancel()
		var err error
		if out, err = b.a.restoreSnapshot(ctx, req, file.Payload); err != nil {
			return api.SnapshotRestored{}, err
		}
	} else {
		// Checked here first, so a bad file costs the leader nothing; the
		// leader checks again with its own keyring and the members'.
		if _, err := b.a.checkSnapshot(file.Info, file.Payload); err != nil {
			return api.SnapshotRestored{}, err
		}
		head, err := json.Marshal(req)
		if err != nil {
			return api.SnapshotRestored{}, err
		}
		body := make([]byte, 0, len(head)+1+len(file.Payload))
		body = append(append(append(body, head...), '\n'), file.Payload...)
		if out, err = b.a.cluster.CallLeader(ctx, leaderSnapshotRestore, body); err != nil {
			return api.SnapshotRestored{}, err
		}
	}
	var res api.SnapshotRestored
	if err := json.Unmarshal(out, &res); err != nil {
		return api.SnapshotRestored{}, err
	}
	if err := b.a.cluster.WaitForIndex(ctx, res.Index); err != nil {
		return res, tokens.Errorf(tokens.CodeUnavailable, "the snapshot was restored at index %d, but this agent has not applied it yet: %v", res.RestoredIndex, err)
	}
	return res, nil
}

// handleSnapshotRestore is the leader's part of a restore asked of
// another agent.
func (a *Agent) handleSnapshotRestore(ctx context.Context, body []byte) ([]byte, error) {
	defer releaseMemory()
	head, payload, ok := bytes.Cut(body, []byte("\n"))
	var req snapshotRestoreRequest
	if !ok || json.Unmarshal(head, &req) != nil {
		return nil, tokens.Errorf(tokens.CodeInvalid, "snapshot restore: malformed request")
	}
	return a.restoreSnapshot(ctx, req, payload)
}

// restoreSnapshot is the leader's part of a restore: every check again,
// against the leader's own state and keyring and every member's keyring,
// then the restore itself, then the event that records it.
func (a *Agent) restoreSnapshot(ctx context.Context, req snapshotRestoreRequest, payload []byte) ([]byte, error) {
	if err := recheckOperator(a.fsm.State(), req.AuthHash); err != nil {
		return nil, err
	}
	contents, err := a.checkSnapshot(req.Info, payload)
	if err != nil {
		return nil, err
	}
	if err := a.checkMembersHold(ctx, snapshotKeys(req.Info)); err != nil {
		return nil, err
	}
	// The leader that owned the snapshot's open rotations is not this
	// cluster's: this leader resumes or abandons them, as after an
	// election (rotator.takeOver).
	var state bytes.Buffer
	state.Grow(len(payload) + len(payload)/16)
	if _, err := contents.Disowned().WriteTo(&state); err != nil {
		return nil, err
	}
	// Raft panics if the state machine cannot restore what it is given:
	// make sure once more, on the very bytes.
	if _, err := fsm.DecodeSnapshot(bytes.NewReader(state.Bytes())); err != nil {
		return nil, tokens.Errorf(tokens.CodeInvalid, "the snapshot's state does not encode back: %v", err)
	}
	installAt := max(req.Info.Index, contents.MaxIndex())
	// The checks decoded the whole state twice (contents is dead from
	// here): collect that before Raft and the state machine decode it once
	// more, so that the garbage of the three does not pile up into one
	// peak (tokend-bench scale, 10,000 tokens: the leader's VmHWM).
	runtime.GC()
	restoredAt, err := a.cluster.RestoreSnapshot(ctx, installAt, state.Bytes())
	if err != nil {
		return nil, err
	}
	res := api.SnapshotRestored{Index: restoredAt, RestoredIndex: restoredAt, Snapshot: req.Info, SHA256: req.SHA256}
	entry, err := fsm.Encode(fsm.SnapshotRestoredType, fsm.SnapshotRestoredRequest{
		FromIndex: req.Info.Index, FromTerm: req.Info.Term, SavedAt: req.Info.CreatedAt, SavedBy: req.Info.Node,
		Pools: req.Info.Pools, Tokens: req.Info.Tokens, By: req.By, At: time.Now(),
	})
	if err == nil {
		res.Index, err = a.cluster.Apply(ctx, entry)
	}
	if err != nil {
		// The state is restored; only its record is missing.
		a.logger.Error("snapshot restored, but its event could not be recorded", "restored_index", restoredAt, "error", err)
		res.Index = restoredAt
	}
	a.logger.Warn("snapshot restored on every agent", "from_index", req.Info.Index, "from_term", req.Info.Term, "saved_by", req.Info.Node,
		"restored_index", restoredAt, "pools", req.Info.Pools, "tokens", req.Info.Tokens, "by", req.By, "sha256", req.SHA256)
	return json.Marshal(res)
}

// recheckOperator is the leader's check of a restore another agent
// authorized: the ACL token must still exist and grant operator.
func recheckOperator(s *fsm.State, hash string) error {
	if hash == "" {
		return nil
	}
	authz, tok, ok := s.Authorizer(hash)
	if !ok {
		return tokens.Errorf(tokens.CodeUnauthenticated, "the ACL token this request came with no longer exists")
	}
	if !authz.Operator() {
		return tokens.Errorf(tokens.CodePermissionDenied, "ACL token %s no longer grants operator, which a restore needs", tok.AccessorID)
	}
	return nil
}

// checkSnapshot decodes a snapshot file's state and checks it all: every
// record; that the header describes it; that it holds no unsealed secret;
// and that this agent's keyring holds the cluster's sealing key and opens
// every sealed value in it. Its errors say what to fix; an unopenable value
// is key_missing or seal_broken.
func (a *Agent) checkSnapshot(info api.SnapshotInfo, payload []byte) (*fsm.SnapshotContents, error) {
	a.snapshotChecks.Add(1)
	bad := func(format string, args ...any) error {
		return tokens.Errorf(tokens.CodeInvalid, "snapshot file: "+format, args...)
	}
	contents, err := fsm.DecodeSnapshot(bytes.NewReader(payload))
	if err != nil {
		return nil, bad("its state does not decode: %v", err)
	}
	got := summarizeSnapshot(contents)
	for _, f := range []struct {
		what       string
		said, held any
	}{
		{"state version", info.StateVersion, got.StateVersion},
		{"pools", info.Pools, got.Pools},
		{"tokens", info.Tokens, got.Tokens},
		{"open rotations", info.Rotations, got.Rotations},
		{"ACL policies", info.ACLPolicies, got.ACLPolicies},
		{"ACL tokens", info.ACLTokens, got.ACLTokens},
		{"events", info.Events, got.Events},
		{"sealing key", info.SealingKey, got.SealingKey},
		{"key ids", strings.Join(info.KeyIDs, ","), strings.Join(got.KeyIDs, ",")},
	} {
		if f.said != f.held {
			return nil, bad("its header says %s %v, but its state holds %v: the file was altered", f.what, f.said, f.held)
		}
	}
	if info.Index < contents.AppliedIndex() {
		return nil, bad("its header says index %d, but its state was applied up to %d: the file was altered", info.Index, contents.AppliedIndex())
	}
	s := contents.State()
	if n := s.KeyUsage()[""]; n > 0 {
		return nil, bad("it holds %d secrets that are not sealed; tokend never writes such a file", n)
	}
	kr := a.keys.load()
	if p := s.Keyring().Primary; p != "" && !kr.Has(p) {
		return nil, tokens.Errorf(tokens.CodeKeyMissing, "the snapshot's cluster sealed new secrets with key %s, which this agent's keyring (%s) does not hold: install it on every agent (tokend operator keyring install) before restoring",
			p, strings.Join(kr.IDs(), ", "))
	}
	cannotOpen := func(what string, err error) error {
		e := tokens.AsError(err)
		return tokens.Errorf(e.Code, "%s in the snapshot does not open with this agent's keyring (%s): %s. Restoring needs every key the snapshot's secrets are sealed with (%s)",
			what, strings.Join(kr.IDs(), ", "), e.Message, strings.Join(got.KeyIDs, ", "))
	}
	for _, ps := range s.Pools() {
		if _, err := a.keys.openSpec(ps.Pool.Name, ps.Pool.Provider); err != nil {
			return nil, cannotOpen(fmt.Sprintf("a provider credential of pool %q", ps.Pool.Name), err)
		}
		for _, t := range ps.Tokens {
			if _, err := kr.Open(t.Value, tokens.TokenAAD(t.Pool, t.ID)); err != nil {
				return nil, cannotOpen(fmt.Sprintf("the value of token %s of pool %q", t.ID, t.Pool), err)
			}
		}
	}
	return contents, nil
}

// snapshotKeys are the keys every agent must hold for a snapshot's state.
func snapshotKeys(info api.SnapshotInfo) []string {
	keys := slices.Clone(info.KeyIDs)
	if info.SealingKey != "" && !slices.Contains(keys, info.SealingKey) {
		keys = append(keys, info.SealingKey)
	}
	return keys
}

// checkMembersHold makes sure every live member's keyring holds keys, so no
// agent is left with secrets it cannot open. A failed member cannot be
// asked; it is logged, and must be given the keys before it comes back.
func (a *Agent) checkMembersHold(ctx context.Context, keys []string) error {
	if len(keys) == 0 {
		return nil
	}
	calls, err := a.callMembers(ctx, nodeKeyringList, struct{}{})
	if err != nil {
		return err
	}
	var lacking, unreachable []string
	for _, c := range calls {
		switch {
		case c.member.Status != cluster.StatusAlive:
			a.logger.Warn("restoring a snapshot without asking a failed agent for its keys: it needs them when it comes back", "node", c.member.Name, "keys", keys)
		case c.err != nil:
			unreachable = append(unreachable, c.member.Name+" ("+tokens.AsError(c.err).Message+")")
		default:
			var missing []string
			for _, k := range keys {
				if !slices.Contains(c.result.Keys, k) {
					missing = append(missing, k)
				}
			}
			if len(missing) > 0 {
				lacking = append(lacking, c.member.Name+" lacks "+strings.Join(missing, ", "))
			}
		}
	}
	if len(lacking) > 0 {
		return tokens.Errorf(tokens.CodeKeyMissing, "the snapshot's secrets are sealed with keys not every agent holds (%s): install them (tokend operator keyring install) before restoring", strings.Join(lacking, "; "))
	}
	if len(unreachable) > 0 {
		return tokens.Errorf(tokens.CodeUnavailable, "could not ask every agent whether it holds the snapshot's keys (%s): retry once they answer", strings.Join(unreachable, "; "))
	}
	return nil
}

// releaseMemory returns to the operating system the memory a backup save
// or restore has finished with. Each decodes the whole state once or more
// and holds copies of the file: at 10,000 tokens some tens of MB of
// garbage, which the Go runtime would otherwise keep resident for minutes
// (tokend-bench scale: the leader's RSS went from 38 to 70 MB after one
// restore, and stayed there). Backups are rare, and a full collection of a
// state this size costs milliseconds.
func releaseMemory() { debug.FreeOSMemory() }
