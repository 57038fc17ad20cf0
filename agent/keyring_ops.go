package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tokend/tokend/api"
	"github.com/tokend/tokend/cluster"
	"github.com/tokend/tokend/fsm"
	"github.com/tokend/tokend/tokens"
)

// Keyring changes are made on every agent by the agent an operator asked
// (`tokend operator keyring`): it calls each member's handler over the
// agent RPC, which carries the key; run agents with mutual TLS so it is
// encrypted on the wire.
const (
	nodeKeyringList    = "keyring.list"
	nodeKeyringInstall = "keyring.install"
	nodeKeyringPrefer  = "keyring.prefer"
	nodeKeyringRemove  = "keyring.remove"
)

type keyringInstallRequest struct {
	Key string `json:"key"`
}

type keyringIDRequest struct {
	KeyID string `json:"key_id"`
	// Index is the state the asking agent decided on; the asked agent
	// catches up with it before it checks.
	Index uint64 `json:"index,omitempty"`
}

func (a *Agent) registerKeyringHandlers() {
	a.cluster.HandleNode(nodeKeyringList, func(context.Context, []byte) ([]byte, error) {
		return json.Marshal(a.keyringStatus())
	})
	a.cluster.HandleNode(nodeKeyringInstall, func(_ context.Context, body []byte) ([]byte, error) {
		var req keyringInstallRequest
		if err := json.Unmarshal(body, &req); err != nil {
			return nil, tokens.Errorf(tokens.CodeInvalid, "keyring install: malformed request")
		}
		raw, err := tokens.ParseKey(req.Key)
		if err != nil {
			return nil, err
		}
		if err := a.keys.change(func(kr *tokens.Keyring) (*tokens.Keyring, error) {
			next, id, err := kr.With(raw)
			if err == nil && !kr.Has(id) {
				a.logger.Info("keyring: key installed", "key", id)
			}
			return next, err
		}); err != nil {
			return nil, err
		}
		return json.Marshal(a.keyringStatus())
	})
	a.cluster.HandleNode(nodeKeyringPrefer, func(_ context.Context, body []byte) ([]byte, error) {
		var req keyringIDRequest
		if err := json.Unmarshal(body, &req); err != nil {
			return nil, tokens.Errorf(tokens.CodeInvalid, "keyring prefer: malformed request")
		}
		if err := a.keys.change(func(kr *tokens.Keyring) (*tokens.Keyring, error) { return kr.Preferring(req.KeyID) }); err != nil {
			return nil, err
		}
		return json.Marshal(a.keyringStatus())
	})
	a.cluster.HandleNode(nodeKeyringRemove, func(ctx context.Context, body []byte) ([]byte, error) {
		var req keyringIDRequest
		if err := json.Unmarshal(body, &req); err != nil {
			return nil, tokens.Errorf(tokens.CodeInvalid, "keyring remove: malformed request")
		}
		// Checked again here, against this agent's state once it has
		// caught up with the asking agent's: a key must never leave an
		// agent that still holds secrets sealed with it.
		if err := a.cluster.WaitForIndex(ctx, req.Index); err != nil {
			return nil, tokens.Errorf(tokens.CodeUnavailable, "this agent has not caught up with index %d: %v", req.Index, err)
		}
		if err := removable(a.fsm.State(), req.KeyID); err != nil {
			return nil, err
		}
		if err := a.keys.change(func(kr *tokens.Keyring) (*tokens.Keyring, error) {
			if !kr.Has(req.KeyID) {
				return kr, nil // removed already: a retried remove succeeds
			}
			return kr.Without(req.KeyID)
		}); err != nil {
			return nil, err
		}
		a.logger.Info("keyring: key removed", "key", req.KeyID)
		return json.Marshal(a.keyringStatus())
	})
}

// removable reports why key id cannot be removed from the cluster's agents:
// it seals new secrets, or secrets are still sealed with it.
func removable(s *fsm.State, id string) error {
	if s.Keyring().Primary == id {
		return tokens.Errorf(tokens.CodeConflict, "key %s seals new secrets: use another key first (tokend operator keyring use)", id)
	}
	if n := s.KeyUsage()[id]; n > 0 {
		return tokens.Errorf(tokens.CodeConflict, "%d secrets are still sealed with key %s; the leader is sealing them with the cluster's key: retry once `tokend operator keyring list` shows none", n, id)
	}
	return nil
}

func (a *Agent) keyringStatus() api.NodeKeyring {
	kr := a.keys.load()
	persisted, why := a.keys.persisted()
	return api.NodeKeyring{Node: a.cfg.NodeName, Keys: kr.IDs(), Default: kr.Default(), Persisted: persisted, NotPersisted: why}
}

// memberCall is one member's answer to a keyring call.
type memberCall = memberResult[api.NodeKeyring]

// memberResult is one member's answer to a node call, decoded.
type memberResult[T any] struct {
	member cluster.Member
	result T
	err    error
}

// callMembers calls name on every member that has not left, at once. A
// failed member is not called; its entry says so.
func (a *Agent) callMembers(ctx context.Context, name string, req any) ([]memberCall, error) {
	return callEach[api.NodeKeyring](ctx, a, name, req)
}

// lackingKey names the members whose keyring, as their answers to a list
// call show, lacks key id; with force, failed members are passed over.
func lackingKey[T any](calls []memberResult[T], id string, force bool, keys func(T) []string) []string {
	var lacking []string
	for _, c := range calls {
		switch {
		case c.err != nil && c.member.Status != cluster.StatusAlive && force:
			// An operator said this member is gone for good.
		case c.err != nil:
			lacking = append(lacking, c.member.Name+" ("+tokens.AsError(c.err).Message+")")
		case !slices.Contains(keys(c.result), id):
			lacking = append(lacking, c.member.Name)
		}
	}
	return lacking
}

// callEach calls name on every member that has not left, at once, and
// decodes each answer into a T. A failed member is not called; its entry
// says so.
func callEach[T any](ctx context.Context, a *Agent, name string, req any) ([]memberResult[T], error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	var out []memberResult[T]
	for _, m := range a.cluster.Members() {
		if m.Status != cluster.StatusLeft {
			out = append(out, memberResult[T]{member: m})
		}
	}
	var wg sync.WaitGroup
	for i := range out {
		c := &out[i]
		if c.member.Status != cluster.StatusAlive {
			c.err = fmt.Errorf("%s is %s", c.member.Name, c.member.Status)
			continue
		}
		wg.Go(func() {
			res, err := a.cluster.CallNode(ctx, c.member.RaftAddr, name, body)
			if err == nil {
				err = json.Unmarshal(res, &c.result)
			}
			c.err = err
		})
	}
	wg.Wait()
	slices.SortFunc(out, func(x, y memberResult[T]) int { return strings.Compare(x.member.Name, y.member.Name) })
	return out, nil
}

// summarize turns members' answers into the API's, each labelled with its
// member's name and error, and an error naming the members that failed, if
// any did.
func summarize[T any](what string, calls []memberResult[T], label func(r *T, node, errMsg string)) ([]T, error) {
	nodes := make([]T, len(calls))
	var failed []string
	for i, c := range calls {
		nodes[i] = c.result
		var msg string
		if c.err != nil {
			msg = tokens.AsError(c.err).Message
			failed = append(failed, c.member.Name+": "+msg)
		}
		label(&nodes[i], c.member.Name, msg)
	}
	if len(failed) > 0 {
		return nodes, tokens.Errorf(tokens.CodeUnavailable, "%s on %d of %d agents; failed on %s. Nothing is lost: retry once they are back, or remove the ones that are gone",
			what, len(calls)-len(failed), len(calls), strings.Join(failed, "; "))
	}
	return nodes, nil
}

func labelKeyring(r *api.NodeKeyring, node, errMsg string) { r.Node, r.Error = node, errMsg }

func (b *backend) Keyring(ctx context.Context) (api.Keyring, error) {
	calls, err := b.a.callMembers(ctx, nodeKeyringList, struct{}{})
	if err != nil {
		return api.Keyring{}, err
	}
	nodes, _ := summarize("listed", calls, labelKeyring)
	state := b.a.fsm.State()
	usage := map[string]int{}
	for id, n := range state.KeyUsage() {
		if id == "" {
			id = "unsealed"
		}
		usage[id] = n
	}
	return api.Keyring{Primary: state.Keyring().Primary, Secrets: usage, Nodes: nodes}, nil
}

func (b *backend) KeyringInstall(ctx context.Context, key string) (api.KeyringChange, error) {
	raw, err := tokens.ParseKey(key)
	if err != nil {
		return api.KeyringChange{}, err
	}
	id, _ := tokens.KeyID(raw)
	calls, err := b.a.callMembers(ctx, nodeKeyringInstall, keyringInstallRequest{Key: key})
	if err != nil {
		return api.KeyringChange{}, err
	}
	nodes, err := summarize("key "+id+" installed", calls, labelKeyring)
	return api.KeyringChange{KeyID: id, Nodes: nodes}, err
}

func (b *backend) KeyringUse(ctx context.Context, id string, force bool) (api.KeyringChange, error) {
	calls, err := b.a.callMembers(ctx, nodeKeyringList, struct{}{})
	if err != nil {
		return api.KeyringChange{}, err
	}
	lacking := lackingKey(calls, id, force, func(n api.NodeKeyring) []string { return n.Keys })
	if len(lacking) > 0 {
		return api.KeyringChange{}, tokens.Errorf(tokens.CodeConflict, "key %s is not installed on every agent (missing on %s): install it first (tokend operator keyring install); a failed agent that will not come back can be passed over with force", id, strings.Join(lacking, ", "))
	}
	index, err := b.apply(ctx, fsm.KeyringUseType, fsm.KeyringUseRequest{KeyID: id, By: b.a.cfg.NodeName, At: time.Now()})
	if err != nil {
		return api.KeyringChange{}, err
	}
	b.a.logger.Info("keyring: the cluster now seals with key", "key", id, "index", index)
	// Each agent's key file then starts with the key in use, which is what
	// it seals with until it hears from the cluster. Best effort: the
	// cluster's choice is what counts.
	calls, _ = b.a.callMembers(ctx, nodeKeyringPrefer, keyringIDRequest{KeyID: id})
	nodes, err := summarize("key "+id+" made first in the key file", calls, labelKeyring)
	if err != nil {
		b.a.logger.Warn("keyring: could not reorder every agent's key file", "error", err)
	}
	return api.KeyringChange{KeyID: id, Index: index, Nodes: nodes}, nil
}

func (b *backend) KeyringRemove(ctx context.Context, id string) (api.KeyringChange, error) {
	index := b.a.fsm.AppliedIndex()
	if err := removable(b.a.fsm.State(), id); err != nil {
		return api.KeyringChange{}, err
	}
	calls, err := b.a.callMembers(ctx, nodeKeyringRemove, keyringIDRequest{KeyID: id, Index: index})
	if err != nil {
		return api.KeyringChange{}, err
	}
	nodes, err := summarize("key "+id+" removed", calls, labelKeyring)
	return api.KeyringChange{KeyID: id, Nodes: nodes}, err
}
