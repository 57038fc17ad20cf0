package agent

import (
	"context"
	"encoding/json"
	"strings"

	"github.com/tokend/tokend/api"
	"github.com/tokend/tokend/cluster"
	"github.com/tokend/tokend/tokens"
)

// Gossip keyring changes are made on every agent by the agent an operator
// asked (`tokend operator gossip-keyring`), over the same node RPC as the
// sealing keyring's (keyring_ops.go): run agents with mutual TLS, since an
// install carries the key. The keys themselves live in memberlist's keyring
// and in each agent's <data-dir>/gossip-keyring (cluster/gossip_keyring.go).
//
// A rotation: install the new key everywhere, use it everywhere (each agent
// then encrypts with it and still opens the old), remove the old key
// everywhere. Use refuses until every member holds the key, and remove
// until no member encrypts with it, so no two agents are ever left without
// a key in common.
const (
	nodeGossipList    = "gossip-keyring.list"
	nodeGossipInstall = "gossip-keyring.install"
	nodeGossipUse     = "gossip-keyring.use"
	nodeGossipRemove  = "gossip-keyring.remove"
)

func (a *Agent) registerGossipKeyringHandlers() {
	answer := func(kr cluster.GossipKeyring, err error) ([]byte, error) {
		if err != nil {
			return nil, err
		}
		return json.Marshal(nodeGossipKeyring(a.cfg.NodeName, kr))
	}
	a.cluster.HandleNode(nodeGossipList, func(context.Context, []byte) ([]byte, error) {
		return answer(a.cluster.GossipKeyring())
	})
	a.cluster.HandleNode(nodeGossipInstall, func(_ context.Context, body []byte) ([]byte, error) {
		var req keyringInstallRequest
		if err := json.Unmarshal(body, &req); err != nil {
			return nil, tokens.Errorf(tokens.CodeInvalid, "gossip keyring install: malformed request")
		}
		raw, err := cluster.ParseGossipKey(req.Key)
		if err != nil {
			return nil, err
		}
		return answer(a.cluster.InstallGossipKey(raw))
	})
	a.cluster.HandleNode(nodeGossipUse, func(_ context.Context, body []byte) ([]byte, error) {
		var req keyringIDRequest
		if err := json.Unmarshal(body, &req); err != nil {
			return nil, tokens.Errorf(tokens.CodeInvalid, "gossip keyring use: malformed request")
		}
		return answer(a.cluster.UseGossipKey(req.KeyID))
	})
	a.cluster.HandleNode(nodeGossipRemove, func(_ context.Context, body []byte) ([]byte, error) {
		var req keyringIDRequest
		if err := json.Unmarshal(body, &req); err != nil {
			return nil, tokens.Errorf(tokens.CodeInvalid, "gossip keyring remove: malformed request")
		}
		return answer(a.cluster.RemoveGossipKey(req.KeyID))
	})
}

func nodeGossipKeyring(node string, kr cluster.GossipKeyring) api.NodeGossipKeyring {
	n := api.NodeGossipKeyring{Node: node, Keys: kr.Keys, Persisted: kr.Persisted, NotPersisted: kr.NotPersisted}
	if len(kr.Keys) > 0 {
		n.Primary = kr.Keys[0]
	}
	return n
}

func labelGossipKeyring(r *api.NodeGossipKeyring, node, errMsg string) {
	r.Node, r.Error = node, errMsg
}

// gossipOn fails, as this agent's keyring does, when this agent does not
// encrypt gossip: before it asks the others.
func (b *backend) gossipOn() error {
	_, err := b.a.cluster.GossipKeyring()
	return err
}

func (b *backend) GossipKeyring(ctx context.Context) (api.GossipKeyring, error) {
	if err := b.gossipOn(); err != nil {
		return api.GossipKeyring{}, err
	}
	calls, err := callEach[api.NodeGossipKeyring](ctx, b.a, nodeGossipList, struct{}{})
	if err != nil {
		return api.GossipKeyring{}, err
	}
	nodes, _ := summarize("listed", calls, labelGossipKeyring)
	return api.GossipKeyring{Nodes: nodes}, nil
}

func (b *backend) GossipKeyringInstall(ctx context.Context, key string) (api.GossipKeyringChange, error) {
	raw, err := cluster.ParseGossipKey(key)
	if err != nil {
		return api.GossipKeyringChange{}, err
	}
	id := cluster.GossipKeyID(raw)
	if err := b.gossipOn(); err != nil {
		return api.GossipKeyringChange{}, err
	}
	calls, err := callEach[api.NodeGossipKeyring](ctx, b.a, nodeGossipInstall, keyringInstallRequest{Key: key})
	if err != nil {
		return api.GossipKeyringChange{}, err
	}
	nodes, err := summarize("gossip key "+id+" installed", calls, labelGossipKeyring)
	return api.GossipKeyringChange{KeyID: id, Nodes: nodes}, err
}

func (b *backend) GossipKeyringUse(ctx context.Context, id string, force bool) (api.GossipKeyringChange, error) {
	if err := b.gossipOn(); err != nil {
		return api.GossipKeyringChange{}, err
	}
	calls, err := callEach[api.NodeGossipKeyring](ctx, b.a, nodeGossipList, struct{}{})
	if err != nil {
		return api.GossipKeyringChange{}, err
	}
	lacking := lackingKey(calls, id, force, func(n api.NodeGossipKeyring) []string { return n.Keys })
	if len(lacking) > 0 {
		return api.GossipKeyringChange{}, tokens.Errorf(tokens.CodeConflict, "gossip key %s is not installed on every agent (missing on %s): install it first (tokend operator gossip-keyring install); a failed agent that will not come back can be passed over with force", id, strings.Join(lacking, ", "))
	}
	calls, err = callEach[api.NodeGossipKeyring](ctx, b.a, nodeGossipUse, keyringIDRequest{KeyID: id})
	if err != nil {
		return api.GossipKeyringChange{}, err
	}
	nodes, err := summarize("gossip key "+id+" in use", calls, labelGossipKeyring)
	return api.GossipKeyringChange{KeyID: id, Nodes: nodes}, err
}

func (b *backend) GossipKeyringRemove(ctx context.Context, id string) (api.GossipKeyringChange, error) {
	if err := b.gossipOn(); err != nil {
		return api.GossipKeyringChange{}, err
	}
	calls, err := callEach[api.NodeGossipKeyring](ctx, b.a, nodeGossipList, struct{}{})
	if err != nil {
		return api.GossipKeyringChange{}, err
	}
	var using []string
	for _, c := range calls {
		if c.err == nil && c.result.Primary == id {
			using = append(using, c.member.Name)
		}
	}
	if len(using) > 0 {
		return api.GossipKeyringChange{}, tokens.Errorf(tokens.CodeConflict, "gossip key %s is still the primary key on %s: use another key first (tokend operator gossip-keyring use)", id, strings.Join(using, ", "))
	}
	calls, err = callEach[api.NodeGossipKeyring](ctx, b.a, nodeGossipRemove, keyringIDRequest{KeyID: id})
	if err != nil {
		return api.GossipKeyringChange{}, err
	}
	nodes, err := summarize("gossip key "+id+" removed", calls, labelGossipKeyring)
	return api.GossipKeyringChange{KeyID: id, Nodes: nodes}, err
}
